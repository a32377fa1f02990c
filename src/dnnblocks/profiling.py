"""Where the time of one training step goes, building block by building block.

:func:`profile` (also :meth:`dnnblocks.Network.profile`) runs the network's
gradient-descent step with a timer around every block of every layer

========== =====================================================================
linear     Z = W A_prev, the forward GEMM
activation + b and g(Z); for the output layer also the cost and dZ = A - Y
mask+sum   dZ = dA * g'(Z) and db = rowsum(dZ) / m (hidden layers)
dA GEMM    dA_prev = W^T dZ (no such GEMM for the first layer)
dW GEMM    dZ A_prev^T / m; in the compiled backend the W update is fused
           into this GEMM (BLAS's beta scales W, alpha carries the step)
update     W -= lr dW and b -= lr db; compiled: b only (W is in the dW GEMM)
========== =====================================================================

In the compiled backend a one-unit output layer (binary classification) has
no GEMMs of its own: its forward product runs inside the last hidden layer's
activation pass, and its dA, dW and update inside that layer's mask pass.

and prints them beside the untimed step and the *GEMM-only* time: the matrix
products one step needs (W A per layer, dZ A^T per layer, W^T dZ for all but
the first) through ``numpy.dot`` into preallocated outputs, a lower bound for
any implementation that does those products with NumPy's BLAS. The timers are
read inside the step (in C for the compiled backend), so the blocks add up
to the step's own time plus a few hundred nanoseconds per block.
"""

from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from ._validation import check_learning_rate, check_positive_int

#: Column labels of :attr:`ProfileResult.blocks`.
BLOCK_LABELS = ("linear", "activation", "mask+sum", "dA GEMM", "dW GEMM", "update")
_GEMM_COLUMNS = (0, 3, 4)


def gemm_only_step(layer_dims, m, dtype, X=None, rng=None):
    """The matrix products of one training step, as a callable (the GEMM bound).

    Allocates every operand and output once; each call then does W[l] A[l-1]
    for every layer, dZ[l] A[l-1]^T for every layer and W[l]^T dZ[l] for every
    layer but the first, with ``numpy.dot(..., out=...)``: nothing else.

    Parameters
    ----------
    layer_dims : sequence of int
    m : int
    dtype : numpy dtype
    X : ndarray of shape (layer_dims[0], m), optional
        The input to read (C- or F-ordered, as the implementations see it);
        random data by default.
    rng : numpy.random.Generator, optional

    Returns
    -------
    callable
        ``f()`` runs the products once.
    """
    dims = tuple(int(n) for n in layer_dims)
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0) if rng is None else rng
    if X is None:
        X = rng.standard_normal((dims[0], m)).astype(dtype)
    W = [(rng.standard_normal((dims[l + 1], dims[l])) * 0.01).astype(dtype) for l in range(len(dims) - 1)]
    A = [X] + [rng.standard_normal((n, m)).astype(dtype) for n in dims[1:]]
    dZ = [rng.standard_normal((n, m)).astype(dtype) for n in dims[1:]]
    dW = [np.empty_like(w) for w in W]
    dA = [np.empty((n, m), dtype=dtype) for n in dims[1:-1]]
    WT = [w.T for w in W]
    AT = [a.T for a in A]
    L = len(W)
    dot = np.dot

    def run():
        for l in range(L):
            dot(W[l], A[l], out=A[l + 1])
        for l in range(L - 1, -1, -1):
            dot(dZ[l], AT[l], out=dW[l])
            if l > 0:
                dot(WT[l], dZ[l], out=dA[l - 1])

    return run


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = perf_counter()
        fn()
        times.append(perf_counter() - t0)
    return float(np.median(times))


