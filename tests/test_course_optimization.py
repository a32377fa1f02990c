"""`dnnblocks.course.optimization` against the course's recipe (opt_utils_v1a + notebook) and published values."""

import math
import re

import numpy as np
import pytest

from dnnblocks.course import optimization as opt


# ------------------------------------------------ the course's recipe
def tb_update_gd(p, g, lr):
    for l in range(1, len(p) // 2 + 1):
        p["W" + str(l)] = p["W" + str(l)] - lr * g["dW" + str(l)]
        p["b" + str(l)] = p["b" + str(l)] - lr * g["db" + str(l)]
    return p


def tb_momentum(p, g, v, beta, lr):
    for l in range(1, len(p) // 2 + 1):
        for k in ("W", "b"):
            v["d" + k + str(l)] = beta * v["d" + k + str(l)] + (1 - beta) * g["d" + k + str(l)]
            p[k + str(l)] = p[k + str(l)] - lr * v["d" + k + str(l)]
    return p, v


def tb_adam(p, g, v, s, t, lr=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8):
    vc, sc = {}, {}
    for l in range(1, len(p) // 2 + 1):
        for k in ("W", "b"):
            key = "d" + k + str(l)
            v[key] = beta1 * v[key] + (1 - beta1) * g[key]
            vc[key] = v[key] / (1 - np.power(beta1, t))
            s[key] = beta2 * s[key] + (1 - beta2) * np.power(g[key], 2)
            sc[key] = s[key] / (1 - np.power(beta2, t))
            p[k + str(l)] = p[k + str(l)] - lr * vc[key] / (np.sqrt(sc[key]) + epsilon)
    return p, v, s, vc, sc


def tb_mini_batches(X, Y, size=64, seed=0):
    np.random.seed(seed)
    m = X.shape[1]
    perm = list(np.random.permutation(m))
    sx, sy = X[:, perm], Y[:, perm].reshape((1, m))
    out = []
    for k in range(math.floor(m / size)):
        out.append((sx[:, k * size:(k + 1) * size], sy[:, k * size:(k + 1) * size]))
    if m % size != 0:
        out.append((sx[:, int(m / size) * size:], sy[:, int(m / size) * size:]))
    return out


def tb_forward(X, p):
    z1 = np.dot(p["W1"], X) + p["b1"]
    a1 = np.maximum(0, z1)
    z2 = np.dot(p["W2"], a1) + p["b2"]
    a2 = np.maximum(0, z2)
    z3 = np.dot(p["W3"], a2) + p["b3"]
    a3 = 1 / (1 + np.exp(-z3))
    return a3, (z1, a1, p["W1"], p["b1"], z2, a2, p["W2"], p["b2"], z3, a3, p["W3"], p["b3"])


def tb_backward(X, Y, cache):
    m = X.shape[1]
    (z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3) = cache
    dz3 = 1. / m * (a3 - Y)
    dW3 = np.dot(dz3, a2.T)
    db3 = np.sum(dz3, axis=1, keepdims=True)
    da2 = np.dot(W3.T, dz3)
    dz2 = np.multiply(da2, np.int64(a2 > 0))
    dW2 = np.dot(dz2, a1.T)
    db2 = np.sum(dz2, axis=1, keepdims=True)
    da1 = np.dot(W2.T, dz2)
    dz1 = np.multiply(da1, np.int64(a1 > 0))
    dW1 = np.dot(dz1, X.T)
    db1 = np.sum(dz1, axis=1, keepdims=True)
    return {"dz3": dz3, "dW3": dW3, "db3": db3, "da2": da2, "dz2": dz2, "dW2": dW2, "db2": db2,
            "da1": da1, "dz1": dz1, "dW1": dW1, "db1": db1}


def tb_cost(a3, Y):
    logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
    return np.sum(logprobs)


def params_and_grads():
    W1, b1, W2, b2, dW1, db1, dW2, db2 = opt.load_params_and_grads()
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2}


def copy(d):
    return {k: v.copy() for k, v in d.items()}


def assert_dicts_close(got, want, rtol=1e-13):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-15, err_msg=k)


# ------------------------------------------------------------ optimizers
def test_load_params_and_grads_is_seeded():
    W1, b1, *_ = opt.load_params_and_grads()
    np.random.seed(1)
    np.testing.assert_array_equal(W1, np.random.randn(2, 3))
    np.testing.assert_allclose(W1[0], [1.62434536, -0.61175641, -0.52817175], atol=1e-8)


def test_update_parameters_with_gd(backend):
    p, g = params_and_grads()
    held = dict(p)
    out = opt.update_parameters_with_gd(p, g, 0.01, backend=backend)
    assert out is p
    assert_dicts_close(out, tb_update_gd(copy(held), g, 0.01))
    np.testing.assert_allclose(out["W1"][0], [1.63535156, -0.62320365, -0.53718766], atol=1e-8)
    assert all(held[k] is not out[k] for k in held)  # new arrays; the old ones untouched


def test_momentum(backend):
    p, g = params_and_grads()
    v = opt.initialize_velocity(p, backend=backend)
    assert sorted(v) == ["dW1", "dW2", "db1", "db2"] and not any(a.any() for a in v.values())
    p_tb, v_tb = copy(p), copy(v)
    for _ in range(3):
        p, v = opt.update_parameters_with_momentum(p, g, v, beta=0.9, learning_rate=0.01, backend=backend)
        p_tb, v_tb = tb_momentum(p_tb, g, v_tb, 0.9, 0.01)
    assert_dicts_close(p, p_tb)
    assert_dicts_close(v, v_tb)


def test_adam_returns_five_values(backend):
    p, g = params_and_grads()
    v, s = opt.initialize_adam(p, backend=backend)
    assert sorted(v) == sorted(s) == ["dW1", "dW2", "db1", "db2"]
    p_tb, v_tb, s_tb = copy(p), copy(v), copy(s)
    for t in (1, 2, 3):
        p, v, s, vc, sc = opt.update_parameters_with_adam(p, g, v, s, t, 0.02, 0.8, 0.888, 1e-2,
                                                         backend=backend)
        p_tb, v_tb, s_tb, vc_tb, sc_tb = tb_adam(p_tb, g, v_tb, s_tb, t, 0.02, 0.8, 0.888, 1e-2)
        for got, want in ((p, p_tb), (v, v_tb), (s, s_tb), (vc, vc_tb), (sc, sc_tb)):
            assert_dicts_close(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="t must be"):
        opt.update_parameters_with_adam(p, g, v, s, 0, backend=backend)


def test_bad_state_changes_nothing(backend):
    p, g = params_and_grads()
    v = opt.initialize_velocity(p)
    del v["db2"]
    held = dict(p)
    with pytest.raises(ValueError, match="v is missing 'db2'"):
        opt.update_parameters_with_momentum(p, g, v, 0.9, 0.01, backend=backend)
    assert all(p[k] is held[k] for k in p)


def test_learning_rate_decay_published():
    assert opt.update_lr(0.5, 2, 1) == 0.16666666666666666
    assert opt.schedule_lr_decay(0.5, 10, 0.3, 100) == 0.5
    assert opt.schedule_lr_decay(0.5, 100, 0.3, 100) == 0.3846153846153846


# ----------------------------------------------------------- mini-batches
def test_random_mini_batches_is_the_recipe(backend):
    np.random.seed(1)
    X = np.random.randn(12288, 148)
    Y = np.random.randn(1, 148) < 0.5
    batches = opt.random_mini_batches(X, Y, 64, seed=0, backend=backend)
    assert [b[0].shape for b in batches] == [(12288, 64), (12288, 64), (12288, 20)]
    assert [b[1].shape for b in batches] == [(1, 64), (1, 64), (1, 20)]
    for (x, y), (x_tb, y_tb) in zip(batches, tb_mini_batches(X, Y, 64, 0)):
        np.testing.assert_array_equal(x, x_tb)
        np.testing.assert_array_equal(y, y_tb)
    exact = opt.random_mini_batches(X[:, :128], Y[:, :128], 64, seed=3)
    assert len(exact) == 2


# -------------------------------------------------------------- helpers
def test_helpers_match_the_recipe(backend):
    train_X, train_Y = opt.load_dataset()
    assert train_X.shape == (2, 300) and train_Y.shape == (1, 300)
    p = opt.initialize_parameters([2, 5, 2, 1], backend=backend)
    np.random.seed(3)
    np.testing.assert_array_equal(p["W1"], np.random.randn(5, 2) * np.sqrt(2 / 2))
    X, Y = train_X[:, :64], train_Y[:, :64]
    a3, cache = opt.forward_propagation(X, p, backend=backend)
    a3_tb, cache_tb = tb_forward(X, p)
    np.testing.assert_allclose(a3, a3_tb, rtol=1e-14)
    assert opt.compute_cost(a3, Y, backend=backend) == pytest.approx(tb_cost(a3_tb, Y), rel=1e-13)
    assert_dicts_close(opt.backward_propagation(X, Y, cache, backend=backend), tb_backward(X, Y, cache_tb),
                       rtol=1e-12)


def tb_model(X, Y, dims, optimizer, num_epochs, learning_rate=0.0007, decay=None, decay_rate=1):
    t, seed, m = 0, 10, X.shape[1]
    lr0 = learning_rate
    p = opt.initialize_parameters(dims)
    v = {k: np.zeros(a.shape) for k, a in (("d" + n, p[n]) for n in p)}
    s = copy(v)
    costs = []
    for i in range(num_epochs):
        seed += 1
        total = 0
        for bx, by in tb_mini_batches(X, Y, 64, seed):
            a3, cache = tb_forward(bx, p)
            total += tb_cost(a3, by)
            g = tb_backward(bx, by, cache)
            if optimizer == "gd":
                p = tb_update_gd(p, g, learning_rate)
            elif optimizer == "momentum":
                p, v = tb_momentum(p, g, v, 0.9, learning_rate)
            else:
                t += 1
                p, v, s, _, _ = tb_adam(p, g, v, s, t, learning_rate, 0.9, 0.999, 1e-8)
        costs.append(total / m)
        if decay:
            learning_rate = decay(lr0, i, decay_rate)
    return p, costs


# The notebook's first printed cost of each optimizer ("Cost after epoch 0: ...").
PUBLISHED_EPOCH0 = {"gd": "0.702405", "momentum": "0.702413", "adam": "0.702166"}


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_model_matches_the_recipe(backend, capsys, optimizer):
    train_X, train_Y = opt.load_dataset()
    dims = [train_X.shape[0], 5, 2, 1]
    p = opt.model(train_X, train_Y, dims, optimizer, num_epochs=150, backend=backend)
    out = capsys.readouterr().out
    assert out == "Cost after epoch 0: " + PUBLISHED_EPOCH0[optimizer] + "\n"
    p_tb, _ = tb_model(train_X, train_Y, dims, optimizer, 150)
    assert_dicts_close(p, p_tb, rtol=1e-9)


def test_model_with_decay_prints_the_rate(capsys):
    train_X, train_Y = opt.load_dataset()
    dims = [train_X.shape[0], 5, 2, 1]
    p = opt.model(train_X, train_Y, dims, "gd", learning_rate=0.1, num_epochs=60, decay=opt.schedule_lr_decay)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Cost after epoch 0: ")
    assert lines[1] == "learning rate after epoch 0: %f" % opt.schedule_lr_decay(0.1, 0, 1)
    p_tb, _ = tb_model(train_X, train_Y, dims, "gd", 60, 0.1, opt.schedule_lr_decay)
    assert_dicts_close(p, p_tb, rtol=1e-9)
    p = opt.model(train_X, train_Y, dims, "gd", learning_rate=0.1, num_epochs=60, decay=opt.update_lr,
                  print_cost=False)
    assert capsys.readouterr().out == ""
    p_tb, _ = tb_model(train_X, train_Y, dims, "gd", 60, 0.1, opt.update_lr)
    assert_dicts_close(p, p_tb, rtol=1e-9)


@pytest.fixture
def only_when_selected(request):
    """The marker says "kept out of the default run": these run only with ``-m slow``."""
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("a long run (the notebook's 5000 epochs): select it with -m slow")


@pytest.mark.slow
def test_model_adam_full_run_accuracy(capsys, only_when_selected):
    # The notebook: Adam for 5000 epochs, train accuracy 0.9433333333333334 (gd: 0.7166666666666667).
    train_X, train_Y = opt.load_dataset()
    p = opt.model(train_X, train_Y, [train_X.shape[0], 5, 2, 1], "adam", print_cost=False)
    opt.predict(train_X, train_Y, p)
    assert capsys.readouterr().out == "Accuracy: 0.9433333333333334\n"
