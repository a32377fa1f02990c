"""`dnnblocks.Network`: gradients, training, both backends, memory behaviour."""

import numpy as np
import pytest

import dnnblocks
from dnnblocks import Network, TrainingDivergedError

HIDDEN = ("relu", "tanh", "sigmoid")


# ------------------------------------------------------------------- helpers
def make_data(rng, n_x, m, n_y=1, dtype=np.float64):
    """Gaussian X with random labels (for gradients and plumbing)."""
    X = rng.standard_normal((n_x, m)).astype(dtype)
    Y = (rng.random((n_y, m)) < 0.5).astype(np.int64)
    return X, Y


def learnable_data(rng, n_x, m, dtype=np.float64):
    """Labels that are a smooth function of X, so that training converges steadily."""
    X = rng.standard_normal((n_x, m))
    Y = (X[0] + X[1] * X[2] > 0).astype(np.int64).reshape(1, -1)
    return X.astype(dtype), Y


def moons(m, rng, noise=0.2):
    """Two interleaved half circles (not linearly separable)."""
    y = rng.integers(0, 2, m)
    t = rng.uniform(0, np.pi, m)
    x0 = np.where(y == 0, np.cos(t), 1 - np.cos(t))
    x1 = np.where(y == 0, np.sin(t), 0.5 - np.sin(t))
    X = np.stack([x0, x1]) + noise * rng.standard_normal((2, m))
    return X, y.reshape(1, -1)


def xor(m, rng):
    X = rng.uniform(-1, 1, (2, m))
    return X, (X[0] * X[1] > 0).astype(np.int64).reshape(1, -1)


def reference_forward(net, X):
    """The forward pass in plain NumPy from net.W/net.b."""
    g = {
        "relu": lambda z: np.maximum(z, 0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    }
    A = np.asarray(X, dtype=np.float64)
    for l, act in enumerate(net.activations):
        A = g[act](np.asarray(net.W[l], np.float64) @ A + np.asarray(net.b[l], np.float64))
    return A


def reference_cost(AL, Y):
    return float(-np.mean(np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL), axis=0)))


def randomise_biases(net, rng, scale=0.3):
    for b in net.b:
        b[...] = scale * rng.standard_normal(b.shape)


def snapshot(net):
    return [w.copy() for w in net.W], [b.copy() for b in net.b]


def assert_same_params(net, snap, rtol=0.0):
    for l, (w, b) in enumerate(zip(*snap)):
        np.testing.assert_allclose(net.W[l], w, rtol=rtol, atol=0, err_msg=f"W[{l}]")
        np.testing.assert_allclose(net.b[l], b, rtol=rtol, atol=0, err_msg=f"b[{l}]")


# -------------------------------------------------------- gradient checking
@pytest.mark.parametrize("hidden_activation", HIDDEN)
@pytest.mark.parametrize("layer_dims,n_y", [([4, 5, 3, 1], 1), ([3, 4, 2], 2), ([5, 1], 1)],
                         ids=["two-hidden", "two-outputs", "no-hidden"])
def test_gradients_match_finite_differences(backend, hidden_activation, layer_dims, n_y):
    rng = np.random.default_rng(123)
    net = Network(layer_dims, hidden_activation=hidden_activation, backend=backend, init="xavier", seed=5)
    randomise_biases(net, rng)
    m = 7
    # Random data keeps every relu pre-activation well away from its kink.
    X, Y = make_data(rng, layer_dims[0], m, n_y)
    net.forward(X)
    cost = net.backward(Y)
    assert cost == pytest.approx(net.cost(X, Y), rel=1e-13)
    grads = {k: v.copy() for k, v in net.grads.items()}
    assert set(grads) == {f"{p}{l}" for l in range(1, len(layer_dims)) for p in ("dW", "db")}

    eps = 1e-6
    analytic, numeric = [], []
    for name, param in net.parameters.items():
        assert grads["d" + name].shape == param.shape
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + eps
            plus = net.cost(X, Y)
            param[idx] = old - eps
            minus = net.cost(X, Y)
            param[idx] = old
            numeric.append((plus - minus) / (2 * eps))
            analytic.append(grads["d" + name][idx])
    analytic, numeric = np.array(analytic), np.array(numeric)
    rel = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric))
    assert rel < 1e-7, rel
    # Not a vacuous check: the gradient is far from zero.
    assert np.linalg.norm(analytic) > 1e-2


