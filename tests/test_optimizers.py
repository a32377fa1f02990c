"""Momentum and Adam: the fused kernels, the optimizer objects, convergence to a known optimum."""

import numpy as np
import pytest
from scipy.optimize import minimize

import dnnblocks
from dnnblocks import Network, get_backend
from dnnblocks.optimizers import Adam, GradientDescent, Momentum, get_optimizer


def _tol(dtype):
    return dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


def _arrays(dtype, shape=(7, 5), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(4)]


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_momentum_kernel_matches_formula(backend, dtype, weight_decay):
    k = get_backend(backend)
    param, grad, velocity, _ = _arrays(dtype)
    p0, v0 = param.astype(np.float64), velocity.astype(np.float64)
    k.momentum_update(param, grad, velocity, 0.1, 0.9, weight_decay)
    g = grad.astype(np.float64) + weight_decay * p0
    v_expected = 0.9 * v0 + 0.1 * g
    np.testing.assert_allclose(velocity, v_expected, **_tol(dtype))
    np.testing.assert_allclose(param, p0 - 0.1 * v_expected, **_tol(dtype))
    assert param.dtype == dtype and velocity.dtype == dtype


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("t", [1, 2, 50])
def test_adam_kernel_matches_formula(backend, dtype, weight_decay, t):
    k = get_backend(backend)
    param, grad, m, v = _arrays(dtype)
    v = np.abs(v)
    p0, m0, v0 = (a.astype(np.float64) for a in (param, m, v))
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    k.adam_update(param, grad, m, v, lr, b1, b2, eps, t, weight_decay)
    g = grad.astype(np.float64) + weight_decay * p0
    m_exp = b1 * m0 + (1 - b1) * g
    v_exp = b2 * v0 + (1 - b2) * g * g
    p_exp = p0 - lr * (m_exp / (1 - b1**t)) / (np.sqrt(v_exp / (1 - b2**t)) + eps)
    np.testing.assert_allclose(m, m_exp, **_tol(dtype))
    np.testing.assert_allclose(v, v_exp, **_tol(dtype))
    np.testing.assert_allclose(param, p_exp, **_tol(dtype))


def test_update_kernels_backends_agree(dtype):
    c, n = get_backend("compiled"), get_backend("numpy")
    for kernel, extra in (("momentum_update", (0.05, 0.8, 0.1)),
                          ("adam_update", (0.02, 0.9, 0.99, 1e-7, 3, 0.1))):
        a = _arrays(dtype, seed=3)
        b = [x.copy() for x in a]
        if kernel == "adam_update":
            a[3] = np.abs(a[3]); b[3] = np.abs(b[3])
            getattr(c, kernel)(a[0], a[1], a[2], a[3], *extra)
            getattr(n, kernel)(b[0], b[1], b[2], b[3], *extra)
        else:
            getattr(c, kernel)(a[0], a[1], a[2], *extra)
            getattr(n, kernel)(b[0], b[1], b[2], *extra)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, **_tol(dtype))


def test_update_kernels_check_shapes_and_arguments(backend):
    k = get_backend(backend)
    p = np.zeros((3, 2))
    with pytest.raises(ValueError, match="velocity" if backend == "compiled" else None):
        k.momentum_update(p, np.zeros((3, 2)), np.zeros((2, 3)), 0.1, 0.9)
    with pytest.raises(ValueError, match="t must be"):
        k.adam_update(p, p.copy(), p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 0)
    with pytest.raises(ValueError, match="beta1 and beta2"):
        k.adam_update(p, p.copy(), p.copy(), p.copy(), 0.1, 1.0, 0.999, 1e-8, 1)
    if backend == "compiled":
        with pytest.raises(ValueError, match="grad"):
            k.adam_update(p, np.zeros((3, 3)), p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 1)
        with pytest.raises(ValueError):  # mixed dtypes never reach the loop
            k.momentum_update(p, np.zeros((3, 2), np.float32), p.copy(), 0.1, 0.9)


# --------------------------------------------------------- optimizer objects
def test_get_optimizer():
    assert isinstance(get_optimizer("sgd"), GradientDescent)
    assert isinstance(get_optimizer("gd"), GradientDescent)
    assert get_optimizer("momentum", beta=0.5).beta == 0.5
    adam = get_optimizer("adam", beta1=0.8, beta2=0.99, epsilon=1e-6)
    assert (adam.beta1, adam.beta2, adam.epsilon) == (0.8, 0.99, 1e-6)
    assert get_optimizer(adam) is adam
    with pytest.raises(ValueError, match="optimizer must be one of"):
        get_optimizer("rmsprop")
    with pytest.raises(ValueError, match="beta"):
        Momentum(beta=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        Adam(epsilon=0)


def test_optimizer_state_is_per_parameter_and_bound_to_one_network():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 20))
    Y = (X[:1] > 0).astype(float)
    net = Network([3, 4, 1], seed=0)
    opt = Adam()
    net.step(X, Y, 0.01, optimizer=opt)
    net.step(X, Y, 0.01, optimizer=opt)
    assert opt.t == 2
    scalars, arrays = opt.state_dict()
    assert scalars["name"] == "adam" and scalars["t"] == 2
    # m and v for W1, W2, b1, b2, each shaped like its parameter and non-zero.
    assert sorted(arrays) == sorted(f"{k}/{i}" for k in "mv" for i in range(4))
    assert arrays["m/0"].shape == (4, 3) and arrays["v/3"].shape == (1, 1)
    assert all(np.any(a != 0) for a in arrays.values())
    with pytest.raises(ValueError, match="other layer shapes"):
        Network([3, 5, 1], seed=0).step(X, Y, 0.01, optimizer=opt)
    with pytest.raises(ValueError, match="needs an Optimizer object"):
        net.step(X, Y, 0.01, optimizer="adam")


