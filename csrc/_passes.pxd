# Elementwise passes over row-major (n, m) blocks, shared by the per-layer
# kernels (_layer.pyx) and the whole-step routine (_step.pyx) as `cdef inline`,
# so that each piece of arithmetic is written once.
#
# Every pointer addresses n contiguous rows of m elements (row stride m).
# The loops are specialised per activation outside the inner loop and written
# so that the C compiler vectorises them: modules using these passes are
# compiled with -fassociative-math -fno-signed-zeros -fno-trapping-math (see
# csrc/meson.build), without which a row sum is a chain of dependent
# additions and a relu mask a mispredicted branch per element (10x slower on
# random signs). Those flags only let sums be reordered; no finite-math
# assumption is made, so NaN and infinity still propagate.
#
# The passes run on one thread. A version that split passes of 2^17
# elements and more across OpenMP threads was measured and removed: OpenMP's
# workers spin beside OpenBLAS's on a 2-core machine, and a 0.1 ms pass then
# took 4-15 ms (the mnistish step went from 5.9 ms to 38 ms; see
# bench/RESULTS.md). BLAS already uses every core for the GEMMs.

from cython cimport floating
from libc.math cimport fabs, log

from _scalar_math cimport (
    RELU, TANH, SIGMOID, IDENTITY, activate, derivative_from_z, exp_nonpositive,
)

