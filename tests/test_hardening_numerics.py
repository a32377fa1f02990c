"""Numerical edge cases: saturating activations, extreme logits, diverging runs.

* sigmoid, tanh, relu, softmax and the training costs stay finite (and
  right) for pre-activations up to |z| = 1e4, in float32 and float64, on both
  backends; floating-point errors other than underflow are turned into
  exceptions here (``np.errstate``), so a NumPy overflow warning fails the test;
* a run that diverges stops with TrainingDivergedError, whose message suggests
  a smaller learning rate, and the network keeps finite weights: those of the
  last step when that step refused to update, otherwise (the update itself
  overflowed) the last finite ones, restored.
"""

import math
import warnings

import numpy as np
import pytest
from scipy.special import expit

import dnnblocks
from dnnblocks import Network, TrainingDivergedError, course, get_backend

BACKENDS = ("compiled", "numpy")
DTYPES = (np.float32, np.float64)
Z_EXTREME = np.array([-1e4, -1e3, -88.8, -40.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 40.0, 88.8, 1e3, 1e4])

# Overflow, invalid operations and division by zero raise; underflow (exp of a
# very negative number rounding to 0) is the expected, harmless case.
STRICT = dict(over="raise", invalid="raise", divide="raise", under="ignore")


def _tol(dtype):
    return dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_activations_finite_and_right_at_extreme_z(activation, backend, dtype):
    k = get_backend(backend)
    z = Z_EXTREME.astype(dtype).reshape(1, -1)
    m = z.shape[1]
    W, b = np.ones((1, 1), dtype), np.zeros((1, 1), dtype)
    Z, A = np.empty_like(z), np.empty_like(z)
    reference = {"relu": np.maximum(Z_EXTREME, 0), "tanh": np.tanh(Z_EXTREME),
                 "sigmoid": expit(Z_EXTREME), "identity": Z_EXTREME}[activation]
    with np.errstate(**STRICT):
        k.linear_activation_forward(W, b, z, activation, Z, A)
        assert np.isfinite(A).all()
        np.testing.assert_allclose(A[0], reference.astype(dtype), **_tol(dtype))
        if activation in ("sigmoid", "tanh"):  # saturates to the bounds exactly, never beyond
            assert A.min() >= -1 and A.max() <= 1
        dA = np.ones_like(z)
        for cached in (A, None):  # g' from the cached activation and from Z
            dZ, db = np.empty_like(z), np.empty((1, 1), dtype)
            k.activation_backward(dA, Z, cached, activation, dZ, db, 1.0 / m)
            assert np.isfinite(dZ).all() and np.isfinite(db).all()
            assert (dZ >= 0).all()  # every g' here is >= 0; a NaN or sign error would show


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_cross_entropy_finite_at_extreme_logits(backend, dtype):
    k = get_backend(backend)
    z = np.tile(Z_EXTREME, 2).astype(dtype).reshape(1, -1)
    m = z.shape[1]
    Y = np.repeat([0.0, 1.0], len(Z_EXTREME)).astype(dtype).reshape(1, -1)  # both labels at every z
    A = expit(z.astype(np.float64)).astype(dtype)
    dZ, db = np.empty_like(z), np.empty((1, 1), dtype)
    with np.errstate(**STRICT):
        cost = k.sigmoid_cross_entropy(z, A, Y, dZ, db, 1.0 / m)
    z64, y64 = z.astype(np.float64), Y.astype(np.float64)
    expected = np.mean(np.logaddexp(0, z64) - y64 * z64)  # exact: softplus(z) - y z
    assert math.isfinite(cost)
    assert cost == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(dZ, A - Y, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("K", [2, 5])
def test_softmax_and_its_cost_finite_at_extreme_logits(K, backend, dtype):
    k = get_backend(backend)
    rng = np.random.default_rng(K)
    m = 40
    Z = (rng.choice(Z_EXTREME, size=(K, m)) * rng.choice([1, -1], size=(K, m))).astype(dtype)
    Z[:, 0] = 1e4  # a tie at the top
    Z[:, 1] = -1e4  # every logit hugely negative
    A = np.empty_like(Z)
    with np.errstate(**STRICT):
        k.softmax_forward(Z, A)
        assert np.isfinite(A).all() and (A >= 0).all()
        np.testing.assert_allclose(A.sum(axis=0), 1, rtol=1e-5 if dtype == np.float32 else 1e-12)
        Y = np.zeros_like(Z)
        Y[rng.integers(0, K, m), np.arange(m)] = 1  # often the class with a logit 2e4 below the top
        cost = k.softmax_cross_entropy(Z, A, Y, np.empty_like(Z), np.empty((K, 1), dtype), 1.0 / m)
    z64 = Z.astype(np.float64)
    zmax = z64.max(axis=0)
    lse = zmax + np.log(np.exp(z64 - zmax).sum(axis=0))
    expected = np.mean(lse - (Y * z64).sum(axis=0))
    assert math.isfinite(cost) and cost == pytest.approx(expected, rel=1e-5)
    ref = np.exp(z64 - lse)
    np.testing.assert_allclose(A, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_network_cost_and_step_finite_with_logits_of_1e4(output, backend, dtype):
    nL = 1 if output == "sigmoid" else 3
    net = Network([2, 3, nL], backend=backend, dtype=dtype, seed=0, output=output,
                  hidden_activation="tanh")
    X = np.array([[1.0, -1.0, 0.5, -0.5], [0.0, 0.0, 0.0, 0.0]], dtype)
    net.W[0][...] = [[1, 0], [-1, 0], [0.5, 0]]
    net.W[1][...] = 1e4 / 2  # saturated tanh units and |logits| around 1e4
    if output == "sigmoid":
        Y = np.array([[0, 1, 0, 1]])  # wrong with confidence 1 - 1e-4000 half the time
    else:
        net.W[1][1] *= -1
        Y = np.eye(3)[[1, 0, 2, 1]].T
    with np.errstate(**STRICT):
        cost = net.cost(X, Y)
        logits = net.decision_function(X)
        assert np.abs(logits).max() > 1e3
        proba = net.predict_proba(X)
        assert math.isfinite(cost) and cost > 1e3  # as large as it should be, not inf
        assert np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()
        step_cost = net.step(X, Y, 1e-9)
    assert step_cost == pytest.approx(cost, rel=1e-5)
    assert all(np.isfinite(p).all() for p in net.W + net.b)


def test_course_cost_from_probabilities_at_saturation():
    # compute_cost takes probabilities, as the course does. A probability that
    # rounded to exactly 0 or 1 on the wrong side is an infinite cost (a
    # confident miss), never NaN; on the right side it costs exactly 0, where
    # the textbook's 0 * log(0) gives NaN. The training cost, from the logits,
    # is finite in both cases (tests above).
    AL = expit(np.array([[1e4, -1e4, 3.0]]))  # [1.0, 0.0, 0.95...]
    for b in BACKENDS:
        with np.errstate(**STRICT):
            assert course.compute_cost(AL, np.array([[0, 0, 1]]), backend=b) == math.inf
            right = course.compute_cost(AL, np.array([[1, 0, 1]]), backend=b)
        assert right == pytest.approx(-np.log(AL[0, 2]) / 3, rel=1e-12)
    finite = np.array([[0.9, 0.2, 0.6]])
    Y = np.array([[0, 0, 1]])
    for b in BACKENDS:
        assert course.compute_cost(finite, Y, backend=b) == pytest.approx(
            -np.sum(Y * np.log(finite) + (1 - Y) * np.log(1 - finite)) / 3, rel=1e-12)


# ------------------------------------------------------------------ divergence
def _blowup_data(dtype):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((4, 64)) * 1e3).astype(dtype)
    Y = (X[0] > 0).astype(dtype).reshape(1, -1)
    return X, Y


@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_diverging_fit_stops_with_advice_and_finite_weights(optimizer, backend, dtype):
    X, Y = _blowup_data(dtype)
    lr = 3e38 if dtype == np.float32 else 1e307  # the update itself overflows
    net = Network([4, 16, 8, 1], backend=backend, dtype=dtype, seed=0)
    initial = [p.copy() for p in net.W + net.b]
    with pytest.raises(TrainingDivergedError, match="smaller learning_rate") as info, \
            np.errstate(all="ignore"):
        net.fit(X, Y, epochs=5, learning_rate=lr, optimizer=optimizer, batch_size=16)
    assert isinstance(info.value, FloatingPointError)
    assert "restored" in str(info.value)
    # Diverged within the first epoch: the last finite weights are the initial ones.
    for a, b in zip(initial, net.W + net.b):
        np.testing.assert_array_equal(b, a)
    # The model is usable afterwards: it predicts and trains on with a sane rate.
    assert np.isfinite(net.predict_proba(X)).all()
    net.fit(X / 1e3, Y, epochs=2, learning_rate=0.01, optimizer=optimizer)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_divergence_restores_the_last_epoch_with_finite_weights(backend, optimizer, monkeypatch):
    """An update that overflows in epoch 3 (step 10): the weights after epoch 2 come back."""
    X, Y = _blowup_data(np.float64)
    X /= 1e3
    net = Network([4, 6, 1], backend=backend, seed=0)
    after_epoch = {}
    calls = {"n": 0}
    real_step = net.validated_step

    def step(*args):
        cost = real_step(*args)
        calls["n"] += 1
        if calls["n"] == 10:  # the 2nd step of the 3rd epoch (4 steps per epoch)
            net.W[0][0, 0] = np.inf  # as if that update had overflowed
        return cost

    monkeypatch.setattr(net, "validated_step", step)

    def record(epoch, history):
        after_epoch[epoch + 1] = [p.copy() for p in net.W + net.b]

    with pytest.raises(TrainingDivergedError, match="after epoch 2 of this run .*restored"), \
            np.errstate(all="ignore"):
        net.fit(X, Y, epochs=10, batch_size=16, learning_rate=0.1, optimizer=optimizer, callback=record,
                shuffle=False, engine="step")  # the per-step loop: the spy sees each step
    assert sorted(after_epoch) == [1, 2]
    for a, b in zip(after_epoch[2], net.W + net.b):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_with_a_non_finite_cost_updates_nothing(backend):
    net = Network([4, 6, 1], backend=backend, seed=0)
    X, Y = _blowup_data(np.float64)
    X /= 1e3
    net.b[1][0, 0] = np.inf
    before = [p.copy() for p in net.W + net.b]
    for optimizer in (None, dnnblocks.optimizers.Adam()):
        with pytest.raises(TrainingDivergedError, match="smaller learning_rate"), np.errstate(all="ignore"):
            net.step(X, Y, 0.1, optimizer=optimizer)
        for a, b in zip(before, net.W + net.b):
            np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier_divergence_keeps_a_usable_model(backend):
    from dnnblocks import DNNClassifier

    X, Y = _blowup_data(np.float64)
    clf = DNNClassifier(hidden_layer_sizes=(8,), learning_rate_init=1e307, solver="sgd", max_iter=20,
                        random_state=0, backend=backend, batch_size=16)
    with pytest.raises(TrainingDivergedError, match="smaller learning_rate"), np.errstate(all="ignore"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X.T, Y[0])
    assert all(np.isfinite(c).all() for c in clf.coefs_ + clf.intercepts_)
    assert set(clf.predict(X.T)) <= {0.0, 1.0}
