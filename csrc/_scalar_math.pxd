# Scalar activation functions and their derivatives, shared by every kernel
# module as `cdef inline` (one definition, no cross-module cimport of .pyx).
#
# float32 kernels call the float versions of libm so that a float32 network
# never pays for double-precision transcendentals.

from cython cimport floating
from libc.math cimport exp, expf, log1p, log1pf, tanh, tanhf, fabs, fabsf

# Activation codes shared by the kernels and by the Python wrappers.
cdef enum Activation:
    IDENTITY = 0
    RELU = 1
    TANH = 2
    SIGMOID = 3


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating sigmoid(floating z) noexcept nogil:
    # Two branches so that exp never overflows: exp of a non-positive number.
    cdef floating e
    if z >= 0:
        e = exp_(-z)
        return 1 / (1 + e)
    e = exp_(z)
    return e / (1 + e)


cdef inline floating tanh_(floating z) noexcept nogil:
    if floating is float:
        return tanhf(z)
    else:
        return tanh(z)


cdef inline double softplus(double z) noexcept nogil:
    # log(1 + exp(z)) without overflow for large z nor loss for very negative z.
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline floating activate(int code, floating z) noexcept nogil:
    if code == RELU:
        # Written so that NaN propagates (as np.maximum does): a diverging
        # network must show a NaN cost, not train on with NaN weights.
        return 0 if z <= 0 else z
    if code == TANH:
        return tanh_(z)
    if code == SIGMOID:
        return sigmoid(z)
    return z


cdef inline floating derivative_from_z(int code, floating z) noexcept nogil:
    """g'(z) computed from the pre-activation alone (the course's cache)."""
    cdef floating s
    if code == RELU:
        return 1 if z > 0 else 0
    if code == TANH:
        s = tanh_(z)
        return 1 - s * s
    if code == SIGMOID:
        s = sigmoid(z)
        return s * (1 - s)
    return 1


cdef inline int activation_code(str name) except -1:
    if name == "relu":
        return RELU
    if name == "tanh":
        return TANH
    if name == "sigmoid":
        return SIGMOID
    if name == "identity":
        return IDENTITY
    raise ValueError(
        f"activation must be one of 'relu', 'tanh', 'sigmoid', 'identity'; got {name!r}"
    )
