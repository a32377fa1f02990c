"""DNNClassifier on dask arrays: data-parallel training on a LocalCluster.

One LocalCluster (2 worker processes, 1 thread each) serves the whole module.
The tests that kill a worker run last: each waits for the nanny to bring the
cluster back to two workers first.
"""

import os
import signal
import threading
import subprocess
import sys
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dnnblocks  # noqa: E402
from dnnblocks import _dask_data, dask_support  # noqa: E402
from dnnblocks.exceptions import TrainingDivergedError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning at max_iter


def _params(est):
    return est.coefs_ + est.intercepts_


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_params(a), _params(b)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((900, 8))
    y2 = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(np.int64)
    y3 = np.array(["low", "mid", "high"])[np.digitize(X[:, 0] + 0.5 * X[:, 3], [-0.5, 0.5])]
    return X, y2, y3


@pytest.fixture(scope="module")
def client():
    # Workers are separate processes with one thread each, as on a real cluster.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def cluster_up(client):
    client.wait_for_workers(2, timeout=60)
    return client


FULL_BATCH = dict(hidden_layer_sizes=(16, 8), solver="sgd", batch_size=None, max_iter=30,
                  learning_rate_init=0.2, tol=0.0, random_state=0)


def test_importing_dnnblocks_does_not_import_dask():
    code = ("import sys, dnnblocks, dnnblocks.dask_support; dnnblocks.DNNClassifier; "
            "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_is_dask_collection(data):
    X, _, _ = data
    assert dask_support.is_dask_collection(da.from_array(X))
    assert not dask_support.is_dask_collection(X)
    assert not dask_support.is_dask_collection([[1.0]])


def test_block_placement_balances_rows_and_keeps_blocks_in_place():
    place = _dask_data._place_blocks
    two = {"a": 1, "b": 1}
    # Already spread: nothing moves.
    assert place([10] * 4, [["a"], ["b"], ["a"], ["b"]], two) == ["a", "b", "a", "b"]
    # Piled on one worker: half of it moves.
    target = place([10] * 10, [["a"]] * 8 + [["b"]] * 2, two)
    assert target.count("a") == target.count("b") == 5 and target[-2:] == ["b", "b"]
    # Nothing persisted: shares follow the threads.
    target = place([10] * 9, [None] * 9, {"a": 2, "b": 1})
    assert target.count("a") == 6 and target.count("b") == 3


def test_without_a_distributed_client_dask_input_is_fitted_in_memory(data):
    if _dask_data.resolve_client(None) is not None:
        pytest.skip("a distributed client is already active in this process")
    X, y, _ = data
    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(da.from_array(X, chunks=(200, 8)),
                                                      da.from_array(y, chunks=200))
    assert _max_diff(est, ref) == 0.0
    proba = est.predict_proba(da.from_array(X, chunks=(200, 8)))
    assert isinstance(proba, da.Array)
    # Same weights, but the blocks are multiplied 200 columns at a time: OpenBLAS
    # kernels may round a column differently by its place in the block (SkylakeX
    # does, by one ulp), so the predictions agree to rounding, not bit for bit.
    np.testing.assert_allclose(proba.compute(scheduler="sync"), ref.predict_proba(X),
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
@pytest.mark.parametrize("labels", ["binary", "multiclass"])
def test_full_batch_sgd_equals_in_memory(cluster_up, data, backend, labels):
    X, y2, y3 = data
    y = y2 if labels == "binary" else y3
    params = dict(FULL_BATCH, backend=backend, alpha=1e-2)
    ref = dnnblocks.DNNClassifier(**params).fit(X, y)
    Xd, yd = da.from_array(X, chunks=(130, 8)), da.from_array(y, chunks=130)
    est = dnnblocks.DNNClassifier(**params).fit(Xd, yd)
    assert est.n_iter_ == ref.n_iter_ == 30
    assert _max_diff(est, ref) <= 1e-8
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=0, atol=1e-10)
    assert ref.loss_curve_[-1] < 0.8 * ref.loss_curve_[0]  # it did learn something
    np.testing.assert_array_equal(est.classes_, ref.classes_)
    # The work was spread: both workers held data, only parameter-sized arrays came back.
    stats = est.dask_stats_
    assert stats["n_workers"] == 2 and stats["n_blocks"] == 7 and stats["n_steps"] == 30
    assert stats["gathered_bytes_per_step"] == 2 * stats["parameter_bytes"]


@pytest.mark.parametrize("solver", ["momentum", "adam"])
def test_full_batch_other_solvers_equal_in_memory(cluster_up, data, solver):
    X, y, _ = data
    params = dict(FULL_BATCH, solver=solver, learning_rate_init=0.01, max_iter=20)
    ref = dnnblocks.DNNClassifier(**params).fit(X, y)
    est = dnnblocks.DNNClassifier(**params).fit(da.from_array(X, chunks=(300, 8)), y)
    assert _max_diff(est, ref) <= 1e-8
    assert est._optimizer.t == ref._optimizer.t == 20


def test_float32(cluster_up, data):
    X, y, _ = data
    params = dict(FULL_BATCH, dtype=np.float32)
    ref = dnnblocks.DNNClassifier(**params).fit(X, y)
    est = dnnblocks.DNNClassifier(**params).fit(da.from_array(X, chunks=(250, 8)),
                                                  da.from_array(y, chunks=250))
    assert est.coefs_[0].dtype == np.float32
    assert _max_diff(est, ref) <= 1e-4
    proba = est.predict_proba(da.from_array(X, chunks=(250, 8)))
    assert proba.dtype == np.float32 and proba.compute().dtype == np.float32


def test_predictions_are_blockwise_dask_arrays(cluster_up, data):
    X, _, y3 = data
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y3)  # in memory
    Xd = da.from_array(X, chunks=(100, 4))  # two column chunks: merged
    for method, shape in [("predict_proba", (900, 3)), ("predict", (900,)),
                          ("predict_log_proba", (900, 3)), ("decision_function", (900, 3))]:
        out = getattr(est, method)(Xd)
        assert isinstance(out, da.Array), method
        assert out.shape == shape and out.chunks[0] == (100,) * 9, method
        expected = getattr(est, method)(X)
        got = out.compute()
        if method == "predict":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    acc = est.score(Xd, da.from_array(y3, chunks=100))
    assert isinstance(acc, float) and acc == pytest.approx(est.score(X, y3))
    w = np.linspace(0.1, 2.0, 900)
    assert est.score(Xd, y3, sample_weight=w) == pytest.approx(est.score(X, y3, sample_weight=w))
    with pytest.raises(ValueError, match="8 features"):
        est.predict(da.from_array(X[:, :5], chunks=(100, 5)))


