"""The two builds of the elementwise passes: baseline x86-64 and AVX2.

``dnnblocks.backend`` loads the AVX2 build (``_layer_avx2``, ``_step_avx2``)
when the processor runs it. Both are compiled from the same sources, so they
must give the same numbers up to the order of the vectorised sums.
"""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from dnnblocks import _cpu, backend

HAVE_AVX2_BUILD = importlib.util.find_spec("dnnblocks._step_avx2") is not None
RUNS_AVX2 = HAVE_AVX2_BUILD and _cpu.has_avx2_fma()
needs_avx2 = pytest.mark.skipif(not RUNS_AVX2, reason="no AVX2 build, or a processor without AVX2")


def test_the_backend_loads_the_build_the_processor_runs():
    expected = "avx2" if RUNS_AVX2 and os.environ.get("DNNBLOCKS_SIMD", "").lower() != "baseline" else "baseline"
    assert backend.SIMD_LEVEL == expected
    assert backend._step.__name__ == ("dnnblocks._step_avx2" if expected == "avx2" else "dnnblocks._step")
    assert backend.get_backend("compiled").make_training_step is backend._step.make_training_step


def test_the_environment_variable_forces_the_baseline_build():
    code = "from dnnblocks import backend; print(backend.SIMD_LEVEL, backend._layer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, DNNBLOCKS_SIMD="baseline")).stdout.split()
    assert out == ["baseline", "dnnblocks._layer"]


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    dims, m = (13, 11, 7, 1), 203
    X = rng.standard_normal((dims[0], m)).astype(dtype)
    Y = (rng.random((1, m)) < 0.5).astype(dtype)
    W = [(rng.standard_normal((dims[l + 1], dims[l])) / np.sqrt(dims[l])).astype(dtype) for l in range(3)]
    b = [(0.1 * rng.standard_normal((n, 1))).astype(dtype) for n in dims[1:]]
    return X, Y, W, b, m


@needs_avx2
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("hidden", ("relu", "tanh", "sigmoid", "identity"))
def test_whole_steps_agree_between_the_builds(dtype, hidden):
    base = importlib.import_module("dnnblocks._step")
    avx2 = importlib.import_module("dnnblocks._step_avx2")
    runs = []
    for module in (base, avx2):
        X, Y, W, b, m = _problem(dtype)
        step = module.make_training_step(W, b, (hidden, hidden, "sigmoid"), m)
        costs = [step.run(X, Y, 0.5, 0.01) for _ in range(20)]
        runs.append((costs, W, b))
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=rtol)
    assert runs[0][0][-1] < runs[0][0][0]
    for x, y in zip(runs[0][1] + runs[0][2], runs[1][1] + runs[1][2]):
        np.testing.assert_allclose(x, y, rtol=rtol * 10, atol=rtol)


@needs_avx2
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("activation", ("relu", "tanh", "sigmoid"))
def test_per_layer_kernels_agree_between_the_builds(dtype, activation):
    base = importlib.import_module("dnnblocks._layer")
    avx2 = importlib.import_module("dnnblocks._layer_avx2")
    X, Y, W, b, m = _problem(dtype, seed=1)
    dA = np.random.default_rng(2).standard_normal((W[0].shape[0], m)).astype(dtype)
    out = []
    for module in (base, avx2):
        Z, A = np.empty((W[0].shape[0], m), dtype), np.empty((W[0].shape[0], m), dtype)
        module.linear_activation_forward(W[0], b[0], X, activation, Z, A)
        dZ, db = np.empty_like(Z), np.empty((Z.shape[0], 1), dtype)
        module.activation_backward(dA, Z, A, activation, dZ, db, 1.0 / m)
        out.append((Z, A, dZ, db))
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    for x, y in zip(*out):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
