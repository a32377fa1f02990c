"""Output-layer kernels: the cost and the output gradient in one pass.

For a sigmoid output with binary cross-entropy the gradient with respect to
the logits is simply dZ = A - Y, so dA[L] = -(Y/A - (1-Y)/(1-A)) is never
formed (it divides by numbers that round to 0 or 1). The cost is taken from
the logits, softplus(z) - y*z, which is finite for every finite z.
"""

from cython cimport floating
from libc.math cimport log

from _scalar_math cimport softplus


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
