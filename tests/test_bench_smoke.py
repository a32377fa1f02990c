"""The benchmark's smoke mode: every implementation runs and agrees on the cost.

Timings are never asserted: this is about the benchmark being runnable and
its implementations doing the same mathematics. The package's benchmark
(``dnnblocks.benchmark``: compiled, NumPy, GEMM bound) is tested on the
installed package; the peers, memory probes and the full script live in the
repository's bench/ folder and are tested from the checkout (skipped when the
tests run without one).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnnblocks import benchmark

BENCH = Path(__file__).resolve().parent.parent / "bench"
needs_bench = pytest.mark.skipif(not (BENCH / "peers.py").is_file(),
                                 reason="needs the repository's bench/ folder")


@pytest.fixture(scope="module")
def bench_modules():
    """bench/peers.py and bench/memory.py, imported as the scripts there import them."""
    if not (BENCH / "peers.py").is_file():
        pytest.skip("needs the repository's bench/ folder")
    sys.path.insert(0, str(BENCH))
    try:
        import memory
        import peers
    finally:
        sys.path.remove(str(BENCH))
    return peers, memory


def _check_rows(rows, expected, shapes):
    for shape in shapes:
        for dtype in ("float64", "float32"):
            got = {r["implementation"]: r for r in rows if r["shape"] == shape and r["dtype"] == dtype}
            assert set(got) == set(expected)
            reference = got["numpy"]["costs"]
            assert len(reference) == 3 and all(np.isfinite(reference))
            # Training lowers the cost over the three checked steps.
            assert reference[-1] < reference[0]
            for name, row in got.items():
                assert row["ms_per_step"] > 0
                if name != "gemm":
                    np.testing.assert_allclose(row["costs"], reference,
                                               rtol=1e-9 if dtype == "float64" else 1e-4)
                else:
                    assert row["costs"] is None
            assert got["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
            assert got["gemm"]["ratio_to_gemm"] == pytest.approx(1.0)


def test_smoke_run_covers_the_package_implementations_and_they_agree():
    results = benchmark.run(smoke=True)
    rows = results["results"]
    _check_rows(rows, benchmark.IMPLEMENTATIONS, benchmark.SMOKE_SHAPES)
    # The result is plain JSON, and the table has one line per row.
    json.dumps(results)
    table = benchmark.format_table(results)
    assert len(table.splitlines()) == 2 + len(rows)
    assert results["threads"]["per_library"] >= 1
    assert results["settings"]["implementations"] == ["compiled", "numpy", "gemm"]


def test_costs_match_an_independent_numpy_step():
    # The shared problem and the first cost, recomputed by hand.
    dims, m = benchmark.SMOKE_SHAPES["tiny"]
    X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
    A = X
    for l in range(len(W0) - 1):
        A = np.maximum(W0[l] @ A + b0[l], 0)
    Z = W0[-1] @ A + b0[-1]
    expected = float(np.sum(np.logaddexp(0, Z) - Y * Z) / m)
    for name in ("compiled", "numpy"):
        impl = benchmark.make_implementation(name, dims, X, Y, W0, b0)
        assert impl.step() == pytest.approx(expected, rel=1e-12)


def test_disagreeing_implementation_is_reported(monkeypatch):
    original = benchmark.make_implementation

    def broken(name, *args, **kwargs):
        impl = original(name, *args, **kwargs)
        if name == "compiled":
            step = impl.step
            impl.step = lambda: step() * 1.01
        return impl

    monkeypatch.setattr(benchmark, "make_implementation", broken)
    with pytest.raises(RuntimeError, match="compiled disagrees"):
        benchmark.run(smoke=True, implementations=("compiled", "numpy"), dtypes=("float64",))


def test_a_disagreeing_factory_is_reported():
    class Off:
        def __init__(self, dims, X, Y, W0, b0, lr):
            self.inner = benchmark.make_implementation("numpy", dims, X, Y, W0, b0, lr)

        def step(self):
            return self.inner.step() + 1e-3

    with pytest.raises(RuntimeError, match="off disagrees"):
        benchmark.run(smoke=True, dtypes=("float64",), factories={"off": Off})


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown shape"):
        benchmark.run(shapes=["nope"], smoke=True)
    with pytest.raises(ValueError, match="dtypes"):
        benchmark.run(dtypes=("float16",), smoke=True)
    with pytest.raises(ValueError, match="unknown implementation"):
        benchmark.run(implementations=("fortran",), smoke=True)
    # The peers are not part of the package.
    with pytest.raises(ValueError, match="unknown implementation 'textbook'"):
        benchmark.run(implementations=("textbook",), smoke=True)


# ------------------------------------------------- bench/: peers and memory
def test_peers_agree_with_the_package(bench_modules):
    peers, _ = bench_modules
    results = benchmark.run(smoke=True, factories=peers.available_peers())
    expected = peers.available_implementations()
    assert "textbook" in expected
    _check_rows(results["results"], expected, benchmark.SMOKE_SHAPES)
    dims, m = benchmark.SMOKE_SHAPES["tiny"]
    X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
    first = benchmark.make_implementation("numpy", dims, X, Y, W0, b0).step()
    assert peers.make_implementation("textbook", dims, X, Y, W0, b0).step() == pytest.approx(first, rel=1e-12)


def test_tracemalloc_memory_counts_the_buffers(bench_modules):
    _, memory = bench_modules
    dims, m = benchmark.SMOKE_SHAPES["tiny"]
    X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
    traced, held = memory.measure_tracemalloc("compiled", dims, X, Y, W0, b0)
    # A, one scratch, the output row and the db vectors of the fused step.
    n = dims[1:]
    expected = 8 * (m * (sum(n[:-1]) + max(n[:-1]) + n[-1]) + sum(n))
    assert held == expected
    assert traced >= held
    traced_np, held_np = memory.measure_tracemalloc("numpy", dims, X, Y, W0, b0)
    assert held_np == 8 * (3 * m * sum(n) + sum(n))
    assert traced_np >= held_np


@needs_bench
def test_train_step_script_runs_and_writes_its_json(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "train_step.py"), "--smoke", "--dtypes", "float64",
                           "--implementations", "compiled,numpy,textbook,gemm",
                           "--out", str(tmp_path), "--name", "smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "smoke.json").read_text())
    names = {r["implementation"] for r in results["results"]}
    assert names == {"compiled", "numpy", "textbook", "gemm"}
    for r in results["results"]:
        assert r["speedup_vs_textbook"] > 0
    header = next(line for line in proc.stdout.splitlines() if line.startswith("shape"))
    assert "x textb" in header and "peak MiB" in header
    help_ = subprocess.run([sys.executable, str(BENCH / "train_step.py"), "--help"],
                           capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "--implementations" in help_.stdout and "--out" in help_.stdout
