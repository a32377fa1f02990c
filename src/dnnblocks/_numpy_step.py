"""The NumPy backend's whole training step (the twin of ``csrc/_step.pyx``).

One gradient-descent step written the way the textbook writes it in NumPy:
Z, A and dA/dZ of every layer are kept, ``dW = dZ @ A_prev.T / m`` is formed
and then subtracted. Same class, same methods, same results as the compiled
:class:`TrainingStep`; the timed blocks are the same too, so that
:func:`dnnblocks.profiling.profile` can put the two side by side.
"""

import math
from time import perf_counter

import numpy as np

from ._numpy_kernels import KERNEL_ACTIVATIONS, _activate, activation_backward, sigmoid_cross_entropy
from ._validation import check_block_columns

#: Names of the timed blocks, in the order of the columns of ``timings``.
BLOCKS = ("linear", "activation", "mask_rowsum", "dA_gemm", "dW_gemm", "update")
_LINEAR, _ACTIVATION, _MASK, _DA, _DW, _UPDATE = range(6)


def _check_parameters(W, b, activations, m):
    """Shared validation of the constructor arguments (both backends raise alike)."""
    W, b, activations = tuple(W), tuple(b), tuple(activations)
    L = len(W)
    if L == 0 or len(b) != L or len(activations) != L:
        raise ValueError(
            f"W, b and activations must have one entry per layer; got {len(W)}, {len(b)}, {len(activations)}"
        )
    if activations[-1] != "sigmoid":
        raise ValueError(f"the output activation must be 'sigmoid'; got {activations[-1]!r}")
    for l, act in enumerate(activations[:-1]):
        if act not in KERNEL_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of 'relu', 'tanh', 'sigmoid', 'identity'; got {act!r}"
            )
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= 2**31 - 1:
        raise ValueError(f"m must be between 1 and {2**31 - 1}; got {m!r}")
    dtype = np.asarray(W[0]).dtype
    if dtype not in (np.float64, np.float32):
        raise TypeError(f"W[0] must be float32 or float64; got {dtype}")
    dims = [np.asarray(W[0]).shape[-1]]
    for l in range(L):
        for name, arr in ((f"W[{l}]", W[l]), (f"b[{l}]", b[l])):
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{name} must be a numpy.ndarray; got {type(arr).__name__}")
            if arr.dtype != dtype:
                raise TypeError(f"{name} must have dtype {dtype}; got {arr.dtype}")
        if (W[l].ndim != 2 or W[l].shape[1] != dims[l] or not W[l].flags.c_contiguous
                or not W[l].flags.writeable):
            raise ValueError(
                f"W[{l}] must be a writeable C-contiguous array with {dims[l]} columns; got shape {W[l].shape}"
            )
        n = W[l].shape[0]
        if b[l].shape != (n, 1) or not b[l].flags.c_contiguous or not b[l].flags.writeable:
            raise ValueError(f"b[{l}] must be a writeable C-contiguous ({n}, 1) array; got shape {b[l].shape}")
        dims.append(n)
    return W, b, activations, int(m), dtype, tuple(int(d) for d in dims)


