"""Type stub of the compiled module dnnblocks._dropout (csrc/_dropout.pyx): inverted dropout."""

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one call has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

def dropout_forward(A: _Floats, mask: _Floats, keep_prob: float) -> None: ...
def dropout_backward(dA: _Floats, mask: _Floats) -> None: ...