def test_relu_gradient_check_data_is_away_from_kinks():
    # Guard for the test above: with this seed no hidden pre-activation is
    # within the finite-difference step of 0.
    rng = np.random.default_rng(123)
    net = Network([4, 5, 3, 1], hidden_activation="relu", init="xavier", seed=5)
    randomise_biases(net, rng)
    X, _ = make_data(rng, 4, 7)
    net.forward(X)
    for (_, Z) in net.caches[:-1]:
        assert np.abs(Z).min() > 1e-4


# -------------------------------------------------------- the two backends
@pytest.mark.parametrize("hidden_activation", HIDDEN)
def test_backends_give_identical_training_costs_in_float64(hidden_activation):
    rng = np.random.default_rng(7)
    X, Y = learnable_data(rng, 6, 50)
    nets = {b: Network([6, 8, 5, 1], hidden_activation=hidden_activation, backend=b, seed=3) for b in ("compiled", "numpy")}
    for l in range(3):
        np.testing.assert_array_equal(nets["compiled"].W[l], nets["numpy"].W[l])
    costs = {b: np.array([net.step(X, Y, 0.3) for _ in range(300)]) for b, net in nets.items()}
    assert np.all(np.abs(costs["compiled"] - costs["numpy"]) <= 1e-10)
    assert costs["compiled"][-1] < 0.8 * costs["compiled"][0]
    for l in range(3):
        np.testing.assert_allclose(nets["compiled"].W[l], nets["numpy"].W[l], rtol=1e-9, atol=1e-12)


def test_backends_agree_in_float32():
    rng = np.random.default_rng(8)
    X, Y = learnable_data(rng, 6, 50, dtype=np.float32)
    nets = {b: Network([6, 8, 5, 1], dtype=np.float32, backend=b, seed=3) for b in ("compiled", "numpy")}
    costs = {b: np.array([net.step(X, Y, 0.3) for _ in range(200)]) for b, net in nets.items()}
    for c in costs.values():
        assert np.all(np.isfinite(c)) and c[-1] < 0.8 * c[0]
    np.testing.assert_allclose(costs["compiled"], costs["numpy"], rtol=1e-4)
    for net in nets.values():
        assert all(w.dtype == np.float32 for w in net.W + net.b)


def test_float32_and_float64_networks_follow_the_same_path(backend):
    rng = np.random.default_rng(9)
    X, Y = learnable_data(rng, 5, 40)
    n64 = Network([5, 6, 1], backend=backend, seed=1)
    n32 = Network([5, 6, 1], backend=backend, seed=1, dtype=np.float32)
    np.testing.assert_array_equal(n32.W[0], n64.W[0].astype(np.float32))
    c64 = [n64.step(X, Y, 0.2) for _ in range(50)]
    c32 = [n32.step(X.astype(np.float32), Y, 0.2) for _ in range(50)]
    np.testing.assert_allclose(c32, c64, rtol=1e-4)


