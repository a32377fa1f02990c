"""Full-batch training through the Gram matrix of a fixed, wide input.

With a fixed input X (n0 x m) and an update that is linear in the gradient
(gradient descent, momentum, L2 weight decay), the first layer's weights
stay of the form

    W1(t) = s(t) W1(0) + C(t) X^T            (C: n1 x m, s: a scalar)

because every gradient dW1 = dZ1 X^T / m is a multiple of X^T. So

    Z1 = W1 X + b1 = s P0 + C G + b1,   P0 = W1(0) X,   G = X^T X (m x m),

with P0 and G computed once, and the update of W1 is an update of C:
gradient descent with L2 is C <- shrink C - (lr/m) dZ1, s <- shrink s;
momentum keeps its velocity in the same coordinates (a matrix beside C, a
scalar beside s). A step then costs 2 n1 m^2 for the first layer instead of
the 4 n1 n0 m of its two products with X; when n0 >> m that is the whole
difference between a step at the GEMM bound and one far below it. W1 is
formed (s W1(0) + C X^T) only when it is read.

The other layers run as in the whole-step routine (``_step.pyx``): a GEMM and
one fused bias + activation pass forward, the output layer's bias, sigmoid,
cost and dZ in one pass, and backward dA = W^T dZ before the update, with
plain gradient descent fused into the dW GEMM.

:class:`GramTraining` runs many iterations in one ``nogil`` call. Its
arguments are validated by :mod:`dnnblocks.wide` before they get here; this
module re-checks, in O(L), only what a wrong call could turn into a bad
memory access (types, dtypes, shapes, contiguity).
"""

cimport numpy as cnp
from cython cimport floating
from libc.limits cimport INT_MAX
from libc.math cimport isfinite
from libc.stdlib cimport calloc, free

import numpy as np

from _blas cimport gemm_rowmajor, leading_dim
from _passes cimport (
    bias_activation, mask_rowsum, momentum_step, scaled_add, sigmoid_output, sum_squares,
)
from _scalar_math cimport activation_code, SIGMOID

cnp.import_array()


cdef struct Layer:
    int n          # units of this layer
    int k          # units of the previous layer (the first layer: unused, see GramState)
    int code       # activation code
    void *W        # (n, k) parameters, updated in place (not used for the first layer)
    void *b        # (n, 1)
    void *A        # (n, m): Z, then A = g(Z), then dZ
    void *db       # (n,)
    void *dW       # (n, k) gradient (momentum only)
    void *vW       # (n, k) velocity of W (momentum only)
    void *vb       # (n,) velocity of b (momentum only)


cdef struct GramState:
    # W1 = s W1(0) + C X^T; its velocity is vs W1(0) + VC X^T.
    double s
    double vs
    double w0_sq   # ||W1(0)||_F^2, for the L2 term of the cost
    void *P0       # (n1, m) W1(0) X
    void *G        # (m, m) X^T X
    void *C        # (n1, m)
    void *VC       # (n1, m), momentum only


