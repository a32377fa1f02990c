"""The training loop: mini-batches, dropout, L2, schedules, early stopping, progress."""

import io

import numpy as np
import pytest

import dnnblocks
from dnnblocks import Network, get_backend, propagation
from dnnblocks.training import (
    History,
    InMemoryData,
    Progress,
    learning_rate_at,
    split_validation,
    train,
    train_on_source,
)


def _problem(m=150, n=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(dtype)
    Y = ((X[0] * X[1] + 0.3 * X[2]) > 0).astype(dtype).reshape(1, m)
    return X, Y


def _params(net):
    return [a.copy() for a in net.W + net.b]


def _assert_same(a, b, exact=True, **tol):
    for x, y in zip(a, b):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, **tol)


# ----------------------------------------------------------- mini-batches
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_batch_size_m_equals_full_batch(backend, dtype, optimizer):
    X, Y = _problem(dtype=dtype)
    m = X.shape[1]
    results = []
    for batch_size in (None, m, 10 * m):
        net = Network([4, 6, 3, 1], seed=1, dtype=dtype, backend=backend)
        h = net.fit(X, Y, epochs=20, batch_size=batch_size, learning_rate=0.05, optimizer=optimizer,
                    l2=0.1, random_state=3)
        results.append((h.cost, _params(net)))
    for cost, params in results[1:]:
        assert cost == results[0][0]
        _assert_same(params, results[0][1])


def test_full_batch_fit_equals_course_steps():
    """fit() with plain gradient descent and no extras is the course's loop of steps."""
    X, Y = _problem()
    a, b = Network([4, 5, 1], seed=0), Network([4, 5, 1], seed=0)
    h = a.fit(X, Y, epochs=30, learning_rate=0.1)
    costs = [b.step(X, Y, 0.1) for _ in range(30)]
    assert h.cost == costs
    _assert_same(_params(a), _params(b))


def test_minibatches_cover_every_example_once_per_epoch():
    """With a linear model and lr -> tiny, one epoch's summed update is the full gradient."""
    X, Y = _problem(m=103)
    seen = []
    net = Network([4, 1], seed=0)
    original = net.validated_step

    def spy(xb, yb, *args):
        seen.append((xb.copy(), yb.copy()))
        return original(xb, yb, *args)

    net.validated_step = spy
    net.fit(X, Y, epochs=2, batch_size=25, learning_rate=0.01, random_state=0, engine="step")
    assert [s[0].shape[1] for s in seen] == [25, 25, 25, 25, 3] * 2
    for epoch in (seen[:5], seen[5:]):
        cols = np.concatenate([s[0] for s in epoch], axis=1)
        labels = np.concatenate([s[1] for s in epoch], axis=1)
        order = np.lexsort(cols[::-1])
        ref = np.lexsort(X[::-1])
        np.testing.assert_array_equal(cols[:, order], X[:, ref])
        np.testing.assert_array_equal(labels[:, order], Y[:, ref])
    # Reshuffled between epochs.
    assert not np.array_equal(seen[0][0], seen[5][0])


def test_short_last_batch_reuses_two_workspaces():
    X, Y = _problem(m=103)
    net = Network([4, 5, 1], seed=0)
    ids = []

    def record(epoch, history):
        ids.append({m: id(ws) for m, ws in net._workspaces.items()})

    net.fit(X, Y, epochs=4, batch_size=25, learning_rate=0.1, callback=record, random_state=0,
            engine="step")
    assert set(ids[0]) == {25, 3}
    assert all(d == ids[0] for d in ids)


