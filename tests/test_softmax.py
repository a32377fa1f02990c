"""The softmax output layer: kernel, stability, cost, gradient, multi-class training."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

import dnnblocks
from dnnblocks import Network, get_backend


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)


def _one_hot(idx, K, dtype=np.float64):
    Y = np.zeros((K, len(idx)), dtype=dtype)
    Y[idx, np.arange(len(idx))] = 1
    return Y


@pytest.mark.parametrize("shape", [(3, 1), (4, 7), (10, 600), (2, 257)])
def test_softmax_forward_matches_scipy(backend, dtype, shape):
    rng = np.random.default_rng(0)
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    A = np.empty_like(Z)
    get_backend(backend).softmax_forward(Z, A)
    np.testing.assert_allclose(A, softmax(Z.astype(np.float64), axis=0), **_tol(dtype))
    np.testing.assert_allclose(A.sum(axis=0), 1, **_tol(dtype))


def test_softmax_forward_in_place(backend, dtype):
    Z = np.random.default_rng(1).standard_normal((5, 300)).astype(dtype)
    expected = softmax(Z.astype(np.float64), axis=0)
    get_backend(backend).softmax_forward(Z, Z)
    np.testing.assert_allclose(Z, expected, **_tol(dtype))


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_softmax_and_cost_stay_finite_for_huge_logits(backend, dtype, scale):
    rng = np.random.default_rng(2)
    Z = (scale * rng.standard_normal((4, 50))).astype(dtype)
    k = get_backend(backend)
    A = np.empty_like(Z)
    k.softmax_forward(Z, A)
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A.sum(axis=0), 1, **_tol(dtype))
    # Labels on the least likely class: the cost is huge but exact, not inf.
    Y = _one_hot(np.argmin(Z, axis=0), 4, dtype)
    dZ, db = np.empty_like(Z), np.empty((4, 1), dtype)
    cost = k.softmax_cross_entropy(Z, A, Y, dZ, db, 1 / 50)
    expected = -np.mean(np.sum(Y * log_softmax(Z.astype(np.float64), axis=0), axis=0))
    assert np.isfinite(cost)
    assert cost == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)


def test_softmax_cross_entropy_cost_gradient_and_db(backend, dtype):
    rng = np.random.default_rng(3)
    K, m = 5, 80
    Z = rng.standard_normal((K, m)).astype(dtype)
    A = softmax(Z.astype(np.float64), axis=0).astype(dtype)
    Y = _one_hot(rng.integers(0, K, m), K, dtype)
    dZ, db = np.empty_like(Z), np.empty((K, 1), dtype)
    cost = get_backend(backend).softmax_cross_entropy(Z, A, Y, dZ, db, 1 / m)
    expected = -np.mean(np.sum(Y * log_softmax(Z.astype(np.float64), axis=0), axis=0))
    assert cost == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(dZ, A - Y)
    np.testing.assert_allclose(db, (A - Y).astype(np.float64).sum(axis=1, keepdims=True) / m,
                               **_tol(dtype))


def test_softmax_kernels_check_shapes():
    k = get_backend("compiled")
    with pytest.raises(ValueError, match="A must have the shape of Z"):
        k.softmax_forward(np.zeros((3, 4)), np.zeros((4, 3)))
    Z = np.zeros((3, 4))
    with pytest.raises(ValueError, match="db must have shape"):
        k.softmax_cross_entropy(Z, Z, Z, Z.copy(), np.zeros((4, 1)), 0.25)
    assert np.isnan(k.softmax_cross_entropy(np.zeros((3, 0)), np.zeros((3, 0)), np.zeros((3, 0)),
                                            np.zeros((3, 0)), np.zeros((3, 1)), 1.0))


def test_softmax_gradient_checked_by_finite_differences(backend):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((4, 15))
    Y = _one_hot(rng.integers(0, 3, 15), 3)
    for activation in ("relu", "tanh", "sigmoid"):
        net = Network([4, 6, 5, 3], hidden_activation=activation, seed=1, output="softmax",
                      backend=backend)
        assert dnnblocks.gradient_check(net, X, Y) < 1e-7, activation
        assert dnnblocks.gradient_check(net, X, Y, l2=0.9) < 1e-7, activation


def test_softmax_network_outputs_and_predict(backend, dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 40)).astype(dtype)
    net = Network([3, 4, 4], output="softmax", dtype=dtype, backend=backend, seed=0)
    P = net.predict_proba(X)
    assert P.shape == (4, 40) and P.dtype == dtype
    np.testing.assert_allclose(P.sum(axis=0), 1, **_tol(dtype))
    Z = net.decision_function(X)
    np.testing.assert_allclose(P, softmax(Z.astype(np.float64), axis=0), **_tol(dtype))
    pred = net.predict(X)
    assert pred.shape == (1, 40)
    np.testing.assert_array_equal(pred[0], np.argmax(P, axis=0))
    assert "output='softmax'" in repr(net)


def test_softmax_needs_two_units_and_one_hot_labels():
    with pytest.raises(ValueError, match="at least 2 units"):
        Network([3, 1], output="softmax")
    with pytest.raises(ValueError, match="output must be one of"):
        Network([3, 2], output="relu")
    net = Network([2, 3], output="softmax", seed=0)
    X = np.zeros((2, 2))
    with pytest.raises(ValueError, match="one-hot"):
        net.step(X, np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="one-hot"):
        net.cost(X, np.zeros((3, 2)))


def test_softmax_learns_three_classes(backend):
    rng = np.random.default_rng(6)
    centers = np.array([[0, 3], [3, -1], [-3, -1]], dtype=float)
    idx = rng.integers(0, 3, 300)
    X = (centers[idx] + rng.standard_normal((300, 2))).T
    Y = _one_hot(idx, 3)
    net = Network([2, 8, 3], output="softmax", backend=backend, seed=0)
    history = net.fit(X, Y, epochs=100, batch_size=50, learning_rate=0.01, optimizer="adam",
                      random_state=0)
    assert history.cost[-1] < 0.3 and history.cost[-1] < history.cost[0] / 2
    assert np.mean(net.predict(X)[0] == idx) > 0.9


def test_two_unit_softmax_equals_logistic_on_logit_difference():
    """A 2-class softmax is a sigmoid of the difference of the two logits."""
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((2, 30))
    A = np.empty_like(Z)
    get_backend("compiled").softmax_forward(Z, A)
    np.testing.assert_allclose(A[1], 1 / (1 + np.exp(-(Z[1] - Z[0]))), rtol=1e-12)