# -------------------------------------------------------------- step, forward
@pytest.mark.parametrize("hidden_activation", HIDDEN)
def test_step_equals_forward_backward_update(backend, dtype, hidden_activation):
    rng = np.random.default_rng(10)
    X, Y = make_data(rng, 4, 30, dtype=dtype)
    fused = Network([4, 6, 3, 1], hidden_activation=hidden_activation, backend=backend, dtype=dtype, seed=2)
    plain = Network([4, 6, 3, 1], hidden_activation=hidden_activation, backend=backend, dtype=dtype, seed=2)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for _ in range(5):
        c_fused = fused.step(X, Y, 0.4)
        plain.forward(X)
        c_plain = plain.backward(Y)
        plain.update(0.4)
        assert isinstance(c_fused, float)
        assert c_fused == pytest.approx(c_plain, rel=rtol)
    for l in range(3):
        np.testing.assert_allclose(fused.W[l], plain.W[l], rtol=rtol, atol=rtol * np.abs(plain.W[l]).max())
        np.testing.assert_allclose(fused.b[l], plain.b[l], rtol=rtol, atol=rtol * np.abs(plain.b[l]).max())
    # And the parameters really moved.
    assert not np.allclose(fused.W[0], Network([4, 6, 3, 1], seed=2, dtype=dtype).W[0])


def test_step_returns_the_cost_before_the_update(backend):
    rng = np.random.default_rng(11)
    X, Y = make_data(rng, 3, 20)
    net = Network([3, 4, 1], backend=backend, seed=0)
    before = net.cost(X, Y)
    expected = reference_cost(reference_forward(net, X), Y)
    assert before == pytest.approx(expected, rel=1e-12)
    assert net.step(X, Y, 0.1) == pytest.approx(before, rel=1e-13)
    assert net.cost(X, Y) < before


def test_update_applies_plain_gradient_descent(backend):
    rng = np.random.default_rng(12)
    X, Y = make_data(rng, 3, 20)
    net = Network([3, 4, 1], backend=backend, seed=0)
    W0, b0 = snapshot(net)
    net.forward(X)
    net.backward(Y)
    grads = {k: v.copy() for k, v in net.grads.items()}
    net.update(0.25)
    for l in range(2):
        np.testing.assert_allclose(net.W[l], W0[l] - 0.25 * grads[f"dW{l + 1}"], rtol=1e-15, atol=1e-17)
        np.testing.assert_allclose(net.b[l], b0[l] - 0.25 * grads[f"db{l + 1}"], rtol=1e-15, atol=1e-17)


def test_forward_matches_a_numpy_forward_pass(backend, dtype):
    rng = np.random.default_rng(13)
    for act in HIDDEN:
        net = Network([5, 7, 4, 2], hidden_activation=act, backend=backend, dtype=dtype, seed=4)
        randomise_biases(net, rng)
        X, _ = make_data(rng, 5, 9, dtype=dtype)
        AL = net.forward(X)
        assert AL.dtype == dtype and AL.shape == (2, 9)
        np.testing.assert_allclose(AL, reference_forward(net, X), rtol=1e-12 if dtype == np.float64 else 1e-5)
        # A copy: writing to it leaves the caches alone.
        AL[...] = -1
        assert np.all(net.caches[-1][1] != -1)


def test_forward_matches_the_course_api(backend):
    from dnnblocks import course

    rng = np.random.default_rng(14)
    net = Network([6, 5, 4, 1], backend=backend, seed=6)
    randomise_biases(net, rng)
    X, Y = make_data(rng, 6, 11)
    AL_course, caches = course.L_model_forward(X, net.parameters, backend=backend)
    np.testing.assert_allclose(net.forward(X), AL_course, rtol=1e-13)
    grads_course = course.L_model_backward(AL_course, Y, caches, backend=backend)
    net.backward(Y)
    for key, g in net.grads.items():
        np.testing.assert_allclose(g, grads_course[key], rtol=1e-9, atol=1e-13, err_msg=key)