def test_step_with_sgd_optimizer_equals_default_step():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 30))
    Y = (X[:1] + X[1:2] > 0).astype(float)
    a, b = Network([3, 5, 1], seed=2), Network([3, 5, 1], seed=2)
    for _ in range(5):
        assert a.step(X, Y, 0.1) == b.step(X, Y, 0.1, optimizer=GradientDescent())
    for wa, wb in zip(a.W + a.b, b.W + b.b):
        np.testing.assert_array_equal(wa, wb)


def test_update_with_optimizer_matches_step():
    """forward/backward/update(optimizer) is the same step as step(optimizer)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 25))
    Y = (X[:1] > 0).astype(float)
    for make in (lambda: Momentum(0.7), lambda: Adam()):
        a, b = Network([4, 6, 1], seed=3), Network([4, 6, 1], seed=3)
        oa, ob = make(), make()
        for _ in range(4):
            ca = a.step(X, Y, 0.05, optimizer=oa, l2=0.2)
            b.forward(X)
            cb = b.backward(Y, l2=0.2)
            b.update(0.05, optimizer=ob)
            assert ca == pytest.approx(cb, rel=1e-12)
        for wa, wb in zip(a.W + a.b, b.W + b.b):
            np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)


def test_momentum_with_zero_beta_is_gradient_descent():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 40))
    Y = (X[:1] > 0).astype(float)
    a, b = Network([3, 4, 1], seed=0), Network([3, 4, 1], seed=0)
    opt = Momentum(beta=0.0)
    for _ in range(5):
        a.step(X, Y, 0.1, l2=0.3)
        b.step(X, Y, 0.1, optimizer=opt, l2=0.3)
    for wa, wb in zip(a.W + a.b, b.W + b.b):
        np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-13)


# ------------------------------------------------- convergence, known answer
@pytest.fixture(scope="module")
def logistic_problem():
    """L2-regularised logistic regression: strictly convex, one known minimiser."""
    rng = np.random.default_rng(0)
    m, n, l2 = 200, 3, 0.5
    X = rng.standard_normal((n, m))
    logits = np.array([1.5, -2.0, 0.5]) @ X + 0.3
    Y = (rng.random(m) < 1 / (1 + np.exp(-logits))).astype(float).reshape(1, m)

    def cost(theta):
        w, b = theta[:n], theta[n]
        z = w @ X + b
        return np.mean(np.logaddexp(0, z) - Y[0] * z) + l2 / (2 * m) * (w @ w)

    best = minimize(cost, np.zeros(n + 1), method="BFGS", options={"gtol": 1e-12})
    return X, Y, l2, best.x, best.fun


@pytest.mark.parametrize("optimizer,learning_rate,options", [
    ("sgd", 1.0, {}),
    ("momentum", 1.0, {"beta": 0.9}),
    ("adam", 0.05, {}),
    ("adam", 0.05, {"schedule": "inverse_time", "decay_rate": 0.01}),
], ids=["sgd", "momentum", "adam", "adam-inverse-time"])
def test_each_optimizer_finds_the_known_optimum(logistic_problem, backend, optimizer,
                                                learning_rate, options):
    X, Y, l2, theta_star, cost_star = logistic_problem
    net = Network([3, 1], init="zeros", backend=backend)
    history = net.fit(X, Y, epochs=2000, learning_rate=learning_rate, optimizer=optimizer, l2=l2,
                      **options)
    theta = np.r_[net.W[0].ravel(), net.b[0].ravel()]
    np.testing.assert_allclose(theta, theta_star, atol=1e-6)
    assert history.cost[-1] == pytest.approx(cost_star, abs=1e-10)
    assert history.cost[0] == pytest.approx(np.log(2))  # zero weights: p = 1/2 everywhere


def test_optimizers_converge_in_float32(logistic_problem):
    X, Y, l2, theta_star, _ = logistic_problem
    for optimizer, lr in (("sgd", 1.0), ("momentum", 1.0), ("adam", 0.02)):
        net = Network([3, 1], init="zeros", dtype=np.float32)
        net.fit(X.astype(np.float32), Y.astype(np.float32), epochs=1500, learning_rate=lr,
                optimizer=optimizer, l2=l2)
        theta = np.r_[net.W[0].ravel(), net.b[0].ravel()]
        np.testing.assert_allclose(theta, theta_star, atol=2e-3)


def test_momentum_and_adam_train_a_deep_network():
    """Every optimizer drives the XOR-like problem (not linearly separable) to > 95 % accuracy."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (2, 400))
    Y = ((X[0] * X[1]) > 0).astype(float).reshape(1, -1)
    for optimizer, lr in (("sgd", 0.5), ("momentum", 0.5), ("adam", 0.01)):
        net = Network([2, 16, 8, 1], seed=0)
        history = net.fit(X, Y, epochs=300, batch_size=64, learning_rate=lr, optimizer=optimizer,
                          random_state=0)
        assert history.cost[-1] < 0.25 * history.cost[0], optimizer
        assert np.mean(net.predict(X) == Y) > 0.95, optimizer
