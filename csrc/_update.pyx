"""Parameter-update kernels, in place, one pass over memory.

Plain gradient descent, momentum and Adam. The optimizer state (velocity,
moments) lives in caller-owned arrays of the parameter's shape; the L2 term
is added to the gradient inside the loop, so nothing is stored twice.
"""

from cython cimport floating
from libc.math cimport sqrt, sqrtf

from _passes cimport momentum_step


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


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef int _check_state(const floating[:, ::1] param, const floating[:, ::1] other,
                      str name) except -1:
    if other.shape[0] != param.shape[0] or other.shape[1] != param.shape[1]:
        raise ValueError(
            f"{name} must have the shape of param ({param.shape[0]}, {param.shape[1]}); "
            f"got ({other.shape[0]}, {other.shape[1]})"
        )
    return 0


def momentum_update(
    floating[:, ::1] param not None,
    const floating[:, ::1] grad not None,
    floating[:, ::1] velocity not None,
    double learning_rate,
    double beta,
    double weight_decay=0.0,
):
    """Gradient descent with momentum, in place, in one pass.

    With ``g = grad + weight_decay * param`` (the L2 term, added here so that
    the stored gradient never needs a second pass)::

        velocity = beta * velocity + (1 - beta) * g
        param   -= learning_rate * velocity

    This is the course's exponentially weighted form of momentum.

    Parameters
    ----------
    param : (r, c) C-contiguous array, updated in place
    grad : (r, c) C-contiguous array
    velocity : (r, c) C-contiguous array, the optimizer state, updated in place
    learning_rate, beta : float
    weight_decay : float
        The L2 coefficient lambda/m; 0 for biases and for no regularisation.
    """
    _check_state(param, grad, "grad")
    _check_state(param, velocity, "velocity")
    cdef Py_ssize_t count = param.shape[0] * param.shape[1]
    if count == 0:
        return
    with nogil:
        momentum_step(&param[0, 0], &grad[0, 0], &velocity[0, 0], count, <floating> 1,
                      <floating> learning_rate, <floating> beta, <floating> (1.0 - beta),
                      <floating> weight_decay)


def adam_update(
    floating[:, ::1] param not None,
    const floating[:, ::1] grad not None,
    floating[:, ::1] m not None,
    floating[:, ::1] v not None,
    double learning_rate,
    double beta1,
    double beta2,
    double epsilon,
    long t,
    double weight_decay=0.0,
):
    """One bias-corrected Adam step, in place, in one pass.

    With ``g = grad + weight_decay * param`` (the L2 term)::

        m      = beta1 * m + (1 - beta1) * g
        v      = beta2 * v + (1 - beta2) * g**2
        param -= learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)

    Parameters
    ----------
    param : (r, c) C-contiguous array, updated in place
    grad : (r, c) C-contiguous array
    m, v : (r, c) C-contiguous arrays, first and second moment estimates, updated in place
    learning_rate, beta1, beta2, epsilon : float
    t : int
        The step number, counted from 1, for the bias correction.
    weight_decay : float
        The L2 coefficient lambda/m; 0 for biases and for no regularisation.
    """
    _check_state(param, grad, "grad")
    _check_state(param, m, "m")
    _check_state(param, v, "v")
    if t < 1:
        raise ValueError(f"t must be an integer >= 1 (Adam counts steps from 1); got {t}")
    if not (0 <= beta1 < 1) or not (0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must be in [0, 1); got {beta1} and {beta2}")
    cdef Py_ssize_t r = param.shape[0], c = param.shape[1], i, j
    cdef floating lr = <floating> learning_rate
    cdef floating b1 = <floating> beta1
    cdef floating b2 = <floating> beta2
    cdef floating one_minus_b1 = <floating> (1.0 - beta1)
    cdef floating one_minus_b2 = <floating> (1.0 - beta2)
    cdef floating eps = <floating> epsilon
    cdef floating c1 = <floating> (1.0 / (1.0 - beta1 ** t))
    cdef floating c2 = <floating> (1.0 / (1.0 - beta2 ** t))
    cdef floating wd = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    cdef floating g, mm, vv
    with nogil:
        for i in range(r):
            for j in range(c):
                g = grad[i, j]
                if decay:
                    g = g + wd * param[i, j]
                mm = b1 * m[i, j] + one_minus_b1 * g
                vv = b2 * v[i, j] + one_minus_b2 * (g * g)
                m[i, j] = mm
                v[i, j] = vv
                param[i, j] -= lr * (mm * c1) / (_sqrt(vv * c2) + eps)