# ------------------------------------------------------------ memory layout
def test_f_ordered_X_is_read_in_place_and_gives_the_same_result(backend, dtype):
    rng = np.random.default_rng(15)
    data = rng.standard_normal((40, 5)).astype(dtype)  # row-major (m, n_x), as loaded
    X_f = data.T
    X_c = np.ascontiguousarray(X_f)
    assert X_f.flags.f_contiguous and not X_f.flags.c_contiguous
    Y = (rng.random((1, 40)) < 0.5).astype(dtype)
    tol = dict(rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-12 if dtype == np.float64 else 1e-6)

    net_f = Network([5, 6, 3, 1], backend=backend, dtype=dtype, seed=1)
    net_c = Network([5, 6, 3, 1], backend=backend, dtype=dtype, seed=1)
    np.testing.assert_allclose(net_f.forward(X_f), net_c.forward(X_c), **tol)
    # The first layer's cached input is the caller's array itself, not a copy.
    assert net_f.caches[0][0][0] is X_f
    assert np.shares_memory(net_f.caches[0][0][0], data)
    net_f.backward(Y)
    net_c.backward(Y)
    for key in net_c.grads:
        np.testing.assert_allclose(net_f.grads[key], net_c.grads[key], **tol, err_msg=key)

    for _ in range(3):
        cf, cc = net_f.step(X_f, Y, 0.3), net_c.step(X_c, Y, 0.3)
        assert cf == pytest.approx(cc, rel=tol["rtol"])
        assert net_f.caches[0][0][0] is X_f
    for l in range(3):
        np.testing.assert_allclose(net_f.W[l], net_c.W[l], **tol)
    np.testing.assert_allclose(net_f.predict_proba(X_f), net_c.predict_proba(X_c), **tol)


def test_strided_X_is_accepted_and_gives_the_same_result(backend):
    rng = np.random.default_rng(16)
    big = rng.standard_normal((4, 60))
    X_view = big[:, ::3]
    net = Network([4, 3, 1], backend=backend, seed=0)
    np.testing.assert_allclose(net.forward(X_view), net.forward(np.ascontiguousarray(X_view)), rtol=1e-14)


def test_buffers_are_reused_across_steps(backend):
    rng = np.random.default_rng(17)
    X, Y = make_data(rng, 4, 25)
    X2, Y2 = make_data(rng, 4, 10)
    net = Network([4, 5, 3, 1], backend=backend, seed=0)

    def buffers():
        return [(A_prev if l else None, Z) for l, ((A_prev, _, _), Z) in enumerate(net.caches)]

    net.step(X, Y, 0.1)
    first = buffers()
    net.step(X, Y, 0.1)
    net.forward(X)
    again = buffers()
    for (a1, z1), (a2, z2) in zip(first, again):
        assert z1 is z2
        assert a1 is a2
    net.backward(Y)
    dW1 = net.grads["dW1"]
    net.forward(X)
    net.backward(Y)
    assert net.grads["dW1"] is dW1

    # Another batch size gets its own buffers; the first ones are kept.
    net.step(X2, Y2, 0.1)
    other = buffers()
    assert other[0][1].shape == (5, 10)
    assert not np.shares_memory(other[0][1], first[0][1])
    net.step(X, Y, 0.1)
    assert buffers()[0][1] is first[0][1]


def test_step_sees_in_place_changes_to_reused_input_buffers(backend):
    # A training loop that refills the same X and Y arrays with each mini-batch
    # must train on the new contents, whatever their dtype and layout.
    rng = np.random.default_rng(18)
    base = np.empty((3, 16))
    X_view = base[:, ::2]  # not contiguous: validated into a copy
    Y_buf = np.empty((1, 8), dtype=np.int64)  # not float: converted
    a = Network([3, 4, 1], backend=backend, seed=1)
    b = Network([3, 4, 1], backend=backend, seed=1)
    for _ in range(4):
        base[...] = rng.standard_normal(base.shape)
        Y_buf[...] = rng.integers(0, 2, Y_buf.shape)
        assert a.step(X_view, Y_buf, 0.5) == b.step(X_view.copy(), Y_buf.copy(), 0.5)
    assert_same_params(a, snapshot(b))


