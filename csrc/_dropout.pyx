"""Inverted dropout: the mask-and-scale pass and its backward.

The random draws come from a NumPy Generator (so that runs are seeded and both
backends see the same mask); these kernels turn the draws into the scaled
mask and apply it, in one pass, with the GIL released.
"""

from cython cimport floating


def dropout_forward(
    floating[:, ::1] A not None,
    floating[:, ::1] mask not None,
    double keep_prob,
):
    """Inverted dropout of the activations `A`, in place.

    On entry `mask` holds uniform draws in [0, 1); on exit it holds the scaled
    mask, ``1/keep_prob`` where the draw is below `keep_prob` and 0 elsewhere,
    and ``A *= mask``. The expected value of every activation is unchanged, so
    prediction needs no rescaling.

    Parameters
    ----------
    A : (n, m) C-contiguous array, updated in place
    mask : (n, m) C-contiguous array, draws in, scaled mask out
    keep_prob : float in (0, 1]
    """
    cdef Py_ssize_t n = A.shape[0], m = A.shape[1], i, j
    if mask.shape[0] != n or mask.shape[1] != m:
        raise ValueError(
            f"mask must have the shape of A ({n}, {m}); got ({mask.shape[0]}, {mask.shape[1]})"
        )
    if not (0 < keep_prob <= 1):
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    cdef floating keep = <floating> keep_prob
    cdef floating scale = <floating> (1.0 / keep_prob)
    cdef floating s
    with nogil:
        for i in range(n):
            for j in range(m):
                s = scale if mask[i, j] < keep else 0
                mask[i, j] = s
                A[i, j] = A[i, j] * s


def dropout_backward(floating[:, ::1] dA not None, const floating[:, ::1] mask not None):
    """dA *= mask, in place: the gradient flows only through kept units, scaled as they were.

    Parameters
    ----------
    dA : (n, m) C-contiguous array, updated in place
    mask : (n, m) C-contiguous array, the scaled mask of :func:`dropout_forward`
    """
    cdef Py_ssize_t n = dA.shape[0], m = dA.shape[1], i, j
    if mask.shape[0] != n or mask.shape[1] != m:
        raise ValueError(
            f"mask must have the shape of dA ({n}, {m}); got ({mask.shape[0]}, {mask.shape[1]})"
        )
    with nogil:
        for i in range(n):
            for j in range(m):
                dA[i, j] = dA[i, j] * mask[i, j]
