"""A fit that fails leaves a consistent model.

* An error before training starts (bad hyper-parameter, one class, early
  stopping without a validation example, a MemoryError building the network,
  bad data) leaves the estimator exactly as it was: every fitted attribute,
  the weights, the optimizer and random state (a later fit continues as if
  the failed call never happened).
* An exception from the training loop (Ctrl-C, divergence) keeps the weights
  of the last completed step and the record that goes with them: n_iter_ and
  loss_curve_ of the completed epochs, t_ the samples of every completed step.
  ``train`` / ``Network.fit`` attach that partial History to the exception as
  ``exc.dnnblocks_history``.
"""

import copy
import signal
import threading
import warnings

import numpy as np
import pytest

from dnnblocks import DNNClassifier, Network
from dnnblocks import _estimator_base as estimator_module  # where the estimators build their Network
from dnnblocks import training  # DEFAULT_ENGINE: StepRecorder watches the per-step loop
from dnnblocks.exceptions import TrainingDivergedError
from dnnblocks.training import train

M, BATCH = 60, 20  # three steps per epoch


def data(n_features, m=M, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_features))
    y = (X[:, 0] > 0).astype(int) + (n_classes > 2) * (X[:, 1] > 0)
    return X, y


def quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning, feature-name warnings
        return est.fit(X, y)


def fitted_state(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = est.predict_proba(X)
    return {
        "n_features_in_": est.n_features_in_,
        "feature_names_in_": getattr(est, "feature_names_in_", None),
        "classes_": est.classes_.copy(),
        "coefs_": [c.copy() for c in est.coefs_],
        "intercepts_": [b.copy() for b in est.intercepts_],
        "n_iter_": est.n_iter_,
        "loss_curve_": list(est.loss_curve_),
        "t_": est.t_,
        "best_loss_": est.best_loss_,
        "validation_scores_": est.validation_scores_,
        "proba": proba,
    }


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list) and x and isinstance(x[0], np.ndarray):
            assert len(x) == len(y), key
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v, err_msg=key)
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=key)
        else:
            assert x == y, key


def _raise_memory_error(*args, **kwargs):
    raise MemoryError("injected: no memory for the new network")


# (name, set_params for the failing call, labels of the 3-column fit, monkeypatch Network?, error)
FAILURES = [
    ("one class", {}, "one", False, ValueError),
    ("early stopping, one sample per class", {"early_stopping": True}, "two samples", False, ValueError),
    ("MemoryError building the network", {}, "normal", True, MemoryError),
    ("bad hyper-parameter", {"alpha": -1.0}, "normal", False, ValueError),
    ("bad activation", {"activation": "swish"}, "normal", False, ValueError),
]