cdef inline double _dot(const floating *x, const floating *y, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    cdef double total = 0
    for j in range(count):
        total += <double> x[j] * y[j]
    return total


cdef inline void _scaled_copy(floating *out, const floating *x, floating alpha, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(count):
        out[j] = alpha * x[j]


cdef inline void _scale_add(floating *x, floating shrink, const floating *g, floating alpha,
                            Py_ssize_t count) noexcept nogil:
    """x = shrink * x + alpha * g."""
    cdef Py_ssize_t j
    for j in range(count):
        x[j] = shrink * x[j] + alpha * g[j]


cdef int _train(
    GramState *st, Layer *layers, int L, int m, floating *scratch, const floating *Y,
    double learning_rate, double l2, bint momentum, double beta, int iterations, double *costs,
) noexcept nogil:
    """`iterations` full-batch steps; returns how many completed.

    costs[i] receives the cost before step i (cross-entropy plus the L2
    term). A step whose cost is not finite updates nothing and ends the run:
    the return value is then its index.
    """
    cdef int it, l, n, k
    cdef int n1 = layers[0].n
    cdef Py_ssize_t first_size = <Py_ssize_t> n1 * m
    cdef Layer *lay
    cdef Layer *prev
    cdef double inv_m = 1.0 / m, wd = l2 / m, cost, sq
    cdef floating shrink = <floating> (1.0 - learning_rate * l2 * inv_m)
    cdef floating step = <floating> (-learning_rate * inv_m)
    cdef floating neg_lr = <floating> (-learning_rate)
    cdef floating lr = <floating> learning_rate
    cdef floating b_f = <floating> beta
    cdef floating omb_f = <floating> (1.0 - beta)
    cdef floating wd_f = <floating> wd
    cdef floating inv_m_f = <floating> inv_m
    cdef floating *Z1 = <floating *> layers[0].A
    cdef const floating *P0 = <floating *> st.P0
    cdef const floating *G = <floating *> st.G
    cdef floating *C = <floating *> st.C

    for it in range(iterations):
        # First layer: Z1 = s P0 + C G (the GEMM accumulates onto s P0).
        _scaled_copy(Z1, P0, <floating> st.s, first_size)
        gemm_rowmajor(False, False, n1, m, m, <floating> 1, C, leading_dim(m), G, leading_dim(m),
                      <floating> 1, Z1, leading_dim(m))
        sq = 0
        if l2 != 0:
            # ||s W0 + C X^T||^2 = s^2 ||W0||^2 + 2 s <P0, C> + <C G, C>, and
            # Z1 (before its bias) is s P0 + C G: two dot products.
            sq = st.s * st.s * st.w0_sq + st.s * _dot(P0, C, first_size) + _dot(Z1, C, first_size)
        if L > 1:
            bias_activation(layers[0].code, n1, m, <floating *> layers[0].b, Z1, Z1)

        for l in range(1, L):
            lay = &layers[l]
            gemm_rowmajor(False, False, lay.n, m, lay.k, <floating> 1, <floating *> lay.W,
                          leading_dim(lay.k), <floating *> layers[l - 1].A, leading_dim(m),
                          <floating> 0, <floating *> lay.A, leading_dim(m))
            if l < L - 1:
                bias_activation(lay.code, lay.n, m, <floating *> lay.b, <floating *> lay.A,
                                <floating *> lay.A)

        # Output layer: bias, sigmoid, cost, dZ = A - Y and db in one pass.
        lay = &layers[L - 1]
        cost = sigmoid_output(lay.n, m, <floating *> lay.b, <floating *> lay.A, Y,
                              <floating *> lay.db, inv_m) * inv_m
        if l2 != 0:
            for l in range(1, L):
                sq += sum_squares(<floating *> layers[l].W, <Py_ssize_t> layers[l].n * layers[l].k)
            cost += 0.5 * l2 * inv_m * sq
        costs[it] = cost
        if not isfinite(cost):
            return it

        # Backward: dA_prev with the forward pass's weights, then the update.
        for l in range(L - 1, 0, -1):
            lay = &layers[l]
            prev = &layers[l - 1]
            n = lay.n
            k = lay.k
            gemm_rowmajor(True, False, k, m, n, <floating> 1, <floating *> lay.W, leading_dim(k),
                          <floating *> lay.A, leading_dim(m), <floating> 0, scratch, leading_dim(m))
            if momentum:
                gemm_rowmajor(False, True, n, k, m, inv_m_f, <floating *> lay.A, leading_dim(m),
                              <floating *> prev.A, leading_dim(m), <floating> 0,
                              <floating *> lay.dW, leading_dim(k))
                momentum_step(<floating *> lay.W, <floating *> lay.dW, <floating *> lay.vW,
                              <Py_ssize_t> n * k, <floating> 1, lr, b_f, omb_f, wd_f)
                momentum_step(<floating *> lay.b, <floating *> lay.db, <floating *> lay.vb,
                              n, <floating> 1, lr, b_f, omb_f, <floating> 0)
            else:
                gemm_rowmajor(False, True, n, k, m, step, <floating *> lay.A, leading_dim(m),
                              <floating *> prev.A, leading_dim(m), shrink,
                              <floating *> lay.W, leading_dim(k))
                scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, n)
            # dZ[l-1] = dA[l-1] * g'(A[l-1]), written over A[l-1] (its last use).
            mask_rowsum(prev.code, k, m, scratch, <floating *> NULL, <floating *> prev.A,
                        <floating *> prev.A, <floating *> prev.db, inv_m)

        # First layer: dW1 = dZ1 X^T / m is an update of C (and s).
        lay = &layers[0]
        if momentum:
            momentum_step(C, Z1, <floating *> st.VC, first_size, inv_m_f, lr, b_f, omb_f, wd_f)
            # W1(0)'s coordinate: its gradient is the L2 term alone, wd * s.
            st.vs = beta * st.vs + (1.0 - beta) * (wd * st.s)
            st.s = st.s - learning_rate * st.vs
            momentum_step(<floating *> lay.b, <floating *> lay.db, <floating *> lay.vb,
                          n1, <floating> 1, lr, b_f, omb_f, <floating> 0)
        else:
            _scale_add(C, shrink, Z1, step, first_size)
            st.s = st.s * shrink
            scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, n1)
    return iterations


