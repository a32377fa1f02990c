"""`dnnblocks.course.gradient_checking` against the course's recipe (gc_utils + notebook) and published values."""

import numpy as np
import pytest

from dnnblocks.course import gradient_checking as gc

KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")


# ------------------------------------------------ the course's recipe
def tb_forward_n(X, Y, p):
    m = X.shape[1]
    Z1 = np.dot(p["W1"], X) + p["b1"]
    A1 = np.maximum(0, Z1)
    Z2 = np.dot(p["W2"], A1) + p["b2"]
    A2 = np.maximum(0, Z2)
    Z3 = np.dot(p["W3"], A2) + p["b3"]
    A3 = 1 / (1 + np.exp(-Z3))
    log_probs = np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y)
    cost = 1. / m * np.sum(log_probs)
    return cost, (Z1, A1, p["W1"], p["b1"], Z2, A2, p["W2"], p["b2"], Z3, A3, p["W3"], p["b3"])


def tb_backward_n(X, Y, cache, planted_mistakes=False):
    m = X.shape[1]
    (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3) = cache
    dZ3 = A3 - Y
    dW3 = 1. / m * np.dot(dZ3, A2.T)
    db3 = 1. / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1. / m * np.dot(dZ2, A1.T) * (2 if planted_mistakes else 1)
    db2 = 1. / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1. / m * np.dot(dZ1, X.T)
    db1 = (4. if planted_mistakes else 1.) / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"dZ3": dZ3, "dW3": dW3, "db3": db3, "dA2": dA2, "dZ2": dZ2, "dW2": dW2, "db2": db2,
            "dA1": dA1, "dZ1": dZ1, "dW1": dW1, "db1": db1}


def tb_gradient_check_n(p, grads, X, Y, epsilon=1e-7):
    theta = np.concatenate([np.reshape(p[k], (-1, 1)) for k in KEYS], axis=0)
    grad = np.concatenate([np.reshape(grads["d" + k], (-1, 1)) for k in KEYS], axis=0)
    n = theta.shape[0]
    gradapprox = np.zeros((n, 1))

    def unstack(t):
        return {"W1": t[:20].reshape((5, 4)), "b1": t[20:25].reshape((5, 1)), "W2": t[25:40].reshape((3, 5)),
                "b2": t[40:43].reshape((3, 1)), "W3": t[43:46].reshape((1, 3)), "b3": t[46:47].reshape((1, 1))}

    for i in range(n):
        plus = np.copy(theta)
        plus[i] = plus[i] + epsilon
        J_plus, _ = tb_forward_n(X, Y, unstack(plus))
        minus = np.copy(theta)
        minus[i] = minus[i] - epsilon
        J_minus, _ = tb_forward_n(X, Y, unstack(minus))
        gradapprox[i] = (J_plus - J_minus) / (2 * epsilon)
    return np.linalg.norm(grad - gradapprox) / (np.linalg.norm(grad) + np.linalg.norm(gradapprox))


def gradient_check_n_test_case():
    np.random.seed(1)
    x = np.random.randn(4, 3)
    y = np.array([1, 1, 0])
    p = {}
    for name, shape in (("W1", (5, 4)), ("b1", (5, 1)), ("W2", (3, 5)), ("b2", (3, 1)),
                        ("W3", (1, 3)), ("b3", (1, 1))):
        p[name] = np.random.randn(*shape)
    return x, y, p


# ----------------------------------------------------------------- 1-D
def test_one_dimensional_check(backend, capsys):
    x, theta = 3, 4
    assert gc.forward_propagation(x, theta, backend=backend) == 12
    assert gc.backward_propagation(x, theta, backend=backend) == 3
    difference = gc.gradient_check(x, theta, print_msg=True, backend=backend)
    grad = 3
    gradapprox = ((theta + 1e-7) * x - (theta - 1e-7) * x) / (2 * 1e-7)
    expected = np.linalg.norm(grad - gradapprox) / (np.linalg.norm(grad) + np.linalg.norm(gradapprox))
    assert difference == expected and difference < 2e-7
    assert capsys.readouterr().out == ("\033[92mYour backward propagation works perfectly fine! difference = "
                                       + str(expected) + "\033[0m\n")
    gc.gradient_check(x, theta, backend=backend)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------- gc_utils
