"""Type stub of the compiled modules dnnblocks._layer and dnnblocks._layer_avx2 (csrc/_layer.pyx).

The per-layer kernels: they write into the output arrays they are given and return None.
"""

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one call has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

def linear_activation_forward(
    W: _Floats,
    b: _Floats,
    A_prev: _Floats,
    activation: str,
    Z: _Floats,
    A: _Floats,
) -> None: ...
def activation_backward(
    dA: _Floats,
    Z: _Floats,
    A: _Floats | None,
    activation: str,
    dZ: _Floats,
    db: _Floats,
    db_scale: float,
) -> None: ...
def linear_backward(
    dZ: _Floats,
    A_prev: _Floats,
    W: _Floats,
    dW: _Floats,
    dA_prev: _Floats | None,
    dW_scale: float,
) -> None: ...
def linear_backward_update(
    dZ: _Floats,
    A_prev: _Floats,
    W: _Floats,
    dA_prev: _Floats | None,
    dW_scale: float,
    learning_rate: float,
    weight_decay: float = 0.0,
) -> None: ...