# ------------------------------------------------------------ forward pass
cdef inline void _bias_activation_row(
    int code, Py_ssize_t m, floating bias, floating *zrow, floating *arow,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating z
    if arow == zrow:
        if code == RELU:
            for j in range(m):
                z = zrow[j] + bias
                zrow[j] = 0 if z <= 0 else z  # NaN propagates, as np.maximum
        elif code == IDENTITY:
            for j in range(m):
                zrow[j] = zrow[j] + bias
        else:
            for j in range(m):
                zrow[j] = activate(code, zrow[j] + bias)
    else:
        if code == RELU:
            for j in range(m):
                z = zrow[j] + bias
                zrow[j] = z
                arow[j] = 0 if z <= 0 else z
        elif code == IDENTITY:
            for j in range(m):
                z = zrow[j] + bias
                zrow[j] = z
                arow[j] = z
        else:
            for j in range(m):
                z = zrow[j] + bias
                zrow[j] = z
                arow[j] = activate(code, z)


cdef inline void bias_activation(
    int code, Py_ssize_t n, Py_ssize_t m, const floating *b, floating *Z, floating *A,
) noexcept nogil:
    """Z[i, :] += b[i] and A = g(Z); with A == Z, Z is replaced by g(Z + b)."""
    cdef Py_ssize_t i
    for i in range(n):
        _bias_activation_row(code, m, b[i], Z + i * m, A + i * m)


cdef inline void bias_activation_dot(
    int code, Py_ssize_t n, Py_ssize_t m, const floating *b, floating *A,
    const floating *w, floating *out,
) noexcept nogil:
    """A = g(A + b) in place, and out = w @ A (w: n values, out: m values).

    The last hidden layer of a one-unit output: the output layer's forward
    product is taken while the rows of A are still in cache, instead of a
    second pass over A by a GEMV.
    """
    cdef Py_ssize_t i, j
    cdef floating bias, z, wi
    cdef floating *arow
    for j in range(m):
        out[j] = 0
    for i in range(n):
        arow = A + i * m
        bias = b[i]
        wi = w[i]
        if code == RELU:
            for j in range(m):
                z = arow[j] + bias
                z = 0 if z <= 0 else z
                arow[j] = z
                out[j] += wi * z
        elif code == IDENTITY:
            for j in range(m):
                z = arow[j] + bias
                arow[j] = z
                out[j] += wi * z
        else:
            for j in range(m):
                z = activate(code, arow[j] + bias)
                arow[j] = z
                out[j] += wi * z


# ----------------------------------------------------------- backward pass
cdef inline double _mask_row(
    int code, Py_ssize_t m, const floating *da_row, const floating *z_row,
    const floating *a_row, floating *dz_row,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef double row_sum = 0
    cdef floating d, x, a
    if a_row != NULL:
        if code == RELU:
            for j in range(m):
                # Both loads before the select: a conditional load is
                # control flow, which stops vectorisation.
                x = da_row[j]
                a = a_row[j]
                # A multiply by the 0/1 mask, not a select, so that NaN or
                # inf in dA propagates as in NumPy's dA * (Z > 0).
                d = x * (<floating> 1 if a > 0 else <floating> 0)
                dz_row[j] = d
                row_sum += d
        elif code == TANH:
            for j in range(m):
                a = a_row[j]
                d = da_row[j] * (1 - a * a)
                dz_row[j] = d
                row_sum += d
        elif code == SIGMOID:
            for j in range(m):
                a = a_row[j]
                d = da_row[j] * (a * (1 - a))
                dz_row[j] = d
                row_sum += d
        else:
            for j in range(m):
                d = da_row[j]
                dz_row[j] = d
                row_sum += d
    elif code == RELU:
        for j in range(m):
            x = da_row[j]
            a = z_row[j]
            d = x * (<floating> 1 if a > 0 else <floating> 0)
            dz_row[j] = d
            row_sum += d
    else:
        for j in range(m):
            d = da_row[j] * derivative_from_z(code, z_row[j])
            dz_row[j] = d
            row_sum += d
    return row_sum


cdef inline void mask_rowsum(
    int code, Py_ssize_t n, Py_ssize_t m,
    const floating *dA, const floating *Z, const floating *A,
    floating *dZ, floating *db, double db_scale,
) noexcept nogil:
    """dZ = dA * g'(z) and db = db_scale * rowsum(dZ), one pass.

    g' comes from the cached activation `A` when it is not NULL (relu: A > 0,
    which is Z > 0; tanh: 1 - A^2; sigmoid: A (1 - A)), else from `Z`. `dZ`
    may be the same memory as `dA` or as `A` (each element is read before it
    is written).
    """
    cdef Py_ssize_t i
    for i in range(n):
        db[i] = <floating> (db_scale * _mask_row(
            code, m, dA + i * m, Z + i * m if Z != NULL else NULL,
            A + i * m if A != NULL else NULL, dZ + i * m))


cdef inline void mask_rowsum_columns(
    int code, Py_ssize_t n, Py_ssize_t cols,
    const floating *dA, Py_ssize_t ld_da, floating *A, Py_ssize_t ld_a, double *row_sums,
) noexcept nogil:
    """A column block of :func:`mask_rowsum` with g' from A, dZ written over A.

    dA is (n, cols) with row stride `ld_da`, A (n, cols) with row stride
    `ld_a` (a block of a wider matrix); row_sums[i] += the sum of the block's
    row i of dZ (the caller scales the total into db).
    """
    cdef Py_ssize_t i
    for i in range(n):
        row_sums[i] += _mask_row(code, cols, dA + i * ld_da, NULL, A + i * ld_a, A + i * ld_a)


cdef inline double _output_backward_row(
    int code, Py_ssize_t m, floating *arow, const floating *dz_out, floating wi,
    double *grad_out,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef double row_sum = 0, grad = 0
    cdef floating a, g, d
    if code == RELU:
        for j in range(m):
            a = arow[j]
            g = dz_out[j]
            grad += g * a
            d = wi * g
            d = d if a > 0 else 0
            arow[j] = d
            row_sum += d
    elif code == TANH:
        for j in range(m):
            a = arow[j]
            g = dz_out[j]
            grad += g * a
            d = wi * g * (1 - a * a)
            arow[j] = d
            row_sum += d
    elif code == SIGMOID:
        for j in range(m):
            a = arow[j]
            g = dz_out[j]
            grad += g * a
            d = wi * g * (a * (1 - a))
            arow[j] = d
            row_sum += d
    else:
        for j in range(m):
            a = arow[j]
            g = dz_out[j]
            grad += g * a
            d = wi * g
            arow[j] = d
            row_sum += d
    grad_out[0] = grad
    return row_sum


cdef inline void _output_backward_one(
    int code, Py_ssize_t i, Py_ssize_t m, floating *A, const floating *dz_out,
    floating *w, double shrink, double step, floating *db, double db_scale,
) noexcept nogil:
    cdef double grad = 0
    cdef floating wi = w[i]
    db[i] = <floating> (db_scale * _output_backward_row(code, m, A + i * m, dz_out, wi, &grad))
    w[i] = <floating> (shrink * wi + step * grad)


cdef inline void output_backward_mask(
    int code, Py_ssize_t n, Py_ssize_t m, floating *A, const floating *dz_out,
    floating *w, double shrink, double step, floating *db, double db_scale,
) noexcept nogil:
    """Back through a one-unit output layer into the last hidden layer, in one pass.

    With w (n values) the output layer's weights and dz_out (m values) its dZ:
    dA = w^T dz_out (an outer product) is never stored; each row i of the
    hidden activation A becomes dZ[i, j] = w[i] dz_out[j] g'(A[i, j]), with
    db[i] = db_scale * rowsum; and, from the same row, the output layer's
    update w[i] <- shrink w[i] + step * sum_j dz_out[j] A[i, j] (its dW GEMV),
    after w[i] was used for dA.
    """
    cdef Py_ssize_t i
    for i in range(n):
        _output_backward_one(code, i, m, A, dz_out, w, shrink, step, db, db_scale)


# ------------------------------------------------------------ output layer
cdef inline double sigmoid_output(
    Py_ssize_t n, Py_ssize_t m, const floating *b, floating *Z, const floating *Y,
    floating *db, double db_scale,
) noexcept nogil:
    """The output layer after its GEMM, in one pass over the logits.

    z = Z + b; cost terms softplus(z) - y z (stable for every finite z);
    dZ = sigmoid(z) - y written over Z; db = db_scale * rowsum(dZ).
    Returns the summed cost (not divided by m).

    One exp per element serves both: with e = exp(-|z|) in (0, 1],
    sigmoid(z) is 1/(1+e) or e/(1+e) and softplus(z) = max(z, 0) + log(1+e).
    The exp is :c:func:`exp_nonpositive` (vectorisable, a few ulp), and the
    logs are summed as the log of products of 256 factors 1+e in (1, 2] (no
    overflow: at most 2^256; rounding: 256 ulp of the product, 3e-14 in its
    log), one log call per 256 elements, so that the inner
    loop over a chunk vectorises; terms below double rounding of 1+e
    (e < 1e-16, i.e. |z| > 37) are lost, which moves the cost by less than
    1e-16 per example.
    """
    cdef Py_ssize_t i, j, j0, j1
    cdef double total = 0, row_sum, z, y, e, s, prod, chunk_cost, chunk_sum
    cdef floating dz, bias
    cdef floating *zrow
    cdef const floating *yrow
    for i in range(n):
        zrow = Z + i * m
        yrow = Y + i * m
        bias = b[i]
        row_sum = 0
        for j0 in range(0, m, 256):
            j1 = j0 + 256 if j0 + 256 < m else m
            # Sums local to the chunk: gcc vectorises a reduction only when
            # the accumulator starts and ends with the loop.
            prod = 1
            chunk_cost = 0
            chunk_sum = 0
            for j in range(j0, j1):
                z = <floating> (zrow[j] + bias)
                y = yrow[j]
                e = exp_nonpositive(-fabs(z))
                s = 1 / (1 + e)
                # max(z, 0) as arithmetic: a select feeding a sum stops gcc
                # from vectorising the loop. Exact, and NaN propagates.
                chunk_cost += (0.5 * z + 0.5 * fabs(z)) - y * z
                prod *= 1 + e
                dz = <floating> ((s if z >= 0 else e * s) - y)
                zrow[j] = dz
                chunk_sum += dz
            total += chunk_cost + log(prod)
            row_sum += chunk_sum
        db[i] = <floating> (row_sum * db_scale)
    return total


# ------------------------------------------------------------------ update
cdef inline double sum_squares(const floating *x, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    cdef double total = 0, v
    for j in range(count):
        v = x[j]
        total += v * v
    return total


cdef inline void scaled_add(floating *x, const floating *g, floating alpha, Py_ssize_t count) noexcept nogil:
    """x += alpha * g."""
    cdef Py_ssize_t j
    for j in range(count):
        x[j] += alpha * g[j]


cdef inline void momentum_step(
    floating *param, const floating *grad, floating *velocity, Py_ssize_t count,
    floating grad_scale, floating learning_rate, floating beta, floating one_minus_beta,
    floating weight_decay,
) noexcept nogil:
    """The course's momentum step over `count` elements, in one pass.

    With g = grad_scale * grad + weight_decay * param (the L2 term; skipped,
    not multiplied by 0, when weight_decay is 0, so that an infinite weight
    does not turn into NaN): velocity = beta * velocity + one_minus_beta * g
    and param -= learning_rate * velocity. A grad_scale of 1 leaves the
    gradient exactly as it is. `one_minus_beta` is the caller's rounding of
    1 - beta, so that every caller rounds it the same way.
    """
    cdef Py_ssize_t j
    cdef floating g, v
    if weight_decay != 0:
        for j in range(count):
            g = grad_scale * grad[j] + weight_decay * param[j]
            v = beta * velocity[j] + one_minus_beta * g
            velocity[j] = v
            param[j] -= learning_rate * v
    else:
        for j in range(count):
            g = grad_scale * grad[j]
            v = beta * velocity[j] + one_minus_beta * g
            velocity[j] = v
            param[j] -= learning_rate * v