def test_row_major_and_column_major_inputs_train_alike(backend):
    """X given as data.T (F-ordered, read in place) or as a C-ordered copy: same training."""
    X, Y = _problem(m=90)
    rows = np.ascontiguousarray(X.T)  # (m, n) row-major data
    results = []
    for Xin in (rows.T, np.ascontiguousarray(X)):
        net = Network([4, 6, 1], seed=2, backend=backend)
        h = net.fit(Xin, Y, epochs=5, batch_size=16, learning_rate=0.1, optimizer="adam",
                    random_state=4)
        results.append((h.cost, _params(net)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    _assert_same(results[0][1], results[1][1], exact=False, rtol=1e-10, atol=1e-12)


def test_seeded_runs_are_reproducible():
    X, Y = _problem()
    runs = []
    for _ in range(2):
        net = Network([4, 8, 1], seed=5)
        h = net.fit(X, Y, epochs=5, batch_size=32, learning_rate=0.01, optimizer="adam",
                    dropout=0.3, random_state=11)
        runs.append((h.cost, _params(net)))
    assert runs[0][0] == runs[1][0]
    _assert_same(runs[0][1], runs[1][1])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_backends_agree_on_seeded_runs(dtype, optimizer, output):
    X, Y = _problem(m=120, dtype=dtype)
    dims = [4, 7, 5, 1]
    if output == "softmax":
        Y = np.vstack([1 - Y, Y])
        dims[-1] = 2
    runs = {}
    for backend in ("compiled", "numpy"):
        net = Network(dims, seed=7, dtype=dtype, backend=backend, output=output)
        h = net.fit(X, Y, epochs=8, batch_size=32, learning_rate=0.02, optimizer=optimizer,
                    l2=0.2, dropout=0.25, random_state=1)
        runs[backend] = (h.cost, _params(net))
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(runs["compiled"][0], runs["numpy"][0], **tol)
    _assert_same(runs["compiled"][1], runs["numpy"][1], exact=False, **tol)


# ------------------------------------------------------------------ dropout
def test_dropout_zero_equals_no_dropout(backend):
    X, Y = _problem()
    a, b, c = (Network([4, 6, 1], seed=3, backend=backend) for _ in range(3))
    for _ in range(5):
        ca = a.step(X, Y, 0.1)
        cb = b.step(X, Y, 0.1, dropout=0.0)
        assert ca == cb
    _assert_same(_params(a), _params(b))
    ha = Network([4, 6, 1], seed=3, backend=backend).fit(X, Y, epochs=5, learning_rate=0.1)
    hc = c.fit(X, Y, epochs=5, learning_rate=0.1, dropout=0.0)
    assert ha.cost == hc.cost


def test_dropout_kernel(backend, dtype):
    rng = np.random.default_rng(0)
    A = rng.random((40, 500)).astype(dtype) + 0.5
    U = rng.random((40, 500)).astype(dtype)
    A0, U0 = A.copy(), U.copy()
    get_backend(backend).dropout_forward(A, U, 0.8)
    kept = U0 < dtype(0.8)
    np.testing.assert_array_equal(U, np.where(kept, dtype(1 / 0.8), 0))
    np.testing.assert_allclose(A, np.where(kept, A0 / 0.8, 0), rtol=1e-6)
    assert abs(kept.mean() - 0.8) < 0.01
    dA = rng.standard_normal((40, 500)).astype(dtype)
    dA0 = dA.copy()
    get_backend(backend).dropout_backward(dA, U)
    np.testing.assert_array_equal(dA, dA0 * U)
    with pytest.raises(ValueError, match="keep_prob"):
        get_backend(backend).dropout_forward(A, U, 0.0)


class _FixedDraws:
    """Stands in for a Generator: the same uniform draws at every call."""

    def __init__(self, seed):
        self.seed = seed

    def random(self, out, dtype):
        out[...] = np.random.default_rng(self.seed + out.shape[0]).random(out.shape)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_dropout_gradient_checked_by_finite_differences(backend, activation):
    """With the masks held fixed, dropout's backward pass is the exact gradient."""
    X, Y = _problem(m=20)
    net = Network([4, 6, 5, 1], hidden_activation=activation, seed=1, backend=backend)
    draws = _FixedDraws(0)
    keep = 0.6

    ws = propagation.Workspace(net.layer_dims, X.shape[1], net.dtype)
    dW, db = propagation.gradient_buffers(net.W, net.b)

    def cost():
        propagation.forward(net.kernels, net.W, net.b, net.activations, X, ws, keep, draws)
        return propagation.output_gradient(net.kernels, net.output, Y, ws, db[-1]), ws

    _, ws = cost()
    assert any(np.any(mk == 0) for mk in ws.M)  # some units really are dropped
    propagation.backward(net.kernels, net.W, net.b, net.activations, X, ws, dW, db, dropout=True)
    grads = [g.copy() for g in dW + db]
    eps = 1e-6
    for p, g in zip(net.W + net.b, grads):
        for idx in list(np.ndindex(p.shape))[:12]:
            old = p[idx]
            p[idx] = old + eps
            plus, _ = cost()
            p[idx] = old - eps
            minus, _ = cost()
            p[idx] = old
            assert (plus - minus) / (2 * eps) == pytest.approx(g[idx], rel=1e-5, abs=1e-8)


def test_dropout_is_training_only_and_regularises():
    X, Y = _problem()
    net = Network([4, 20, 1], seed=0)
    net.fit(X, Y, epochs=3, learning_rate=0.1, dropout=0.5, random_state=0)
    # Prediction is deterministic: no dropout outside training.
    np.testing.assert_array_equal(net.predict_proba(X), net.predict_proba(X))
    a = Network([4, 20, 1], seed=0).fit(X, Y, epochs=3, learning_rate=0.1, random_state=0)
    b = Network([4, 20, 1], seed=0).fit(X, Y, epochs=3, learning_rate=0.1, dropout=0.5,
                                        random_state=0)
    assert a.cost != b.cost


def test_dropout_argument_checked():
    X, Y = _problem()
    net = Network([4, 3, 1])
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dropout"):
            net.step(X, Y, 0.1, dropout=bad)
    with pytest.raises(TypeError, match="rng"):
        net.step(X, Y, 0.1, dropout=0.5, rng=np.random.RandomState(0))


# ----------------------------------------------------------------------- L2
def test_l2_adds_the_penalty_to_the_cost(backend):
    X, Y = _problem()
    net = Network([4, 6, 1], seed=2, backend=backend)
    plain = net.cost(X, Y)
    lam = 0.7
    penalty = lam / (2 * X.shape[1]) * sum(np.sum(w**2) for w in net.W)
    assert net.cost(X, Y, l2=lam) == pytest.approx(plain + penalty, rel=1e-13)
    a, b = Network([4, 6, 1], seed=2, backend=backend), Network([4, 6, 1], seed=2, backend=backend)
    assert a.step(X, Y, 0.1, l2=lam) == pytest.approx(plain + penalty, rel=1e-13)
    b.forward(X)
    assert b.backward(Y, l2=lam) == pytest.approx(plain + penalty, rel=1e-13)


def test_l2_step_is_gradient_descent_on_the_regularised_cost(backend):
    X, Y = _problem()
    lam, lr = 0.9, 0.2
    a, b = Network([4, 6, 1], seed=4, backend=backend), Network([4, 6, 1], seed=4, backend=backend)
    a.step(X, Y, lr, l2=lam)
    b.forward(X)
    b.backward(Y, l2=lam)
    b.update(lr)
    _assert_same(_params(a), _params(b), exact=False, rtol=1e-12, atol=1e-14)


def test_l2_shrinks_weights():
    X, Y = _problem()
    norms = []
    for lam in (0.0, 5.0):
        net = Network([4, 10, 1], seed=0)
        net.fit(X, Y, epochs=200, learning_rate=0.1, l2=lam)
        norms.append(sum(np.sum(w**2) for w in net.W))
    assert norms[1] < 0.7 * norms[0]


# --------------------------------------------------------------- schedules
def test_learning_rate_schedules():
    assert learning_rate_at(0.1, 0) == 0.1
    assert learning_rate_at(0.1, 50, "constant") == 0.1
    assert learning_rate_at(0.1, 0, "inverse_time", 0.5) == 0.1
    assert learning_rate_at(0.1, 4, "inverse_time", 0.5) == pytest.approx(0.1 / 3)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_at(0.1, 1, "exponential")
    X, Y = _problem()
    h = Network([4, 3, 1], seed=0).fit(X, Y, epochs=4, learning_rate=0.2, schedule="inverse_time",
                                       decay_rate=1.0)
    assert h.learning_rate == pytest.approx([0.2, 0.1, 0.2 / 3, 0.05])
    h = Network([4, 3, 1], seed=0).fit(X, Y, epochs=2, learning_rate=0.2, schedule="inverse_time",
                                       start_epoch=3)
    assert h.learning_rate == pytest.approx([0.05, 0.04])


# ---------------------------------------------------------- early stopping
def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 120))
    Y = (rng.random((1, 120)) < 0.5).astype(float)  # pure noise: validation peaks early
    net = Network([6, 64, 1], seed=0)
    snapshots = []
    h = net.fit(X, Y, epochs=300, batch_size=16, learning_rate=0.01, optimizer="adam",
                validation_fraction=0.25, early_stopping=True, n_iter_no_change=5, tol=0.0,
                random_state=0, callback=lambda e, hist: snapshots.append(_params(net)))
    assert h.stop_reason == "early_stopping"
    assert h.n_epochs < 300 and len(h.validation_score) == h.n_epochs == len(snapshots)
    best = int(np.argmax(h.validation_score))
    assert h.best_epoch == best
    _assert_same(_params(net), snapshots[best])
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[-1], snapshots[best]))