def test_parameters_share_memory_with_W_and_b(backend):
    net = Network([3, 4, 2, 1], backend=backend, seed=0)
    params = net.parameters
    assert list(params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for l in range(3):
        assert params[f"W{l + 1}"] is net.W[l]
        assert params[f"b{l + 1}"] is net.b[l]
        assert net.W[l].shape == (net.layer_dims[l + 1], net.layer_dims[l])
        assert net.b[l].shape == (net.layer_dims[l + 1], 1)
    params["W2"][0, 0] = 42.0
    assert net.W[1][0, 0] == 42.0
    # Training updates the same arrays in place.
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 3, 10)
    w_before = params["W1"].copy()
    net.step(X, Y, 0.5)
    assert params["W1"] is net.W[0]
    assert not np.array_equal(params["W1"], w_before)


def test_caches_have_the_course_layout(backend):
    rng = np.random.default_rng(19)
    X, _ = make_data(rng, 4, 6)
    net = Network([4, 3, 2, 1], hidden_activation="tanh", backend=backend, seed=0)
    AL = net.forward(X)
    caches = net.caches
    assert len(caches) == 3
    A_prev = X
    for l, ((a_prev, W, b), Z) in enumerate(caches):
        assert a_prev is X if l == 0 else a_prev.shape == (net.layer_dims[l], 6)
        assert W is net.W[l] and b is net.b[l]
        np.testing.assert_allclose(Z, W @ A_prev + b, rtol=1e-13)
        A_prev = np.tanh(Z) if l < 2 else 1 / (1 + np.exp(-Z))
        if l < 2:
            np.testing.assert_allclose(caches[l + 1][0][0], A_prev, rtol=1e-13)
    np.testing.assert_allclose(AL, A_prev, rtol=1e-13)


# ------------------------------------------------------------- prediction
def test_predict_proba_and_predict(backend, dtype):
    rng = np.random.default_rng(20)
    net = Network([3, 5, 1], backend=backend, dtype=dtype, seed=3)
    randomise_biases(net, rng, scale=1.0)
    X_train, _ = make_data(rng, 3, 12, dtype=dtype)
    X, _ = make_data(rng, 3, 50, dtype=dtype)
    net.forward(X_train)
    P = net.predict_proba(X)
    assert P.shape == (1, 50) and P.dtype == dtype
    np.testing.assert_allclose(P, reference_forward(net, X), rtol=1e-12 if dtype == np.float64 else 1e-5)
    pred = net.predict(X)
    assert pred.shape == (1, 50)
    assert set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (P > 0.5).astype(int))
    assert 0 < pred.sum() < 50  # both classes appear: the threshold matters
    np.testing.assert_array_equal(net.predict(X, threshold=0.9), (P > 0.9).astype(int))
    # Prediction keeps the training caches intact.
    assert net.caches[0][0][0] is X_train
    assert net.caches[0][1].shape == (5, 12)


def test_predict_threshold_is_strict():
    net = Network([1, 1], init="zeros", seed=0)  # sigmoid(0) = 0.5 exactly
    np.testing.assert_array_equal(net.predict(np.ones((1, 3))), [[0, 0, 0]])
    assert np.all(net.predict_proba(np.ones((1, 3))) == 0.5)


# ----------------------------------------------------------- initialisers
def test_initialisers_scale_and_seed(dtype):
    dims = [400, 300, 50, 1]
    for init, std in (("random", lambda n: 0.01), ("he", lambda n: np.sqrt(2 / n)),
                      ("xavier", lambda n: np.sqrt(1 / n))):
        net = Network(dims, init=init, seed=11, dtype=dtype)
        rng = np.random.default_rng(11)
        for l in range(3):
            W = net.W[l]
            assert W.dtype == dtype and W.flags.c_contiguous
            assert W.shape == (dims[l + 1], dims[l])
            expected = rng.standard_normal((dims[l + 1], dims[l])) * std(dims[l])
            np.testing.assert_allclose(W, expected.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-15)
            np.testing.assert_array_equal(net.b[l], np.zeros((dims[l + 1], 1)))
            assert net.b[l].dtype == dtype
        # The empirical spread of the big first layer is the documented one.
        assert net.W[0].std() == pytest.approx(std(400), rel=0.02)
        assert abs(net.W[0].mean()) < 0.02 * std(400)
        # Seeded: reproducible, and another seed differs.
        again = Network(dims, init=init, seed=11, dtype=dtype)
        other = Network(dims, init=init, seed=12, dtype=dtype)
        for l in range(3):
            np.testing.assert_array_equal(again.W[l], net.W[l])
        assert not np.array_equal(other.W[0], net.W[0])
    zeros = Network(dims, init="zeros", seed=11, dtype=dtype)
    assert all(not w.any() for w in zeros.W) and all(not b.any() for b in zeros.b)


