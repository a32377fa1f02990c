"""Output-layer kernels: the cost and the output gradient in one pass.

For a sigmoid output with binary cross-entropy the gradient with respect to
the logits is simply dZ = A - Y, so dA[L] = -(Y/A - (1-Y)/(1-A)) is never
formed (it divides by numbers that round to 0 or 1). The cost is taken from
the logits, softplus(z) - y*z, which is finite for every finite z.

The softmax output layer (multi-class) has the same shortcut, dZ = A - Y,
and a column-wise softmax that subtracts each column's maximum.
"""

from cython cimport floating
from libc.float cimport DBL_MIN, FLT_MIN
from libc.math cimport exp, log

from _scalar_math cimport exp_, softplus


cdef bint _check_output_arrays(
    const floating[:, ::1] Z, const floating[:, ::1] A, const floating[:, ::1] Y,
    floating[:, ::1] dZ, floating[:, ::1] db,
) except -1:
    """Shape checks shared by the output kernels; False (and db = 0) when m is 0."""
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1], i
    if A.shape[0] != n or A.shape[1] != m:
        raise ValueError(f"A must have the shape of Z ({n}, {m}); got ({A.shape[0]}, {A.shape[1]})")
    if Y.shape[0] != n or Y.shape[1] != m:
        raise ValueError(f"Y must have the shape of Z ({n}, {m}); got ({Y.shape[0]}, {Y.shape[1]})")
    if dZ.shape[0] != n or dZ.shape[1] != m:
        raise ValueError(f"dZ must have the shape of Z ({n}, {m}); got ({dZ.shape[0]}, {dZ.shape[1]})")
    if db.shape[0] != n or db.shape[1] != 1:
        raise ValueError(f"db must have shape ({n}, 1); got ({db.shape[0]}, {db.shape[1]})")
    if m == 0:
        for i in range(n):
            db[i, 0] = 0
        return False
    return True


def sigmoid_cross_entropy(
    const floating[:, ::1] Z not None,
    const floating[:, ::1] A not None,
    const floating[:, ::1] Y not None,
    floating[:, ::1] dZ not None,
    floating[:, ::1] db not None,
    double db_scale,
):
    """Binary cross-entropy cost, dZ = A - Y and db = db_scale * rowsum(dZ).

    Parameters
    ----------
    Z : (n, m) C-contiguous array
        Output logits.
    A : (n, m) C-contiguous array
        sigmoid(Z), as computed by the forward pass.
    Y : (n, m) C-contiguous array
        Labels in {0, 1} (soft labels in [0, 1] also work).
    dZ : (n, m) C-contiguous output
    db : (n, 1) C-contiguous output
    db_scale : float
        Usually 1/m.

    Returns
    -------
    cost : float
        ``mean over examples of sum over outputs`` of softplus(z) - y*z,
        accumulated in double precision. NaN when m is 0.
    """
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1], i, j
    if not _check_output_arrays(Z, A, Y, dZ, db):
        return float("nan")
    cdef double total = 0, row_sum, z, y
    cdef floating dz
    with nogil:
        for i in range(n):
            row_sum = 0
            for j in range(m):
                z = Z[i, j]
                y = Y[i, j]
                total += softplus(z) - y * z
                dz = A[i, j] - Y[i, j]
                dZ[i, j] = dz
                row_sum += dz
            db[i, 0] = <floating> (row_sum * db_scale)
    return total / m


def cross_entropy_cost(const floating[:, ::1] AL not None, const floating[:, ::1] Y not None):
    """The course's cost from probabilities: -(1/m) sum(y log a + (1-y) log(1-a)).

    Kept for :mod:`dnnblocks.course`, whose ``compute_cost(AL, Y)`` only sees
    probabilities; training uses :func:`sigmoid_cross_entropy`, which is stable.
    A probability of exactly 0 or 1 on the wrong side gives ``inf``, as in NumPy.
    """
    cdef Py_ssize_t n = AL.shape[0], m = AL.shape[1], i, j
    if Y.shape[0] != n or Y.shape[1] != m:
        raise ValueError(f"Y must have the shape of AL ({n}, {m}); got ({Y.shape[0]}, {Y.shape[1]})")
    if m == 0:
        return float("nan")
    cdef double total = 0, a, y
    with nogil:
        for i in range(n):
            for j in range(m):
                a = AL[i, j]
                y = Y[i, j]
                # Skip the term whose weight is exactly 0 so that a = 0 or 1
                # with the matching label costs 0, not 0 * log(0) = NaN.
                if y != 0:
                    total -= y * log(a)
                if y != 1:
                    total -= (1 - y) * log(1 - a)
    return total / m