def test_binary_decision_function_is_one_dimensional(cluster_up, data):
    X, y, _ = data
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    out = est.decision_function(da.from_array(X, chunks=(300, 8)))
    assert out.shape == (900,)
    np.testing.assert_allclose(out.compute(), est.decision_function(X), atol=1e-12)


def test_minibatches_are_seeded_and_learn(cluster_up, data):
    X, y, _ = data
    Xd, yd = da.from_array(X, chunks=(150, 8)), da.from_array(y, chunks=150)
    params = dict(hidden_layer_sizes=(16,), solver="adam", batch_size=256,
                  learning_rate_init=0.03, max_iter=8, random_state=3)
    a = dnnblocks.DNNClassifier(**params).fit(Xd, yd)
    b = dnnblocks.DNNClassifier(**params).fit(Xd, yd)
    c = dnnblocks.DNNClassifier(**dict(params, random_state=4)).fit(Xd, yd)
    assert _max_diff(a, b) == 0.0  # same seed, same batches, same model
    assert _max_diff(a, c) > 1e-3
    # ceil(900 / 256) = 4 steps per epoch, every row once per epoch.
    assert a.dask_stats_["n_steps"] == 4 * 8 and a.t_ == 900 * 8
    assert a.loss_curve_[-1] < 0.7 * a.loss_curve_[0]
    assert a.score(Xd, yd) > 0.85


def test_early_stopping_dropout_and_l2(cluster_up, data):
    X, _, y3 = data
    Xd = da.from_array(X, chunks=(150, 8))
    est = dnnblocks.DNNClassifier(hidden_layer_sizes=(32,), batch_size=450, max_iter=40,
                                  learning_rate_init=0.03, early_stopping=True,
                                  n_iter_no_change=4, dropout=0.1, alpha=1e-3, random_state=0)
    est.fit(Xd, da.from_array(y3, chunks=150))
    assert est.best_loss_ is None
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.8
    assert est.score(Xd, y3) > 0.8


