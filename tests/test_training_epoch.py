"""train() on the epoch runner (engine="epoch", the default) against the per-step loop (engine="step").

Each comparison trains two identical networks with the same seed, one per
engine, and asserts the weights, biases and cost curve are equal to the last
bit (the cost with an L2 term to rounding: the runner sums the squared
weights in C, the step with ``numpy.dot``).
"""

import numpy as np
import pytest

from dnnblocks import Network
from dnnblocks import training as training_module
from dnnblocks.epoch import EpochRunner
from dnnblocks.exceptions import TrainingDivergedError
from dnnblocks.optimizers import get_optimizer
from dnnblocks.training import train


def _problem(m=157, n=6, k=1, seed=0, dtype=np.float64, layout="C"):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((m, n)).astype(dtype)
    X = np.asfortranarray(data.T) if layout == "F" else np.ascontiguousarray(data.T)
    score = data[:, 0] * data[:, 1] + 0.4 * data[:, 2]
    if k == 1:
        Y = (score > 0).astype(dtype).reshape(1, m)
    else:
        labels = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))
        Y = np.zeros((k, m), dtype)
        Y[labels, np.arange(m)] = 1
    return X, Y


def _twins(dims, dtype=np.float64, output="sigmoid", activation="relu", seed=1, backend="compiled"):
    return [Network(dims, hidden_activation=activation, dtype=dtype, seed=seed, output=output,
                    backend=backend) for _ in range(2)]


def _both(dims, X, Y, *, dtype=np.float64, output="sigmoid", activation="relu", backend="compiled",
          **options):
    """Histories and networks of the same fit by the runner and by the steps."""
    by_epoch, by_step = _twins(dims, dtype, output, activation, backend=backend)
    h_epoch = train(by_epoch, X, Y, engine="epoch", **options)
    h_step = train(by_step, X, Y, engine="step", **options)
    return (h_epoch, by_epoch), (h_step, by_step)


