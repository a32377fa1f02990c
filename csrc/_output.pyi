"""Type stub of the compiled module dnnblocks._output (csrc/_output.pyx): output layers and costs."""

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one call has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

def sigmoid_cross_entropy(
    Z: _Floats,
    A: _Floats,
    Y: _Floats,
    dZ: _Floats,
    db: _Floats,
    db_scale: float,
) -> float: ...
def cross_entropy_cost(AL: _Floats, Y: _Floats) -> float: ...
def softmax_forward(Z: _Floats, A: _Floats) -> None: ...
def softmax_cross_entropy(
    Z: _Floats,
    A: _Floats,
    Y: _Floats,
    dZ: _Floats,
    db: _Floats,
    db_scale: float,
) -> float: ...
