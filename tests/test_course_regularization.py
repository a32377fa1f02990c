"""`dnnblocks.course.regularization` against the course's recipe (reg_utils + notebook) and published values."""

import re

import numpy as np
import pytest

from dnnblocks.course import regularization as reg


# ------------------------------------------------ the course's recipe
def tb_forward(X, p):
    Z1 = np.dot(p["W1"], X) + p["b1"]
    A1 = np.maximum(0, Z1)
    Z2 = np.dot(p["W2"], A1) + p["b2"]
    A2 = np.maximum(0, Z2)
    Z3 = np.dot(p["W3"], A2) + p["b3"]
    A3 = 1 / (1 + np.exp(-Z3))
    return A3, (Z1, A1, p["W1"], p["b1"], Z2, A2, p["W2"], p["b2"], Z3, A3, p["W3"], p["b3"])


def tb_cost(a3, Y):
    m = Y.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
    return 1. / m * np.nansum(logprobs)


def tb_cost_l2(A3, Y, p, lambd):
    m = Y.shape[1]
    l2 = (1 / m) * (lambd / 2) * (np.sum(np.square(p["W1"])) + np.sum(np.square(p["W2"]))
                                  + np.sum(np.square(p["W3"])))
    return tb_cost(A3, Y) + l2


def tb_backward(X, Y, cache, lambd=0.0):
    m = X.shape[1]
    (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3) = cache
    dZ3 = A3 - Y
    dW3 = 1. / m * np.dot(dZ3, A2.T) + (lambd / m) * W3
    db3 = 1. / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1. / m * np.dot(dZ2, A1.T) + (lambd / m) * W2
    db2 = 1. / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1. / m * np.dot(dZ1, X.T) + (lambd / m) * W1
    db1 = 1. / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"dZ3": dZ3, "dW3": dW3, "db3": db3, "dA2": dA2, "dZ2": dZ2, "dW2": dW2, "db2": db2,
            "dA1": dA1, "dZ1": dZ1, "dW1": dW1, "db1": db1}


def tb_forward_dropout(X, p, keep_prob=0.5):
    np.random.seed(1)
    Z1 = np.dot(p["W1"], X) + p["b1"]
    A1 = np.maximum(0, Z1)
    D1 = np.random.rand(A1.shape[0], A1.shape[1])
    D1 = (D1 < keep_prob).astype(int)
    A1 = A1 * D1
    A1 = A1 / keep_prob
    Z2 = np.dot(p["W2"], A1) + p["b2"]
    A2 = np.maximum(0, Z2)
    D2 = np.random.rand(A2.shape[0], A2.shape[1])
    D2 = (D2 < keep_prob).astype(int)
    A2 = A2 * D2
    A2 = A2 / keep_prob
    Z3 = np.dot(p["W3"], A2) + p["b3"]
    A3 = 1 / (1 + np.exp(-Z3))
    return A3, (Z1, D1, A1, p["W1"], p["b1"], Z2, D2, A2, p["W2"], p["b2"], Z3, A3, p["W3"], p["b3"])


def tb_backward_dropout(X, Y, cache, keep_prob):
    m = X.shape[1]
    (Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3) = cache
    dZ3 = A3 - Y
    dW3 = 1. / m * np.dot(dZ3, A2.T)
    db3 = 1. / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dA2 = dA2 * D2 / keep_prob
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1. / m * np.dot(dZ2, A1.T)
    db2 = 1. / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dA1 = dA1 * D1 / keep_prob
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1. / m * np.dot(dZ1, X.T)
    db1 = 1. / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"dZ3": dZ3, "dW3": dW3, "db3": db3, "dA2": dA2, "dZ2": dZ2, "dW2": dW2, "db2": db2,
            "dA1": dA1, "dZ1": dZ1, "dW1": dW1, "db1": db1}


def assert_dicts_close(got, want, rtol=1e-12):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-15, err_msg=k)


# The notebooks' test cases (testCases.py), rebuilt with the same seeds.
def course_parameters():
    np.random.seed(1)
    X = np.random.randn(3, 5)
    p = {}
    for name, shape in (("W1", (2, 3)), ("b1", (2, 1)), ("W2", (3, 2)), ("b2", (3, 1)),
                        ("W3", (1, 3)), ("b3", (1, 1))):
        p[name] = np.random.randn(*shape)
    return X, p


def test_compute_cost_with_regularization_published(backend):
    np.random.seed(1)
    Y = np.array([[1, 1, 0, 1, 0]])
    p = {}
    for name, shape in (("W1", (2, 3)), ("b1", (2, 1)), ("W2", (3, 2)), ("b2", (3, 1)),
                        ("W3", (1, 3)), ("b3", (1, 1))):
        p[name] = np.random.randn(*shape)
    a3 = np.array([[0.40682402, 0.01629284, 0.16722898, 0.10118111, 0.40682402]])
    cost = reg.compute_cost_with_regularization(a3, Y, p, lambd=0.1, backend=backend)
    assert cost == pytest.approx(1.78648594516, abs=1e-11)
    assert cost == pytest.approx(tb_cost_l2(a3, Y, p, 0.1), rel=1e-14)


