# BLAS wrapped once, for row-major (C-ordered) operands.
#
# scipy ships column-major Fortran BLAS. A row-major matrix is the column-major
# storage of its transpose, so C = op(A) op(B) in row-major order is computed as
# C^T = op(B)^T op(A)^T in column-major order: the operands swap places and keep
# their own transpose flags. No operand is ever copied.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_rowmajor(
    bint trans_a, bint trans_b, int m, int n, int k,
    floating alpha, const floating *a, int lda,
    const floating *b, int ldb,
    floating beta, floating *c, int ldc,
) noexcept nogil:
    """C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C, all row-major.

    `lda`, `ldb` and `ldc` are the row strides (in elements) of the stored
    matrices. Callers return early when m or n is zero; k may be zero, in which
    case C is only scaled by beta (BLAS semantics).
    """
    cdef char transa = b'T' if trans_a else b'N'
    cdef char transb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&transb, &transa, &n, &m, &k, &alpha, <float *> b, &ldb,
              <float *> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&transb, &transa, &n, &m, &k, &alpha, <double *> b, &ldb,
              <double *> a, &lda, &beta, c, &ldc)


cdef inline bint is_c_contiguous(const floating[:, :] a) noexcept nogil:
    """Row-major with unit inner stride; size-1 dimensions may have any stride."""
    cdef Py_ssize_t item = sizeof(floating)
    return ((a.shape[1] <= 1 or a.strides[1] == item)
            and (a.shape[0] <= 1 or a.strides[0] == a.shape[1] * item))


cdef inline bint is_f_contiguous(const floating[:, :] a) noexcept nogil:
    """Column-major with unit inner stride; size-1 dimensions may have any stride."""
    cdef Py_ssize_t item = sizeof(floating)
    return ((a.shape[0] <= 1 or a.strides[0] == item)
            and (a.shape[1] <= 1 or a.strides[1] == a.shape[0] * item))


cdef inline int leading_dim(Py_ssize_t n) noexcept nogil:
    # BLAS rejects a leading dimension of 0 even when the matrix is empty.
    return <int> n if n > 1 else 1