def test_tol_stops_when_the_cost_settles():
    X, Y = _problem()
    h = Network([4, 5, 1], seed=0).fit(X, Y, epochs=5000, learning_rate=0.5, tol=1e-3,
                                       n_iter_no_change=3)
    assert h.stop_reason == "converged" and h.n_epochs < 5000
    n = h.n_epochs
    # Each of the last n_iter_no_change + 1 epochs failed to beat the best so far by tol.
    assert all(h.cost[i] > min(h.cost[:i]) - 1e-3 for i in range(n - 4, n))
    assert h.cost[n - 5] <= min(h.cost[:n - 5]) - 1e-3 or n - 5 == 0


def test_validation_data_and_history():
    X, Y = _problem()
    Xv, Yv = _problem(m=40, seed=1)
    h = Network([4, 5, 1], seed=0).fit(X, Y, epochs=6, learning_rate=0.5, validation_data=(Xv, Yv))
    assert isinstance(h, History) and h.n_epochs == 6 and h.n_examples == 150
    assert len(h.cost) == len(h.validation_cost) == len(h.validation_score) == 6
    assert all(0 <= s <= 1 for s in h.validation_score)
    assert "n_epochs=6" in repr(h)


def test_split_validation_is_stratified():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [80, 15, 5])
    train_idx, val_idx = split_validation(labels, 100, 0.2, rng)
    assert len(set(train_idx) | set(val_idx)) == 100 and not set(train_idx) & set(val_idx)
    assert np.bincount(labels[val_idx]).tolist() == [16, 3, 1]
    # A class with a single example stays in training.
    labels = np.array([0, 0, 0, 0, 1])
    train_idx, val_idx = split_validation(labels, 5, 0.5, rng)
    assert 4 in train_idx and len(val_idx) >= 1


