"""Per-layer kernels: the linear step fused with its activation, the backward
activation mask fused with the bias row-sum, and the two backward GEMMs.

Every array is 2-D with examples as columns (the course convention). Outputs
are C-contiguous buffers owned by the caller, so the hot path allocates
nothing. The first layer's input may be C- or F-ordered: an F-ordered
(n_x, m) array is the transpose of row-major (m, n_x) data and reaches BLAS
through a transpose flag, never through a copy.

Shapes are checked here, with the GIL held, before any ``nogil`` block, so a
wrong call raises ``ValueError`` instead of touching memory it does not own.
"""

from cython cimport floating
from libc.limits cimport INT_MAX

from _blas cimport gemm_rowmajor, is_c_contiguous, is_f_contiguous, leading_dim
from _passes cimport bias_activation, mask_rowsum
from _scalar_math cimport RELU, activation_code


cdef inline int _blas_dim(Py_ssize_t n, str what) except -1:
    if n > INT_MAX:
        raise ValueError(
            f"{what} has a dimension of {n}, larger than BLAS's 32-bit limit {INT_MAX}"
        )
    return <int> n


cdef inline bint _input_is_f_ordered(const floating[:, :] a, str name) except -1:
    """Whether `a` is stored column-major; raises if it is neither layout."""
    if is_c_contiguous(a):
        return False
    if is_f_contiguous(a):
        return True
    raise ValueError(f"{name} must be C- or F-contiguous; got a strided view")


def linear_activation_forward(
    const floating[:, ::1] W not None,
    const floating[:, ::1] b not None,
    const floating[:, :] A_prev not None,
    object activation,
    floating[:, ::1] Z not None,
    floating[:, ::1] A not None,
):
    """Z = W @ A_prev + b and A = g(Z), written into `Z` and `A`.

    The GEMM writes W @ A_prev, then a single pass over Z adds the bias and
    applies the activation, so Z is read from memory once after the GEMM.
    `A` may be the same buffer as `Z` when `activation` is ``"identity"``.

    Parameters
    ----------
    W : (n, k) C-contiguous array
    b : (n, 1) C-contiguous array
    A_prev : (k, m) C- or F-contiguous array
    activation : {"relu", "tanh", "sigmoid", "identity"}
    Z, A : (n, m) C-contiguous output arrays
    """
    cdef int code = activation_code(activation)
    cdef Py_ssize_t n = W.shape[0], k = W.shape[1], m = A_prev.shape[1]
    if A_prev.shape[0] != k:
        raise ValueError(
            f"A_prev must have W.shape[1] = {k} rows; got shape "
            f"({A_prev.shape[0]}, {m})"
        )
    if b.shape[0] != n or b.shape[1] != 1:
        raise ValueError(f"b must have shape ({n}, 1); got ({b.shape[0]}, {b.shape[1]})")
    if Z.shape[0] != n or Z.shape[1] != m:
        raise ValueError(f"Z must have shape ({n}, {m}); got ({Z.shape[0]}, {Z.shape[1]})")
    if A.shape[0] != n or A.shape[1] != m:
        raise ValueError(f"A must have shape ({n}, {m}); got ({A.shape[0]}, {A.shape[1]})")
    cdef bint a_prev_f = _input_is_f_ordered(A_prev, "A_prev")
    cdef int bn = _blas_dim(n, "W"), bk = _blas_dim(k, "W"), bm = _blas_dim(m, "A_prev")
    if n == 0 or m == 0:
        return
    cdef Py_ssize_t i, j
    with nogil:
        if k > 0:
            gemm_rowmajor(False, a_prev_f, bn, bm, bk,
                          <floating> 1, &W[0, 0], leading_dim(k),
                          &A_prev[0, 0], leading_dim(m if not a_prev_f else k),
                          <floating> 0, &Z[0, 0], leading_dim(m))
        else:
            for i in range(n):
                for j in range(m):
                    Z[i, j] = 0
        bias_activation(code, n, m, &b[0, 0], &Z[0, 0], &A[0, 0])