def test_partial_fit_full_batch_equals_in_memory(cluster_up, data):
    X, y, _ = data
    params = dict(FULL_BATCH)
    ref = dnnblocks.DNNClassifier(**params)
    est = dnnblocks.DNNClassifier(**params)
    Xd, yd = da.from_array(X, chunks=(200, 8)), da.from_array(y, chunks=200)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(Xd, yd)
    assert not hasattr(est, "classes_")
    for _ in range(3):
        ref.partial_fit(X, y, classes=[0, 1])
        est.partial_fit(Xd, yd, classes=[0, 1])
    assert est.n_iter_ == ref.n_iter_ == 3
    assert _max_diff(est, ref) <= 1e-8
    with pytest.raises(ValueError, match="not in classes_"):
        est.partial_fit(Xd, da.from_array(np.where(y == 1, 2, 0), chunks=200))
    assert est.n_iter_ == 3


def test_persisted_blocks_piled_on_one_worker_are_spread(cluster_up, data):
    X, y, _ = data
    first = sorted(cluster_up.nthreads())[0]
    Xp = cluster_up.persist(da.from_array(X, chunks=(150, 8)), workers=[first])
    distributed.wait(Xp)
    assert {w for ws in cluster_up.who_has(Xp).values() for w in ws} == {first}
    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(Xp, y)
    assert sorted(est.dask_stats_["rows_per_shard"]) == [450, 450]
    assert _max_diff(est, ref) <= 1e-8


def test_explicit_client_with_numpy_input(cluster_up, data):
    X, y, _ = data
    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y, client=cluster_up)
    assert est.dask_stats_["n_workers"] == 2
    assert _max_diff(est, ref) <= 1e-8