def _assert_same(a, b, *, cost_exact=True):
    (h1, n1), (h2, n2) = a, b
    for w1, w2 in zip(n1.W + n1.b, n2.W + n2.b):
        np.testing.assert_array_equal(w1, w2)
    if cost_exact:
        np.testing.assert_array_equal(h1.cost, h2.cost)
    else:
        np.testing.assert_allclose(h1.cost, h2.cost, rtol=1e-6 if n1.dtype == np.float32 else 1e-12)
    assert h1.n_epochs == h2.n_epochs
    assert h1.steps_completed == h2.steps_completed
    assert h1.samples_seen == h2.samples_seen
    np.testing.assert_array_equal(h1.validation_cost, h2.validation_cost)
    np.testing.assert_array_equal(h1.validation_score, h2.validation_score)
    assert h1.best_epoch == h2.best_epoch
    assert h1.stop_reason == h2.stop_reason


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("batch_size", [32, None])
def test_runner_equals_steps(optimizer, batch_size, dtype):
    X, Y = _problem(dtype=dtype)
    a, b = _both([6, 9, 5, 1], X, Y, dtype=dtype, epochs=7, batch_size=batch_size,
                 learning_rate=0.05, optimizer=optimizer, random_state=4)
    _assert_same(a, b)
    assert a[0].cost[-1] < a[0].cost[0]  # it trained


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_runner_equals_steps_with_l2_and_dropout(optimizer):
    X, Y = _problem(layout="F")
    a, b = _both([6, 12, 7, 1], X, Y, epochs=6, batch_size=40, learning_rate=0.05, optimizer=optimizer,
                 l2=0.3, dropout=0.25, random_state=11)
    _assert_same(a, b, cost_exact=False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_runner_equals_steps_softmax(optimizer, dtype):
    X, Y = _problem(k=4, dtype=dtype)
    a, b = _both([6, 10, 4], X, Y, dtype=dtype, output="softmax", activation="tanh", epochs=5,
                 batch_size=25, learning_rate=0.1, optimizer=optimizer, dropout=0.1, random_state=2)
    _assert_same(a, b)


def test_runner_equals_steps_with_validation_and_early_stopping():
    X, Y = _problem(m=300)
    a, b = _both([6, 8, 1], X, Y, epochs=60, batch_size=50, learning_rate=0.3, optimizer="momentum",
                 validation_fraction=0.2, early_stopping=True, n_iter_no_change=3, random_state=5)
    _assert_same(a, b)
    assert a[0].stop_reason == "early_stopping"
    assert len(a[0].validation_score) == a[0].n_epochs


def test_runner_equals_steps_in_order_and_schedule():
    X, Y = _problem()
    a, b = _both([6, 5, 1], X, Y, epochs=5, batch_size=30, learning_rate=0.2, shuffle=False,
                 schedule="inverse_time", decay_rate=0.5, tol=1e-9, n_iter_no_change=2)
    _assert_same(a, b)


def test_numpy_backend_runner_equals_steps():
    X, Y = _problem()
    a, b = _both([6, 7, 1], X, Y, backend="numpy", epochs=4, batch_size=40, learning_rate=0.1,
                 optimizer="adam", random_state=3)
    _assert_same(a, b)


def test_the_runner_runs_the_epochs(monkeypatch):
    calls = []
    original = EpochRunner.run_epoch

    def counting(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EpochRunner, "run_epoch", counting)
    X, Y = _problem()
    net = Network([6, 5, 1], seed=0)
    history = train(net, X, Y, epochs=4, batch_size=20, learning_rate=0.1, optimizer="adam")
    assert len(calls) == 4
    assert len(set(map(id, calls))) == 1  # one runner for the whole call
    assert history.steps_completed == 4 * 8
    calls.clear()
    train(net, X, Y, epochs=2, batch_size=20, learning_rate=0.1, engine="step")
    assert calls == []


def test_runner_is_rebuilt_when_the_parameters_are_replaced(monkeypatch):
    built = []
    original = EpochRunner.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(EpochRunner, "__init__", counting)
    X, Y = _problem()

    def replace(epoch, history, net):
        if epoch == 1:
            net.W[0] = net.W[0].copy()
        return False

    nets = _twins([6, 5, 1])
    train(nets[0], X, Y, epochs=4, batch_size=40, learning_rate=0.1, random_state=0,
          callback=lambda e, h: replace(e, h, nets[0]))
    assert len(built) == 2
    train(nets[1], X, Y, epochs=4, batch_size=40, learning_rate=0.1, random_state=0, engine="step")
    for w1, w2 in zip(nets[0].W + nets[0].b, nets[1].W + nets[1].b):
        np.testing.assert_array_equal(w1, w2)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_optimizer_step_count_and_state_carry_over(optimizer):
    X, Y = _problem()
    nets = _twins([6, 5, 1])
    opts = [get_optimizer(optimizer) for _ in nets]
    for net, opt, engine in zip(nets, opts, ("epoch", "step")):
        train(net, X, Y, epochs=3, batch_size=50, learning_rate=0.05, optimizer=opt, engine=engine,
              random_state=0)
        train(net, X, Y, epochs=2, batch_size=50, learning_rate=0.05, optimizer=opt, engine=engine,
              random_state=1)
    assert opts[0].t == opts[1].t == 5 * 4
    s0, s1 = opts[0].state_dict()[1], opts[1].state_dict()[1]
    assert s0.keys() == s1.keys() and s0
    for key in s0:
        np.testing.assert_array_equal(s0[key], s1[key])
    for w1, w2 in zip(nets[0].W + nets[0].b, nets[1].W + nets[1].b):
        np.testing.assert_array_equal(w1, w2)


def test_divergence_is_recorded_as_by_the_steps():
    X, Y = _problem()
    X = X * 1e5
    records = []
    for engine in ("epoch", "step"):
        net = Network([6, 30, 30, 30, 1], seed=0)
        with pytest.raises(TrainingDivergedError) as info:
            train(net, X, Y, epochs=50, batch_size=16, learning_rate=1e10, optimizer="sgd", engine=engine,
                  random_state=0)
        h = info.value.dnnblocks_history
        records.append((h.n_epochs, h.steps_completed, h.samples_seen, list(h.cost), net.W, net.b,
                        str(info.value)))
    (e1, s1, n1, c1, W1, b1, m1), (e2, s2, n2, c2, W2, b2, m2) = records
    assert (e1, s1, n1) == (e2, s2, n2)
    assert s1 > 0  # some steps completed before the divergence
    np.testing.assert_array_equal(c1, c2)
    assert m1 == m2
    for w1, w2 in zip(W1 + b1, W2 + b2):
        np.testing.assert_array_equal(w1, w2)
        assert np.all(np.isfinite(w1))


def test_an_activation_the_runner_lacks_runs_step_by_step(monkeypatch):
    X, Y = _problem()
    net = Network([6, 5, 1], seed=0)
    monkeypatch.setattr(training_module, "HIDDEN", ("tanh",))  # as if relu were not compiled
    calls = []
    monkeypatch.setattr(EpochRunner, "run_epoch", lambda *a, **k: calls.append(1))
    history = train(net, X, Y, epochs=3, batch_size=50, learning_rate=0.1)
    assert calls == [] and history.steps_completed == 12 and history.n_epochs == 3


def test_engine_is_checked():
    X, Y = _problem()
    with pytest.raises(ValueError, match="engine must be one of"):
        train(Network([6, 1], seed=0), X, Y, epochs=1, engine="fast")


def test_classifier_fits_equal_by_either_engine(monkeypatch):
    from dnnblocks import DNNClassifier

    rng = np.random.default_rng(0)
    data = rng.standard_normal((400, 5))
    y = (data[:, 0] + data[:, 1] * data[:, 2] > 0).astype(int)
    params = dict(hidden_layer_sizes=(8,), batch_size=64, max_iter=6, random_state=0, solver="adam")
    by_epoch = DNNClassifier(**params).fit(data, y)
    by_epoch.partial_fit(data, y)
    original = training_module.train

    def stepwise(*args, **kwargs):
        kwargs["engine"] = "step"
        return original(*args, **kwargs)

    monkeypatch.setattr("dnnblocks._estimator_base.train", stepwise)
    by_step = DNNClassifier(**params).fit(data, y)
    by_step.partial_fit(data, y)
    np.testing.assert_array_equal(by_epoch.loss_curve_, by_step.loss_curve_)
    np.testing.assert_array_equal(by_epoch.predict_proba(data), by_step.predict_proba(data))


def test_ctrl_c_during_a_compiled_epoch_is_held_until_it_completes(monkeypatch):
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("needs the main thread with Python's default SIGINT handler")
    original = EpochRunner.run_epoch
    calls = []

    def interrupted(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # as if it arrived during the compiled call
        return result

    monkeypatch.setattr(EpochRunner, "run_epoch", interrupted)
    X, Y = _problem()
    net = Network([6, 5, 1], seed=0)
    with pytest.raises(KeyboardInterrupt) as info:
        train(net, X, Y, epochs=10, batch_size=40, learning_rate=0.1, optimizer="adam", random_state=0)
    history = info.value.dnnblocks_history
    assert (history.n_epochs, history.steps_completed, history.samples_seen) == (3, 12, 3 * 157)
    monkeypatch.undo()
    reference = Network([6, 5, 1], seed=0)
    expected = train(reference, X, Y, epochs=3, batch_size=40, learning_rate=0.1, optimizer="adam",
                     random_state=0, engine="step")
    np.testing.assert_array_equal(history.cost, expected.cost)
    for a, b in zip(net.W + net.b, reference.W + reference.b):
        np.testing.assert_array_equal(a, b)