def activation_backward(
    const floating[:, ::1] dA not None,
    const floating[:, ::1] Z not None,
    const floating[:, ::1] A,
    object activation,
    floating[:, ::1] dZ not None,
    floating[:, ::1] db not None,
    double db_scale,
):
    """dZ = dA * g'(Z) and db = db_scale * rowsum(dZ), in one pass.

    Parameters
    ----------
    dA, Z : (n, m) C-contiguous arrays
    A : (n, m) C-contiguous array or None
        The cached activation g(Z). When given, tanh' and sigmoid' are taken
        from it (no transcendental call); when None they are recomputed from Z,
        as the course's ``sigmoid_backward`` does.
    activation : {"relu", "tanh", "sigmoid", "identity"}
    dZ : (n, m) C-contiguous output; may be the same buffer as `dA`.
    db : (n, 1) C-contiguous output
    db_scale : float
        Usually 1/m.
    """
    cdef int code = activation_code(activation)
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1]
    if dA.shape[0] != n or dA.shape[1] != m:
        raise ValueError(f"dA must have the shape of Z ({n}, {m}); got ({dA.shape[0]}, {dA.shape[1]})")
    if dZ.shape[0] != n or dZ.shape[1] != m:
        raise ValueError(f"dZ must have the shape of Z ({n}, {m}); got ({dZ.shape[0]}, {dZ.shape[1]})")
    if db.shape[0] != n or db.shape[1] != 1:
        raise ValueError(f"db must have shape ({n}, 1); got ({db.shape[0]}, {db.shape[1]})")
    cdef bint have_a = A is not None
    if have_a and (A.shape[0] != n or A.shape[1] != m):
        raise ValueError(f"A must have the shape of Z ({n}, {m}); got ({A.shape[0]}, {A.shape[1]})")
    cdef Py_ssize_t i
    # relu' is Z > 0, read from Z as the NumPy backend does: with A = relu(Z)
    # it is A > 0 too, but the two could differ for an A not computed from Z.
    cdef const floating *a_ptr = &A[0, 0] if have_a and code != RELU and n > 0 and m > 0 else NULL
    with nogil:
        if m == 0:
            for i in range(n):
                db[i, 0] = 0
        elif n > 0:
            mask_rowsum(code, n, m, &dA[0, 0], &Z[0, 0], a_ptr, &dZ[0, 0], &db[0, 0], db_scale)


cdef int _check_backward_shapes(
    const floating[:, ::1] dZ, const floating[:, :] A_prev,
    const floating[:, ::1] W, Py_ssize_t dA_rows, Py_ssize_t dA_cols,
    bint have_dA_prev,
) except -1:
    cdef Py_ssize_t n = dZ.shape[0], m = dZ.shape[1], k = W.shape[1]
    if W.shape[0] != n:
        raise ValueError(f"W must have dZ.shape[0] = {n} rows; got {W.shape[0]}")
    if A_prev.shape[0] != k or A_prev.shape[1] != m:
        raise ValueError(
            f"A_prev must have shape ({k}, {m}); got ({A_prev.shape[0]}, {A_prev.shape[1]})"
        )
    if have_dA_prev and (dA_rows != k or dA_cols != m):
        raise ValueError(f"dA_prev must have shape ({k}, {m}); got ({dA_rows}, {dA_cols})")
    _blas_dim(n, "dZ")
    _blas_dim(m, "dZ")
    _blas_dim(k, "W")
    return 0


cdef void _dA_prev_gemm(
    const floating[:, ::1] dZ, const floating[:, ::1] W, floating[:, ::1] dA_prev,
) noexcept nogil:
    # dA_prev (k, m) = W^T (k, n) @ dZ (n, m)
    cdef int n = <int> dZ.shape[0], m = <int> dZ.shape[1], k = <int> W.shape[1]
    cdef Py_ssize_t i, j
    if n == 0:
        for i in range(k):
            for j in range(m):
                dA_prev[i, j] = 0
        return
    gemm_rowmajor(True, False, k, m, n, <floating> 1, &W[0, 0], leading_dim(k),
                  &dZ[0, 0], leading_dim(m), <floating> 0, &dA_prev[0, 0], leading_dim(m))


cdef void _dW_gemm(
    const floating[:, ::1] dZ, const floating[:, :] A_prev, bint a_prev_f,
    floating alpha, floating beta, floating *out,
) noexcept nogil:
    # out (n, k) = alpha * dZ (n, m) @ A_prev^T (m, k) + beta * out
    cdef int n = <int> dZ.shape[0], m = <int> dZ.shape[1], k = <int> A_prev.shape[0]
    # A C-ordered A_prev (k, m) needs a transpose flag; an F-ordered one is
    # already stored as row-major (m, k), which is exactly A_prev^T.
    gemm_rowmajor(False, not a_prev_f, n, k, m, alpha, &dZ[0, 0], leading_dim(m),
                  &A_prev[0, 0], leading_dim(k if a_prev_f else m),
                  beta, out, leading_dim(k))


