"""Every kernel of both backends against a plain-NumPy reference written here.

Each property test runs the compiled and the NumPy backend on the same inputs
and compares both with the reference (computed in float64 from the very same
input values) and with each other. Tolerances are relative to the size of the
terms that were summed (|W| |A_prev| + |b| for a GEMM and so on), so an element
that cancels to nearly zero is not held to an impossible relative error while
any real mistake (wrong operand, missing bias, wrong transpose, wrong scale)
is many orders of magnitude outside them.

Output buffers are rows in the middle of a larger C-contiguous array filled
with a sentinel, so a kernel writing outside its output is caught too.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dnnblocks

BACKENDS = ("compiled", "numpy")
KERNELS = {name: dnnblocks.get_backend(name) for name in BACKENDS}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
SENTINEL = -12345.5

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Dimensions: mostly small (1 is the interesting edge and hypothesis shrinks to
# it), sometimes large enough for BLAS's blocked code paths.
dim = st.one_of(st.integers(1, 6), st.integers(7, 48))
seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------ reference
def ref_activate(Z, activation):
    Z = np.asarray(Z, dtype=np.float64)
    if activation == "relu":
        return np.where(Z > 0, Z, 0.0)
    if activation == "tanh":
        return np.tanh(Z)
    if activation == "sigmoid":
        # exp of a non-positive number only.
        e = np.exp(-np.abs(Z))
        return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    assert activation == "identity"
    return Z.copy()


def ref_derivative(Z, A, activation):
    """g'(Z); from the given activation values A when A is not None."""
    Z = np.asarray(Z, dtype=np.float64)
    if activation == "relu":
        # The course's relu_backward: dZ[Z <= 0] = 0.
        return (Z > 0).astype(np.float64)
    if activation == "identity":
        return np.ones_like(Z)
    G = ref_activate(Z, activation) if A is None else np.asarray(A, dtype=np.float64)
    if activation == "tanh":
        return 1.0 - G * G
    return G * (1.0 - G)


def ref_derivative_magnitude(Z, A, activation):
    """Size of the terms g'(Z) is computed from, for error bounds (1 - a*a cancels)."""
    if activation in ("relu", "identity"):
        return np.ones(np.shape(Z))
    G = np.abs(ref_activate(Z, activation) if A is None else f64(A))
    return 1.0 + G * G if activation == "tanh" else G * (1.0 + G)


def ref_softplus(Z):
    Z = np.asarray(Z, dtype=np.float64)
    return np.maximum(Z, 0.0) + np.log1p(np.exp(-np.abs(Z)))


# -------------------------------------------------------------------- helpers
def f64(a):
    return np.asarray(a, dtype=np.float64)


def rtol_of(dtype):
    return RTOL[np.dtype(dtype)]


def assert_close(actual, expected, scale, dtype, what):
    """|actual - expected| <= rtol * scale elementwise (scale: the size of the summed terms).

    Plus the dtype's smallest normal number, so that results in the subnormal
    range (sigmoid(-90) in float32) are not held to a relative error.
    """
    actual = f64(actual)
    expected = f64(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
    bound = rtol_of(dtype) * np.broadcast_to(f64(scale), expected.shape) + np.finfo(dtype).tiny
    err = np.abs(actual - expected)
    bad = err > bound
    if bad.any():
        worst = np.argmax(np.where(bad, err / bound, 0))
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements off; worst: got {actual.flat[worst]!r}, "
            f"expected {expected.flat[worst]!r}, error {err.flat[worst]:.3g} > bound {bound.flat[worst]:.3g}"
        )


def guarded(shape, dtype):
    """A C-contiguous output of `shape` inside a sentinel-filled frame; returns (out, check)."""
    n, m = shape
    frame = np.full((n + 2, m), SENTINEL, dtype=dtype)
    out = frame[1 : n + 1]
    assert out.flags.c_contiguous or out.size == 0

    def check():
        assert np.all(frame[0] == SENTINEL) and np.all(frame[-1] == SENTINEL), "wrote outside its output"

    return out, check


def make_rng(seed):
    return np.random.default_rng(seed)