cdef void _first_layer_products(
    const floating *W0, const floating *X, bint x_f, int n1, int n0, int m,
    floating *P0, floating *G,
) noexcept nogil:
    """P0 = W0 X and G = X^T X; an F-ordered X is row-major (m, n0) data."""
    if x_f:
        gemm_rowmajor(False, True, n1, m, n0, <floating> 1, W0, leading_dim(n0), X, leading_dim(n0),
                      <floating> 0, P0, leading_dim(m))
        gemm_rowmajor(False, True, m, m, n0, <floating> 1, X, leading_dim(n0), X, leading_dim(n0),
                      <floating> 0, G, leading_dim(m))
    else:
        gemm_rowmajor(False, False, n1, m, n0, <floating> 1, W0, leading_dim(n0), X, leading_dim(m),
                      <floating> 0, P0, leading_dim(m))
        gemm_rowmajor(True, False, m, m, n0, <floating> 1, X, leading_dim(m), X, leading_dim(m),
                      <floating> 0, G, leading_dim(m))


cdef void _materialise(
    const floating *W0, double s, const floating *C, const floating *X, bint x_f,
    int n1, int n0, int m, floating *out,
) noexcept nogil:
    """out = s W0 + C X^T (n1 x n0)."""
    _scaled_copy(out, W0, <floating> s, <Py_ssize_t> n1 * n0)
    if x_f:
        gemm_rowmajor(False, False, n1, n0, m, <floating> 1, C, leading_dim(m), X, leading_dim(n0),
                      <floating> 1, out, leading_dim(n0))
    else:
        gemm_rowmajor(False, True, n1, n0, m, <floating> 1, C, leading_dim(m), X, leading_dim(m),
                      <floating> 1, out, leading_dim(n0))


cdef inline cnp.ndarray _require(object arr, str name, int typenum, tuple shape, bint writeable):
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(arr).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray> arr
    if cnp.PyArray_TYPE(a) != typenum:
        raise TypeError(f"{name} must have dtype {cnp.PyArray_DescrFromType(typenum)}; got {arr.dtype}")
    if arr.shape != shape or not arr.flags.c_contiguous or (writeable and not arr.flags.writeable):
        what = "a writeable C-contiguous" if writeable else "a C-contiguous"
        raise ValueError(f"{name} must be {what} array of shape {shape}; got shape {arr.shape}")
    return a