def linear_backward(
    const floating[:, ::1] dZ not None,
    const floating[:, :] A_prev not None,
    const floating[:, ::1] W not None,
    floating[:, ::1] dW not None,
    floating[:, ::1] dA_prev,
    double dW_scale,
):
    """dW = dW_scale * dZ @ A_prev.T and, unless `dA_prev` is None, dA_prev = W.T @ dZ.

    Parameters
    ----------
    dZ : (n, m) C-contiguous array
    A_prev : (k, m) C- or F-contiguous array
    W : (n, k) C-contiguous array
    dW : (n, k) C-contiguous output
    dA_prev : (k, m) C-contiguous output, or None to skip that GEMM (first layer)
    dW_scale : float
        Usually 1/m.
    """
    cdef bint have_dA_prev = dA_prev is not None
    _check_backward_shapes(dZ, A_prev, W,
                           dA_prev.shape[0] if have_dA_prev else 0,
                           dA_prev.shape[1] if have_dA_prev else 0, have_dA_prev)
    if dW.shape[0] != W.shape[0] or dW.shape[1] != W.shape[1]:
        raise ValueError(
            f"dW must have the shape of W ({W.shape[0]}, {W.shape[1]}); "
            f"got ({dW.shape[0]}, {dW.shape[1]})"
        )
    cdef bint a_prev_f = _input_is_f_ordered(A_prev, "A_prev")
    cdef Py_ssize_t n = dZ.shape[0], m = dZ.shape[1], k = W.shape[1], i, j
    if have_dA_prev and &dA_prev[0, 0] == &dZ[0, 0] and dZ.size > 0:
        raise ValueError("dA_prev must not share memory with dZ")
    with nogil:
        if have_dA_prev and k > 0 and m > 0:
            _dA_prev_gemm(dZ, W, dA_prev)
        if n > 0 and k > 0:
            if m == 0:
                for i in range(n):
                    for j in range(k):
                        dW[i, j] = 0
            else:
                _dW_gemm(dZ, A_prev, a_prev_f, <floating> dW_scale, <floating> 0, &dW[0, 0])


def linear_backward_update(
    const floating[:, ::1] dZ not None,
    const floating[:, :] A_prev not None,
    floating[:, ::1] W not None,
    floating[:, ::1] dA_prev,
    double dW_scale,
    double learning_rate,
    double weight_decay=0.0,
):
    """Backward GEMMs with the gradient-descent step fused into the dW GEMM.

    dA_prev = W.T @ dZ is formed first, with the weights of the forward pass;
    then W <- (1 - learning_rate * weight_decay) * W
                - learning_rate * dW_scale * dZ @ A_prev.T
    in the same GEMM (BLAS's ``beta`` scales W, ``alpha`` carries the step),
    so dW is never written to memory. ``weight_decay`` is the L2 coefficient
    lambda/m; 0 gives plain gradient descent.

    Parameters
    ----------
    dZ : (n, m) C-contiguous array
    A_prev : (k, m) C- or F-contiguous array
    W : (n, k) C-contiguous array, updated in place
    dA_prev : (k, m) C-contiguous output, or None (first layer)
    dW_scale, learning_rate, weight_decay : float
    """
    cdef bint have_dA_prev = dA_prev is not None
    _check_backward_shapes(dZ, A_prev, W,
                           dA_prev.shape[0] if have_dA_prev else 0,
                           dA_prev.shape[1] if have_dA_prev else 0, have_dA_prev)
    cdef bint a_prev_f = _input_is_f_ordered(A_prev, "A_prev")
    cdef Py_ssize_t n = dZ.shape[0], m = dZ.shape[1], k = W.shape[1], i, j
    cdef floating shrink = <floating> (1.0 - learning_rate * weight_decay)
    with nogil:
        if have_dA_prev and k > 0 and m > 0:
            _dA_prev_gemm(dZ, W, dA_prev)
        if n > 0 and k > 0:
            if m == 0:
                for i in range(n):
                    for j in range(k):
                        W[i, j] = W[i, j] * shrink
            else:
                _dW_gemm(dZ, A_prev, a_prev_f, <floating> (-learning_rate * dW_scale),
                         shrink, &W[0, 0])
