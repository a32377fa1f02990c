"""The BLAS thread policy (dnnblocks.backend): small products train on one thread.

No timing here (speed is in bench/); these tests check which thread counts are
in force, and that they are put back.
"""

import numpy as np
import pytest

import dnnblocks
from dnnblocks import backend


def _counts():
    return backend.blas_thread_counts()


def test_both_openblas_builds_are_found():
    # NumPy's and SciPy's (the compiled kernels call SciPy's); on Linux wheels both are OpenBLAS.
    counts = _counts()
    assert len(counts) >= 1 and all(c >= 1 for c in counts)


@pytest.mark.parametrize("dims, m, expected", [
    ((50, 100, 1), 200, 1),  # 1e6 multiply-adds: one thread
    ((784, 256, 128, 1), 64, 1),  # 12.8e6
    ((784, 256, 128, 1), 1024, None),  # 205e6: threads left as they are
    ((1024, 1024, 1024, 1), 4096, None),
])
def test_auto_policy_by_the_largest_product(monkeypatch, dims, m, expected):
    monkeypatch.delenv(backend.THREADS_ENV, raising=False)
    assert backend.blas_threads_policy(dims, m) == expected
    assert backend.blas_threads_policy(dims, m, "auto") == expected


def test_policy_boundary_is_the_documented_size():
    n = 2**12  # 4096 x 4096 weights: the product reaches 2**24 at a batch of one
    assert backend.blas_threads_policy((n, n), 1, "auto") is None
    assert backend.blas_threads_policy((n, n - 1), 1, "auto") == 1


def test_environment_variable_and_argument(monkeypatch):
    monkeypatch.setenv(backend.THREADS_ENV, "3")
    assert backend.blas_threads_policy((5, 5, 1), 10) == 3
    assert backend.blas_threads_policy((5, 5, 1), 10, 2) == 2  # the argument wins
    monkeypatch.setenv(backend.THREADS_ENV, "auto")
    assert backend.blas_threads_policy((5, 5, 1), 10) == 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(backend.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=backend.THREADS_ENV):
            backend.blas_threads_policy((5, 5, 1), 10)
    monkeypatch.delenv(backend.THREADS_ENV)
    for bad in (0, -2, 1.5, True, "many"):
        with pytest.raises(ValueError, match="blas_threads"):
            backend.blas_threads_policy((5, 5, 1), 10, bad)


def test_limit_lowers_and_restores():
    before = _counts()
    if max(before) < 2:
        pytest.skip("BLAS runs one thread already: nothing to lower")
    with backend.limit_blas_threads(1):
        assert _counts() == [1] * len(before)
        with backend.limit_blas_threads(1):  # nested: one shared limit
            assert _counts() == [1] * len(before)
        assert _counts() == [1] * len(before)
    assert _counts() == before
    with backend.limit_blas_threads(None):  # None leaves them alone
        assert _counts() == before
    with pytest.raises(RuntimeError):
        with backend.limit_blas_threads(1):
            raise RuntimeError("restored on error too")
    assert _counts() == before


def test_a_lower_threadpoolctl_limit_is_kept():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if max(_counts()) < 2:
        pytest.skip("BLAS runs one thread already")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        with backend.limit_blas_threads(2):  # never raises a count
            assert max(_counts()) == 1


def _fit_counts(monkeypatch, dims, m, **options):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((dims[0], m))
    Y = (X[0] > 0).astype(float).reshape(1, -1)
    net = dnnblocks.Network(dims, seed=0)
    seen = []
    net.fit(X, Y, epochs=2, batch_size=min(m, 200), learning_rate=0.05,
            callback=lambda epoch, history: seen.append(_counts()), **options)
    return seen


def test_training_a_small_network_uses_one_thread(monkeypatch):
    monkeypatch.delenv(backend.THREADS_ENV, raising=False)
    before = _counts()
    if max(before) < 2:
        pytest.skip("BLAS runs one thread already")
    seen = _fit_counts(monkeypatch, (20, 16, 1), 500)
    assert seen == [[1] * len(before)] * 2
    assert _counts() == before  # put back after the fit
    # The user's choice: as many threads as before (capped by them).
    seen = _fit_counts(monkeypatch, (20, 16, 1), 500, blas_threads=before[0])
    assert seen == [before] * 2
    monkeypatch.setenv(backend.THREADS_ENV, str(max(before)))
    assert _fit_counts(monkeypatch, (20, 16, 1), 500) == [before] * 2


@pytest.mark.filterwarnings("ignore::dnnblocks.exceptions.ConvergenceWarning")
def test_estimator_fit_follows_the_policy(monkeypatch):
    pytest.importorskip("sklearn")
    before = _counts()
    if max(before) < 2:
        pytest.skip("BLAS runs one thread already")
    seen = []
    original = backend.limit_blas_threads

    def spy(threads):
        seen.append(threads)
        return original(threads)

    monkeypatch.setattr(backend, "limit_blas_threads", spy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10))
    y = (X[:, 0] > 0).astype(int)
    dnnblocks.DNNClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    assert seen == [1]
    assert _counts() == before
