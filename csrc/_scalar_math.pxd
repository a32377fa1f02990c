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


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* exp(x) for x <= 0, written (in the AVX2 build) so that a loop calling it vectorises: no
       libm call, no table, no branch. x = k ln2 + r with k = round(x / ln2)
       and |r| <= ln2/2 (Cody-Waite: k ln2_hi is exact), exp(r) by its Taylor
       polynomial to degree 13 (truncation below 1e-17 relative), times 2^k
       built in the exponent bits. Clamped at -708 (exp(-708) ~ 3e-308, still
       a normal double); NaN gives NaN. The relative error is a few ulp plus
       |x| * 2^-53 when the build may reassociate the reduction, which is the
       conditioning of exp anyway (an input rounding moves exp(x) that much). */
    #include <math.h>
    static inline double dnnblocks_exp_nonpositive(double x) {
    #ifndef __AVX2__
        /* Without AVX2 the loop does not vectorise (no 64-bit integer
           vectors to build 2^k), and then libm's exp is the faster one. */
        return exp(x);
    #else
        const double log2e = 1.4426950408889634;
        const double ln2_hi = 6.93147180369123816490e-01;
        const double ln2_lo = 1.90821492927058770002e-10;
        double xc = x < -708.0 ? -708.0 : (x <= 0.0 ? x : 0.0);  /* NaN -> 0 here */
        int k = -(int)(0.5 - xc * log2e);  /* round(xc / ln2), xc / ln2 <= 0 */
        double r = (xc - k * ln2_hi) - k * ln2_lo;
        double p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        uint64_t bits = (uint64_t)(int64_t)(k + 1023) << 52;
        double scale;
        memcpy(&scale, &bits, sizeof scale);
        return x == x ? p * scale : x;
    #endif
    }
    """
    double exp_nonpositive "dnnblocks_exp_nonpositive"(double x) noexcept nogil


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


cdef inline int activation_code(object name) except -1:
    # Any str, numpy.str_ included (names read from an array or a file).
    if not isinstance(name, str):
        raise TypeError(
            f"activation must be one of 'relu', 'tanh', 'sigmoid', 'identity'; got {name!r}"
        )
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