def test_forward_propagation_with_dropout_published(backend):
    X, p = course_parameters()
    A3, cache = reg.forward_propagation_with_dropout(X, p, keep_prob=0.7, backend=backend)
    np.testing.assert_allclose(A3, [[0.36974721, 0.00305176, 0.04565099, 0.49683389, 0.36974721]],
                               atol=1e-8)
    A3_tb, cache_tb = tb_forward_dropout(X, p, 0.7)
    assert len(cache) == 14
    for i, (got, want) in enumerate(zip(cache, cache_tb)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15, err_msg=str(i))
    assert cache[1].dtype.kind == "i" and set(np.unique(cache[1])) <= {0, 1}


def test_backward_with_dropout_matches_the_recipe(backend):
    X, p = course_parameters()
    Y = np.array([[1, 1, 0, 1, 0]])
    _, cache = reg.forward_propagation_with_dropout(X, p, keep_prob=0.8, backend=backend)
    _, cache_tb = tb_forward_dropout(X, p, 0.8)
    grads = reg.backward_propagation_with_dropout(X, Y, cache, keep_prob=0.8, backend=backend)
    assert_dicts_close(grads, tb_backward_dropout(X, Y, cache_tb, 0.8))


def test_backward_with_regularization_matches_the_recipe(backend):
    X, p = course_parameters()
    Y = np.array([[1, 1, 0, 1, 0]])
    _, cache = reg.forward_propagation(X, p, backend=backend)
    _, cache_tb = tb_forward(X, p)
    grads = reg.backward_propagation_with_regularization(X, Y, cache, lambd=0.7, backend=backend)
    assert_dicts_close(grads, tb_backward(X, Y, cache_tb, 0.7))
    # lambd = 0 is the plain backward propagation
    assert_dicts_close(reg.backward_propagation(X, Y, cache, backend=backend), tb_backward(X, Y, cache_tb))


def test_initialize_parameters_is_reg_utils(backend):
    p = reg.initialize_parameters([2, 20, 3, 1], backend=backend)
    np.random.seed(3)
    for l, (n, n_prev) in enumerate(((20, 2), (3, 20), (1, 3)), start=1):
        np.testing.assert_array_equal(p[f"W{l}"], np.random.randn(n, n_prev) / np.sqrt(n_prev))
        np.testing.assert_array_equal(p[f"b{l}"], np.zeros((n, 1)))


def test_load_2D_dataset_shape_and_determinism():
    train_X, train_Y, test_X, test_Y = reg.load_2D_dataset()
    assert train_X.shape == (2, 211) and train_Y.shape == (1, 211)
    assert test_X.shape == (2, 200) and test_Y.shape == (1, 200)
    assert np.abs(train_X).max() <= 0.75 and set(np.unique(train_Y)) == {0, 1}
    state = np.random.get_state()[1].copy()
    again = reg.load_2D_dataset()
    np.testing.assert_array_equal(again[0], train_X)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the global generator is left alone
    assert 0.3 < train_Y.mean() < 0.7


def tb_model(X, Y, learning_rate, num_iterations, lambd=0, keep_prob=1):
    p = reg.initialize_parameters([X.shape[0], 20, 3, 1])
    costs = []
    for i in range(num_iterations):
        if keep_prob == 1:
            a3, cache = tb_forward(X, p)
        else:
            a3, cache = tb_forward_dropout(X, p, keep_prob)
        cost = tb_cost(a3, Y) if lambd == 0 else tb_cost_l2(a3, Y, p, lambd)
        if keep_prob == 1:
            grads = tb_backward(X, Y, cache, lambd)
        else:
            grads = tb_backward_dropout(X, Y, cache, keep_prob)
        for k in list(p):
            p[k] = p[k] - learning_rate * grads["d" + k]
        costs.append(cost)
    return p, costs


@pytest.mark.parametrize("lambd, keep_prob", [(0, 1), (0.7, 1), (0, 0.86)])
def test_model_matches_the_recipe(backend, capsys, lambd, keep_prob):
    train_X, train_Y, test_X, test_Y = reg.load_2D_dataset()
    p = reg.model(train_X, train_Y, num_iterations=400, lambd=lambd, keep_prob=keep_prob, backend=backend)
    printed = re.findall(r"Cost after iteration (\d+): (\S+)", capsys.readouterr().out)
    assert [int(i) for i, _ in printed] == [0]
    p_tb, costs_tb = tb_model(train_X, train_Y, 0.3, 400, lambd, keep_prob)
    assert float(printed[0][1]) == pytest.approx(costs_tb[0], rel=1e-13)
    for k in p_tb:
        np.testing.assert_allclose(p[k], p_tb[k], rtol=1e-8, atol=1e-11, err_msg=k)
    out = reg.predict(test_X, test_Y, p, backend=backend)
    assert capsys.readouterr().out.strip() == "Accuracy: " + str(np.mean(out[0] == test_Y[0]))


def test_model_refuses_l2_with_dropout(backend):
    X, Y, _, _ = reg.load_2D_dataset()
    with pytest.raises(AssertionError):
        reg.model(X, Y, num_iterations=1, lambd=0.1, keep_prob=0.5, backend=backend)
    with pytest.raises(ValueError, match="keep_prob"):
        reg.forward_propagation_with_dropout(X, reg.initialize_parameters([2, 20, 3, 1]), keep_prob=0,
                                             backend=backend)
