"""Type stub of the compiled modules dnnblocks._epoch and dnnblocks._epoch_avx2 (csrc/_epoch.pyx).

Blocks of mini-batch training steps (gather, forward, cost, backward, update) in one call.
"""

from collections.abc import Sequence
from typing import Final, TypeAlias

from typing_extensions import disjoint_base

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one run has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

#: The optimizers the workspace runs, in the order of its codes.
OPTIMIZERS: Final[tuple[str, str, str]]

# A cdef class: its instances have a C layout no other base can share.
@disjoint_base
class EpochWorkspace:
    @property
    def layer_dims(self) -> tuple[int, ...]: ...
    def __init__(
        self,
        W: Sequence[_Floats],
        b: Sequence[_Floats],
        activations: Sequence[str],
        batch_size: int,
        optimizer: str,
        state: Sequence[Sequence[_Floats]],
        hyper: dict[str, float],
    ) -> None: ...
    @property
    def fused(self) -> bool: ...
    @property
    def dropout(self) -> bool: ...
    @property
    def hidden_units(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def uses(self, W: Sequence[_Floats], b: Sequence[_Floats]) -> bool: ...
    def run(
        self,
        X: _Floats,
        Y: _Floats,
        order: NDArray[np.int64] | None,
        first_example: int,
        n_examples: int,
        learning_rate: float,
        t0: int,
        masks: _Floats | None,
        costs: NDArray[np.float64],
    ) -> int: ...