@pytest.mark.parametrize("named", [False, True], ids=["numpy", "named-features"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("case", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failed_refit_leaves_the_estimator_as_it_was(case, solver, named, monkeypatch):
    _, params, labels, patch_network, error = case
    X5, y5 = data(5)
    est = DNNClassifier(hidden_layer_sizes=(6,), solver=solver, max_iter=4, batch_size=BATCH,
                        random_state=0)
    quiet_fit(est, X5, y5)
    if named:
        # pandas is not installed here, and scikit-learn records column names
        # only from dataframes: set the attribute as a fit on a DataFrame would.
        est.feature_names_in_ = np.array(list("abcde"), dtype=object)
    twin = copy.deepcopy(est)  # never touched by the failing call
    before = fitted_state(est, X5)

    X3, y3 = data(3, seed=1)
    if labels == "one":
        y3 = np.zeros(len(y3), dtype=int)
    elif labels == "two samples":
        X3, y3 = X3[:2], np.array([0, 1])
    if patch_network:
        monkeypatch.setattr(estimator_module, "Network", _raise_memory_error)
    est.set_params(**params)
    with pytest.raises(error):
        quiet_fit(est, X3, y3)
    monkeypatch.undo()
    est.set_params(**{k: twin.get_params()[k] for k in params})

    assert_same_state(fitted_state(est, X5), before)
    # The optimizer state and the random generator are those of before too:
    # continuing gives what the untouched twin gives.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(X5, y5)
        twin.partial_fit(X5, y5)
    assert_same_state(fitted_state(est, X5), fitted_state(twin, X5))
    assert est.n_iter_ == before["n_iter_"] + 1


@pytest.mark.parametrize("call", ["warm_start fit, 3 columns", "partial_fit, unknown label"])
def test_a_failed_continuation_leaves_the_estimator_as_it_was(call):
    X5, y5 = data(5)
    est = DNNClassifier(hidden_layer_sizes=(6,), max_iter=3, batch_size=BATCH, random_state=0)
    quiet_fit(est, X5, y5)
    before = fitted_state(est, X5)
    with pytest.raises(ValueError):
        if call.startswith("warm_start"):
            est.set_params(warm_start=True)
            quiet_fit(est, *data(3))
        else:
            est.partial_fit(X5, np.where(y5 == 1, 7, 0))  # 7 is not in classes_
    assert_same_state(fitted_state(est, X5), before)


def test_pandas_column_names_survive_a_failed_refit():
    pd = pytest.importorskip("pandas")
    X5, y5 = data(5)
    est = quiet_fit(DNNClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
                    pd.DataFrame(X5, columns=list("abcde")), y5)
    with pytest.raises(ValueError):
        est.fit(pd.DataFrame(data(3)[0], columns=list("xyz")), np.zeros(M, dtype=int))
    assert est.n_features_in_ == 5
    assert list(est.feature_names_in_) == list("abcde")


# ============================================================ interrupted fits
class StepRecorder:
    """Wraps Network.validated_step: counts completed steps, keeps the weights after each."""

    def __init__(self, monkeypatch, action_at=None, action=None):
        self.completed = 0
        self.calls = 0
        self.last_params = None
        real = Network.validated_step
        recorder = self

        def wrapper(net, X, *args):
            recorder.calls += 1
            if recorder.calls == action_at and action == "diverge":
                raise TrainingDivergedError("injected: the cost became nan")
            cost = real(net, X, *args)
            recorder.completed += 1
            recorder.last_params = [p.copy() for p in net.W + net.b]
            if recorder.calls == action_at and action == "ctrl-c":
                signal.raise_signal(signal.SIGINT)  # held by the loop until this step returns
            return cost

        monkeypatch.setattr(Network, "validated_step", wrapper)
        # The steps one by one: a compiled epoch (the default engine) makes no step calls to watch.
        monkeypatch.setattr(training, "DEFAULT_ENGINE", "step")


def needs_default_sigint():
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("needs the main thread with Python's default SIGINT handler (as `fit` does)")


def reference_curve(epochs, **params):
    ref = DNNClassifier(**{**params, "max_iter": epochs})
    quiet_fit(ref, *data(5))
    return ref.loss_curve_


@pytest.mark.parametrize("k,j", [(0, 2), (3, 0), (3, 2)])
def test_ctrl_c_keeps_the_record_of_the_completed_epochs_and_steps(k, j, monkeypatch):
    needs_default_sigint()
    params = dict(hidden_layer_sizes=(6,), max_iter=50, batch_size=BATCH, random_state=0)
    X, y = data(5)
    est = DNNClassifier(**params)
    # The SIGINT arrives during step j of epoch k+1 (or the last step of epoch k when j == 0).
    steps = 3 * k + j
    rec = StepRecorder(monkeypatch, action_at=steps, action="ctrl-c")
    with pytest.raises(KeyboardInterrupt) as info:
        quiet_fit(est, X, y)
    monkeypatch.undo()
    assert rec.completed == steps
    assert est.n_iter_ == k
    assert len(est.loss_curve_) == k
    assert est.t_ == steps * BATCH  # samples seen, in the unfinished epoch too
    assert est.loss_curve_ == reference_curve(k, **params)[:k] if k else est.loss_curve_ == []
    for got, kept in zip([w.T for w in est.coefs_] + [b.reshape(-1, 1) for b in est.intercepts_],
                         rec.last_params):
        np.testing.assert_array_equal(got, kept)
    history = info.value.dnnblocks_history
    assert (history.n_epochs, history.steps_completed, history.samples_seen) == (k, steps, steps * BATCH)


def test_ctrl_c_in_a_warm_start_fit_adds_to_the_record(monkeypatch):
    needs_default_sigint()
    X, y = data(5)
    est = quiet_fit(DNNClassifier(hidden_layer_sizes=(6,), max_iter=4, batch_size=BATCH,
                                  random_state=0, warm_start=True), X, y)
    curve = list(est.loss_curve_)
    StepRecorder(monkeypatch, action_at=3 * 2 + 1, action="ctrl-c")
    with pytest.raises(KeyboardInterrupt):
        quiet_fit(est, X, y)
    assert est.n_iter_ == 4 + 2
    assert est.t_ == 4 * M + 7 * BATCH
    assert est.loss_curve_[:4] == curve and len(est.loss_curve_) == 6


def test_a_diverging_learning_rate_keeps_the_record_up_to_the_last_finite_step(monkeypatch):
    params = dict(hidden_layer_sizes=(16, 16), solver="sgd", learning_rate_init=1e10,
                  max_iter=300, batch_size=BATCH, random_state=0)
    X, y = data(5)
    est = DNNClassifier(**params)
    rec = StepRecorder(monkeypatch)
    with pytest.raises(TrainingDivergedError):
        quiet_fit(est, X, y)
    monkeypatch.undo()
    assert rec.completed >= 1
    assert est.n_iter_ == rec.completed // 3
    assert est.t_ == rec.completed * BATCH
    assert len(est.loss_curve_) == est.n_iter_ and np.isfinite(est.loss_curve_).all()
    assert est.loss_curve_ == reference_curve(est.n_iter_, **params)
    for got, kept in zip([w.T for w in est.coefs_] + [b.reshape(-1, 1) for b in est.intercepts_],
                         rec.last_params):
        np.testing.assert_array_equal(got, kept)


def test_a_divergence_mid_epoch_is_recorded(monkeypatch):
    X, y = data(5)
    est = DNNClassifier(hidden_layer_sizes=(6,), max_iter=50, batch_size=BATCH, random_state=0)
    StepRecorder(monkeypatch, action_at=3 * 5 + 2, action="diverge")  # 2nd step of epoch 6 fails
    with pytest.raises(TrainingDivergedError):
        quiet_fit(est, X, y)
    assert (est.n_iter_, len(est.loss_curve_), est.t_) == (5, 5, (3 * 5 + 1) * BATCH)


@pytest.mark.parametrize("direct", ["train", "Network.fit"])
def test_train_attaches_the_partial_history_to_the_exception(direct):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, M))
    Y = (X[0] > 0).astype(float).reshape(1, -1)
    options = dict(batch_size=BATCH, learning_rate=0.05, random_state=0)

    def stop_after_four(epoch, history):
        if epoch == 3:
            raise KeyboardInterrupt

    net = Network([5, 6, 1], seed=0)
    with pytest.raises(KeyboardInterrupt) as info:
        if direct == "train":
            train(net, X, Y, epochs=20, callback=stop_after_four, **options)
        else:
            net.fit(X, Y, epochs=20, callback=stop_after_four, **options)
    history = info.value.dnnblocks_history
    reference = train(Network([5, 6, 1], seed=0), X, Y, epochs=4, **options)
    assert history.n_epochs == 4
    assert history.cost == reference.cost
    assert (history.steps_completed, history.samples_seen) == (12, 4 * M)
    assert reference.steps_completed == 12 and reference.samples_seen == 4 * M


def test_bad_train_arguments_carry_no_history():
    net = Network([5, 6, 1], seed=0)
    X = np.zeros((5, 4))
    with pytest.raises(ValueError) as info:
        train(net, X, np.zeros((1, 4)), epochs=-1)
    assert not hasattr(info.value, "dnnblocks_history")
