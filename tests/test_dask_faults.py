"""Dask fault tolerance: workers killed or stalled mid-fit, empty chunks, small blocks.

Every fit on a cluster runs in a Python process of its own, with its own
``LocalCluster`` (worker processes, one thread each), under a hard timeout: a
fit that hangs fails its test instead of stalling the suite, and the workers
a test kills cannot disturb another test's cluster. The child prints one JSON
line of results, which the test checks.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")

import dnnblocks  # noqa: E402
from dnnblocks import _dask_data, dask_support  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning at max_iter

# Shared by every child: the data, the in-memory reference and a cluster.
_PRELUDE = """
import json, os, signal, sys, time, warnings
import numpy as np
import dask, dask.array as da, distributed
import dnnblocks
from dnnblocks import dask_support

warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
X = rng.standard_normal((900, 8))
y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(np.int64)
FULL_BATCH = dict(hidden_layer_sizes=(16, 8), solver="sgd", batch_size=None, max_iter=30,
                  learning_rate_init=0.2, tol=0.0, random_state=0)


def max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.coefs_ + a.intercepts_,
                                                            b.coefs_ + b.intercepts_))


def report(**values):
    print("RESULT " + json.dumps(values), flush=True)


def main(client):
{body}


if __name__ == "__main__":  # worker processes re-import the main module
    with distributed.LocalCluster(n_workers={n_workers}, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \\
            distributed.Client(cluster) as client:
        main(client)
"""


def _run_child(body, *, n_workers=2, timeout=150):
    """Run `body` (the inside of ``main(client)``) in a fresh process; its reported dict.

    The child runs in a session of its own so that on timeout the whole
    group (the child and its worker processes) is killed.
    """
    script = _PRELUDE.format(body=textwrap.indent(textwrap.dedent(body), "    "),
                             n_workers=n_workers)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the child did not finish within {timeout} s (a hang?)\n"
                    f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    results = [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, \
        f"child failed (exit {proc.returncode})\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    return json.loads(results[-1])


# ------------------------------------------------------- workers that die
def test_worker_killed_right_after_a_step_is_retried_on_the_others():
    # The kill lands between two steps, while the driver sends the next
    # parameters: a broadcast scatter waited for ever on the dead worker
    # (dask/distributed#5704). The step-timeout only makes a regression fail
    # fast here; the fit must not need it.
    r = _run_child("""
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]

        def kill(step):
            if step == 3:
                os.kill(pids[victim], signal.SIGKILL)

        ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
        est = dnnblocks.DNNClassifier(**FULL_BATCH)
        start = time.monotonic()
        with dask.config.set({"dnnblocks.step-timeout": 60}):
            dask_support.fit(est, da.from_array(X, chunks=(130, 8)), y, step_callback=kill)
        report(seconds=time.monotonic() - start, n_iter=est.n_iter_, diff=max_diff(est, ref),
               steps=est.dask_stats_["n_steps"], t=est.t_, ref_t=ref.t_,
               victim_gone=victim not in client.nthreads())
    """, n_workers=3)
    assert r["victim_gone"]
    assert r["n_iter"] == 30 and r["steps"] == 30 and r["t"] == r["ref_t"] == 900 * 30
    # The lost shards were rebuilt on the other workers and the step re-run:
    # the in-memory model, to rounding.
    assert r["diff"] <= 1e-8
    assert r["seconds"] < 60


# The plugin classes run in the workers, which cannot import this test
# module: they are defined in the child's script.
_KILL_PLUGIN = """
class KillOn(distributed.WorkerPlugin):
    '''SIGKILLs the worker at `address` when a task whose key starts with `prefix` reaches `state`.'''

    name = "dnnblocks-test-kill-on"

    def __init__(self, prefix, field, value, state, address):
        self.prefix, self.field, self.value = prefix, field, value
        self.state, self.address = state, address

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if (finish == self.state and isinstance(key, str) and key.startswith(self.prefix)
                and key.split("-")[self.field] == self.value
                and self.worker.address == self.address):
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("phase", [
    # The worker dies as soon as the parameters of step 4 are in its memory:
    # with scattered parameters, the only copy could go with it ("lost
    # dependencies"); a parameters task is simply made again elsewhere.
    pytest.param(("dnnblocks-params-", 3, "5", "memory"), id="holding-the-parameters"),
    # ... or once its share of step 6 is done, before the driver has it.
    pytest.param(("dnnblocks-grad-", 3, "6", "memory"), id="holding-a-gradient",
                 marks=pytest.mark.slow),
])
def test_worker_killed_mid_step_is_retried_on_the_others(phase):
    prefix, field, value, state = phase
    r = _run_child(_KILL_PLUGIN.replace("\n", "\n        ") + f"""
        victim = sorted(client.nthreads())[0]
        client.register_plugin(KillOn({prefix!r}, {field}, {value!r}, {state!r}, victim))
        ref = dnnblocks.DNNClassifier(**FULL_BATCH).fit(X, y)
        est = dnnblocks.DNNClassifier(**FULL_BATCH)
        with dask.config.set({{"dnnblocks.step-timeout": 60}}):
            est.fit(da.from_array(X, chunks=(130, 8)), y)
        report(n_iter=est.n_iter_, diff=max_diff(est, ref), victim_gone=victim not in client.nthreads())
    """)
    assert r["victim_gone"]  # it really died
    assert r["n_iter"] == 30 and r["diff"] <= 1e-8