def matrix(rng, shape, dtype, order="C", scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


def with_exact_zeros(rng, a, fraction=0.15):
    """Put exact zeros in `a` (where relu's derivative convention matters)."""
    a = a.copy(order="K")
    a[rng.random(a.shape) < fraction] = 0
    return a


# ---------------------------------------------------------------- registration
def test_kernel_names_are_in_both_backends():
    assert set(dnnblocks.BACKENDS) == set(BACKENDS)
    for name in BACKENDS:
        k = dnnblocks.get_backend(name)
        assert k.name == name
        for kernel in dnnblocks.KERNEL_NAMES:
            assert callable(getattr(k, kernel)), (name, kernel)
    # Every kernel is tested in this file.
    tested = {
        "linear_activation_forward", "activation_backward", "linear_backward",
        "linear_backward_update", "sigmoid_cross_entropy", "cross_entropy_cost",
        "gradient_descent_update",
    }
    # (Kernels added for later issues are tested in their own files.)
    assert tested <= set(dnnblocks.KERNEL_NAMES)


def test_get_backend_passes_backend_objects_through_and_rejects_unknown_names():
    k = dnnblocks.get_backend("numpy")
    assert dnnblocks.get_backend(k) is k
    assert dnnblocks.get_backend().name == "compiled"
    for bad in ("cython", "", None, 3, "NUMPY"):
        with pytest.raises(ValueError, match="backend"):
            dnnblocks.get_backend(bad)


# ------------------------------------------------------------ linear forward
def run_forward(backend, W, b, A_prev, activation, alias_identity=False):
    n, m = W.shape[0], A_prev.shape[1]
    Z, check_z = guarded((n, m), W.dtype)
    if alias_identity:
        A, check_a = Z, check_z
    else:
        A, check_a = guarded((n, m), W.dtype)
    KERNELS[backend].linear_activation_forward(W, b, A_prev, activation, Z, A)
    check_z()
    check_a()
    return Z.copy(), A.copy()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=dim, k=dim, m=dim, f_order=st.booleans(), seed=seeds)
@example(n=1, k=1, m=1, f_order=False, seed=0)
@example(n=1, k=1, m=1, f_order=True, seed=0)
@example(n=1, k=5, m=7, f_order=True, seed=1)
@example(n=4, k=1, m=3, f_order=True, seed=2)
@example(n=3, k=4, m=1, f_order=True, seed=3)
def test_linear_activation_forward(activation, dtype, n, k, m, f_order, seed):
    rng = make_rng(seed)
    W = matrix(rng, (n, k), dtype)
    b = matrix(rng, (n, 1), dtype)
    A_prev = matrix(rng, (k, m), dtype, "F" if f_order else "C")
    inputs = [a.copy(order="K") for a in (W, b, A_prev)]

    Z_ref = f64(W) @ f64(A_prev) + f64(b)
    z_scale = np.abs(f64(W)) @ np.abs(f64(A_prev)) + np.abs(f64(b))
    # The activation is applied to the kernel's own Z (the reference Z only
    # agrees to rounding), so A is checked against g(Z_kernel) tightly and
    # Z against Z_ref within the GEMM's error bound.
    results = {}
    for backend in BACKENDS:
        Z, A = run_forward(backend, W, b, A_prev, activation)
        assert_close(Z, Z_ref, z_scale, dtype, f"{backend} Z")
        A_ref = ref_activate(Z, activation)
        assert_close(A, A_ref, np.abs(A_ref) + np.finfo(dtype).tiny, dtype, f"{backend} A = g(Z)")
        # ... and against g(Z_ref): g is 1-Lipschitz for all four activations.
        assert_close(A, ref_activate(Z_ref, activation), z_scale + np.abs(A_ref), dtype, f"{backend} A")
        results[backend] = (Z, A)
        # Inputs are read-only for the kernel.
        for before, after in zip(inputs, (W, b, A_prev)):
            np.testing.assert_array_equal(before, after)

    (Zc, Ac), (Zn, An) = results["compiled"], results["numpy"]
    assert_close(Zc, Zn, z_scale, dtype, "compiled vs numpy Z")
    assert_close(Ac, An, z_scale + np.abs(f64(An)), dtype, "compiled vs numpy A")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