@dataclass
class ProfileResult:
    """The per-block times of one training step (seconds).

    Attributes
    ----------
    blocks : ndarray of shape (L, 6)
        Median over the repeats of each block's time, per layer (rows: layer
        1 first) and block (columns: :data:`BLOCK_LABELS`).
    step : float
        Median time of the same step run without timers.
    gemm_only : float
        Median time of the GEMM-only step (:func:`gemm_only_step`).
    """

    backend: str
    dtype: str
    layer_dims: tuple
    m: int
    repeats: int
    blocks: np.ndarray
    step: float
    gemm_only: float
    labels: tuple = field(default=BLOCK_LABELS)

    @property
    def blocks_total(self):
        """Sum of all block times."""
        return float(self.blocks.sum())

    @property
    def gemm_blocks(self):
        """Time of the step's own GEMM blocks (linear, dA, dW)."""
        return float(self.blocks[:, _GEMM_COLUMNS].sum())

    def as_dict(self):
        """Plain-Python form (for JSON)."""
        return {
            "backend": self.backend, "dtype": self.dtype, "layer_dims": list(self.layer_dims),
            "m": self.m, "repeats": self.repeats, "labels": list(self.labels),
            "blocks_ms": (self.blocks * 1e3).round(6).tolist(), "step_ms": self.step * 1e3,
            "gemm_only_ms": self.gemm_only * 1e3,
        }

    def table(self):
        """The profile as a text table, in milliseconds."""
        ms = self.blocks * 1e3
        head = f"{'layer':>5}  {'shape':>13}" + "".join(f"{lab:>11}" for lab in self.labels) + f"{'total':>11}"
        lines = [
            f"dnnblocks profile: {self.backend} backend, {self.dtype}, layers {list(self.layer_dims)}, "
            f"m = {self.m} (median of {self.repeats} steps, ms)",
            head,
            "-" * len(head),
        ]
        for l in range(ms.shape[0]):
            shape = f"{self.layer_dims[l + 1]}x{self.layer_dims[l]}"
            lines.append(f"{l + 1:>5}  {shape:>13}" + "".join(f"{v:11.4f}" for v in ms[l])
                         + f"{ms[l].sum():11.4f}")
        lines.append(f"{'all':>5}  {'':>13}" + "".join(f"{v:11.4f}" for v in ms.sum(axis=0))
                     + f"{ms.sum():11.4f}")
        lines.append("")
        lines.append(f"step without timers : {self.step * 1e3:10.4f} ms")
        lines.append(f"GEMM blocks of step : {self.gemm_blocks * 1e3:10.4f} ms "
                     f"({100 * self.gemm_blocks / max(self.blocks_total, 1e-30):.0f}% of the blocks)")
        lines.append(f"GEMM-only bound     : {self.gemm_only * 1e3:10.4f} ms (numpy.dot into preallocated "
                     f"outputs); step / bound = {self.step / self.gemm_only:.3f}")
        if self.backend == "compiled":
            lines.append("compiled: the W update is fused into the dW GEMM; 'update' is the bias only.")
            if self.layer_dims[-1] == 1 and len(self.layer_dims) > 2:
                lines.append("compiled: the one-unit output layer's products (forward, dA, dW and its "
                             "update) run inside the last hidden layer's activation and mask+sum passes.")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def profile(net, X, Y, learning_rate=0.01, repeats=20, print_table=True):
    """Time each building block of one gradient-descent step of `net`, per layer.

    The step is the one :meth:`Network.step` runs (the backend's
    ``make_training_step``). The network's parameters are restored
    afterwards, so profiling does not train it.

    Parameters
    ----------
    net : dnnblocks.Network
        A network with a sigmoid output.
    X : ndarray of shape (n[0], m)
    Y : array-like of shape (n[L], m)
    learning_rate : float, default 0.01
    repeats : int, default 20
        Steps timed (after two warm-up steps); medians are reported.
    print_table : bool, default True
        Print :meth:`ProfileResult.table`.

    Returns
    -------
    ProfileResult
    """
    learning_rate = check_learning_rate(learning_rate)
    repeats = check_positive_int(repeats, "repeats")
    if getattr(net, "output", "sigmoid") != "sigmoid":
        raise ValueError("profile() times the sigmoid-output gradient-descent step; "
                         f"this network's output is {net.output!r}")
    X = net.check_X(X)
    m = X.shape[1]
    Y = net.check_Y(Y, m)
    k = net.kernels
    saved = [a.copy() for a in net.W + net.b]
    try:
        fused = k.make_training_step(net.W, net.b, net.activations, m)
        L = net.n_layers
        for _ in range(2):
            fused.run(X, Y, learning_rate)
        per_step = np.empty((repeats, L, 6))
        for r in range(repeats):
            t = np.zeros((L, 6))
            fused.run(X, Y, learning_rate, 0.0, t)
            per_step[r] = t
        step = _median_time(lambda: fused.run(X, Y, learning_rate), repeats)
    finally:
        for dst, src in zip(net.W + net.b, saved):
            np.copyto(dst, src)
    gemm = gemm_only_step(net.layer_dims, m, net.dtype, X)
    gemm()
    result = ProfileResult(
        backend=net.backend, dtype=net.dtype.name, layer_dims=tuple(net.layer_dims), m=m,
        repeats=repeats, blocks=np.median(per_step, axis=0), step=step,
        gemm_only=_median_time(gemm, repeats),
    )
    if print_table:
        print(result.table())
    return result