cdef class GramTraining:
    """Full-batch training of one network on one fixed input, by the Gram route.

    Built once per (network, X, Y, l2, optimizer); :meth:`run` then performs
    any number of iterations in one compiled call, and :meth:`first_layer`
    forms W1 when it is read.

    Parameters
    ----------
    W, b : sequence of ndarray
        ``W[l]`` of shape (n[l+1], n[l]) and ``b[l]`` of shape (n[l+1], 1),
        C-contiguous, writeable, all float32 or all float64. ``W[1:]`` and
        every ``b`` are updated in place by :meth:`run`; ``W[0]`` is read once
        (copied as W1(0)) and written only by :meth:`first_layer`.
    activations : sequence of str
        One per layer; hidden layers "relu", "tanh", "sigmoid" or "identity",
        the last one "sigmoid".
    X : (n[0], m) C- or F-contiguous array of the dtype
        Read at construction (P0 and G) and by :meth:`first_layer`; it must
        not change while this object is in use.
    Y : (n[L], m) C-contiguous array of labels in {0, 1}, of the dtype
    l2 : float
        L2 strength lambda (weights only).
    momentum : bool
    beta : float
        Momentum's beta (ignored without momentum).
    """

    cdef Layer *layers
    cdef GramState st
    cdef int L, m, n0, n1, typenum
    cdef bint x_f, momentum
    cdef double l2, beta
    cdef object _X, _Y, _W0
    cdef tuple _W, _b, _buffers
    cdef void *scratch
    cdef readonly object dtype

    def __cinit__(self, *args, **kwargs):
        self.layers = NULL

    def __init__(self, W, b, activations, X, Y, double l2=0.0, bint momentum=False, double beta=0.0):
        W = tuple(W)
        b = tuple(b)
        activations = tuple(activations)
        cdef int L = len(W)
        if L == 0 or len(b) != L or len(activations) != L:
            raise ValueError(f"W, b and activations must have one entry per layer; got {len(W)}, "
                             f"{len(b)}, {len(activations)}")
        if activations[L - 1] != "sigmoid":
            raise ValueError(f"the output activation must be 'sigmoid'; got {activations[L - 1]!r}")
        for l in range(L - 1):
            activation_code(activations[l])  # raises on an unknown name
        if not cnp.PyArray_Check(W[0]) or W[0].dtype not in (np.float32, np.float64):
            raise TypeError("W[0] must be a float32 or float64 numpy.ndarray")
        dtype = W[0].dtype
        cdef int typenum = cnp.NPY_DOUBLE if dtype == np.float64 else cnp.NPY_FLOAT
        if not cnp.PyArray_Check(X) or X.ndim != 2:
            raise TypeError("X must be a 2-D numpy.ndarray")
        cdef Py_ssize_t n0 = X.shape[0], m = X.shape[1]
        if not (1 <= m <= INT_MAX and 1 <= n0 <= INT_MAX):
            raise ValueError(f"X must have between 1 and {INT_MAX} rows and columns; got {X.shape}")
        if cnp.PyArray_TYPE(<cnp.ndarray> X) != typenum:
            raise TypeError(f"X must have dtype {dtype}; got {X.dtype}")
        if not X.flags.c_contiguous and not X.flags.f_contiguous:
            raise ValueError("X must be C- or F-contiguous; got a strided view")
        dims = [n0]
        for l in range(L):
            if not cnp.PyArray_Check(W[l]) or W[l].ndim != 2:
                raise TypeError(f"W[{l}] must be a 2-D numpy.ndarray")
            if not 1 <= W[l].shape[0] <= INT_MAX:
                raise ValueError(f"W[{l}] has shape {W[l].shape}, outside 1..{INT_MAX}")
            _require(W[l], f"W[{l}]", typenum, (W[l].shape[0], dims[l]), True)
            _require(b[l], f"b[{l}]", typenum, (W[l].shape[0], 1), True)
            dims.append(W[l].shape[0])
        _require(Y, "Y", typenum, (dims[L], m), False)

        self.dtype = dtype
        self.L = L
        self.m = <int> m
        self.n0 = <int> n0
        self.n1 = dims[1]
        self.typenum = typenum
        self.x_f = not X.flags.c_contiguous
        self.l2 = l2
        self.momentum = momentum
        self.beta = beta
        self._X = X
        self._Y = Y
        self._W = W
        self._b = b

        # Buffers as NumPy arrays: counted by memory accounting like any other.
        W0 = W[0].copy()
        P0 = np.empty((dims[1], m), dtype=dtype)
        G = np.empty((m, m), dtype=dtype)
        C = np.zeros((dims[1], m), dtype=dtype)
        VC = np.zeros((dims[1], m) if momentum else (0, 0), dtype=dtype)
        acts = [np.empty((n, m), dtype=dtype) for n in dims[1:]]
        dbs = [np.empty(n, dtype=dtype) for n in dims[1:]]
        widest = max(dims[1:L], default=0)
        scratch = np.empty((widest, m), dtype=dtype)
        dWs = [np.empty_like(w) if momentum else None for w in W]
        vWs = [np.zeros_like(w) if momentum and l > 0 else None for l, w in enumerate(W)]
        vbs = [np.zeros(bb.shape[0], dtype=dtype) if momentum else None for bb in b]
        self._W0 = W0
        self._buffers = (P0, G, C, VC, scratch, tuple(acts), tuple(dbs), tuple(dWs), tuple(vWs),
                         tuple(vbs))

        self.layers = <Layer *> calloc(L, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        for l in range(L):
            self.layers[l].n = dims[l + 1]
            self.layers[l].k = dims[l]
            self.layers[l].code = SIGMOID if l == L - 1 else activation_code(activations[l])
            self.layers[l].W = cnp.PyArray_DATA(<cnp.ndarray> W[l]) if l > 0 else NULL
            self.layers[l].b = cnp.PyArray_DATA(<cnp.ndarray> b[l])
            self.layers[l].A = cnp.PyArray_DATA(<cnp.ndarray> acts[l])
            self.layers[l].db = cnp.PyArray_DATA(<cnp.ndarray> dbs[l])
            if momentum:
                self.layers[l].dW = cnp.PyArray_DATA(<cnp.ndarray> dWs[l])
                self.layers[l].vb = cnp.PyArray_DATA(<cnp.ndarray> vbs[l])
                if l > 0:
                    self.layers[l].vW = cnp.PyArray_DATA(<cnp.ndarray> vWs[l])
        self.scratch = cnp.PyArray_DATA(<cnp.ndarray> scratch)
        self.st.s = 1.0
        self.st.vs = 0.0
        self.st.P0 = cnp.PyArray_DATA(<cnp.ndarray> P0)
        self.st.G = cnp.PyArray_DATA(<cnp.ndarray> G)
        self.st.C = cnp.PyArray_DATA(<cnp.ndarray> C)
        self.st.VC = cnp.PyArray_DATA(<cnp.ndarray> VC)
        w0_flat = W0.reshape(-1)
        self.st.w0_sq = float(np.dot(w0_flat, w0_flat)) if l2 != 0 else 0.0

        cdef void *w0p = cnp.PyArray_DATA(<cnp.ndarray> W0)
        cdef void *xp = cnp.PyArray_DATA(<cnp.ndarray> X)
        cdef int n1 = self.n1, im = self.m, in0 = self.n0
        cdef bint x_f = self.x_f
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                _first_layer_products(<double *> w0p, <double *> xp, x_f, n1, in0, im,
                                      <double *> self.st.P0, <double *> self.st.G)
        else:
            with nogil:
                _first_layer_products(<float *> w0p, <float *> xp, x_f, n1, in0, im,
                                      <float *> self.st.P0, <float *> self.st.G)

    def __dealloc__(self):
        free(self.layers)

    @property
    def nbytes(self):
        """Bytes held in buffers and state (not counting the parameters)."""
        total = self._W0.nbytes
        for item in self._buffers:
            for a in (item if isinstance(item, tuple) else (item,)):
                if a is not None:
                    total += a.nbytes
        return total

    cdef int _check_intact(self) except -1:
        # The raw pointers must still be those of the parameter arrays.
        cdef int l
        cdef cnp.ndarray a
        for l in range(self.L):
            a = <cnp.ndarray> self._b[l]
            if (cnp.PyArray_DATA(a) != self.layers[l].b or not cnp.PyArray_ISWRITEABLE(a)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.size != self.layers[l].n):
                raise ValueError(f"b[{l}] was made read-only, reshaped or resized since this "
                                 f"route was built; build a new one")
            if l > 0:
                a = <cnp.ndarray> self._W[l]
                if (cnp.PyArray_DATA(a) != self.layers[l].W or not cnp.PyArray_ISWRITEABLE(a)
                        or not cnp.PyArray_IS_C_CONTIGUOUS(a)
                        or a.size != <Py_ssize_t> self.layers[l].n * self.layers[l].k):
                    raise ValueError(f"W[{l}] was made read-only, reshaped or resized since this "
                                     f"route was built; build a new one")
        return 0

    def run(self, int iterations, double learning_rate, costs):
        """`iterations` full-batch steps with the given learning rate.

        Parameters
        ----------
        iterations : int >= 0
        learning_rate : float
        costs : float64 C-contiguous array with at least `iterations` values
            Receives the cost before each step.

        Returns
        -------
        completed : int
            Steps completed: `iterations`, or the index of the first step
            whose cost was not finite (that step updated nothing).
        """
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0; got {iterations}")
        cdef cnp.ndarray c = <cnp.ndarray> costs
        if (not cnp.PyArray_Check(costs) or cnp.PyArray_TYPE(c) != cnp.NPY_DOUBLE
                or not cnp.PyArray_IS_C_CONTIGUOUS(c) or not c.flags.writeable or c.size < iterations):
            raise ValueError(f"costs must be a writeable C-contiguous float64 array of at least "
                             f"{iterations} values")
        self._check_intact()
        cdef double *cp = <double *> cnp.PyArray_DATA(c)
        cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray> self._Y)
        cdef int done
        if self.typenum == cnp.NPY_DOUBLE:
            with nogil:
                done = _train(&self.st, self.layers, self.L, self.m, <double *> self.scratch,
                              <double *> yp, learning_rate, self.l2, self.momentum, self.beta,
                              iterations, cp)
        else:
            with nogil:
                done = _train(&self.st, self.layers, self.L, self.m, <float *> self.scratch,
                              <float *> yp, learning_rate, self.l2, self.momentum, self.beta,
                              iterations, cp)
        return done

    cdef object _form(self, double coefficient, void *coordinates, object out):
        """out = coefficient W1(0) + coordinates X^T, for W1 or its velocity."""
        cdef cnp.ndarray o = _require(out, "out", self.typenum, (self.n1, self.n0), True)
        cdef void *op = cnp.PyArray_DATA(o)
        cdef void *w0p = cnp.PyArray_DATA(<cnp.ndarray> self._W0)
        cdef void *xp = cnp.PyArray_DATA(<cnp.ndarray> self._X)
        cdef int n1 = self.n1, n0 = self.n0, m = self.m
        cdef bint x_f = self.x_f
        if self.typenum == cnp.NPY_DOUBLE:
            with nogil:
                _materialise(<double *> w0p, coefficient, <double *> coordinates, <double *> xp,
                             x_f, n1, n0, m, <double *> op)
        else:
            with nogil:
                _materialise(<float *> w0p, coefficient, <float *> coordinates, <float *> xp,
                             x_f, n1, n0, m, <float *> op)
        return out

    def first_layer(self, out):
        """Form W1 = s W1(0) + C X^T into `out`, a writeable C-contiguous (n1, n0) array."""
        return self._form(self.st.s, self.st.C, out)

    def first_layer_velocity(self, out):
        """Form W1's momentum velocity vs W1(0) + VC X^T into `out` (as :meth:`first_layer`)."""
        if not self.momentum:
            raise ValueError("this route has no momentum, hence no velocity")
        return self._form(self.st.vs, self.st.VC, out)

    def velocities(self):
        """Copies of the momentum velocities of W[1:] and of every b, as (vW, vb) lists.

        ``vW[0]`` is None: W1's velocity is formed by :meth:`first_layer_velocity`.
        """
        if not self.momentum:
            raise ValueError("this route has no momentum, hence no velocity")
        vWs, vbs = self._buffers[8], self._buffers[9]
        return ([None] + [v.copy() for v in vWs[1:]],
                [v.reshape(-1, 1).copy() for v in vbs])
