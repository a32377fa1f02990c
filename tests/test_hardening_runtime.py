"""Interruption, crashes during save, threads and memory.

* Ctrl-C during ``fit`` leaves the weights of the last completed step: exactly
  those of an uninterrupted run of that many steps, and the model predicts,
  saves, loads and trains on. The interrupt is delivered as a real SIGINT from
  inside a step (between two layers' updates), where Python's default handler
  would otherwise leave a half-updated model.
* A save that fails (the writer raises, or the process is killed mid-write)
  leaves the previous file under the target name, intact, or no file at all.
* Kernels release the GIL (another thread runs Python while they compute);
  two networks trained in two threads at once end with the same weights as
  trained one after the other; one network predicts from several threads at
  once with the single-threaded results.
* Thousands of training steps keep the resident memory flat.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import dnnblocks
from dnnblocks import Network, get_backend
from dnnblocks import training  # DEFAULT_ENGINE: the kernel spies watch the per-step loop
from dnnblocks.optimizers import Adam, Momentum

BACKENDS = ("compiled", "numpy")


def problem(m=64, n=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(dtype)
    Y = ((X[0] + X[1] * X[2]) > 0).astype(dtype).reshape(1, -1)
    return X, Y


def params(net):
    return [p.copy() for p in net.W + net.b]


def assert_params_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ================================================================ interruption
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupt_from_a_callback_keeps_the_last_epoch(backend, optimizer, tmp_path):
    X, Y = problem()
    net = Network([5, 8, 4, 1], backend=backend, seed=0)
    seen = {}

    def callback(epoch, history):
        seen[epoch] = params(net)
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=50, batch_size=16, learning_rate=0.05, optimizer=optimizer,
                random_state=0, callback=callback)
    assert_params_equal(params(net), seen[4])
    # Usable: predicts, saves, loads bit for bit, trains on.
    proba = net.predict_proba(X)
    path = net.save(tmp_path / "interrupted.npz")
    loaded = dnnblocks.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)
    net.fit(X, Y, epochs=2, learning_rate=0.05, optimizer=optimizer)
    assert all(np.isfinite(p).all() for p in net.W + net.b)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _interrupt_mid_step(monkeypatch, net, kernel_name, call_number, times=1):
    """Send this process SIGINT from inside the `call_number`-th call of a kernel."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("needs the main thread with Python's default SIGINT handler (as `fit` does)")
    kernels = net._kernels
    real = getattr(kernels, kernel_name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        out = real(*args, **kwargs)
        if count["n"] == call_number:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)  # Ctrl-C, between two layers' updates
        return out

    monkeypatch.setattr(kernels, kernel_name, wrapper)
    # Kernels called step by step: the compiled epoch runner (the default engine) calls none of them.
    monkeypatch.setattr(training, "DEFAULT_ENGINE", "step")
    return count


CASES = [  # optimizer, dropout, kernel called once per parameter (or layer) in a step, calls per step
    ("adam", 0.0, "adam_update", 6),
    ("momentum", 0.0, "momentum_update", 6),
    ("sgd", 0.2, "linear_backward_update", 3),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer,dropout,kernel,per_step", CASES, ids=[c[0] for c in CASES])
def test_ctrl_c_inside_a_step_keeps_the_last_completed_step(backend, optimizer, dropout, kernel, per_step,
                                                            monkeypatch, tmp_path):
    X, Y = problem()
    options = dict(learning_rate=0.05, optimizer=optimizer, dropout=dropout, random_state=3)
    net = Network([5, 8, 4, 1], backend=backend, seed=0)
    # Call per_step * 6 + 2 is inside step 7 (full batch: one step per epoch),
    # after the first layers were updated and before the last ones are.
    calls = _interrupt_mid_step(monkeypatch, net, kernel, per_step * 6 + 2)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=100, **options)
    assert calls["n"] == per_step * 7  # step 7 ran to its end before the interrupt was raised
    monkeypatch.undo()
    replay = Network([5, 8, 4, 1], backend=backend, seed=0)
    replay.fit(X, Y, epochs=7, **options)
    assert_params_equal(params(net), params(replay))
    net.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(dnnblocks.load(tmp_path / "m.npz").predict_proba(X), replay.predict_proba(X))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once(monkeypatch):
    X, Y = problem()
    net = Network([5, 8, 4, 1], seed=0)
    calls = _interrupt_mid_step(monkeypatch, net, "adam_update", 2, times=2)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=100, learning_rate=0.05, optimizer="adam")
    assert calls["n"] == 2  # stopped inside the first step: the user insisted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_classifier_ctrl_c_leaves_a_fitted_usable_model(monkeypatch, tmp_path):
    from dnnblocks import DNNClassifier

    X, Y = problem(m=120)
    clf = DNNClassifier(hidden_layer_sizes=(8,), max_iter=200, batch_size=30, random_state=0)
    clf.partial_fit(X.T, Y[0], classes=[0.0, 1.0])
    calls = _interrupt_mid_step(monkeypatch, clf.network_, "adam_update", 4 * 10 + 1)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X.T, Y[0])  # a new fit: its 11th step is interrupted
    assert calls["n"] == 4 * 11
    pred = clf.predict(X.T)
    assert set(pred) <= {0.0, 1.0}
    clf.save(tmp_path / "clf.npz")
    np.testing.assert_array_equal(dnnblocks.load(tmp_path / "clf.npz").predict(X.T), pred)


