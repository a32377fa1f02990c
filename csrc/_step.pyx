"""One whole gradient-descent training step in a single compiled call.

The per-layer kernels cost a Python call, an argument parse and a typed
memoryview acquisition per array, a few microseconds each. For a small network
(the benchmark's ``tabular``, a 64-example mini-batch) that overhead is as large
as the arithmetic, so :class:`TrainingStep` resolves everything once: it keeps
raw pointers to the parameters and to its own buffers, and :meth:`TrainingStep.run`
does forward, cost, backward and update inside one ``nogil`` block, calling BLAS
directly. Per call it only checks, in O(1), that it was given the arrays it was
built for.

It also keeps fewer buffers than the per-layer path (whose caches are the
course's Z and A of every layer):

* a hidden layer keeps only A = g(Z); g' is taken from A (relu: A > 0 is
  Z > 0; tanh: 1 - A^2; sigmoid: A (1 - A)) and dZ is then written over A,
  whose last use that is;
* the output layer's logits are turned into dZ = sigmoid(Z) - Y in the pass
  that computes the cost, in the same buffer;
* one scratch buffer, as large as the largest hidden layer, receives each
  dA = W^T dZ in turn.

So a step holds ``sum(n[1:L]) + max(n[1:L]) + n[L]`` rows of m values, against
three times ``sum(n[1:])`` for Z, A and dA/dZ of every layer.

For large batches the scratch is a third of that, so once the full dA would
pass :data:`FULL_SCRATCH_BYTES`, dA is formed in two or more column blocks
of at most :data:`BLOCK_SCRATCH_BYTES`, each masked into dZ straight away.
dZ[l-1] is written over A[l-1] block by block, so W[l] is updated (by the
fused dW GEMM) before the first block, and the blocks read a copy of its
forward-pass values (a buffer the size of W[l]). A
1024-1024-1024-1 network over 4096 examples then holds 88 MiB instead of
96 MiB (the NumPy step: 192).
"""

cimport numpy as cnp
from cython cimport floating
from libc.limits cimport INT_MAX
from libc.math cimport isfinite
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np

from dnnblocks._validation import check_block_columns

from _blas cimport gemm_rowmajor, leading_dim
from _passes cimport (
    bias_activation, bias_activation_dot, mask_rowsum, mask_rowsum_columns, output_backward_mask,
    scaled_add, sigmoid_output, sum_squares,
)
from _scalar_math cimport activation_code, SIGMOID

cnp.import_array()

# Blocks of a step, the columns of the timing table (see dnnblocks.profiling).
cdef enum:
    B_LINEAR = 0      # Z = W A_prev (GEMM)
    B_ACTIVATION = 1  # + b and g(Z); output layer: + b, sigmoid, cost, dZ, db
    B_MASK = 2        # dZ = dA * g'(Z) and db (hidden layers)
    B_DA = 3          # dA_prev = W^T dZ (GEMM; not for the first layer)
    B_DW = 4          # W <- shrink W - (lr/m) dZ A_prev^T (GEMM with the update fused)
    B_UPDATE = 5      # b <- b - lr db
    N_BLOCKS = 6

#: Names of the timed blocks, in the order of the columns of ``timings``.
BLOCKS = ("linear", "activation", "mask_rowsum", "dA_gemm", "dW_gemm", "update")

#: Largest dA (bytes) formed in one piece; beyond it, in column blocks.
FULL_SCRATCH_BYTES = 8 << 20
#: Largest column block of dA (bytes); there are at least two blocks.
BLOCK_SCRATCH_BYTES = 16 << 20


cdef struct Layer:
    int n          # units of this layer
    int k          # units of the previous layer
    int code       # activation code
    void *W        # (n, k) parameters, updated in place
    void *b        # (n, 1)
    void *A        # (n, m): A = g(Z), later dZ (hidden); logits, later dZ (output)
    void *db       # (n,)


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