def test_vectors_round_trip(backend):
    _, _, p = gradient_check_n_test_case()
    theta, keys = gc.dictionary_to_vector(p, backend=backend)
    assert theta.shape == (47, 1)
    assert keys == ["W1"] * 20 + ["b1"] * 5 + ["W2"] * 15 + ["b2"] * 3 + ["W3"] * 3 + ["b3"]
    back = gc.vector_to_dictionary(theta, backend=backend)
    for k in KEYS:
        np.testing.assert_array_equal(back[k], p[k])
    grads = {"d" + k: v * 2 for k, v in p.items()}
    np.testing.assert_array_equal(gc.gradients_to_vector(grads, backend=backend), 2 * theta)
    other = gc.vector_to_dictionary(np.arange(28.0).reshape(-1, 1), (3, 3, 3, 1))
    assert other["W1"].shape == (3, 3) and other["b3"].shape == (1, 1) and other["b3"][0, 0] == 27
    with pytest.raises(ValueError, match=r"theta must have shape \(47, 1\)"):
        gc.vector_to_dictionary(theta[:40])
    with pytest.raises(ValueError, match="missing"):
        gc.gradients_to_vector({"dW1": p["W1"]})


# ----------------------------------------------------------------- N-D
def test_forward_and_backward_n_match_the_recipe(backend):
    X, Y, p = gradient_check_n_test_case()
    cost, cache = gc.forward_propagation_n(X, Y, p, backend=backend)
    cost_tb, cache_tb = tb_forward_n(X, Y, p)
    assert cost == pytest.approx(cost_tb, rel=1e-14)
    grads = gc.backward_propagation_n(X, Y, cache, backend=backend)
    want = tb_backward_n(X, Y, cache_tb)
    assert set(grads) == set(want)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-13, atol=1e-16, err_msg=k)


def test_gradient_check_n_finds_the_planted_mistakes(backend, capsys):
    X, Y, p = gradient_check_n_test_case()
    cost, cache_tb = tb_forward_n(X, Y, p)
    buggy = tb_backward_n(X, Y, cache_tb, planted_mistakes=True)
    difference = gc.gradient_check_n(p, buggy, X, Y, 1e-7, True, backend=backend)
    # The notebook prints 0.2850931567761623 for these (its own backward_propagation_n).
    assert difference == pytest.approx(0.2850931567761623, rel=1e-7)
    assert difference == pytest.approx(tb_gradient_check_n(p, buggy, X, Y), rel=1e-9)
    out = capsys.readouterr().out
    assert out.startswith("\033[93mThere is a mistake in the backward propagation! difference = 0.28509")


def test_gradient_check_n_passes_the_right_gradients(backend, capsys):
    X, Y, p = gradient_check_n_test_case()
    before = {k: v.copy() for k, v in p.items()}
    _, cache = gc.forward_propagation_n(X, Y, p, backend=backend)
    grads = gc.backward_propagation_n(X, Y, cache, backend=backend)
    difference = gc.gradient_check_n(p, grads, X, Y, print_msg=True, backend=backend)
    assert difference < 2e-7
    _, cache_tb = tb_forward_n(X, Y, p)
    # The notebook prints 1.1890913024229996e-07 for the right gradients.
    assert difference == pytest.approx(1.1890913024229996e-07, rel=1e-9)
    assert difference == pytest.approx(tb_gradient_check_n(p, tb_backward_n(X, Y, cache_tb), X, Y), rel=1e-9)
    assert capsys.readouterr().out.startswith(
        "\033[92mYour backward propagation works perfectly fine! difference = ")
    for k in KEYS:  # the parameters are left as they were
        np.testing.assert_array_equal(p[k], before[k])
