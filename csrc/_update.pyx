"""Parameter-update kernels, in place, one pass over memory."""

from cython cimport floating


def gradient_descent_update(
    floating[:, ::1] param not None,
    const floating[:, ::1] grad not None,
    double learning_rate,
):
    """param -= learning_rate * grad, in place.

    Parameters
    ----------
    param : (r, c) C-contiguous array, updated in place
    grad : (r, c) C-contiguous array
    learning_rate : float
    """
    cdef Py_ssize_t r = param.shape[0], c = param.shape[1], i, j
    if grad.shape[0] != r or grad.shape[1] != c:
        raise ValueError(
            f"grad must have the shape of param ({r}, {c}); got ({grad.shape[0]}, {grad.shape[1]})"
        )
    cdef floating lr = <floating> learning_rate
    with nogil:
        for i in range(r):
            for j in range(c):
                param[i, j] -= lr * grad[i, j]