cdef inline double _lap(double *timings, int layer, int block, double start) noexcept nogil:
    """Adds the time since `start` to timings[layer, block]; returns now."""
    cdef double now
    if timings == NULL:
        return 0
    now = _now()
    timings[layer * N_BLOCKS + block] += now - start
    return now


cdef double _step(
    Layer *layers, int L, int m, floating *scratch, int block, floating *w_old, double *row_sums,
    const floating *X, bint x_f, const floating *Y,
    double learning_rate, double l2, bint *updated, double *timings,
) noexcept nogil:
    cdef int l, n, k, j0, cols
    cdef Layer *lay
    cdef const floating *A_prev = X
    cdef bint prev_f = x_f
    cdef double inv_m = 1.0 / m, cost, sq
    cdef double t = _now() if timings != NULL else 0
    cdef floating shrink = <floating> (1.0 - learning_rate * l2 * inv_m)
    cdef floating step = <floating> (-learning_rate * inv_m)
    cdef floating neg_lr = <floating> (-learning_rate)
    cdef Py_ssize_t i, count

    # A one-unit output layer (binary classification) has its three products
    # (a GEMV forward, an outer product and a GEMV backward) fused into the
    # passes over the last hidden layer, which read the same rows anyway.
    cdef bint fuse_out = L >= 2 and layers[L - 1].n == 1
    cdef int last_gemm = L - 2 if fuse_out else L - 1

    # Forward. An F-ordered X is row-major (m, n0) data: a transpose flag.
    for l in range(last_gemm + 1):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        gemm_rowmajor(False, prev_f, n, m, k, <floating> 1, <floating *> lay.W, leading_dim(k),
                      A_prev, leading_dim(k if prev_f else m),
                      <floating> 0, <floating *> lay.A, leading_dim(m))
        t = _lap(timings, l, B_LINEAR, t)
        if fuse_out and l == L - 2:
            bias_activation_dot(lay.code, n, m, <floating *> lay.b, <floating *> lay.A,
                                <floating *> layers[L - 1].W, <floating *> layers[L - 1].A)
            t = _lap(timings, l, B_ACTIVATION, t)
        elif l < L - 1:
            bias_activation(lay.code, n, m, <floating *> lay.b, <floating *> lay.A, <floating *> lay.A)
            t = _lap(timings, l, B_ACTIVATION, t)
        A_prev = <floating *> lay.A
        prev_f = False

    # Output layer: bias, sigmoid, cost, dZ = A - Y and db in one pass.
    lay = &layers[L - 1]
    cost = sigmoid_output(lay.n, m, <floating *> lay.b, <floating *> lay.A, Y,
                          <floating *> lay.db, inv_m) * inv_m
    if l2 != 0:
        sq = 0
        for l in range(L):
            sq += sum_squares(<floating *> layers[l].W, <Py_ssize_t> layers[l].n * layers[l].k)
        cost += 0.5 * l2 * inv_m * sq
    t = _lap(timings, L - 1, B_ACTIVATION, t)
    if not isfinite(cost):
        updated[0] = False
        return cost

    # Backward, from dZ[L] in the output buffer. Each layer's dA_prev is formed
    # with the weights of the forward pass, then the update is fused into the
    # dW GEMM (beta scales W, alpha carries the step: dW is never stored).
    if fuse_out:
        lay = &layers[L - 1]
        output_backward_mask(layers[L - 2].code, lay.k, m, <floating *> layers[L - 2].A,
                             <floating *> lay.A, <floating *> lay.W, shrink, step,
                             <floating *> layers[L - 2].db, inv_m)
        t = _lap(timings, L - 2, B_MASK, t)
        scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, lay.n)
        t = _lap(timings, L - 1, B_UPDATE, t)
    for l in range(last_gemm, -1, -1):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        if l > 0 and block < m:
            # dA in column blocks (see the module docstring). W[l] is updated
            # first, by the fused dW GEMM while A[l-1] is intact; the blocks
            # of dA = W^T dZ then read a copy of the forward pass's W[l].
            memcpy(w_old, lay.W, <size_t> n * k * sizeof(floating))
            gemm_rowmajor(False, True, n, k, m, step, <floating *> lay.A, leading_dim(m),
                          <floating *> layers[l - 1].A, leading_dim(m),
                          shrink, <floating *> lay.W, leading_dim(k))
            t = _lap(timings, l, B_DW, t)
            scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, n)
            t = _lap(timings, l, B_UPDATE, t)
            for i in range(k):
                row_sums[i] = 0
            j0 = 0
            while j0 < m:
                cols = block if block <= m - j0 else m - j0
                gemm_rowmajor(True, False, k, cols, n, <floating> 1, w_old, leading_dim(k),
                              (<floating *> lay.A) + j0, leading_dim(m),
                              <floating> 0, scratch, leading_dim(cols))
                t = _lap(timings, l, B_DA, t)
                mask_rowsum_columns(layers[l - 1].code, k, cols, scratch, cols,
                                    (<floating *> layers[l - 1].A) + j0, m, row_sums)
                t = _lap(timings, l - 1, B_MASK, t)
                j0 += cols
            for i in range(k):
                (<floating *> layers[l - 1].db)[i] = <floating> (row_sums[i] * inv_m)
            t = _lap(timings, l - 1, B_MASK, t)
            continue
        if l > 0:
            A_prev = <floating *> layers[l - 1].A
            prev_f = False
            gemm_rowmajor(True, False, k, m, n, <floating> 1, <floating *> lay.W, leading_dim(k),
                          <floating *> lay.A, leading_dim(m), <floating> 0, scratch, leading_dim(m))
            t = _lap(timings, l, B_DA, t)
        else:
            A_prev = X
            prev_f = x_f
        gemm_rowmajor(False, not prev_f, n, k, m, step, <floating *> lay.A, leading_dim(m),
                      A_prev, leading_dim(k if prev_f else m),
                      shrink, <floating *> lay.W, leading_dim(k))
        t = _lap(timings, l, B_DW, t)
        scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, n)
        t = _lap(timings, l, B_UPDATE, t)
        if l > 0:
            # dZ[l-1] = dA[l-1] * g'(A[l-1]), written over A[l-1] (its last use).
            mask_rowsum(layers[l - 1].code, k, m, scratch, <floating *> NULL,
                        <floating *> layers[l - 1].A, <floating *> layers[l - 1].A,
                        <floating *> layers[l - 1].db, inv_m)
            t = _lap(timings, l - 1, B_MASK, t)
    updated[0] = True
    return cost


