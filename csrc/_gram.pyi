"""Type stub of the compiled modules dnnblocks._gram and dnnblocks._gram_avx2 (csrc/_gram.pyx).

Full-batch training of one network on one fixed input through the Gram matrix X^T X.
"""

from collections.abc import Sequence
from typing import TypeAlias

from typing_extensions import disjoint_base

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one run has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

# A cdef class: its instances have a C layout no other base can share.
@disjoint_base
class GramTraining:
    @property
    def dtype(self) -> np.dtype[np.float32] | np.dtype[np.float64]: ...
    def __init__(
        self,
        W: Sequence[_Floats],
        b: Sequence[_Floats],
        activations: Sequence[str],
        X: _Floats,
        Y: _Floats,
        l2: float = 0.0,
        momentum: bool = False,
        beta: float = 0.0,
    ) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def run(self, iterations: int, learning_rate: float, costs: NDArray[np.float64]) -> int: ...
    def first_layer(self, out: _Floats) -> None: ...
    def first_layer_velocity(self, out: _Floats) -> None: ...
    def velocities(self) -> tuple[list[_Floats], list[_Floats]]: ...
