"""Whole epochs (or blocks of steps) of training in one compiled call.

A training step driven from Python costs a few tens of microseconds of
interpreter work per mini-batch (the gather, the checks, one kernel call per
layer and per optimizer update). For the small networks users train by the
hundred that is as much as the arithmetic. :func:`run_steps` runs a whole
sequence of mini-batch steps inside one ``nogil`` block: for every batch it
gathers the examples of the shuffled order into preallocated buffers, runs the
forward pass, the cost, the backward pass and the optimizer update, and it
stops at the first step whose cost is not finite (before updating anything in
that step).

The arithmetic is that of the per-step path, in the same order, so the
numbers are the same to the last bit:

* plain gradient descent without dropout and with a sigmoid output is the
  fused step of ``_step.pyx`` (lean buffers, the update fused into the dW
  GEMM, a one-unit output fused into the last hidden layer's passes);
* everything else (momentum, Adam, dropout, a softmax output) is the
  per-layer path of ``Network``: Z, A and dA/dZ buffers per layer, the
  cross-entropy kernels of ``_output.pyx``, dW stored and handed to the
  update loops of ``_update.pyx``, inverted dropout as in ``_dropout.pyx``.

Every argument is checked in Python (``dnnblocks.epoch``) before the call;
this module checks again, in O(L), only what it needs to never touch memory
it does not own.
"""

cimport numpy as cnp
from cython cimport floating
from libc.float cimport DBL_MIN, FLT_MIN
from libc.limits cimport INT_MAX
from libc.math cimport exp, isfinite, log, pow
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

import numpy as np

from _blas cimport gemm_rowmajor, leading_dim
from _passes cimport (
    bias_activation, bias_activation_dot, mask_rowsum, output_backward_mask, scaled_add,
    sigmoid_output, sum_squares,
)
from _scalar_math cimport IDENTITY, RELU, SIGMOID, activation_code, exp_, softplus

cnp.import_array()

#: Optimizer codes (the order of :data:`OPTIMIZERS`).
cdef enum:
    OPT_SGD = 0
    OPT_MOMENTUM = 1
    OPT_ADAM = 2

OPTIMIZERS = ("sgd", "momentum", "adam")

# Columns of the softmax done at once (as in _output.pyx).
cdef enum:
    _CHUNK = 256


cdef struct Layer:
    int n            # units of this layer
    int k            # units of the previous layer
    int code         # activation code (the output layer: SIGMOID, or IDENTITY for softmax)
    void *W          # (n, k), updated in place
    void *b          # (n, 1), updated in place
    void *Z          # (n, m) pre-activation (per-layer path)
    void *A          # (n, m) activation (fused path: A, later dZ)
    void *D          # (n, m) dA, then dZ (per-layer path)
    void *db         # (n,)
    void *dW         # (n, k), optimizers only
    void *s1W        # optimizer state: velocity or Adam's m
    void *s1b
    void *s2W        # Adam's v
    void *s2b


cdef struct Hyper:
    int optimizer
    bint softmax
    bint dropout
    double learning_rate
    double l2
    double keep_prob
    double beta      # momentum
    double beta1
    double beta2
    double epsilon


# ------------------------------------------------------------ element loops
# The loops of _output.pyx, _update.pyx and _dropout.pyx, on raw pointers.