def test_linear_forward_identity_may_write_A_into_Z(backend, dtype):
    rng = make_rng(7)
    W, b, A_prev = matrix(rng, (3, 4), dtype), matrix(rng, (3, 1), dtype), matrix(rng, (4, 5), dtype, "F")
    Z, A = run_forward(backend, W, b, A_prev, "identity", alias_identity=True)
    Z_ref = f64(W) @ f64(A_prev) + f64(b)
    assert_close(Z, Z_ref, np.abs(f64(W)) @ np.abs(f64(A_prev)) + np.abs(f64(b)), dtype, "Z")


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_forward_convention_at_zero_and_negative(backend):
    W = np.eye(3)
    b = np.zeros((3, 1))
    A_prev = np.array([[-2.0, 0.0, 3.0], [0.0, -0.0, 1e-300], [5.0, -1e-300, 0.5]])
    Z, A = run_forward(backend, W, b, A_prev, "relu")
    np.testing.assert_array_equal(Z, A_prev)
    np.testing.assert_array_equal(A, np.maximum(A_prev, 0))
    assert not np.signbit(A).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_views_with_a_size_one_dimension_are_read_at_their_own_offset(backend):
    # A single example (column) cut out of F-ordered data, a single feature
    # (row) cut out of C-ordered data: contiguous despite the big outer stride.
    rng = make_rng(21)
    k, n = 5, 3
    W, b = matrix(rng, (n, k), np.float64), matrix(rng, (n, 1), np.float64)
    data_f = matrix(rng, (k, 9), np.float64, "F")
    column = data_f[:, 4:5]
    assert column.flags.c_contiguous and column.strides[1] != column.itemsize
    Z, _ = run_forward(backend, W, b, column, "identity")
    np.testing.assert_allclose(Z, W @ data_f[:, 4:5] + b, rtol=1e-13)
    dW = np.empty((n, k))
    KERNELS[backend].linear_backward(np.ones((n, 1)), column, W, dW, None, 1.0)
    np.testing.assert_allclose(dW, np.ones((n, 1)) @ column.T, rtol=1e-13)

    W1, b1 = matrix(rng, (n, 1), np.float64), matrix(rng, (n, 1), np.float64)
    data_c = matrix(rng, (6, 7), np.float64)
    row = data_c[3:4, :]
    Z, _ = run_forward(backend, W1, b1, row, "identity")
    np.testing.assert_allclose(Z, W1 @ row + b1, rtol=1e-13)
    assert row.flags.f_contiguous and row.strides[0] != row.itemsize
    dW = np.empty((n, 1))
    dA_prev = np.empty((1, 7))
    KERNELS[backend].linear_backward(np.ones((n, 7)), row, W1, dW, dA_prev, 1 / 7)
    np.testing.assert_allclose(dW, np.ones((n, 7)) @ row.T / 7, rtol=1e-13)
    np.testing.assert_allclose(dA_prev, W1.T @ np.ones((n, 7)), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_propagates_nan(backend, activation):
    # As np.maximum does for relu: a NaN must not be turned into a clean 0.
    W = np.ones((1, 1))
    b = np.zeros((1, 1))
    A_prev = np.array([[np.nan, 1.0, -1.0, 0.0, np.nan]])
    with np.errstate(invalid="ignore"):
        Z, A = run_forward(backend, W, b, A_prev, activation)
    np.testing.assert_array_equal(np.isnan(Z), np.isnan(A_prev))
    np.testing.assert_array_equal(np.isnan(A), np.isnan(A_prev))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
def test_sigmoid_and_tanh_forward_saturate_without_overflow(backend, dtype):
    W = np.ones((1, 1), dtype=dtype)
    b = np.zeros((1, 1), dtype=dtype)
    A_prev = np.array([[-800.0, -90.0, -30.0, 0.0, 30.0, 90.0, 800.0]], dtype=dtype)
    with np.errstate(all="raise"):
        _, S = run_forward(backend, W, b, A_prev, "sigmoid")
        _, T = run_forward(backend, W, b, A_prev, "tanh")
    assert np.all(np.isfinite(S)) and np.all((S >= 0) & (S <= 1))
    assert S[0, 3] == 0.5 and S[0, -1] == 1.0 and S[0, 0] == 0.0
    assert_close(S, ref_activate(A_prev, "sigmoid"), ref_activate(A_prev, "sigmoid"), dtype, "sigmoid")
    np.testing.assert_array_equal(T[0, [0, 3, 6]], [-1.0, 0.0, 1.0])


# ---------------------------------------------------------- activation backward
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=dim, m=dim, give_A=st.booleans(), in_place=st.booleans(), seed=seeds,
       db_scale=st.sampled_from([None, 1.0, 0.37, -2.0]))
@example(n=1, m=1, give_A=True, in_place=True, seed=0, db_scale=None)
@example(n=1, m=1, give_A=False, in_place=False, seed=0, db_scale=None)
@example(n=5, m=1, give_A=False, in_place=True, seed=1, db_scale=None)
@example(n=1, m=9, give_A=True, in_place=False, seed=2, db_scale=0.37)
def test_activation_backward(activation, dtype, n, m, give_A, in_place, seed, db_scale):
    rng = make_rng(seed)
    dA = matrix(rng, (n, m), dtype)
    Z = with_exact_zeros(rng, matrix(rng, (n, m), dtype, scale=2.0))
    A = ref_activate(Z, activation).astype(dtype) if give_A else None
    scale = 1.0 / m if db_scale is None else db_scale

    deriv = ref_derivative(Z, A, activation)
    dZ_ref = f64(dA) * deriv
    db_ref = scale * dZ_ref.sum(axis=1, keepdims=True)
    dz_scale = np.abs(f64(dA)) * ref_derivative_magnitude(Z, A, activation)
    db_bound = abs(scale) * dz_scale.sum(axis=1, keepdims=True)

    results = {}
    for backend in BACKENDS:
        db, check_db = guarded((n, 1), dtype)
        if in_place:
            # dZ overwrites dA, as Network does with its D buffers.
            frame = np.full((n + 2, m), SENTINEL, dtype=dtype)
            frame[1 : n + 1] = dA
            dZ = dA_arg = frame[1 : n + 1]
        else:
            dA_arg = dA.copy()
            dZ, check_dz = guarded((n, m), dtype)
        KERNELS[backend].activation_backward(dA_arg, Z, A, activation, dZ, db, scale)
        check_db()
        if in_place:
            assert np.all(frame[0] == SENTINEL) and np.all(frame[-1] == SENTINEL)
        else:
            check_dz()
            np.testing.assert_array_equal(dA_arg, dA)
        assert_close(dZ, dZ_ref, dz_scale, dtype, f"{backend} dZ")
        assert_close(db, db_ref, db_bound, dtype, f"{backend} db")
        if activation == "relu":
            # Exactly the mask: dA where Z > 0, else 0 (Z == 0 included).
            np.testing.assert_array_equal(dZ, np.where(Z > 0, dA, 0))
        results[backend] = (dZ.copy(), db.copy())

    (dZc, dbc), (dZn, dbn) = results["compiled"], results["numpy"]
    assert_close(dZc, dZn, dz_scale, dtype, "compiled vs numpy dZ")
    assert_close(dbc, dbn, 2 * db_bound, dtype, "compiled vs numpy db")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_activation_backward_uses_the_given_A(backend, activation):
    # A deliberately different from g(Z): with A the derivative must come from
    # A (no transcendental call), without it from Z.
    Z = np.array([[0.3, -1.2, 2.0]])
    A = np.array([[0.5, 0.25, -0.5]])
    dA = np.array([[1.0, 2.0, 3.0]])
    dZ = np.empty_like(Z)
    db = np.empty((1, 1))
    k = KERNELS[backend]
    k.activation_backward(dA, Z, A, activation, dZ, db, 1.0)
    np.testing.assert_allclose(dZ, dA * ref_derivative(Z, A, activation), rtol=1e-15)
    k.activation_backward(dA, Z, None, activation, dZ, db, 1.0)
    np.testing.assert_allclose(dZ, dA * ref_derivative(Z, None, activation), rtol=1e-13)
    np.testing.assert_allclose(db, dZ.sum(keepdims=True), rtol=1e-13)