cdef inline cnp.ndarray _require(object arr, str name, int typenum):
    # O(1) checks through the NumPy C API: this runs on every step.
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(arr).__name__}")
    if cnp.PyArray_TYPE(<cnp.ndarray> arr) != typenum:
        raise TypeError(f"{name} must have dtype {cnp.PyArray_DescrFromType(typenum)}; "
                        f"got {(<cnp.ndarray> arr).dtype}")
    return <cnp.ndarray> arr


cdef class TrainingStep:
    """A gradient-descent training step of one network at one batch size.

    Built once per (network, batch size); :meth:`run` is then one call per step.

    Parameters
    ----------
    W, b : sequence of ndarray
        The network's parameters, ``W[l]`` of shape (n[l+1], n[l]) and ``b[l]``
        of shape (n[l+1], 1), C-contiguous, all float32 or all float64. They
        are updated in place by :meth:`run`; the step holds references to
        these very arrays (a caller that may replace them checks :meth:`uses`
        first, as ``Network.step`` does).
    activations : sequence of str
        One per layer; hidden layers "relu", "tanh", "sigmoid" or "identity",
        the last one "sigmoid" (binary cross-entropy output).
    m : int
        The batch size (examples per step).
    block_columns : int, optional
        Columns per block when dA = W^T dZ is formed in column blocks (see
        the module docstring). Default: all m columns at once unless that
        dA would exceed :data:`FULL_SCRATCH_BYTES`, else blocks of about
        :data:`BLOCK_SCRATCH_BYTES`. Only memory and speed depend on it.
    """

    cdef Layer *layers
    cdef int L
    cdef int m
    cdef int n0
    cdef int nL
    cdef int typenum
    cdef void *scratch
    cdef int block
    cdef void *w_old
    cdef double *row_sums
    cdef tuple _W
    cdef tuple _b
    cdef tuple _buffers
    cdef readonly object dtype
    cdef readonly tuple layer_dims

    def __cinit__(self, W, b, activations, Py_ssize_t m, block_columns=None):
        self.layers = NULL

    def __init__(self, W, b, activations, Py_ssize_t m, block_columns=None):
        W = tuple(W)
        b = tuple(b)
        activations = tuple(activations)
        cdef int L = len(W)
        if L == 0 or len(b) != L or len(activations) != L:
            raise ValueError(
                f"W, b and activations must have one entry per layer; got {len(W)}, {len(b)}, "
                f"{len(activations)}"
            )
        if activations[L - 1] != "sigmoid":
            raise ValueError(f"the output activation must be 'sigmoid'; got {activations[L - 1]!r}")
        if m < 1 or m > INT_MAX:
            raise ValueError(f"m must be between 1 and {INT_MAX}; got {m}")
        dtype = np.asarray(W[0]).dtype
        if dtype != np.float64 and dtype != np.float32:
            raise TypeError(f"W[0] must be float32 or float64; got {dtype}")
        cdef int typenum = cnp.NPY_DOUBLE if dtype == np.float64 else cnp.NPY_FLOAT
        dims = [np.asarray(W[0]).shape[1] if np.asarray(W[0]).ndim == 2 else -1]
        cdef cnp.ndarray w, bias
        for l in range(L):
            w = _require(W[l], f"W[{l}]", typenum)
            bias = _require(b[l], f"b[{l}]", typenum)
            if w.ndim != 2 or w.shape[1] != dims[l] or not w.flags.c_contiguous or not w.flags.writeable:
                raise ValueError(f"W[{l}] must be a writeable C-contiguous array with {dims[l]} columns; "
                                 f"got shape {W[l].shape}")
            if w.shape[0] < 1 or w.shape[0] > INT_MAX or w.shape[1] > INT_MAX:
                raise ValueError(f"W[{l}] has shape {W[l].shape}, outside 1..{INT_MAX}")
            if (bias.ndim != 2 or bias.shape[0] != w.shape[0] or bias.shape[1] != 1
                    or not bias.flags.c_contiguous or not bias.flags.writeable):
                raise ValueError(f"b[{l}] must be a writeable C-contiguous ({w.shape[0]}, 1) array; "
                                 f"got shape {b[l].shape}")
            if l < L - 1:
                activation_code(activations[l])  # raises on an unknown name
            dims.append(w.shape[0])
        self.dtype = dtype
        self.layer_dims = tuple(int(d) for d in dims)
        self.L = L
        self.m = <int> m
        self.n0 = dims[0]
        self.nL = dims[L]
        self.typenum = typenum
        self._W = W
        self._b = b

        # Layers 1..last_gemm form dA with a GEMM (a one-unit output layer's
        # dA is fused into a pass, see _step), so only they need the scratch.
        last_gemm = L - 2 if L >= 2 and dims[L] == 1 else L - 1
        widest = max(dims[1:last_gemm + 1], default=0)
        itemsize = dtype.itemsize
        block_columns = check_block_columns(block_columns)
        if block_columns is None:
            # Few, large blocks: each block re-packs W[l] in BLAS and splits
            # the GEMM across threads anew. Measured with 2 threads, against
            # the same step in one block: 1024-1024-1024-1 over 4096 examples,
            # 2 blocks +0.4% (float64) and +1.2% (float32), 8 blocks +6%;
            # 64-800-400-1 over 3000, 2 blocks +3%. That buys 8-16 MiB and,
            # for larger batches, keeps the scratch from growing with m.
            block = m
            full = widest * m * itemsize
            if full > FULL_SCRATCH_BYTES:
                n_blocks = max(2, -(-full // BLOCK_SCRATCH_BYTES))
                block = -(-m // n_blocks)
        else:
            block = min(m, block_columns)

        # Buffers as NumPy arrays: they show up in memory accounting
        # (tracemalloc) like any other allocation, and are freed with the step.
        acts = [np.empty((n, m), dtype=dtype) for n in dims[1:]]
        scratch = np.empty((widest, block), dtype=dtype)
        dbs = [np.empty(n, dtype=dtype) for n in dims[1:]]
        blocked = block < m and widest > 0
        w_old = np.empty(max((dims[l + 1] * dims[l] for l in range(1, last_gemm + 1)), default=0)
                         if blocked else 0, dtype=dtype)
        row_sums = np.empty(widest if blocked else 0, dtype=np.float64)
        self._buffers = tuple(acts) + (scratch,) + tuple(dbs) + (w_old, row_sums)
        self.block = block
        self.w_old = cnp.PyArray_DATA(<cnp.ndarray> w_old)
        self.row_sums = <double *> cnp.PyArray_DATA(<cnp.ndarray> row_sums)

        self.layers = <Layer *> calloc(L, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        for l in range(L):
            self.layers[l].n = dims[l + 1]
            self.layers[l].k = dims[l]
            self.layers[l].code = SIGMOID if l == L - 1 else activation_code(activations[l])
            self.layers[l].W = cnp.PyArray_DATA(<cnp.ndarray> W[l])
            self.layers[l].b = cnp.PyArray_DATA(<cnp.ndarray> b[l])
            self.layers[l].A = cnp.PyArray_DATA(<cnp.ndarray> acts[l])
            self.layers[l].db = cnp.PyArray_DATA(<cnp.ndarray> dbs[l])
        self.scratch = cnp.PyArray_DATA(<cnp.ndarray> scratch)

    def __dealloc__(self):
        free(self.layers)

    @property
    def batch_size(self):
        """The number of examples m this step was built for."""
        return self.m

    @property
    def block_columns(self):
        """Columns per block of the backward dA product (m: one block)."""
        return self.block

    @property
    def nbytes(self):
        """Bytes held in buffers between steps (not counting the parameters)."""
        return sum(a.nbytes for a in self._buffers)

    cdef bint _params_intact(self):
        """Whether the parameter arrays still are what the raw pointers were taken from.

        False once one of them was made read-only, reshaped or resized in
        place (``a.flags.writeable = False``, ``a.shape = ...``,
        ``a.resize(..., refcheck=False)``, which moves its data): O(L) pointer
        and flag compares, so writing through a stale pointer is never possible.
        """
        cdef int l
        cdef cnp.ndarray w, bias
        for l in range(self.L):
            w = <cnp.ndarray> self._W[l]
            bias = <cnp.ndarray> self._b[l]
            if (cnp.PyArray_DATA(w) != self.layers[l].W or cnp.PyArray_DATA(bias) != self.layers[l].b
                    or not cnp.PyArray_ISWRITEABLE(w) or not cnp.PyArray_ISWRITEABLE(bias)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(w) or not cnp.PyArray_IS_C_CONTIGUOUS(bias)
                    or cnp.PyArray_NDIM(w) != 2 or cnp.PyArray_NDIM(bias) != 2
                    or cnp.PyArray_DIM(w, 0) != self.layers[l].n or cnp.PyArray_DIM(w, 1) != self.layers[l].k
                    or cnp.PyArray_DIM(bias, 0) != self.layers[l].n or cnp.PyArray_DIM(bias, 1) != 1):
                return False
        return True

    def uses(self, W, b):
        """Whether `W` and `b` hold the very arrays this step was built with, still usable.

        False too when one of them was made read-only, reshaped or resized in
        place since: the step must then be rebuilt (and the arrays checked).
        """
        cdef int l
        if len(W) != self.L or len(b) != self.L:
            return False
        for l in range(self.L):
            if W[l] is not self._W[l] or b[l] is not self._b[l]:
                return False
        return self._params_intact()

    def run(self, X, Y, double learning_rate, double l2=0.0, timings=None):
        """Forward, cost, backward and the gradient-descent update of W and b.

        Parameters
        ----------
        X : (n[0], m) C- or F-contiguous array of the step's dtype
        Y : (n[L], m) C-contiguous array of labels in {0, 1}
        learning_rate : float
        l2 : float, default 0
            L2 strength lambda: the cost gains (lambda / 2m) sum ||W||^2 and
            the update shrinks W by (1 - learning_rate * lambda / m).
        timings : None or float64 array of shape (L, 6), C-contiguous
            When given, the seconds spent in each block of each layer are
            *added* to it (columns as in :data:`BLOCKS`).

        Returns
        -------
        cost : float
            Cross-entropy (plus the L2 term) before the update. When it is not
            finite nothing is updated.
        """
        cdef cnp.ndarray x = _require(X, "X", self.typenum)
        cdef cnp.ndarray y = _require(Y, "Y", self.typenum)
        if not self._params_intact():
            raise ValueError("W and b were made read-only, reshaped or resized in place since this "
                             "step was built; build a new step")
        cdef int L = self.L, m = self.m
        if x.ndim != 2 or x.shape[0] != self.n0 or x.shape[1] != m:
            raise ValueError(f"X must have shape ({self.n0}, {m}); got {X.shape}")
        cdef bint x_f = not cnp.PyArray_IS_C_CONTIGUOUS(x)
        if x_f and not cnp.PyArray_IS_F_CONTIGUOUS(x):
            raise ValueError("X must be C- or F-contiguous; got a strided view")
        if (y.ndim != 2 or y.shape[0] != self.nL or y.shape[1] != m
                or not cnp.PyArray_IS_C_CONTIGUOUS(y)):
            raise ValueError(f"Y must be a C-contiguous ({self.nL}, {m}) array; got {Y.shape}")
        cdef double *t = NULL
        cdef cnp.ndarray tt
        if timings is not None:
            tt = _require(timings, "timings", cnp.NPY_DOUBLE)
            if (tt.ndim != 2 or tt.shape[0] != L or tt.shape[1] != N_BLOCKS
                    or not cnp.PyArray_IS_C_CONTIGUOUS(tt) or not tt.flags.writeable):
                raise ValueError(f"timings must be a C-contiguous float64 ({L}, {N_BLOCKS}) array")
            t = <double *> cnp.PyArray_DATA(tt)
        cdef bint updated = False
        cdef double cost
        cdef void *xp = cnp.PyArray_DATA(x)
        cdef void *yp = cnp.PyArray_DATA(y)
        if self.typenum == cnp.NPY_DOUBLE:
            with nogil:
                cost = _step(self.layers, L, m, <double *> self.scratch, self.block,
                             <double *> self.w_old, self.row_sums, <double *> xp, x_f,
                             <double *> yp, learning_rate, l2, &updated, t)
        else:
            with nogil:
                cost = _step(self.layers, L, m, <float *> self.scratch, self.block,
                             <float *> self.w_old, self.row_sums, <float *> xp, x_f,
                             <float *> yp, learning_rate, l2, &updated, t)
        return cost


def make_training_step(W, b, activations, m, block_columns=None):
    """Build a :class:`TrainingStep` (the compiled backend's whole-step kernel)."""
    return TrainingStep(W, b, activations, m, block_columns)