class TrainingStep:
    """A gradient-descent training step of one network at one batch size (NumPy).

    See the compiled :class:`dnnblocks._step.TrainingStep` for the parameters;
    this one keeps the course's caches (Z, A and dA/dZ of every layer), so it
    forms dA in one piece: `block_columns` is checked and otherwise ignored.
    """

    def __init__(self, W, b, activations, m, block_columns=None):
        W, b, activations, m, dtype, dims = _check_parameters(W, b, activations, m)
        check_block_columns(block_columns)
        self._W, self._b, self._activations = W, b, activations
        self.dtype, self.layer_dims, self._m = dtype, dims, m
        self._Z = [np.empty((n, m), dtype=dtype) for n in dims[1:]]
        self._A = [np.empty((n, m), dtype=dtype) for n in dims[1:]]
        self._D = [np.empty((n, m), dtype=dtype) for n in dims[1:]]
        self._db = [np.empty((n, 1), dtype=dtype) for n in dims[1:]]

    @property
    def batch_size(self):
        """The number of examples m this step was built for."""
        return self._m

    @property
    def block_columns(self):
        """Columns per block of the backward dA product: always m here."""
        return self._m

    @property
    def nbytes(self):
        """Bytes held in buffers between steps (not counting the parameters)."""
        return sum(a.nbytes for a in self._Z + self._A + self._D + self._db)

    def uses(self, W, b):
        """Whether `W` and `b` hold the very arrays this step was built with."""
        # Like the compiled step: an array made read-only or reshaped since is
        # not "used" (the network then rebuilds and checks), never half an update.
        dims = self.layer_dims
        return (len(W) == len(self._W) and len(b) == len(self._b)
                and all(x is y and x.flags.writeable and x.shape == (dims[l + 1], dims[l])
                        for l, (x, y) in enumerate(zip(W, self._W)))
                and all(x is y and x.flags.writeable and x.shape == (dims[l + 1], 1)
                        for l, (x, y) in enumerate(zip(b, self._b))))

    def run(self, X, Y, learning_rate, l2=0.0, timings=None):
        """Forward, cost, backward and update; see the compiled ``TrainingStep.run``."""
        m, L, dims, dtype = self._m, len(self._W), self.layer_dims, self.dtype
        if not isinstance(X, np.ndarray) or X.dtype != dtype:
            raise TypeError(f"X must be a numpy.ndarray of dtype {dtype}")
        if not isinstance(Y, np.ndarray) or Y.dtype != dtype:
            raise TypeError(f"Y must be a numpy.ndarray of dtype {dtype}")
        if X.shape != (dims[0], m):
            raise ValueError(f"X must have shape ({dims[0]}, {m}); got {X.shape}")
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            raise ValueError("X must be C- or F-contiguous; got a strided view")
        if Y.shape != (dims[-1], m) or not Y.flags.c_contiguous:
            raise ValueError(f"Y must be a C-contiguous ({dims[-1]}, {m}) array; got {Y.shape}")
        if timings is not None and (not isinstance(timings, np.ndarray) or timings.shape != (L, 6)
                                    or timings.dtype != np.float64):
            raise ValueError(f"timings must be a float64 ({L}, 6) array")
        W, b, Z, A, D, db, acts = self._W, self._b, self._Z, self._A, self._D, self._db, self._activations
        inv_m = 1.0 / m
        t = perf_counter() if timings is not None else 0.0

        def lap(layer, block):
            nonlocal t
            if timings is not None:
                now = perf_counter()
                timings[layer, block] += now - t
                t = now

        A_prev = X
        for l in range(L):
            np.matmul(W[l], A_prev, out=Z[l])
            lap(l, _LINEAR)
            Z[l] += b[l]
            _activate(Z[l], acts[l], A[l])
            if l < L - 1:
                lap(l, _ACTIVATION)
            A_prev = A[l]
        cost = sigmoid_cross_entropy(Z[-1], A[-1], Y, D[-1], db[-1], inv_m)
        if l2:
            cost += 0.5 * l2 * inv_m * sum(float(np.vdot(w, w)) for w in W)
        lap(L - 1, _ACTIVATION)
        if not math.isfinite(cost):
            return cost
        for l in range(L - 1, -1, -1):
            if l < L - 1:
                activation_backward(D[l], Z[l], A[l], acts[l], D[l], db[l], inv_m)
                lap(l, _MASK)
            A_prev = X if l == 0 else A[l - 1]
            if l > 0:
                np.matmul(W[l].T, D[l], out=D[l - 1])
                lap(l, _DA)
            dW = D[l] @ A_prev.T
            dW *= inv_m
            if l2:
                dW += (l2 * inv_m) * W[l]
            lap(l, _DW)
            w, bias = W[l], b[l]  # in place: the caller's arrays
            w -= learning_rate * dW
            bias -= learning_rate * db[l]
            lap(l, _UPDATE)
        return cost


def make_training_step(W, b, activations, m, block_columns=None):
    """Build a :class:`TrainingStep` (the NumPy backend's whole-step kernel)."""
    return TrainingStep(W, b, activations, m, block_columns)
