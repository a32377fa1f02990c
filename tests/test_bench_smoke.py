"""The benchmark's smoke mode: every implementation runs and agrees on the cost.

Timings are never asserted: this is about the benchmark being runnable and
its implementations doing the same mathematics.
"""

import json

import numpy as np
import pytest

from dnnblocks import benchmark


def test_smoke_run_covers_every_available_implementation_and_they_agree():
    results = benchmark.run(smoke=True)
    rows = results["results"]
    expected = set(benchmark.available_implementations())
    shapes = set(benchmark.SMOKE_SHAPES)
    for shape in shapes:
        for dtype in ("float64", "float32"):
            got = {r["implementation"]: r for r in rows if r["shape"] == shape and r["dtype"] == dtype}
            assert set(got) == expected
            reference = got["numpy"]["costs"]
            assert len(reference) == 3 and all(np.isfinite(reference))
            # Training lowers the cost over the three checked steps.
            assert reference[-1] < reference[0]
            for name, row in got.items():
                assert row["ms_per_step"] > 0
                if name != "gemm":
                    np.testing.assert_allclose(row["costs"], reference,
                                               rtol=1e-9 if dtype == "float64" else 1e-4)
            assert got["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    # The result is plain JSON, and the table has one line per row.
    json.dumps(results)
    table = benchmark.format_table(results)
    assert len(table.splitlines()) == 2 + len(rows)
    assert results["threads"]["per_library"] >= 1


def test_costs_match_an_independent_numpy_step():
    # The shared problem and the first cost, recomputed by hand.
    dims, m = benchmark.SMOKE_SHAPES["tiny"]
    X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
    A = X
    for l in range(len(W0) - 1):
        A = np.maximum(W0[l] @ A + b0[l], 0)
    Z = W0[-1] @ A + b0[-1]
    expected = float(np.sum(np.logaddexp(0, Z) - Y * Z) / m)
    for name in ("compiled", "numpy", "textbook"):
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


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown shape"):
        benchmark.run(shapes=["nope"], smoke=True)
    with pytest.raises(ValueError, match="dtypes"):
        benchmark.run(dtypes=("float16",), smoke=True)
    with pytest.raises(ValueError, match="unknown implementation"):
        benchmark.run(implementations=("fortran",), smoke=True)


def test_tracemalloc_memory_counts_the_buffers():
    dims, m = benchmark.SMOKE_SHAPES["tiny"]
    X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
    traced, held = benchmark.measure_memory_tracemalloc("compiled", dims, X, Y, W0, b0)
    # A, one scratch, the output row and the db vectors of the fused step.
    n = dims[1:]
    expected = 8 * (m * (sum(n[:-1]) + max(n[:-1]) + n[-1]) + sum(n))
    assert held == expected
    assert traced >= held
    traced_np, held_np = benchmark.measure_memory_tracemalloc("numpy", dims, X, Y, W0, b0)
    assert held_np == 8 * (3 * m * sum(n) + sum(n))
    assert traced_np >= held_np