cdef inline double _sigmoid_cross_entropy(
    Py_ssize_t n, Py_ssize_t m, const floating *Z, const floating *A, const floating *Y,
    floating *dZ, floating *db, double db_scale,
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef double total = 0, row_sum, z, y
    cdef floating dz
    for i in range(n):
        row_sum = 0
        for j in range(m):
            z = Z[i * m + j]
            y = Y[i * m + j]
            total += softplus(z) - y * z
            dz = A[i * m + j] - Y[i * m + j]
            dZ[i * m + j] = dz
            row_sum += dz
        db[i] = <floating> (row_sum * db_scale)
    return total / m


cdef inline void _softmax_forward(Py_ssize_t K, Py_ssize_t m, const floating *Z, floating *A) noexcept nogil:
    cdef floating colmax[_CHUNK]
    cdef floating colsum[_CHUNK]
    cdef const floating *zrow
    cdef floating *arow
    cdef floating e
    cdef Py_ssize_t i, jj, j0 = 0, w
    while j0 < m:
        w = _CHUNK if _CHUNK < m - j0 else m - j0
        zrow = Z + j0
        for jj in range(w):
            colmax[jj] = zrow[jj]
            colsum[jj] = 0
        for i in range(1, K):
            zrow = Z + i * m + j0
            for jj in range(w):
                if zrow[jj] > colmax[jj]:
                    colmax[jj] = zrow[jj]
        for i in range(K):
            zrow = Z + i * m + j0
            arow = A + i * m + j0
            for jj in range(w):
                e = exp_(zrow[jj] - colmax[jj])
                arow[jj] = e
                colsum[jj] += e
        for i in range(K):
            arow = A + i * m + j0
            for jj in range(w):
                arow[jj] = arow[jj] / colsum[jj]
        j0 += w


cdef inline double _column_logsumexp(Py_ssize_t K, Py_ssize_t m, const floating *Z, Py_ssize_t j) noexcept nogil:
    cdef Py_ssize_t i
    cdef double zmax = Z[j], total = 0
    for i in range(1, K):
        if Z[i * m + j] > zmax:
            zmax = Z[i * m + j]
    for i in range(K):
        total += exp(Z[i * m + j] - zmax)
    return zmax + log(total)


cdef inline double _softmax_cross_entropy(
    Py_ssize_t n, Py_ssize_t m, const floating *Z, const floating *A, const floating *Y,
    floating *dZ, floating *db, double db_scale,
) noexcept nogil:
    cdef double tiny = FLT_MIN if floating is float else DBL_MIN
    cdef double total = 0, row_sum, a, y
    cdef floating dz
    cdef Py_ssize_t i, j
    for i in range(n):
        row_sum = 0
        for j in range(m):
            a = A[i * m + j]
            y = Y[i * m + j]
            if y != 0:
                if a >= tiny:
                    total -= y * log(a)
                else:
                    total += y * (_column_logsumexp(n, m, Z, j) - Z[i * m + j])
            dz = A[i * m + j] - Y[i * m + j]
            dZ[i * m + j] = dz
            row_sum += dz
        db[i] = <floating> (row_sum * db_scale)
    return total / m


cdef inline void _dropout_forward(floating *A, floating *mask, Py_ssize_t count, double keep_prob) noexcept nogil:
    cdef floating keep = <floating> keep_prob
    cdef floating scale = <floating> (1.0 / keep_prob)
    cdef floating s
    cdef Py_ssize_t j
    for j in range(count):
        s = scale if mask[j] < keep else 0
        mask[j] = s
        A[j] = A[j] * s


cdef inline void _dropout_backward(floating *dA, const floating *mask, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(count):
        dA[j] = dA[j] * mask[j]


cdef inline void _gradient_descent(floating *param, const floating *grad, double learning_rate,
                                   Py_ssize_t count) noexcept nogil:
    cdef floating lr = <floating> learning_rate
    cdef Py_ssize_t j
    for j in range(count):
        param[j] -= lr * grad[j]


cdef inline void _momentum(floating *param, const floating *grad, floating *velocity, Py_ssize_t count,
                           double learning_rate, double beta, double weight_decay) noexcept nogil:
    cdef floating lr = <floating> learning_rate
    cdef floating b = <floating> beta
    cdef floating one_minus_b = <floating> (1.0 - beta)
    cdef floating wd = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    cdef floating g, v
    cdef Py_ssize_t j
    for j in range(count):
        g = grad[j]
        if decay:
            g = g + wd * param[j]
        v = b * velocity[j] + one_minus_b * g
        velocity[j] = v
        param[j] -= lr * v


# Adam's update is written in C with reassociation switched off for this
# function alone: the module is built with -fassociative-math (for the
# passes), under which GCC may regroup lr * (m * c1) as (lr * c1) * m and
# move the last bit away from _update.pyx's loop (built without that flag).
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    #define DNNBLOCKS_EXACT __attribute__((optimize("no-associative-math")))
    #else
    #define DNNBLOCKS_EXACT
    #endif
    #define DNNBLOCKS_ADAM(NAME, T, SQRT)                                          \
    static DNNBLOCKS_EXACT void NAME(T *param, const T *grad, T *m1, T *m2,       \
                                     Py_ssize_t count, T lr, T b1, T b2, T omb1,  \
                                     T omb2, T eps, T c1, T c2, T wd, int decay) {\
        Py_ssize_t j;                                                             \
        for (j = 0; j < count; j++) {                                             \
            T g = grad[j], mm, vv;                                                \
            if (decay) g = g + wd * param[j];                                     \
            mm = b1 * m1[j] + omb1 * g;                                           \
            vv = b2 * m2[j] + omb2 * (g * g);                                     \
            m1[j] = mm;                                                           \
            m2[j] = vv;                                                           \
            param[j] -= lr * (mm * c1) / (SQRT(vv * c2) + eps);                   \
        }                                                                         \
    }
    DNNBLOCKS_ADAM(dnnblocks_adam_d, double, sqrt)
    DNNBLOCKS_ADAM(dnnblocks_adam_f, float, sqrtf)
    """
    void adam_d "dnnblocks_adam_d"(double *param, const double *grad, double *m1, double *m2,
                                    Py_ssize_t count, double lr, double b1, double b2, double omb1,
                                    double omb2, double eps, double c1, double c2, double wd,
                                    int decay) noexcept nogil
    void adam_f "dnnblocks_adam_f"(float *param, const float *grad, float *m1, float *m2,
                                   Py_ssize_t count, float lr, float b1, float b2, float omb1,
                                   float omb2, float eps, float c1, float c2, float wd,
                                   int decay) noexcept nogil


cdef inline void _adam(floating *param, const floating *grad, floating *m1, floating *m2, Py_ssize_t count,
                       double learning_rate, const Hyper *h, int64_t t, double weight_decay) noexcept nogil:
    # The scalars as _update.pyx's adam_update rounds them; beta ** t with
    # libm's pow, as Python and Cython compute it.
    cdef double c1 = 1.0 / (1.0 - pow(h.beta1, <double> t))
    cdef double c2 = 1.0 / (1.0 - pow(h.beta2, <double> t))
    if floating is float:
        adam_f(param, grad, m1, m2, count, <float> learning_rate, <float> h.beta1, <float> h.beta2,
               <float> (1.0 - h.beta1), <float> (1.0 - h.beta2), <float> h.epsilon, <float> c1,
               <float> c2, <float> weight_decay, weight_decay != 0)
    else:
        adam_d(param, grad, m1, m2, count, learning_rate, h.beta1, h.beta2, 1.0 - h.beta1,
               1.0 - h.beta2, h.epsilon, c1, c2, weight_decay, weight_decay != 0)


# ------------------------------------------------------------------- steps
cdef double _fused_step(
    Layer *layers, int L, int m, floating *scratch,
    const floating *X, bint x_f, int ldx, const floating *Y, const Hyper *h,
) noexcept nogil:
    """Plain gradient descent, sigmoid output, no dropout: ``_step.pyx``'s step.

    The same calls in the same order as ``TrainingStep.run`` with dA formed
    in one piece; the first layer may read X in place (row stride `ldx`).
    Returns the cost; when it is not finite nothing was updated.
    """
    cdef int l, n, k
    cdef Layer *lay
    cdef const floating *A_prev = X
    cdef bint prev_f = x_f
    cdef int ld_prev = ldx
    cdef double inv_m = 1.0 / m, cost, sq
    cdef double learning_rate = h.learning_rate, l2 = h.l2
    cdef floating shrink = <floating> (1.0 - learning_rate * l2 * inv_m)
    cdef floating step = <floating> (-learning_rate * inv_m)
    cdef floating neg_lr = <floating> (-learning_rate)
    cdef bint fuse_out = L >= 2 and layers[L - 1].n == 1
    cdef int last_gemm = L - 2 if fuse_out else L - 1

    for l in range(last_gemm + 1):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        gemm_rowmajor(False, prev_f, n, m, k, <floating> 1, <floating *> lay.W, leading_dim(k),
                      A_prev, ld_prev, <floating> 0, <floating *> lay.A, leading_dim(m))
        if fuse_out and l == L - 2:
            bias_activation_dot(lay.code, n, m, <floating *> lay.b, <floating *> lay.A,
                                <floating *> layers[L - 1].W, <floating *> layers[L - 1].A)
        elif l < L - 1:
            bias_activation(lay.code, n, m, <floating *> lay.b, <floating *> lay.A, <floating *> lay.A)
        A_prev = <floating *> lay.A
        prev_f = False
        ld_prev = leading_dim(m)

    lay = &layers[L - 1]
    cost = sigmoid_output(lay.n, m, <floating *> lay.b, <floating *> lay.A, Y,
                          <floating *> lay.db, inv_m) * inv_m
    if l2 != 0:
        sq = 0
        for l in range(L):
            sq += sum_squares(<floating *> layers[l].W, <Py_ssize_t> layers[l].n * layers[l].k)
        cost += 0.5 * l2 * inv_m * sq
    if not isfinite(cost):
        return cost

    if fuse_out:
        lay = &layers[L - 1]
        output_backward_mask(layers[L - 2].code, lay.k, m, <floating *> layers[L - 2].A,
                             <floating *> lay.A, <floating *> lay.W, shrink, step,
                             <floating *> layers[L - 2].db, inv_m)
        scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, lay.n)
    for l in range(last_gemm, -1, -1):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        if l > 0:
            A_prev = <floating *> layers[l - 1].A
            prev_f = False
            ld_prev = leading_dim(m)
            gemm_rowmajor(True, False, k, m, n, <floating> 1, <floating *> lay.W, leading_dim(k),
                          <floating *> lay.A, leading_dim(m), <floating> 0, scratch, leading_dim(m))
        else:
            A_prev = X
            prev_f = x_f
            ld_prev = ldx
        gemm_rowmajor(False, not prev_f, n, k, m, step, <floating *> lay.A, leading_dim(m),
                      A_prev, ld_prev, shrink, <floating *> lay.W, leading_dim(k))
        scaled_add(<floating *> lay.b, <floating *> lay.db, neg_lr, n)
        if l > 0:
            mask_rowsum(layers[l - 1].code, k, m, scratch, <floating *> NULL,
                        <floating *> layers[l - 1].A, <floating *> layers[l - 1].A,
                        <floating *> layers[l - 1].db, inv_m)
    return cost


cdef double _layered_step(
    Layer *layers, int L, int m, const floating *X, bint x_f, int ldx, const floating *Y,
    floating *masks, const Hyper *h, int64_t t,
) noexcept nogil:
    """Momentum, Adam, dropout or a softmax output: ``Network``'s per-layer step.

    `masks` (dropout only) holds this step's uniform draws, hidden layer after
    hidden layer, each (n[l], m); they become the scaled masks. `t` is the
    optimizer's step count for this step (Adam's bias correction). Returns the
    cost; when it is not finite nothing was updated.
    """
    cdef int l, n, k, last = L - 1
    cdef Layer *lay
    cdef const floating *A_prev = X
    cdef bint prev_f = x_f
    cdef int ld_prev = ldx
    cdef double inv_m = 1.0 / m, cost, sq
    cdef double learning_rate = h.learning_rate
    cdef double weight_decay = h.l2 / m
    cdef floating *mask = masks
    cdef floating *layer_mask
    cdef const floating *a_cached
    cdef Py_ssize_t count
    cdef int l2i

    # Forward: Z = W A_prev (+ b), A = g(Z) in their own buffers.
    for l in range(L):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        gemm_rowmajor(False, prev_f, n, m, k, <floating> 1, <floating *> lay.W, leading_dim(k),
                      A_prev, ld_prev, <floating> 0, <floating *> lay.Z, leading_dim(m))
        if l == last and h.softmax:
            bias_activation(IDENTITY, n, m, <floating *> lay.b, <floating *> lay.Z, <floating *> lay.Z)
            _softmax_forward(n, m, <floating *> lay.Z, <floating *> lay.A)
            break
        bias_activation(lay.code, n, m, <floating *> lay.b, <floating *> lay.Z, <floating *> lay.A)
        if h.dropout and l < last:
            count = <Py_ssize_t> n * m
            _dropout_forward(<floating *> lay.A, mask, count, h.keep_prob)
            mask += count
        A_prev = <floating *> lay.A
        prev_f = False
        ld_prev = leading_dim(m)

    lay = &layers[last]
    if h.softmax:
        cost = _softmax_cross_entropy(lay.n, m, <floating *> lay.Z, <floating *> lay.A, Y,
                                      <floating *> lay.D, <floating *> lay.db, inv_m)
    else:
        cost = _sigmoid_cross_entropy(lay.n, m, <floating *> lay.Z, <floating *> lay.A, Y,
                                      <floating *> lay.D, <floating *> lay.db, inv_m)
    if h.l2 != 0:
        sq = 0
        for l in range(L):
            sq += sum_squares(<floating *> layers[l].W, <Py_ssize_t> layers[l].n * layers[l].k)
        cost += h.l2 / (2.0 * m) * sq
    if not isfinite(cost):
        return cost

    for l in range(last, -1, -1):
        lay = &layers[l]
        n = lay.n
        k = lay.k
        count = <Py_ssize_t> n * k
        if l < last:
            a_cached = <floating *> lay.A
            if h.dropout:
                # This layer's scaled mask: the masks are stored first layer first.
                layer_mask = mask
                for l2i in range(last - 1, l - 1, -1):
                    layer_mask -= <Py_ssize_t> layers[l2i].n * m
                _dropout_backward(<floating *> lay.D, layer_mask, <Py_ssize_t> n * m)
                # A holds the dropped-out activation, not g(Z): g' from Z.
                a_cached = NULL
            if lay.code == RELU:
                a_cached = NULL  # relu' from Z, as activation_backward reads it
            mask_rowsum(lay.code, n, m, <floating *> lay.D, <floating *> lay.Z, a_cached,
                        <floating *> lay.D, <floating *> lay.db, inv_m)
        if l > 0:
            A_prev = <floating *> layers[l - 1].A
            prev_f = False
            ld_prev = leading_dim(m)
            gemm_rowmajor(True, False, k, m, n, <floating> 1, <floating *> lay.W, leading_dim(k),
                          <floating *> lay.D, leading_dim(m), <floating> 0,
                          <floating *> layers[l - 1].D, leading_dim(m))
        else:
            A_prev = X
            prev_f = x_f
            ld_prev = ldx
        if h.optimizer == OPT_SGD:
            gemm_rowmajor(False, not prev_f, n, k, m, <floating> (-learning_rate * inv_m),
                          <floating *> lay.D, leading_dim(m), A_prev, ld_prev,
                          <floating> (1.0 - learning_rate * weight_decay), <floating *> lay.W, leading_dim(k))
            _gradient_descent(<floating *> lay.b, <floating *> lay.db, learning_rate, n)
            continue
        gemm_rowmajor(False, not prev_f, n, k, m, <floating> inv_m, <floating *> lay.D, leading_dim(m),
                      A_prev, ld_prev, <floating> 0, <floating *> lay.dW, leading_dim(k))
        if h.optimizer == OPT_MOMENTUM:
            _momentum(<floating *> lay.W, <floating *> lay.dW, <floating *> lay.s1W, count,
                      learning_rate, h.beta, weight_decay)
            _momentum(<floating *> lay.b, <floating *> lay.db, <floating *> lay.s1b, n,
                      learning_rate, h.beta, 0.0)
        else:
            _adam(<floating *> lay.W, <floating *> lay.dW, <floating *> lay.s1W, <floating *> lay.s2W,
                  count, learning_rate, h, t, weight_decay)
            _adam(<floating *> lay.b, <floating *> lay.db, <floating *> lay.s1b, <floating *> lay.s2b,
                  n, learning_rate, h, t, 0.0)
    return cost


# ------------------------------------------------------------------ gather
cdef inline void _gather(
    const floating *X, bint x_f, Py_ssize_t n0, Py_ssize_t m_total, const floating *Y, Py_ssize_t nL,
    const int64_t *ids, Py_ssize_t m, floating *xb, floating *yb,
) noexcept nogil:
    """The batch's columns of X and Y into the buffers, in the order of `ids`.

    An F-ordered X (row-major (m_total, n0) data) is gathered row-wise into a
    C (m, n0) buffer, read through its transpose like the per-step path does;
    a C-ordered X column-wise into an (n0, m) buffer.
    """
    cdef Py_ssize_t i, j, c
    if x_f:
        for c in range(m):
            memcpy(xb + c * n0, X + ids[c] * n0, <size_t> n0 * sizeof(floating))
    else:
        for i in range(n0):
            for c in range(m):
                xb[i * m + c] = X[i * m_total + ids[c]]
    for i in range(nL):
        for c in range(m):
            yb[i * m + c] = Y[i * m_total + ids[c]]


cdef Py_ssize_t _run(
    Layer *layers, int L, const Hyper *h, bint fused,
    const floating *X, bint x_f, Py_ssize_t n0, Py_ssize_t m_total, const floating *Y, Py_ssize_t nL,
    const int64_t *order, Py_ssize_t first_example, Py_ssize_t n_examples, Py_ssize_t batch_size,
    floating *xb, floating *yb, floating *scratch, floating *masks, Py_ssize_t hidden_units,
    int64_t t0, double *costs,
) noexcept nogil:
    """Every step of the block; returns the number of steps completed (all, or up to a non-finite cost)."""
    cdef Py_ssize_t s = 0, start = 0, m
    cdef const floating *xp
    cdef const floating *yp
    cdef int ldx
    cdef bint xf
    cdef floating *step_masks = masks
    cdef double cost
    while start < n_examples:
        m = batch_size if batch_size <= n_examples - start else n_examples - start
        if order != NULL:
            _gather(X, x_f, n0, m_total, Y, nL, order + start, m, xb, yb)
            xp = xb
            yp = yb
            ldx = leading_dim(n0 if x_f else m)
        else:
            # Consecutive examples: X is read in place; Y (a few rows) is copied
            # so that the output kernels see contiguous rows of m values.
            if x_f:
                xp = X + (first_example + start) * n0
                ldx = leading_dim(n0)
            else:
                xp = X + (first_example + start)
                ldx = leading_dim(m_total)
            _copy_labels(Y, nL, m_total, first_example + start, m, yb)
            yp = yb
        xf = x_f
        if fused:
            cost = _fused_step(layers, L, <int> m, scratch, xp, xf, ldx, yp, h)
        else:
            cost = _layered_step(layers, L, <int> m, xp, xf, ldx, yp, step_masks, h, t0 + s + 1)
            if h.dropout:
                step_masks += hidden_units * m
        costs[s] = cost
        if not isfinite(cost):
            return s
        s += 1
        start += m
    return s


cdef inline void _copy_labels(const floating *Y, Py_ssize_t nL, Py_ssize_t m_total, Py_ssize_t j0,
                              Py_ssize_t m, floating *yb) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(nL):
        memcpy(yb + i * m, Y + i * m_total + j0, <size_t> m * sizeof(floating))


# ----------------------------------------------------------- Python face
cdef inline cnp.ndarray _array(object arr, str name, int typenum):
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(arr).__name__}")
    if cnp.PyArray_TYPE(<cnp.ndarray> arr) != typenum:
        raise TypeError(f"{name} must have dtype {cnp.PyArray_DescrFromType(typenum)}; "
                        f"got {(<cnp.ndarray> arr).dtype}")
    return <cnp.ndarray> arr


cdef inline void *_param(object arr, str name, int typenum, Py_ssize_t rows, Py_ssize_t cols) except NULL:
    cdef cnp.ndarray a = _array(arr, name, typenum)
    if (cnp.PyArray_NDIM(a) != 2 or cnp.PyArray_DIM(a, 0) != rows or cnp.PyArray_DIM(a, 1) != cols
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISWRITEABLE(a)):
        raise ValueError(f"{name} must be a writeable C-contiguous ({rows}, {cols}) array; "
                         f"got shape {arr.shape}")
    return cnp.PyArray_DATA(a)


cdef class EpochWorkspace:
    """Buffers and raw parameter pointers for blocks of steps of one network.

    Built once per training run (see :class:`dnnblocks.epoch.EpochRunner`,
    which validates everything first); :meth:`run` then runs one block of
    steps per call, with the GIL released.

    Parameters
    ----------
    W, b : sequence of ndarray
        C-contiguous, writeable, all float32 or all float64; updated in place.
    activations : sequence of str
        Hidden layers' activations, then the output: "sigmoid" or "softmax".
    batch_size : int
    optimizer : {"sgd", "momentum", "adam"}
    state : sequence of sequences of ndarray
        The optimizer's state arrays, each a list of 2L arrays (W's then
        b's): () for sgd, (velocity,) for momentum, (m, v) for Adam.
    hyper : dict
        ``l2``, ``keep_prob``, ``beta``, ``beta1``, ``beta2``, ``epsilon``.
    """

    cdef Layer *layers
    cdef int L
    cdef int typenum
    cdef Hyper hyper
    cdef bint _fused
    cdef Py_ssize_t batch_size
    cdef Py_ssize_t _hidden_units
    cdef readonly tuple layer_dims
    cdef tuple _keep
    cdef cnp.ndarray _xb
    cdef cnp.ndarray _yb
    cdef cnp.ndarray _scratch

    def __cinit__(self, *args, **kwargs):
        self.layers = NULL

    def __init__(self, W, b, activations, Py_ssize_t batch_size, str optimizer, state, dict hyper):
        W = tuple(W)
        b = tuple(b)
        activations = tuple(activations)
        cdef int L = len(W)
        cdef int l
        if L == 0 or len(b) != L or len(activations) != L:
            raise ValueError("W, b and activations must have one entry per layer")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        if batch_size < 1 or batch_size > INT_MAX:
            raise ValueError(f"batch_size must be between 1 and {INT_MAX}; got {batch_size}")
        dtype = np.asarray(W[0]).dtype
        if dtype != np.float64 and dtype != np.float32:
            raise TypeError(f"W[0] must be float32 or float64; got {dtype}")
        cdef int typenum = cnp.NPY_DOUBLE if dtype == np.float64 else cnp.NPY_FLOAT
        output = activations[L - 1]
        if output not in ("sigmoid", "softmax"):
            raise ValueError(f"the output must be 'sigmoid' or 'softmax'; got {output!r}")
        dims = [np.asarray(W[0]).shape[1] if np.asarray(W[0]).ndim == 2 else 0]
        for l in range(L):
            w = _array(W[l], f"W[{l}]", typenum)
            if w.ndim != 2 or w.shape[1] != dims[l] or w.shape[0] < 1 or w.shape[0] > INT_MAX or dims[l] < 1:
                raise ValueError(f"W[{l}] must be a 2-D array with {dims[l]} columns; got shape {W[l].shape}")
            dims.append(w.shape[0])
        if output == "softmax" and dims[L] < 2:
            raise ValueError("a softmax output needs at least 2 units")
        opt = OPTIMIZERS.index(optimizer)
        state = tuple(tuple(s) for s in state)
        if len(state) != (0, 1, 2)[opt] or any(len(s) != 2 * L for s in state):
            raise ValueError(f"state must hold {(0, 1, 2)[opt]} lists of {2 * L} arrays for {optimizer!r}")

        self.hyper.optimizer = opt
        self.hyper.softmax = output == "softmax"
        self.hyper.keep_prob = float(hyper.get("keep_prob", 1.0))
        if not (0 < self.hyper.keep_prob <= 1):
            raise ValueError(f"keep_prob must be in (0, 1]; got {self.hyper.keep_prob}")
        self.hyper.dropout = self.hyper.keep_prob < 1.0 and L > 1
        self.hyper.l2 = float(hyper.get("l2", 0.0))
        self.hyper.beta = float(hyper.get("beta", 0.9))
        self.hyper.beta1 = float(hyper.get("beta1", 0.9))
        self.hyper.beta2 = float(hyper.get("beta2", 0.999))
        self.hyper.epsilon = float(hyper.get("epsilon", 1e-8))
        # The per-step path fuses exactly when it has no optimizer, keep_prob is
        # 1 and the output is a sigmoid (dropout on a network without hidden
        # layers changes nothing but still takes the per-layer path there).
        self._fused = opt == OPT_SGD and self.hyper.keep_prob == 1.0 and not self.hyper.softmax
        self.L = L
        self.typenum = typenum
        self.batch_size = batch_size
        self.layer_dims = tuple(int(d) for d in dims)
        self._hidden_units = sum(dims[1:L])

        bs = batch_size
        keep = [W, b, state]
        zs = [np.empty((n, bs), dtype) if not self._fused else None for n in dims[1:]]
        acts = [np.empty((n, bs), dtype) for n in dims[1:]]
        ds = [np.empty((n, bs), dtype) if not self._fused else None for n in dims[1:]]
        dbs = [np.empty(n, dtype) for n in dims[1:]]
        dws = [np.empty((dims[l + 1], dims[l]), dtype) if opt != OPT_SGD else None for l in range(L)]
        keep += [zs, acts, ds, dbs, dws]
        self._keep = tuple(keep)
        self._xb = np.empty(dims[0] * bs, dtype)
        self._yb = np.empty(dims[L] * bs, dtype)
        self._scratch = np.empty(max(dims[1:L], default=1) * bs if self._fused else 1, dtype)

        self.layers = <Layer *> calloc(L, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        for l in range(L):
            n, k = dims[l + 1], dims[l]
            self.layers[l].n = n
            self.layers[l].k = k
            if l < L - 1:
                self.layers[l].code = activation_code(activations[l])
            else:
                self.layers[l].code = IDENTITY if output == "softmax" else SIGMOID
            self.layers[l].W = _param(W[l], f"W[{l}]", typenum, n, k)
            self.layers[l].b = _param(b[l], f"b[{l}]", typenum, n, 1)
            self.layers[l].A = cnp.PyArray_DATA(<cnp.ndarray> acts[l])
            self.layers[l].db = cnp.PyArray_DATA(<cnp.ndarray> dbs[l])
            if not self._fused:
                self.layers[l].Z = cnp.PyArray_DATA(<cnp.ndarray> zs[l])
                self.layers[l].D = cnp.PyArray_DATA(<cnp.ndarray> ds[l])
            if opt != OPT_SGD:
                self.layers[l].dW = cnp.PyArray_DATA(<cnp.ndarray> dws[l])
                self.layers[l].s1W = _param(state[0][l], f"state[0][{l}]", typenum, n, k)
                self.layers[l].s1b = _param(state[0][L + l], f"state[0][{L + l}]", typenum, n, 1)
            if opt == OPT_ADAM:
                self.layers[l].s2W = _param(state[1][l], f"state[1][{l}]", typenum, n, k)
                self.layers[l].s2b = _param(state[1][L + l], f"state[1][{L + l}]", typenum, n, 1)

    def __dealloc__(self):
        free(self.layers)

    @property
    def fused(self):
        """Whether the steps run the fused gradient-descent step (else the per-layer one)."""
        return self._fused

    @property
    def dropout(self):
        """Whether the steps apply dropout masks (keep_prob < 1 and a hidden layer)."""
        return self.hyper.dropout

    @property
    def hidden_units(self):
        """Hidden units per example: the mask draws a step of m examples needs are this times m."""
        return self._hidden_units

    @property
    def nbytes(self):
        """Bytes held in buffers (not counting parameters and optimizer state)."""
        total = self._xb.nbytes + self._yb.nbytes + self._scratch.nbytes
        for group in self._keep[3:]:
            total += sum(a.nbytes for a in group if a is not None)
        return total

    cdef bint _intact(self):
        """The parameter and state arrays still are what the raw pointers came from."""
        cdef int l, i, L = self.L
        W, b, state = self._keep[0], self._keep[1], self._keep[2]
        for l in range(L):
            if (cnp.PyArray_DATA(<cnp.ndarray> W[l]) != self.layers[l].W
                    or cnp.PyArray_DATA(<cnp.ndarray> b[l]) != self.layers[l].b):
                return False
            for arr in (W[l], b[l]):
                if (not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> arr)
                        or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> arr)):
                    return False
        for group in state:
            for arr in group:
                if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> arr) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> arr):
                    return False
        for i in range(len(state)):
            for l in range(L):
                if (cnp.PyArray_DATA(<cnp.ndarray> state[i][l]) != (self.layers[l].s1W if i == 0 else self.layers[l].s2W)
                        or cnp.PyArray_DATA(<cnp.ndarray> state[i][L + l]) != (self.layers[l].s1b if i == 0 else self.layers[l].s2b)):
                    return False
        return True

    def uses(self, W, b):
        """Whether `W` and `b` are the very arrays this workspace was built with, still usable."""
        if len(W) != self.L or len(b) != self.L:
            return False
        for l in range(self.L):
            if W[l] is not self._keep[0][l] or b[l] is not self._keep[1][l]:
                return False
        return self._intact()

    def run(self, X, Y, order, Py_ssize_t first_example, Py_ssize_t n_examples, double learning_rate,
            int64_t t0, masks, costs):
        """Run the steps over `n_examples` examples; returns the number of steps completed.

        Parameters
        ----------
        X : (n0, m_total) C- or F-contiguous array of the dtype
        Y : (nL, m_total) C-contiguous array of the dtype
        order : None or 1-D C-contiguous int64 array of `n_examples` indices into X's columns
            None: the examples ``first_example .. first_example + n_examples - 1``, read in place.
        first_example : int
            Only with ``order=None``.
        n_examples : int
        learning_rate : float
        t0 : int
            The optimizer's step count before the block (step s uses t0 + s + 1).
        masks : None or 1-D C-contiguous array of the dtype
            With dropout: the uniform draws of every step of the block, step
            after step and, within a step, hidden layer after hidden layer
            ((n[l], m) each); overwritten by the scaled masks.
        costs : 1-D C-contiguous float64 array, one slot per step
            Receives each step's cost (the failing one included).
        """
        cdef int typenum = self.typenum
        cdef cnp.ndarray x = _array(X, "X", typenum)
        cdef cnp.ndarray y = _array(Y, "Y", typenum)
        cdef Py_ssize_t n0 = self.layer_dims[0], nL = self.layer_dims[self.L]
        if not self._intact():
            raise ValueError("W, b or the optimizer state were replaced, made read-only or reshaped "
                             "since this workspace was built; build a new one")
        if x.ndim != 2 or x.shape[0] != n0:
            raise ValueError(f"X must have {n0} rows; got shape {X.shape}")
        cdef Py_ssize_t m_total = x.shape[1]
        cdef bint x_f = not cnp.PyArray_IS_C_CONTIGUOUS(x)
        if x_f and not cnp.PyArray_IS_F_CONTIGUOUS(x):
            raise ValueError("X must be C- or F-contiguous; got a strided view")
        if y.ndim != 2 or y.shape[0] != nL or y.shape[1] != m_total or not cnp.PyArray_IS_C_CONTIGUOUS(y):
            raise ValueError(f"Y must be a C-contiguous ({nL}, {m_total}) array; got {Y.shape}")
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1; got {n_examples}")
        cdef const int64_t *order_p = NULL
        cdef cnp.ndarray o
        if order is not None:
            o = _array(order, "order", cnp.NPY_INT64)
            if o.ndim != 1 or o.shape[0] != n_examples or not cnp.PyArray_IS_C_CONTIGUOUS(o):
                raise ValueError(f"order must be a C-contiguous 1-D array of {n_examples} indices")
            order_p = <const int64_t *> cnp.PyArray_DATA(o)
            lo, hi = (int(o.min()), int(o.max()))
            if lo < 0 or hi >= m_total:
                raise ValueError(f"order must hold indices in [0, {m_total}); got values in [{lo}, {hi}]")
            first_example = 0
        elif first_example < 0 or first_example + n_examples > m_total:
            raise ValueError(f"examples {first_example}..{first_example + n_examples - 1} are outside "
                             f"X's {m_total} columns")
        cdef Py_ssize_t bs = self.batch_size
        cdef Py_ssize_t n_steps = -(-n_examples // bs)
        cdef cnp.ndarray c = _array(costs, "costs", cnp.NPY_DOUBLE)
        if c.ndim != 1 or c.shape[0] < n_steps or not cnp.PyArray_IS_C_CONTIGUOUS(c) or not c.flags.writeable:
            raise ValueError(f"costs must be a writeable C-contiguous float64 array of >= {n_steps} values")
        cdef void *mask_p = NULL
        cdef cnp.ndarray mk
        if self.hyper.dropout:
            if masks is None:
                raise ValueError("masks are needed with dropout (keep_prob < 1)")
            mk = _array(masks, "masks", typenum)
            if (mk.ndim != 1 or mk.shape[0] < self._hidden_units * n_examples
                    or not cnp.PyArray_IS_C_CONTIGUOUS(mk) or not mk.flags.writeable):
                raise ValueError(f"masks must be a writeable C-contiguous 1-D array of >= "
                                 f"{self._hidden_units * n_examples} draws")
            mask_p = cnp.PyArray_DATA(mk)
        if t0 < 0:
            raise ValueError(f"t0 must be >= 0; got {t0}")
        cdef Py_ssize_t done
        cdef void *xp = cnp.PyArray_DATA(x)
        cdef void *yp = cnp.PyArray_DATA(y)
        cdef void *xb = cnp.PyArray_DATA(self._xb)
        cdef void *yb = cnp.PyArray_DATA(self._yb)
        cdef void *sc = cnp.PyArray_DATA(self._scratch)
        cdef double *cp = <double *> cnp.PyArray_DATA(c)
        self.hyper.learning_rate = learning_rate
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                done = _run(self.layers, self.L, &self.hyper, self._fused, <double *> xp, x_f, n0, m_total,
                            <double *> yp, nL, order_p, first_example, n_examples, bs,
                            <double *> xb, <double *> yb, <double *> sc, <double *> mask_p,
                            self._hidden_units, t0, cp)
        else:
            with nogil:
                done = _run(self.layers, self.L, &self.hyper, self._fused, <float *> xp, x_f, n0, m_total,
                            <float *> yp, nL, order_p, first_example, n_examples, bs,
                            <float *> xb, <float *> yb, <float *> sc, <float *> mask_p,
                            self._hidden_units, t0, cp)
        return done
