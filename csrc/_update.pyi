"""Type stub of the compiled module dnnblocks._update (csrc/_update.pyx): in-place optimizer steps."""

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one call has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

def gradient_descent_update(param: _Floats, grad: _Floats, learning_rate: float) -> None: ...
def momentum_update(
    param: _Floats,
    grad: _Floats,
    velocity: _Floats,
    learning_rate: float,
    beta: float,
    weight_decay: float = 0.0,
) -> None: ...
def adam_update(
    param: _Floats,
    grad: _Floats,
    m: _Floats,
    v: _Floats,
    learning_rate: float,
    beta1: float,
    beta2: float,
    epsilon: float,
    t: int,
    weight_decay: float = 0.0,
) -> None: ...
