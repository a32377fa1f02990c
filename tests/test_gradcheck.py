"""dnnblocks.gradient_check: the course's gradient check on any Network."""

import numpy as np
import pytest

import dnnblocks
from dnnblocks import Network, gradient_check, propagation


def _binary(m=12, n=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m))
    return X, (X[:1] + 0.5 * X[1:2] > 0).astype(float)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_backprop_agrees_with_finite_differences(backend, activation, l2):
    X, Y = _binary()
    net = Network([4, 5, 3, 1], hidden_activation=activation, seed=1, backend=backend)
    diff = gradient_check(net, X, Y, l2=l2)
    assert isinstance(diff, float) and diff < 1e-7
    assert diff.grad.shape == diff.gradapprox.shape == (4 * 5 + 5 + 5 * 3 + 3 + 3 + 1,)
    assert diff.names[0] == "W1[0, 0]" and diff.names[-1] == "b3[0, 0]"


def test_l2_gradient_term_is_checked():
    """With L2 the gradient gains (lambda/m) W: leaving it out is caught."""
    X, Y = _binary()
    net = Network([4, 3, 1], hidden_activation="tanh", seed=2)
    with_l2 = gradient_check(net, X, Y, l2=5.0)
    assert with_l2 < 1e-7
    # Back-propagation without the L2 term against the L2 cost: a clear mismatch.
    net.forward(X)
    net.backward(Y, l2=0.0)
    wrong = {k: v.copy() for k, v in net.grads.items()}
    net.forward(X)
    net.backward(Y, l2=5.0)
    right = net.grads
    m = X.shape[1]
    np.testing.assert_allclose(right["dW1"] - wrong["dW1"], 5.0 / m * net.W[0], rtol=1e-10)
    np.testing.assert_allclose(right["db1"], wrong["db1"], rtol=1e-12)


def test_a_wrong_gradient_is_detected(monkeypatch):
    X, Y = _binary()
    net = Network([4, 5, 1], seed=3)
    original = propagation.backward

    def off_by_factor(kernels, W, b, activations, X, ws, dW, db, *args, **kwargs):
        original(kernels, W, b, activations, X, ws, dW, db, *args, **kwargs)
        dW[0] *= 1.1  # a 10 % error in one layer's gradient

    monkeypatch.setattr(propagation, "backward", off_by_factor)
    diff = gradient_check(net, X, Y)
    assert diff > 1e-3
    name, grad, approx = diff.worst(1)[0]
    assert name.startswith("W1")


def test_parameters_are_left_unchanged():
    X, Y = _binary()
    net = Network([4, 5, 1], seed=4)
    before = [a.copy() for a in net.W + net.b]
    gradient_check(net, X, Y)
    for a, b in zip(before, net.W + net.b):
        np.testing.assert_array_equal(a, b)


def test_max_params_subsamples():
    X, Y = _binary()
    net = Network([4, 20, 10, 1], seed=5)
    diff = gradient_check(net, X, Y, max_params=30, seed=1)
    assert len(diff.grad) == 30 and diff < 1e-7


def test_float32_with_a_larger_epsilon():
    X, Y = _binary()
    net = Network([4, 5, 1], seed=6, dtype=np.float32, hidden_activation="tanh")
    diff = gradient_check(net, X.astype(np.float32), Y.astype(np.float32), epsilon=1e-2)
    assert diff < 1e-2


def test_bad_epsilon():
    X, Y = _binary()
    with pytest.raises(ValueError, match="epsilon"):
        gradient_check(Network([4, 1]), X, Y, epsilon=0.0)


def test_exported():
    assert dnnblocks.gradient_check is gradient_check