# ------------------------------------------------------------ linear backward
@pytest.mark.parametrize("with_dA_prev", [True, False], ids=("dA_prev", "no_dA_prev"))
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=dim, k=dim, m=dim, f_order=st.booleans(), seed=seeds,
       dW_scale=st.sampled_from([None, 1.0, 0.5, -3.0]))
@example(n=1, k=1, m=1, f_order=False, seed=0, dW_scale=None)
@example(n=1, k=1, m=1, f_order=True, seed=0, dW_scale=None)
@example(n=1, k=6, m=5, f_order=True, seed=1, dW_scale=None)
@example(n=3, k=1, m=5, f_order=True, seed=2, dW_scale=None)
@example(n=3, k=4, m=1, f_order=True, seed=3, dW_scale=None)
def test_linear_backward(with_dA_prev, dtype, n, k, m, f_order, seed, dW_scale):
    rng = make_rng(seed)
    dZ = matrix(rng, (n, m), dtype)
    A_prev = matrix(rng, (k, m), dtype, "F" if f_order else "C")
    W = matrix(rng, (n, k), dtype)
    scale = 1.0 / m if dW_scale is None else dW_scale
    dW_ref = scale * (f64(dZ) @ f64(A_prev).T)
    dW_bound = abs(scale) * (np.abs(f64(dZ)) @ np.abs(f64(A_prev)).T)
    dA_ref = f64(W).T @ f64(dZ)
    dA_bound = np.abs(f64(W)).T @ np.abs(f64(dZ))
    inputs = [a.copy(order="K") for a in (dZ, A_prev, W)]

    results = {}
    for backend in BACKENDS:
        dW, check_dw = guarded((n, k), dtype)
        if with_dA_prev:
            dA_prev, check_da = guarded((k, m), dtype)
        else:
            dA_prev, check_da = None, lambda: None
        KERNELS[backend].linear_backward(dZ, A_prev, W, dW, dA_prev, scale)
        check_dw()
        check_da()
        assert_close(dW, dW_ref, dW_bound, dtype, f"{backend} dW")
        if with_dA_prev:
            assert_close(dA_prev, dA_ref, dA_bound, dtype, f"{backend} dA_prev")
        for before, after in zip(inputs, (dZ, A_prev, W)):
            np.testing.assert_array_equal(before, after)
        results[backend] = (dW.copy(), None if dA_prev is None else dA_prev.copy())

    (dWc, dAc), (dWn, dAn) = results["compiled"], results["numpy"]
    assert_close(dWc, dWn, dW_bound, dtype, "compiled vs numpy dW")
    if with_dA_prev:
        assert_close(dAc, dAn, dA_bound, dtype, "compiled vs numpy dA_prev")


@pytest.mark.parametrize("with_dA_prev", [True, False], ids=("dA_prev", "no_dA_prev"))
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=dim, k=dim, m=dim, f_order=st.booleans(), seed=seeds,
       learning_rate=st.sampled_from([0.1, 1.0, 0.0075]),
       weight_decay=st.sampled_from([0.0, 0.0, 0.01, 0.7]))