def test_stalled_worker_stops_the_fit_within_the_step_timeout():
    # A worker frozen (SIGSTOP) keeps its connections open, so Dask never
    # declares it dead (not before distributed.scheduler.worker-ttl): without
    # a limit the step waits for ever. With dnnblocks.step-timeout = 3 s the
    # fit stops with DistributedFitError and keeps the 4 completed steps.
    r = _run_child("""
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        est = dnnblocks.DNNClassifier(**FULL_BATCH)
        # A bad limit is refused before any work, leaving the model as it was.
        try:
            with dask.config.set({"dnnblocks.step-timeout": "soon"}):
                est.fit(da.from_array(X, chunks=(130, 8)), y)
            bad_config = None
        except ValueError as exc:
            bad_config = str(exc)
        untouched = not hasattr(est, "coefs_")

        def stall(step):
            if step == 4:
                os.kill(pids[victim], signal.SIGSTOP)

        start = time.monotonic()
        try:
            with dask.config.set({"dnnblocks.step-timeout": 3}):
                dask_support.fit(est, da.from_array(X, chunks=(130, 8)), y, step_callback=stall)
            error = None
        except dask_support.DistributedFitError as exc:
            error = dict(message=str(exc), steps=exc.steps_completed,
                         cause=type(exc.__cause__).__name__,
                         timeout=isinstance(exc.__cause__, TimeoutError))
        seconds = time.monotonic() - start
        os.kill(pids[victim], signal.SIGKILL)  # the nanny starts a fresh one
        ref = dnnblocks.DNNClassifier(**dict(FULL_BATCH, max_iter=4)).fit(X, y)
        report(error=error, seconds=seconds, n_iter=est.n_iter_, curve=len(est.loss_curve_),
               diff=max_diff(est, ref), bad_config=bad_config, untouched=untouched)
    """)
    assert "dnnblocks.step-timeout" in r["bad_config"] and "'soon'" in r["bad_config"]
    assert r["untouched"]
    error = r["error"]
    assert error is not None, "the fit went on with a frozen worker"
    assert error["steps"] == 4 and error["timeout"], error
    assert "after 4 completed step" in error["message"] and "3 s" in error["message"]
    # Bounded: the limit, plus the time to notice it and to clean up.
    assert 3 <= r["seconds"] < 30
    # The model is the 4-step model, with its history.
    assert r["n_iter"] == 4 and r["curve"] == 4 and r["diff"] <= 1e-8


@pytest.mark.parametrize("value, seconds", [(None, None), (45, 45.0), ("10 minutes", 600.0),
                                            ("1.5s", 1.5)])
def test_step_timeout_config(value, seconds):
    assert _dask_data.DistributedData._configured_step_timeout() == 300.0  # the default
    with dask.config.set({"dnnblocks.step-timeout": value}):
        assert _dask_data.DistributedData._configured_step_timeout() == seconds


@pytest.mark.parametrize("value", [0, -3, float("nan"), float("inf"), True, "soon", [5]])
def test_bad_step_timeout_config_is_refused(value):
    with dask.config.set({"dnnblocks.step-timeout": value}), \
            pytest.raises(ValueError, match="dnnblocks.step-timeout must be a positive number"):
        _dask_data.DistributedData._configured_step_timeout()