def test_training_options_are_checked():
    X, Y = _problem()
    net = Network([4, 3, 1])
    before = _params(net)
    for bad, match in (({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"),
                       ({"learning_rate": 0}, "learning_rate"), ({"l2": -1}, "l2"),
                       ({"dropout": 1.0}, "dropout"), ({"schedule": "cosine"}, "schedule"),
                       ({"validation_fraction": 1.0}, "validation_fraction"),
                       ({"early_stopping": True}, "early_stopping needs"),
                       ({"optimizer": "lbfgs"}, "optimizer")):
        with pytest.raises(ValueError, match=match):
            train(net, X, Y, **bad)
    _assert_same(_params(net), before)


def test_callback_can_stop_and_interrupt_keeps_last_step():
    X, Y = _problem()
    net = Network([4, 5, 1], seed=0)
    h = net.fit(X, Y, epochs=50, learning_rate=0.1, callback=lambda e, hist: e == 2)
    assert h.n_epochs == 3 and h.stop_reason == "callback"
    net = Network([4, 5, 1], seed=0)
    seen = []

    def interrupt(epoch, hist):
        seen.append(_params(net))
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=50, learning_rate=0.01, optimizer="adam", validation_fraction=0.2,
                early_stopping=True, callback=interrupt)
    _assert_same(_params(net), seen[-1])


# ----------------------------------------------------------------- verbose
def test_verbose_plain_lines_when_not_a_terminal():
    X, Y = _problem()
    out = io.StringIO()
    Network([4, 3, 1], seed=0).fit(X, Y, epochs=5, learning_rate=0.1, verbose=2, stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch 1/5: cost ")
    assert "\r" not in out.getvalue()
    out = io.StringIO()
    Network([4, 3, 1], seed=0).fit(X, Y, epochs=500, learning_rate=0.1, verbose=1, stream=out)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 52 and lines[-1].startswith("epoch 500/500: cost ")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_progress_bar_on_a_terminal():
    X, Y = _problem()
    out = _Terminal()
    Network([4, 3, 1], seed=0).fit(X, Y, epochs=20, learning_rate=0.1, verbose=1, stream=out,
                                   validation_fraction=0.2)
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "epoch 20/20" in last and "cost" in last and "val_acc" in last
    assert "#" * Progress.WIDTH in last


def test_network_pickles_without_buffers():
    import pickle

    X, Y = _problem()
    net = Network([4, 5, 1], seed=0, backend="numpy")
    net.fit(X, Y, epochs=3, learning_rate=0.1)
    back = pickle.loads(pickle.dumps(net))
    assert back.backend == "numpy"
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    assert back.step(X, Y, 0.1) == net.step(X, Y, 0.1)


def test_train_is_exported():
    assert dnnblocks.train is train


# ------------------------------------------------------------ data sources
class _WithEmptyBatch:
    """A data source (the protocol of training.InMemoryData) that adds an empty batch to each epoch.

    A distributed batch can hold no rows; its cost is NaN and must not reach
    the epoch's cost or the sample count.
    """

    def __init__(self, inner):
        self.inner = inner
        self.n_examples = inner.n_examples
        self.n_batches = inner.n_batches + 1
        self.has_validation = inner.has_validation
        self.steps = []

    def thread_limit(self, blas_threads):
        return self.inner.thread_limit(blas_threads)

    def batches(self, epoch):
        yield None
        yield from self.inner.batches(epoch)  # lazily: a batch lives until the next is drawn

    def step(self, batch, learning_rate):
        self.steps.append(batch is None)
        return (float("nan"), 0) if batch is None else self.inner.step(batch, learning_rate)

    def evaluate(self):
        return self.inner.evaluate()


def test_train_on_source_runs_any_data_source_like_train():
    X, Y = _problem(m=90)
    net_a = Network([4, 5, 1], seed=3)
    ref = train(net_a, X, Y, epochs=4, batch_size=32, learning_rate=0.3, optimizer="adam",
                random_state=7)
    net_b = Network([4, 5, 1], seed=3)
    rng = np.random.default_rng(7)
    inner = InMemoryData(net_b, X, Y, batch_size=32, optimizer=dnnblocks.optimizers.Adam(), rng=rng)
    source = _WithEmptyBatch(inner)
    calls = []
    history = train_on_source(net_b, source, epochs=4, learning_rate=0.3, step_callback=calls.append)
    _assert_same(_params(net_a), _params(net_b))
    assert history.cost == ref.cost and np.all(np.isfinite(history.cost))
    assert history.samples_seen == ref.samples_seen == 4 * 90
    assert history.steps_completed == 4 * (3 + 1) == len(calls) and calls[-1] == 16
    assert source.steps.count(True) == 4