@example(n=1, k=1, m=1, f_order=False, seed=0, learning_rate=0.1, weight_decay=0.0)
@example(n=1, k=1, m=1, f_order=True, seed=0, learning_rate=0.1, weight_decay=0.7)
@example(n=1, k=6, m=5, f_order=True, seed=1, learning_rate=1.0, weight_decay=0.01)
@example(n=4, k=3, m=1, f_order=True, seed=2, learning_rate=1.0, weight_decay=0.0)
def test_linear_backward_update(with_dA_prev, dtype, n, k, m, f_order, seed, learning_rate, weight_decay):
    rng = make_rng(seed)
    dZ = matrix(rng, (n, m), dtype)
    A_prev = matrix(rng, (k, m), dtype, "F" if f_order else "C")
    W0 = matrix(rng, (n, k), dtype)
    scale = 1.0 / m
    grad = scale * (f64(dZ) @ f64(A_prev).T)
    W_ref = (1.0 - learning_rate * weight_decay) * f64(W0) - learning_rate * grad
    W_bound = (abs(1.0 - learning_rate * weight_decay) * np.abs(f64(W0))
               + learning_rate * scale * (np.abs(f64(dZ)) @ np.abs(f64(A_prev)).T))
    # dA_prev uses the weights of the forward pass, before the step.
    dA_ref = f64(W0).T @ f64(dZ)
    dA_bound = np.abs(f64(W0)).T @ np.abs(f64(dZ))

    results = {}
    for backend in BACKENDS:
        W = np.full((n + 2, k), SENTINEL, dtype=dtype)
        W[1 : n + 1] = W0
        W_arg = W[1 : n + 1]
        if with_dA_prev:
            dA_prev, check_da = guarded((k, m), dtype)
        else:
            dA_prev, check_da = None, lambda: None
        KERNELS[backend].linear_backward_update(dZ, A_prev, W_arg, dA_prev, scale, learning_rate, weight_decay)
        assert np.all(W[0] == SENTINEL) and np.all(W[-1] == SENTINEL)
        check_da()
        assert_close(W_arg, W_ref, W_bound, dtype, f"{backend} W")
        if with_dA_prev:
            assert_close(dA_prev, dA_ref, dA_bound, dtype, f"{backend} dA_prev")
        results[backend] = (W_arg.copy(), None if dA_prev is None else dA_prev.copy())

    (Wc, dAc), (Wn, dAn) = results["compiled"], results["numpy"]
    assert_close(Wc, Wn, W_bound, dtype, "compiled vs numpy W")
    if with_dA_prev:
        assert_close(dAc, dAn, dA_bound, dtype, "compiled vs numpy dA_prev")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_backward_update_default_weight_decay_is_plain_descent(backend):
    rng = make_rng(11)
    dZ, A_prev, W = matrix(rng, (2, 6), np.float64), matrix(rng, (3, 6), np.float64), matrix(rng, (2, 3), np.float64)
    expected = W - 0.5 * (dZ @ A_prev.T / 6)
    KERNELS[backend].linear_backward_update(dZ, A_prev, W, None, 1 / 6, 0.5)
    np.testing.assert_allclose(W, expected, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ output layer
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=st.integers(1, 3), m=dim, seed=seeds, logit_scale=st.sampled_from([0.5, 3.0, 40.0]),
       db_scale=st.sampled_from([None, 1.0, -0.25]))
@example(n=1, m=1, seed=0, logit_scale=3.0, db_scale=None)
@example(n=1, m=1, seed=5, logit_scale=40.0, db_scale=None)
def test_sigmoid_cross_entropy(dtype, n, m, seed, logit_scale, db_scale):
    rng = make_rng(seed)
    Z = matrix(rng, (n, m), dtype, scale=logit_scale)
    A = ref_activate(Z, "sigmoid").astype(dtype)
    Y = (rng.random((n, m)) < 0.5).astype(dtype)
    scale = 1.0 / m if db_scale is None else db_scale

    terms = ref_softplus(Z) - f64(Y) * f64(Z)  # each >= 0
    cost_ref = terms.sum() / m
    # softplus(z) - z cancels for a confident right answer: bound by the terms' size.
    cost_bound = (ref_softplus(Z) + np.abs(f64(Y) * f64(Z))).sum() / m
    dZ_exact = A - Y  # in the working dtype: the kernel's own subtraction
    db_ref = scale * f64(dZ_exact).sum(axis=1, keepdims=True)
    db_bound = abs(scale) * np.abs(f64(dZ_exact)).sum(axis=1, keepdims=True)

    costs = {}
    for backend in BACKENDS:
        dZ, check_dz = guarded((n, m), dtype)
        db, check_db = guarded((n, 1), dtype)
        cost = KERNELS[backend].sigmoid_cross_entropy(Z, A, Y, dZ, db, scale)
        check_dz()
        check_db()
        assert isinstance(cost, float)
        assert np.isfinite(cost) and cost >= 0
        assert_close(cost, cost_ref, cost_bound, dtype, f"{backend} cost")
        np.testing.assert_array_equal(dZ, dZ_exact)
        assert_close(db, db_ref, db_bound, dtype, f"{backend} db")
        costs[backend] = cost
    assert_close(costs["compiled"], costs["numpy"], cost_bound, dtype, "compiled vs numpy cost")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