def test_bad_data_on_a_worker_leaves_the_model_unchanged(cluster_up, data):
    X, y, _ = data
    bad = X.copy()
    bad[777, 3] = np.nan
    est = dnnblocks.DNNClassifier(**FULL_BATCH)
    with pytest.raises(ValueError, match="NaN or infinity"):
        est.fit(da.from_array(bad, chunks=(200, 8)), y)
    assert not hasattr(est, "classes_") and not hasattr(est, "n_features_in_")
    est.fit(X, y)
    before = [p.copy() for p in _params(est)]
    est.set_params(warm_start=True)
    with pytest.raises(ValueError, match="NaN or infinity"):
        est.fit(da.from_array(bad, chunks=(200, 8)), y)
    assert all(np.array_equal(a, b) for a, b in zip(before, _params(est)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(da.from_array(X, chunks=(200, 8)), y[:-1])


def test_dask_dataframe_input(cluster_up, data):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    X, y2, _ = data
    labels = np.where(y2 == 1, "yes", "no")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    ddf, ys = dd.from_pandas(df, npartitions=3), dd.from_pandas(pd.Series(labels), npartitions=3)
    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(df, labels)
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(ddf, ys)
    assert list(est.feature_names_in_) == list(df.columns)
    assert _max_diff(est, ref) <= 1e-8
    np.testing.assert_array_equal(est.predict(ddf).compute(), ref.predict(df))
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(ddf.rename(columns={"f0": "other"}))


def test_lazy_prediction_uses_the_model_as_it_was(cluster_up, data):
    X, y, _ = data
    est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    expected = est.predict_proba(X)
    lazy = est.predict_proba(da.from_array(X, chunks=(300, 8)))
    est.coefs_[0][:] = 0.0  # training goes on before the result is computed
    # To rounding: the blocks are multiplied 300 columns at a time (see above).
    np.testing.assert_allclose(lazy.compute(), expected, rtol=0, atol=1e-14)


class _KillAtStep(distributed.WorkerPlugin):
    """SIGKILLs the worker at `address` when it starts the gradient task of step `step`."""

    name = "dnnblocks-test-killer"

    def __init__(self, step, address):
        self.step, self.address = step, address

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        # Keys are dnnblocks-grad-<fit>-<step>-<shard>-<attempt>.
        if (finish == "executing" and isinstance(key, str) and key.startswith("dnnblocks-grad-")
                and key.split("-")[3] == str(self.step) and self.worker.address == self.address):
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def killer(cluster_up):
    import cloudpickle

    # The plugin class lives in this test module, which the workers cannot import.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    allowed = cluster_up.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)

    def install(step, allowed_failures=None):
        if allowed_failures is not None:
            cluster_up.run_on_scheduler(
                lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", allowed_failures))
        victim = sorted(cluster_up.nthreads())[0]
        cluster_up.register_plugin(_KillAtStep(step, victim))
        return victim

    yield install
    cluster_up.unregister_worker_plugin(_KillAtStep.name)
    cluster_up.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", allowed))
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    cluster_up.wait_for_workers(2, timeout=60)


def test_killed_worker_is_retried_and_the_model_is_intact(cluster_up, data, killer):
    X, y, _ = data
    victim = killer(step=5)
    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = dnnblocks.DNNClassifier(**FULL_BATCH).fit(da.from_array(X, chunks=(130, 8)), y)
    assert victim not in cluster_up.nthreads()  # it really died
    # The lost shard was rebuilt elsewhere and the step re-run: the same model.
    assert est.n_iter_ == 30
    assert _max_diff(est, ref) <= 1e-8


def test_worker_killed_between_steps(cluster_up, data):
    X, y, _ = data
    pids = cluster_up.run(os.getpid)
    victim = sorted(pids)[0]

    def kill(step):
        if step == 4:
            os.kill(pids[victim], signal.SIGKILL)

    ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
    est = dnnblocks.DNNClassifier(**FULL_BATCH)
    dask_support.fit(est, da.from_array(X, chunks=(130, 8)), y, step_callback=kill)
    assert victim not in cluster_up.nthreads()
    assert est.n_iter_ == 30 and _max_diff(est, ref) <= 1e-8
    cluster_up.wait_for_workers(2, timeout=60)


def test_killed_worker_without_retries_stops_with_the_last_completed_step(cluster_up, data, killer):
    X, y, _ = data
    victim = killer(step=7, allowed_failures=0)
    est = dnnblocks.DNNClassifier(**FULL_BATCH)
    with pytest.raises(dask_support.DistributedFitError, match="after 7 completed step") as info:
        est.fit(da.from_array(X, chunks=(130, 8)), y)
    assert isinstance(info.value.__cause__, distributed.KilledWorker)
    assert info.value.steps_completed == 7
    assert victim not in cluster_up.nthreads()
    # The model is exactly the 7-step model, with its history.
    ref = dnnblocks.DNNClassifier(**dict(FULL_BATCH, max_iter=7)).fit(X, y)
    assert est.n_iter_ == 7 and len(est.loss_curve_) == 7
    assert _max_diff(est, ref) <= 1e-8
    assert est.score(X, y) == ref.score(X, y)


def test_ctrl_c_in_a_distributed_fit_keeps_the_completed_steps(cluster_up, data):
    # The Dask fit runs the training loop of in-memory fits, with its guard:
    # a Ctrl-C is held until the step in progress completes, and the record
    # goes with the exception.
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("needs the main thread with Python's default SIGINT handler")
    X, y, _ = data

    def interrupt(step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    est = dnnblocks.DNNClassifier(**FULL_BATCH)
    with pytest.raises(KeyboardInterrupt) as info:
        dask_support.fit(est, da.from_array(X, chunks=(300, 8)), y, step_callback=interrupt)
    assert info.value.dnnblocks_history.steps_completed == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ref = dnnblocks.DNNClassifier(**dict(FULL_BATCH, max_iter=3)).fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3 and est.t_ == 3 * len(y)
    assert _max_diff(est, ref) <= 1e-8


def test_a_diverging_distributed_fit_keeps_finite_weights(cluster_up, data):
    X, y, _ = data
    est = dnnblocks.DNNClassifier(**dict(FULL_BATCH, learning_rate_init=1e100))
    with pytest.raises(TrainingDivergedError), np.errstate(all="ignore"):
        est.fit(da.from_array(X, chunks=(300, 8)), y)
    assert all(np.isfinite(p).all() for p in _params(est))
    assert est.n_iter_ == len(est.loss_curve_)