# ======================================================================= saving
@pytest.mark.parametrize("exception", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "Ctrl-C"])
@pytest.mark.parametrize("existing", [True, False], ids=["over a file", "new file"])
def test_a_failing_save_leaves_no_corrupt_file(exception, existing, tmp_path, monkeypatch):
    X, _ = problem()
    old = Network([5, 3, 1], seed=1)
    new = Network([5, 3, 1], seed=2)
    target = tmp_path / "model.npz"
    if existing:
        old.save(target)
    real_write_array = np.lib.format.write_array
    written = []

    def write_then_fail(fp, array, *args, **kwargs):
        # The second member of the archive fails: the file is half-written.
        real_write_array(fp, array, *args, **kwargs)
        written.append(array.shape)
        if len(written) == 2:
            raise exception

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(type(exception)):
        new.save(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.npz"] if existing else [])
    if existing:
        np.testing.assert_array_equal(dnnblocks.load(target).predict_proba(X), old.predict_proba(X))


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import dnnblocks
    target = sys.argv[1]
    if sys.argv[2] == "existing":
        dnnblocks.Network([5, 64, 1], seed=1).save(target)
    real_fsync = os.fsync
    def stalled_fsync(fd):
        print("writing", flush=True)  # the new file is half on disk, not yet renamed
        time.sleep(120)
    os.fsync = stalled_fsync
    dnnblocks.Network([5, 64, 1], seed=2).save(target)
""")


@pytest.mark.parametrize("existing", ["existing", "new"])
def test_killing_the_process_during_save_leaves_the_target_intact(existing, tmp_path):
    target = tmp_path / "model.npz"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), existing],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    if existing == "existing":
        loaded = dnnblocks.load(target)
        expected = Network([5, 64, 1], seed=1)
        for a, b in zip(loaded.W + loaded.b, expected.W + expected.b):
            np.testing.assert_array_equal(a, b)
    else:
        assert not target.exists()
    # What a kill leaves behind is a hidden temporary file, never the target name.
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".model.npz.") and name.endswith(".tmp") for name in leftovers)


# ================================================================= concurrency
@pytest.fixture
def no_forced_gil_switch():
    """No time-sliced GIL hand-over: another thread runs only when the GIL is released."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    yield
    sys.setswitchinterval(old)


def _progress_of_another_thread_during(work, attempts=20):
    """How many times a Python thread got to run while `work()` ran in this thread.

    The counting thread releases the GIL after every increment (sleep(0)) and,
    with the switch interval at 30 s, can only take it while this thread has
    released it: the count is zero unless `work` runs without the GIL.
    """
    counter = {"n": 0, "stop": False}

    def count():
        while not counter["stop"]:
            counter["n"] += 1
            time.sleep(0)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        while counter["n"] == 0:
            time.sleep(0.001)
        best = 0
        for _ in range(attempts):
            before = counter["n"]
            work()
            best = max(best, counter["n"] - before)
            if best > 0:
                break
    finally:
        counter["stop"] = True
        thread.join()
    return best


def _kernel_calls(dtype=np.float64):
    """Each compiled kernel on arrays large enough to take a few milliseconds."""
    k = get_backend("compiled")
    rng = np.random.default_rng(0)
    n, m = 512, 2048
    W = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, 1)).astype(dtype)
    A0 = rng.standard_normal((n, m)).astype(dtype)
    Z, A, D = np.empty_like(A0), np.empty_like(A0), np.empty_like(A0)
    Y = (rng.random((n, m)) < 0.5).astype(dtype)
    Ysoft = np.zeros_like(A0)
    Ysoft[0] = 1
    P, G, S1, S2 = [rng.standard_normal((n, m)).astype(dtype) for _ in range(4)]
    db, dW = np.empty((n, 1), dtype), np.empty((n, n), dtype)
    mask = rng.random((n, m)).astype(dtype)
    k.linear_activation_forward(W, b, A0, "tanh", Z, A)
    net = Network([n, n, 1], dtype=dtype, seed=0, hidden_activation="tanh")
    step = k.make_training_step(net.W, net.b, net.activations, m)
    Y1 = Y[:1].copy()
    # Everything a call needs is made here: NumPy releases the GIL in its own
    # large operations, which must not be what the probe sees.
    half = np.full_like(A0, 0.5)
    W2 = P[:, :n].copy()
    draws = mask.copy()
    return {
        "linear_activation_forward": lambda: k.linear_activation_forward(W, b, A0, "tanh", Z, A),
        "activation_backward": lambda: k.activation_backward(A0, Z, None, "sigmoid", D, db, 1 / m),
        "linear_backward": lambda: k.linear_backward(A0, A, W, dW, D, 1 / m),
        "linear_backward_update": lambda: k.linear_backward_update(A0, A, W2, D, 1 / m, 1e-9),
        "sigmoid_cross_entropy": lambda: k.sigmoid_cross_entropy(Z, A, Y, D, db, 1 / m),
        "cross_entropy_cost": lambda: k.cross_entropy_cost(half, Y),
        "softmax_forward": lambda: k.softmax_forward(Z, A),
        "softmax_cross_entropy": lambda: k.softmax_cross_entropy(Z, A, Ysoft, D, db, 1 / m),
        "gradient_descent_update": lambda: k.gradient_descent_update(P, G, 1e-12),
        "momentum_update": lambda: k.momentum_update(P, G, S1, 1e-12, 0.9),
        "adam_update": lambda: k.adam_update(P, G, S1, S2, 1e-12, 0.9, 0.999, 1e-8, 3),
        "dropout_forward": lambda: k.dropout_forward(D, draws, 0.5),
        "dropout_backward": lambda: k.dropout_backward(D, mask),
        "TrainingStep.run": lambda: step.run(A0, Y1, 1e-9),
    }