def test_seed_accepts_a_generator_and_none():
    a = Network([5, 4, 1], seed=np.random.default_rng(3))
    b = Network([5, 4, 1], seed=3)
    np.testing.assert_array_equal(a.W[0], b.W[0])
    c, d = Network([5, 4, 1]), Network([5, 4, 1])
    assert not np.array_equal(c.W[0], d.W[0])


def test_initialisation_does_not_depend_on_the_backend():
    a = Network([6, 5, 1], backend="compiled", seed=4, init="he")
    b = Network([6, 5, 1], backend="numpy", seed=4, init="he")
    for l in range(2):
        np.testing.assert_array_equal(a.W[l], b.W[l])


def test_default_and_introspection():
    net = Network([3, 4, 1])
    assert net.backend == "compiled" and net.dtype == np.float64 and net.init == "he"
    assert net.hidden_activation == "relu"
    assert net.n_layers == 2 and net.layer_dims == (3, 4, 1)
    assert net.activations == ("relu", "sigmoid")
    assert "layer_dims=[3, 4, 1]" in repr(net)
    net32 = Network([3, 1], dtype="float32", backend="numpy", hidden_activation="tanh")
    assert net32.dtype == np.float32 and net32.backend == "numpy" and net32.activations == ("sigmoid",)


# ------------------------------------------------------- it actually learns
@pytest.mark.parametrize("hidden_activation", HIDDEN)
def test_learns_two_moons(backend, dtype, hidden_activation):
    rng = np.random.default_rng(42)
    X_train, Y_train = moons(400, rng)
    X_test, Y_test = moons(400, rng)
    X_train, X_test = X_train.astype(dtype), X_test.astype(dtype)
    net = Network([2, 16, 8, 1], hidden_activation=hidden_activation, backend=backend, dtype=dtype,
                  init="he" if hidden_activation == "relu" else "xavier", seed=0)
    for _ in range(2000):
        cost = net.step(X_train, Y_train, 0.5)
    assert cost < 0.15
    accuracy = (net.predict(X_test) == Y_test).mean()
    assert accuracy >= 0.95, accuracy


def test_learns_xor_which_a_linear_model_cannot(backend):
    rng = np.random.default_rng(43)
    X_train, Y_train = xor(500, rng)
    X_test, Y_test = xor(500, rng)
    deep = Network([2, 12, 6, 1], hidden_activation="tanh", init="xavier", backend=backend, seed=1)
    linear = Network([2, 1], backend=backend, seed=1)
    for _ in range(3000):
        deep.step(X_train, Y_train, 0.5)
        linear.step(X_train, Y_train, 0.5)
    assert (deep.predict(X_test) == Y_test).mean() >= 0.95
    assert (linear.predict(X_test) == Y_test).mean() < 0.75


def test_diverging_step_raises_and_leaves_parameters_alone(backend):
    rng = np.random.default_rng(44)
    X, Y = make_data(rng, 3, 20)
    X *= 100
    net = Network([3, 8, 8, 1], backend=backend, seed=0)
    with np.errstate(all="ignore"):
        for _ in range(50):
            before = snapshot(net)
            try:
                net.step(X, Y, 1e150)
            except TrainingDivergedError as exc:
                assert "learning_rate" in str(exc)
                assert_same_params(net, before)
                break
        else:
            pytest.fail("a learning rate of 1e150 never diverged")