def test_sigmoid_cross_entropy_is_stable_for_saturated_logits(backend, dtype):
    # A rounds to exactly 0 or 1 here: log(A) would be -inf, the logits are fine.
    Z = np.array([[-800.0, 800.0, -60.0, 60.0, 0.0]], dtype=dtype)
    Y = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]], dtype=dtype)
    A = ref_activate(Z, "sigmoid").astype(dtype)
    dZ = np.empty_like(Z)
    db = np.empty((1, 1), dtype=dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        cost = KERNELS[backend].sigmoid_cross_entropy(Z, A, Y, dZ, db, 0.2)
    expected = (800.0 + 800.0 + 0.0 + 0.0 + np.log(2.0)) / 5  # softplus(60) - 60 ~ 9e-27
    assert cost == pytest.approx(expected, rel=rtol_of(dtype))
    np.testing.assert_array_equal(dZ, A - Y)


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(n=st.integers(1, 3), m=dim, seed=seeds)
@example(n=1, m=1, seed=0)
def test_cross_entropy_cost(dtype, n, m, seed):
    rng = make_rng(seed)
    AL = rng.uniform(0.01, 0.99, (n, m)).astype(dtype)
    Y = (rng.random((n, m)) < 0.5).astype(dtype)
    terms = -(f64(Y) * np.log(f64(AL)) + (1 - f64(Y)) * np.log(1 - f64(AL)))
    cost_ref = terms.sum() / m
    costs = {}
    for backend in BACKENDS:
        cost = KERNELS[backend].cross_entropy_cost(AL, Y)
        assert isinstance(cost, float)
        assert_close(cost, cost_ref, cost_ref, dtype, f"{backend} cost")
        costs[backend] = cost
    assert_close(costs["compiled"], costs["numpy"], cost_ref, dtype, "compiled vs numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_cost_at_probabilities_zero_and_one(backend):
    k = KERNELS[backend]
    # The right answer with certainty costs nothing (not 0 * log 0 = NaN) ...
    cost = k.cross_entropy_cost(np.array([[1.0, 0.0, 0.5]]), np.array([[1.0, 0.0, 1.0]]))
    assert cost == pytest.approx(np.log(2.0) / 3, rel=1e-15)
    # ... the wrong one is infinitely expensive, as in NumPy.
    with np.errstate(divide="ignore"):
        assert k.cross_entropy_cost(np.array([[1.0, 0.5]]), np.array([[0.0, 1.0]])) == np.inf
        assert k.cross_entropy_cost(np.array([[0.0]]), np.array([[1.0]])) == np.inf
    # The course's compute_cost test case.
    assert k.cross_entropy_cost(np.array([[0.8, 0.9, 0.4]]), np.array([[1.0, 1.0, 0.0]])) == pytest.approx(
        0.2797765635793422, rel=1e-14)


# ----------------------------------------------------------------- update
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@PROPERTY
@given(r=dim, c=dim, seed=seeds, learning_rate=st.sampled_from([0.0075, 0.1, 1.0, 3.5]))
@example(r=1, c=1, seed=0, learning_rate=0.1)
def test_gradient_descent_update(dtype, r, c, seed, learning_rate):
    rng = make_rng(seed)
    P0 = matrix(rng, (r, c), dtype)
    G = matrix(rng, (r, c), dtype)
    expected = f64(P0) - learning_rate * f64(G)
    bound = np.abs(f64(P0)) + learning_rate * np.abs(f64(G))
    results = {}
    for backend in BACKENDS:
        frame = np.full((r + 2, c), SENTINEL, dtype=dtype)
        frame[1 : r + 1] = P0
        P = frame[1 : r + 1]
        KERNELS[backend].gradient_descent_update(P, G, learning_rate)
        assert np.all(frame[0] == SENTINEL) and np.all(frame[-1] == SENTINEL)
        assert P.dtype == dtype
        assert_close(P, expected, bound, dtype, f"{backend} param")
        results[backend] = P.copy()
    assert_close(results["compiled"], results["numpy"], bound, dtype, "compiled vs numpy")


# --------------------------------------------------------------- zero sizes
ZERO_SHAPES = [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0), (1, 0, 1), (0, 1, 0)]


@pytest.mark.parametrize("n,k,m", ZERO_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
def test_zero_size_layers_do_not_crash_and_agree(n, k, m, dtype):
    rng = make_rng(3)
    W = matrix(rng, (n, k), dtype)
    b = matrix(rng, (n, 1), dtype)
    out = {}
    for backend in BACKENDS:
        kern = KERNELS[backend]
        for order in "CF":
            A_prev = matrix(rng, (k, m), dtype, order)  # k or m is 0 ...
            Z = np.full((n, m), 7, dtype=dtype)
            A = np.full((n, m), 7, dtype=dtype)
            kern.linear_activation_forward(W, b, A_prev, "tanh", Z, A)
            # ... so Z is the bias alone (k = 0 is an empty sum).
            np.testing.assert_allclose(Z, np.broadcast_to(b, (n, m)), rtol=0, atol=0)
            np.testing.assert_allclose(A, np.tanh(Z), rtol=rtol_of(dtype))

            dZ = np.zeros((n, m), dtype=dtype)
            dW = np.full((n, k), 7, dtype=dtype)
            dA_prev = np.full((k, m), 7, dtype=dtype)
            kern.linear_backward(dZ, A_prev, W, dW, dA_prev, 1.0)
            np.testing.assert_array_equal(dW, 0)
            np.testing.assert_array_equal(dA_prev, 0)
            kern.linear_backward(dZ, A_prev, W, dW, None, 1.0)

            W2 = W.copy()
            dA_prev = np.full((k, m), 7, dtype=dtype)
            kern.linear_backward_update(dZ, A_prev, W2, dA_prev, 1.0, 0.5, 0.1)
            np.testing.assert_allclose(W2, W * (1 - 0.5 * 0.1), rtol=rtol_of(dtype))
            np.testing.assert_array_equal(dA_prev, 0)

            dA = np.ones((n, m), dtype=dtype)
            db = np.full((n, 1), 7, dtype=dtype)
            kern.activation_backward(dA, Z, A, "sigmoid", dA, db, 1.0)
            kern.activation_backward(dA, Z, None, "relu", dA, db, 1.0)
            if m == 0:
                np.testing.assert_array_equal(db, 0)

            Y = np.zeros((n, m), dtype=dtype)
            db = np.full((n, 1), 7, dtype=dtype)
            cost = kern.sigmoid_cross_entropy(Z, A, Y, dZ, db, 1.0)
            if m == 0:
                assert np.isnan(cost)
                np.testing.assert_array_equal(db, 0)
            else:
                # Y = 0: the cost is the mean softplus of the logits (0 with no outputs).
                assert cost == pytest.approx(ref_softplus(Z).sum() / m, rel=rtol_of(dtype), abs=0)
            ce = kern.cross_entropy_cost(np.full((n, m), 0.5, dtype=dtype), Y)
            if m == 0:
                assert np.isnan(ce)
            else:
                assert ce == pytest.approx(n * np.log(2.0), rel=rtol_of(dtype), abs=0)

            P = np.ones((n, k), dtype=dtype)
            kern.gradient_descent_update(P, np.ones((n, k), dtype=dtype), 0.1)
            out[backend, order] = Z.copy()
    for key in out:
        np.testing.assert_array_equal(out[key], out["compiled", "C"])


# ------------------------------------------------- bad calls to compiled kernels
def _forward_args(dtype=np.float64, n=3, k=2, m=5):
    return dict(W=np.ones((n, k), dtype), b=np.zeros((n, 1), dtype), A_prev=np.ones((k, m), dtype),
                activation="relu", Z=np.empty((n, m), dtype), A=np.empty((n, m), dtype))


def _call_forward(**changes):
    args = _forward_args()
    args.update(changes)
    KERNELS["compiled"].linear_activation_forward(
        args["W"], args["b"], args["A_prev"], args["activation"], args["Z"], args["A"])


BAD_FORWARD = {
    "A_prev rows != W cols": dict(A_prev=np.ones((3, 5))),
    "b wrong rows": dict(b=np.zeros((2, 1))),
    "b row vector": dict(b=np.zeros((1, 3))),
    "b 1-D": dict(b=np.zeros(3)),
    "Z wrong columns": dict(Z=np.empty((3, 4))),
    "A wrong rows": dict(A=np.empty((4, 5))),
    "A_prev 3-D": dict(A_prev=np.ones((2, 5, 1))),
    "A_prev strided view": dict(A_prev=np.ones((2, 10))[:, ::2]),
    "A_prev float32 in float64 call": dict(A_prev=np.ones((2, 5), np.float32)),
    "Z F-ordered": dict(Z=np.empty((5, 3)).T),
    "A not C-contiguous": dict(A=np.empty((3, 10))[:, ::2]),
    "unknown activation": dict(activation="softmax"),
    "A_prev int": dict(A_prev=np.ones((2, 5), np.int64)),
}


@pytest.mark.parametrize("case", list(BAD_FORWARD), ids=list(BAD_FORWARD))
def test_compiled_forward_rejects_bad_arguments(case):
    with pytest.raises((ValueError, TypeError)) as info:
        _call_forward(**BAD_FORWARD[case])
    # Shape mistakes in particular are ValueErrors naming the culprit.
    if "wrong" in case or "!=" in case:
        assert info.type is ValueError
        name = case.split()[0]
        assert name in str(info.value)


def test_compiled_forward_rejects_none_outputs():
    k = KERNELS["compiled"]
    a = _forward_args()
    with pytest.raises(TypeError):
        k.linear_activation_forward(a["W"], a["b"], a["A_prev"], "relu", None, a["A"])


def _bwd(n=3, k=2, m=5, dtype=np.float64):
    return (np.ones((n, m), dtype), np.ones((k, m), dtype), np.ones((n, k), dtype),
            np.empty((n, k), dtype), np.empty((k, m), dtype))


@pytest.mark.parametrize("case", [
    "dW transposed", "dA_prev wrong columns", "A_prev wrong columns", "W wrong rows", "dZ 1-D", "dA_prev aliases dZ",
])
def test_compiled_linear_backward_rejects_bad_shapes(case):
    dZ, A_prev, W, dW, dA_prev = _bwd()
    if case == "dW transposed":
        dW = np.empty((2, 3))
    elif case == "dA_prev wrong columns":
        dA_prev = np.empty((2, 4))
    elif case == "A_prev wrong columns":
        A_prev = np.ones((2, 4))
    elif case == "W wrong rows":
        W = np.ones((4, 2))
        dW = np.empty((4, 2))
    elif case == "dZ 1-D":
        dZ = np.ones(5)
    elif case == "dA_prev aliases dZ":
        dZ, A_prev, W, dW, _ = _bwd(n=2, k=2)
        dA_prev = dZ
    # A 1-D first argument fails Cython's fused-type dispatch (TypeError); the
    # shape checks inside the kernel raise ValueError naming the argument.
    with pytest.raises(TypeError if "1-D" in case else ValueError) as info:
        KERNELS["compiled"].linear_backward(dZ, A_prev, W, dW, dA_prev, 0.2)
    if "1-D" not in case:
        assert case.split()[0] in str(info.value)


@pytest.mark.parametrize("case", ["dA_prev wrong rows", "A_prev wrong columns", "W read-only"])
def test_compiled_linear_backward_update_rejects_bad_arguments(case):
    dZ, A_prev, W, _, dA_prev = _bwd()
    if case == "dA_prev wrong rows":
        dA_prev = np.empty((3, 5))
    elif case == "A_prev wrong columns":
        A_prev = np.ones((2, 6))
    else:
        W.flags.writeable = False
    W_before = W.copy()
    with pytest.raises(ValueError):
        KERNELS["compiled"].linear_backward_update(dZ, A_prev, W, dA_prev, 0.2, 0.1, 0.0)
    np.testing.assert_array_equal(W, W_before)


@pytest.mark.parametrize("case", ["dA shape", "A shape", "dZ shape", "db shape", "db 1-D", "dtype mix"])
def test_compiled_activation_backward_rejects_bad_arguments(case):
    n, m = 3, 4
    args = dict(dA=np.ones((n, m)), Z=np.ones((n, m)), A=np.ones((n, m)), dZ=np.empty((n, m)), db=np.empty((n, 1)))
    if case == "dA shape":
        args["dA"] = np.ones((n, m + 1))
    elif case == "A shape":
        args["A"] = np.ones((n + 1, m))
    elif case == "dZ shape":
        args["dZ"] = np.empty((1, m))
    elif case == "db shape":
        args["db"] = np.empty((1, n))
    elif case == "db 1-D":
        args["db"] = np.empty(n)
    else:
        args["Z"] = np.ones((n, m), np.float32)
    with pytest.raises(ValueError):
        KERNELS["compiled"].activation_backward(args["dA"], args["Z"], args["A"], "tanh", args["dZ"], args["db"], 0.25)


@pytest.mark.parametrize("case", ["A shape", "Y shape", "dZ shape", "db shape"])
def test_compiled_sigmoid_cross_entropy_rejects_bad_shapes(case):
    n, m = 1, 4
    args = dict(Z=np.ones((n, m)), A=np.ones((n, m)), Y=np.ones((n, m)), dZ=np.empty((n, m)), db=np.empty((n, 1)))
    key = case.split()[0]
    args[key] = np.empty((2, m)) if key != "db" else np.empty((1, 2))
    with pytest.raises(ValueError, match=key):
        KERNELS["compiled"].sigmoid_cross_entropy(args["Z"], args["A"], args["Y"], args["dZ"], args["db"], 0.25)


def test_compiled_cost_and_update_reject_bad_shapes():
    k = KERNELS["compiled"]
    with pytest.raises(ValueError, match="Y"):
        k.cross_entropy_cost(np.full((1, 4), 0.5), np.ones((1, 3)))
    with pytest.raises(ValueError, match="Y"):
        k.cross_entropy_cost(np.full((1, 4), 0.5), np.ones((4, 1)))
    P = np.ones((2, 3))
    with pytest.raises(ValueError, match="grad"):
        k.gradient_descent_update(P, np.ones((3, 2)), 0.1)
    with pytest.raises(ValueError):
        k.gradient_descent_update(P, np.ones((2, 3), np.float32), 0.1)
    with pytest.raises(ValueError):
        k.gradient_descent_update(np.ones((2, 6))[:, ::2], np.ones((2, 3)), 0.1)
    np.testing.assert_array_equal(P, 1)


def test_relu_backward_reads_its_mask_from_Z_even_when_A_is_given(backend):
    # Both backends take relu' from Z (A is used for tanh' and sigmoid' only),
    # so an A that was not computed from Z cannot change dZ. Found by the
    # raw-kernel fuzzer with a random A.
    k = KERNELS[backend]
    Z = np.array([[1.5, -2.0, 0.0, 3.0]])
    A = np.array([[-1.0, 4.0, 2.0, 0.0]])  # signs disagree with Z's everywhere
    dA = np.array([[10.0, 20.0, 30.0, 40.0]])
    dZ, db = np.empty_like(Z), np.empty((1, 1))
    k.activation_backward(dA, Z, A, "relu", dZ, db, 0.5)
    np.testing.assert_array_equal(dZ, [[10.0, 0.0, 0.0, 40.0]])
    assert db[0, 0] == 25.0