KERNEL_CALLS = None


@pytest.mark.parametrize("name", list(dnnblocks.KERNEL_NAMES) + ["TrainingStep.run"])
def test_compiled_kernels_release_the_gil(name, no_forced_gil_switch):
    global KERNEL_CALLS
    if name == "make_training_step":
        pytest.skip("a constructor; its run() is tested as TrainingStep.run")
    if KERNEL_CALLS is None:
        KERNEL_CALLS = _kernel_calls()
    work = KERNEL_CALLS[name]
    assert _progress_of_another_thread_during(lambda: [work() for _ in range(3)]) > 0


def test_the_gil_probe_sees_a_call_that_holds_the_gil(no_forced_gil_switch):
    # The control: a C-level call that keeps the GIL lets the other thread do nothing.
    data = list(range(300_000, 0, -1))
    assert _progress_of_another_thread_during(lambda: sorted(data), attempts=3) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_networks_trained_in_two_threads_match_sequential_training(backend, optimizer):
    datasets = [problem(m=256, n=20, seed=s) for s in (1, 2)]

    def train(seed, X, Y):
        net = Network([20, 64, 32, 1], backend=backend, seed=seed)
        net.fit(X, Y, epochs=15, batch_size=64, learning_rate=0.05, optimizer=optimizer, random_state=seed)
        return params(net)

    sequential = [train(s, X, Y) for s, (X, Y) in zip((1, 2), datasets)]
    results = [None, None]
    start = threading.Barrier(2)

    def worker(i):
        start.wait()
        results[i] = train(i + 1, *datasets[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(results, sequential):
        assert_params_equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_one_network_predicts_from_many_threads(backend, output):
    net = Network([20, 64, 32, 1 if output == "sigmoid" else 4], backend=backend, seed=0, output=output)
    inputs = [problem(m=100 + 37 * i, n=20, seed=i)[0] for i in range(6)]
    inputs[1] = np.asfortranarray(inputs[1])  # read through the transpose flag
    expected = [net.predict_proba(X) for X in inputs]
    failures = []
    start = threading.Barrier(len(inputs))

    def worker(i):
        start.wait()
        for _ in range(30):
            got = net.predict_proba(inputs[i])
            if not np.array_equal(got, expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# ====================================================================== memory
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer,dropout", [("sgd", 0.0), ("adam", 0.0), ("momentum", 0.3)])
def test_long_training_keeps_resident_memory_flat(backend, optimizer, dropout):
    X, Y = problem(m=500, n=30)
    net = Network([30, 64, 32, 1], backend=backend, seed=0)
    # batch 64 over 500 examples: 7 full batches and a short one, every epoch
    options = dict(batch_size=64, learning_rate=0.01, optimizer=optimizer, dropout=dropout, random_state=0)
    net.fit(X, Y, epochs=40, **options)  # warm-up: buffers, optimizer state, caches of NumPy/BLAS
    history = []
    for _ in range(5):
        net.fit(X, Y, epochs=100, **options)  # 800 steps each, 4000 in all
        history.append(_rss_bytes())
    growth = max(history) - history[0]
    # One leaked buffer per step (>= 8 kB here) would add >= 25 MB; allow noise.
    assert growth < 4 * 2**20, [h / 2**20 for h in history]