# Columns are processed in chunks of this many examples so that the per-column
# max and sum live in small stack arrays while every pass over Z and A still
# walks along contiguous rows.
cdef enum:
    _CHUNK = 256


def softmax_forward(const floating[:, ::1] Z not None, floating[:, ::1] A not None):
    """A = softmax(Z) over each column (one column per example).

    Stable: the column maximum is subtracted before exponentiating, so no
    finite logit overflows. `A` may be the same buffer as `Z`.

    Parameters
    ----------
    Z : (K, m) C-contiguous array of logits
    A : (K, m) C-contiguous output
    """
    cdef Py_ssize_t K = Z.shape[0], m = Z.shape[1], i, jj, j0, w
    if A.shape[0] != K or A.shape[1] != m:
        raise ValueError(f"A must have the shape of Z ({K}, {m}); got ({A.shape[0]}, {A.shape[1]})")
    if K == 0 or m == 0:
        return
    cdef floating colmax[_CHUNK]
    cdef floating colsum[_CHUNK]
    cdef const floating *zrow
    cdef floating *arow
    cdef floating e
    with nogil:
        j0 = 0
        while j0 < m:
            w = min(<Py_ssize_t> _CHUNK, m - j0)
            zrow = &Z[0, j0]
            for jj in range(w):
                colmax[jj] = zrow[jj]
                colsum[jj] = 0
            for i in range(1, K):
                zrow = &Z[i, j0]
                for jj in range(w):
                    if zrow[jj] > colmax[jj]:
                        colmax[jj] = zrow[jj]
            for i in range(K):
                zrow = &Z[i, j0]
                arow = &A[i, j0]
                for jj in range(w):
                    e = exp_(zrow[jj] - colmax[jj])
                    arow[jj] = e
                    colsum[jj] += e
            for i in range(K):
                arow = &A[i, j0]
                for jj in range(w):
                    arow[jj] = arow[jj] / colsum[jj]
            j0 += w


cdef double _column_logsumexp(const floating[:, ::1] Z, Py_ssize_t j) noexcept nogil:
    cdef Py_ssize_t K = Z.shape[0], i
    cdef double zmax = Z[0, j], total = 0
    for i in range(1, K):
        if Z[i, j] > zmax:
            zmax = Z[i, j]
    for i in range(K):
        total += exp(Z[i, j] - zmax)
    return zmax + log(total)


def softmax_cross_entropy(
    const floating[:, ::1] Z not None,
    const floating[:, ::1] A not None,
    const floating[:, ::1] Y not None,
    floating[:, ::1] dZ not None,
    floating[:, ::1] db not None,
    double db_scale,
):
    """Categorical cross-entropy cost, dZ = A - Y and db = db_scale * rowsum(dZ).

    Same signature and conventions as :func:`sigmoid_cross_entropy`, for a
    softmax output layer: A = softmax(Z) from the forward pass, Y one-hot
    columns. The cost ``-(1/m) sum y log a`` takes ``log a`` from A where A is
    a normal floating-point number and, where it has underflowed, from the
    logits as ``z - logsumexp(z)`` (column maximum subtracted), so it is finite
    for every finite Z.

    Returns
    -------
    cost : float
        Accumulated in double precision. NaN when m is 0.
    """
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1], i, j
    if not _check_output_arrays(Z, A, Y, dZ, db):
        return float("nan")
    # Below the smallest normal number log(a) loses precision (or is -inf).
    cdef double tiny = FLT_MIN if floating is float else DBL_MIN
    cdef double total = 0, row_sum, a, y
    cdef floating dz
    with nogil:
        for i in range(n):
            row_sum = 0
            for j in range(m):
                a = A[i, j]
                y = Y[i, j]
                if y != 0:
                    if a >= tiny:
                        total -= y * log(a)
                    else:
                        total += y * (_column_logsumexp(Z, j) - Z[i, j])
                dz = A[i, j] - Y[i, j]
                dZ[i, j] = dz
                row_sum += dz
            db[i, 0] = <floating> (row_sum * db_scale)
    return total / m