# -------------------------------------------------- empty and small blocks
def test_prediction_on_a_dask_array_with_empty_chunks():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 4))
    y3 = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]
    y2 = (X[:, 0] > 0).astype(np.int64)
    chunks = ((20, 0, 25, 0, 15), 4)
    for y in (y3, y2):
        est = dnnblocks.DNNClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, y)
        Xd = da.from_array(X, chunks=chunks)
        for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
            expected = getattr(est, method)(X)
            out = getattr(est, method)(Xd)
            assert out.chunks[0] == chunks[0], method
            got = out.compute(scheduler="sync")
            assert got.shape == expected.shape and got.dtype == expected.dtype, method
            if method == "predict":
                np.testing.assert_array_equal(got, expected)
            else:
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=method)
        assert est.score(Xd, da.from_array(y, chunks=(chunks[0],))) == pytest.approx(est.score(X, y))
    # No rows at all is refused, as in memory.
    with pytest.raises(ValueError, match="0 sample"):
        est.predict(da.from_array(X[:0], chunks=(10, 4)))


def _plan_rows(block_rows, n_batches, shuffle, seed=7, epoch=2):
    """rows[k][i]: the rows of block i in batch k, through the workers' batch plan."""
    state = _dask_data._ShardState(((3, 2, 1), "relu", "sigmoid", "float64", "numpy"))
    starts = np.cumsum([0] + list(block_rows[:-1])).tolist()
    small = {i: starts[i] for i, m in enumerate(block_rows) if m < n_batches}
    return [[state.batch_rows(i, m, epoch, k, n_batches, shuffle, seed, small.get(i))
             for i, m in enumerate(block_rows)] for k in range(n_batches)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("block_rows", [(3,) * 300, (1, 4, 0, 2, 9, 1, 1, 3, 12, 2, 1)],
                         ids=["equal-small", "mixed"])
def test_batch_plan_with_blocks_smaller_than_the_batch_count(block_rows, shuffle):
    n_batches = 5
    rows = _plan_rows(block_rows, n_batches, shuffle)
    sizes = [sum(len(r) for r in batch) for batch in rows]
    # No empty step, every row of every block exactly once per epoch.
    assert min(sizes) > 0 and sum(sizes) == sum(block_rows)
    for i, m in enumerate(block_rows):
        used = np.concatenate([rows[k][i] for k in range(n_batches)])
        assert sorted(used.tolist()) == list(range(m))
    if set(block_rows) == {3}:
        # Small blocks are dealt out in turn: the batches are even, as in memory.
        assert max(sizes) - min(sizes) <= 1
    # Blocks of at least n_batches rows keep their k-th slices (the plan
    # before blocks could be small), so those fits are unchanged.
    for i, m in enumerate(block_rows):
        if m >= n_batches and not shuffle:
            for k in range(n_batches):
                assert rows[k][i].tolist() == list(range(k * m // n_batches, (k + 1) * m // n_batches))


def test_minibatch_fit_on_blocks_smaller_than_the_batch_count():
    # 450 rows in blocks of 3 with 5 batches an epoch: each block has rows for
    # only 3 of the 5 batches, and the same 3 in every block, so two steps out
    # of five used to be empty (no update, a round trip for nothing). Now every
    # step updates, as in memory: as many optimizer steps and samples.
    r = _run_child("""
        Xs, ys = X[:450], y[:450]
        params = dict(hidden_layer_sizes=(16,), solver="adam", batch_size=90,
                      learning_rate_init=0.03, max_iter=8, random_state=3)
        ref = dnnblocks.DNNClassifier(**params).fit(Xs, ys)
        est = dnnblocks.DNNClassifier(**params).fit(da.from_array(Xs, chunks=(3, 8)), ys)
        report(steps=est.dask_stats_["n_steps"], updates=est._optimizer.t, ref_updates=ref._optimizer.t,
               t=est.t_, ref_t=ref.t_, first=est.loss_curve_[0], last=est.loss_curve_[-1],
               score=est.score(Xs, ys))
    """)
    assert r["steps"] == r["updates"] == r["ref_updates"] == 5 * 8
    assert r["t"] == r["ref_t"] == 450 * 8
    assert r["last"] < 0.8 * r["first"] and r["score"] > 0.75
