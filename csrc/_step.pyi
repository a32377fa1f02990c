"""Type stub of the compiled modules dnnblocks._step and dnnblocks._step_avx2 (csrc/_step.pyx).

One whole gradient-descent training step (forward, cost, backward, update) in one call.
"""

from collections.abc import Sequence
from typing import Final, TypeAlias

from typing_extensions import disjoint_base

import numpy as np
from numpy.typing import NDArray

# Cython's fused `floating`: every array of one step has the same of these dtypes.
_Floats: TypeAlias = NDArray[np.float32] | NDArray[np.float64]

#: Names of the timed blocks, in the order of the columns of ``timings``.
BLOCKS: Final[tuple[str, str, str, str, str, str]]
FULL_SCRATCH_BYTES: Final[int]
BLOCK_SCRATCH_BYTES: Final[int]

# A cdef class: its instances have a C layout no other base can share.
@disjoint_base
class TrainingStep:
    @property
    def dtype(self) -> np.dtype[np.float32] | np.dtype[np.float64]: ...
    @property
    def layer_dims(self) -> tuple[int, ...]: ...
    def __init__(
        self,
        W: Sequence[_Floats],
        b: Sequence[_Floats],
        activations: Sequence[str],
        m: int,
        block_columns: int | None = None,
    ) -> None: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def block_columns(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def uses(self, W: Sequence[_Floats], b: Sequence[_Floats]) -> bool: ...
    def run(
        self,
        X: _Floats,
        Y: _Floats,
        learning_rate: float,
        l2: float = 0.0,
        timings: NDArray[np.float64] | None = None,
    ) -> float: ...

def make_training_step(
    W: Sequence[_Floats],
    b: Sequence[_Floats],
    activations: Sequence[str],
    m: int,
    block_columns: int | None = None,
) -> TrainingStep: ...
