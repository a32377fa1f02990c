"""The speed benchmark of ``dnnblocks bench``: compiled vs NumPy vs the GEMM-only bound.

Every implementation does the same work on the same data from the same
initial parameters: one full gradient-descent step (forward, cost, backward,
update) of an L-layer relu network with a sigmoid output and the binary
cross-entropy cost. They are

``compiled``
    dnnblocks' compiled backend (``Network.step``).
``numpy``
    dnnblocks' NumPy backend: vectorised NumPy, the baseline of the speed-ups.
``gemm``
    The GEMM-only lower bound: just the matrix products of a step (W A per
    layer, dZ A^T per layer, W^T dZ for every layer but the first) through
    ``numpy.dot`` into preallocated outputs.

Peers (the course's textbook NumPy code, PyTorch, JAX), memory probes and
charts are not part of the package: ``bench/train_step.py`` in the source
repository adds them to :func:`run` through its ``factories`` argument.

How it measures (see :func:`run`)
---------------------------------
* Interleaved: each repeat times every implementation once, in an order that
  rotates from repeat to repeat, so a slow phase of the machine hits all of
  them alike. Each timing is a batch of consecutive steps (about 50 ms) after
  ``warmup`` untimed steps; the result is the median over the repeats, in ms
  per step.
* Threads: NumPy and SciPy each load their own OpenBLAS; both are limited to
  the same number of threads (default: every core) through threadpoolctl
  when it is installed. A pause between implementations lets the previous
  library's BLAS threads stop spinning.
* Agreement: before timing, every implementation does three steps from the
  same start and its costs must match the NumPy backend's (rtol 1e-9 in
  float64, 1e-4 in float32), or the run fails.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .backend import SIMD_LEVEL
from .network import Network
from .profiling import gemm_only_step

#: name -> (layer sizes, batch size m)
SHAPES = {
    "cat": ((12288, 20, 7, 5, 1), 209),
    "tabular": ((30, 16, 8, 1), 455),
    "mnistish": ((784, 256, 128, 1), 1024),
    "mb64": ((784, 256, 128, 1), 64),
    "large": ((1024, 1024, 1024, 1), 4096),
}

#: Tiny shapes of the smoke mode (runs in the test suite).
SMOKE_SHAPES = {
    "tiny": ((6, 5, 3, 1), 17),
    "tiny_mb": ((9, 4, 1), 5),
}

#: The targets of the compiled backend: (max ratio to the GEMM bound, min speed-up over NumPy).
TARGETS = {
    "cat": (1.15, 1.6),
    "tabular": (1.0, 5.0),
    "mnistish": (1.05, 1.5),
    "mb64": (1.15, 1.8),
    "large": (1.03, 1.2),
}

#: The implementations of the package, in table order.
IMPLEMENTATIONS = ("compiled", "numpy", "gemm")

LEARNING_RATE = 0.01
_CHECK_STEPS = 3
_RTOL = {"float64": 1e-9, "float32": 1e-4}


# ---------------------------------------------------------------- problems
def make_problem(layer_dims, m, dtype, seed=0):
    """Data and initial parameters shared by every implementation.

    Returns X (n0, m) C-ordered, Y (1, m) labels, and lists W0, b0 (He
    initialisation, small random biases), all of `dtype`.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((layer_dims[0], m)).astype(dtype)
    Y = (rng.random((layer_dims[-1], m)) < 0.5).astype(dtype)
    W0, b0 = [], []
    for l in range(len(layer_dims) - 1):
        n, k = layer_dims[l + 1], layer_dims[l]
        W0.append((rng.standard_normal((n, k)) * math.sqrt(2.0 / k)).astype(dtype))
        b0.append((0.01 * rng.standard_normal((n, 1))).astype(dtype))
    return X, Y, W0, b0


class DnnblocksStep:
    """One training step of a :class:`~dnnblocks.Network` on either backend."""

    def __init__(self, backend, dims, X, Y, W0, b0, lr):
        self.net = Network(dims, dtype=X.dtype, backend=backend, seed=0)
        for dst, src in zip(self.net.W + self.net.b, W0 + b0):
            np.copyto(dst, src)
        self.X, self.Y, self.lr = X, Y, lr

    def step(self):
        return self.net.step(self.X, self.Y, self.lr)


class GemmStep:
    """The matrix products of one step alone; its cost is NaN (it computes none)."""

    def __init__(self, dims, X, Y, W0, b0, lr):
        self.run = gemm_only_step(dims, X.shape[1], X.dtype, X)

    def step(self):
        self.run()
        return float("nan")


def make_implementation(name, layer_dims, X, Y, W0, b0, lr=LEARNING_RATE):
    """An object whose ``step()`` runs one training step and returns its cost.

    The initial parameters are copied: every implementation starts from the same ones.
    """
    W0 = [w.copy() for w in W0]
    b0 = [b.copy() for b in b0]
    if name in ("compiled", "numpy"):
        return DnnblocksStep(name, layer_dims, X, Y, W0, b0, lr)
    if name == "gemm":
        return GemmStep(layer_dims, X, Y, W0, b0, lr)
    raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")


# ----------------------------------------------------------------- threads
def limit_threads(threads):
    """Limit every BLAS/OpenMP pool threadpoolctl sees to `threads`; returns a context."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return stack
    import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS so it is limited too)

    stack.enter_context(threadpool_limits(limits=threads))
    return stack


def thread_info():
    """What threadpoolctl sees (one entry per BLAS/OpenMP library loaded)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [
        {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                               "threading_layer", "num_threads")}
        | {"library": os.path.basename(d.get("filepath", ""))}
        for d in threadpool_info()
    ]


def machine_info():
    """Platform, cores, versions and BLAS environment: what a result was measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "dnnblocks_simd": SIMD_LEVEL,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "XLA_"))},
    }
    for module in ("scipy", "dnnblocks", "torch", "jax"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg"] = os.getloadavg()
    return info


# ---------------------------------------------------------------- the run
def _time_batch(impl, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        impl.step()
    return (time.perf_counter() - t0) / inner


def _shapes(shapes, smoke):
    if shapes is None:
        return SMOKE_SHAPES if smoke else SHAPES
    if isinstance(shapes, dict):
        return shapes
    unknown = [s for s in shapes if s not in SHAPES and s not in SMOKE_SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; expected names from {list(SHAPES)}")
    return {s: (SHAPES | SMOKE_SHAPES)[s] for s in shapes}


def _implementations(implementations, factories):
    known = (*IMPLEMENTATIONS[:-1], *factories, IMPLEMENTATIONS[-1])  # the bound last
    if implementations is None:
        chosen = known
    else:
        chosen = tuple(implementations)
        for name in chosen:
            if name not in known:
                raise ValueError(f"unknown implementation {name!r}; expected some of {known}")
    if "numpy" not in chosen:
        chosen = ("numpy",) + chosen  # the baseline of the speed-ups
    return chosen


def _target_columns(row):
    """The compiled backend's targets for its shape, and whether they were met."""
    max_ratio, min_speedup = TARGETS[row["shape"]]
    checks = {
        "ratio_to_gemm": row["ratio_to_gemm"] is None or row["ratio_to_gemm"] <= max_ratio,
        "speedup_vs_numpy": row["speedup_vs_numpy"] >= min_speedup,
    }
    return {"target_ratio_to_gemm": max_ratio, "target_speedup": min_speedup,
            "targets_met": checks, "meets_targets": all(checks.values())}


def run(shapes=None, dtypes=("float64", "float32"), implementations=None, repeats=7, warmup=3,
        quick=False, smoke=False, threads=None, batch_seconds=None, pause=None, log=None,
        factories=None):
    """Time one training step of every implementation on every shape.

    Parameters
    ----------
    shapes : sequence of str or dict, optional
        Names from :data:`SHAPES` (default: all of them; in smoke mode
        :data:`SMOKE_SHAPES`), or a dict ``name -> (layer_dims, m)``.
    dtypes : sequence of {"float64", "float32"}
    implementations : sequence of str, optional
        Default: :data:`IMPLEMENTATIONS` and every name of `factories`.
    repeats : int, default 7
        Timed batches per implementation (the median is reported).
    warmup : int, default 3
        Untimed steps before the first timed batch.
    quick : bool
        Fewer repeats, shorter batches (the ``dnnblocks bench`` setting).
    smoke : bool
        Tiny shapes, one repeat, no pauses: checks only that everything runs
        and agrees (the test suite's setting; its timings mean nothing).
    threads : int, optional
        Threads for every BLAS library; default ``os.cpu_count()``.
    batch_seconds, pause : float, optional
        Length of one timed batch, and the pause between implementations.
    log : callable, optional
        Receives the table rows of each shape and dtype as they are measured.
    factories : dict of str -> callable, optional
        More implementations: ``name -> factory(layer_dims, X, Y, W0, b0, lr)``
        returning an object with ``step() -> cost`` (the peers of
        ``bench/train_step.py``). Timed and checked like the package's own.

    Returns
    -------
    dict
        ``{"machine", "threads", "settings", "results"}``; ``results`` is a
        list with one dict per (shape, dtype, implementation).

    Raises
    ------
    RuntimeError
        If an implementation's costs disagree with the NumPy backend's.
    """
    factories = dict(factories or {})
    if smoke:
        quick = True
    shapes = _shapes(shapes, smoke)
    for dt in dtypes:
        if dt not in ("float64", "float32"):
            raise ValueError(f"dtypes must be 'float64' and/or 'float32'; got {dt!r}")
    implementations = _implementations(implementations, factories)
    if smoke:
        repeats, warmup = 1, 1
    elif quick:
        repeats, warmup = min(repeats, 3), min(warmup, 2)
    threads = (os.cpu_count() or 1) if threads is None else int(threads)
    batch_seconds = (0.0 if smoke else 0.02 if quick else 0.05) if batch_seconds is None else batch_seconds
    pause = (0.0 if smoke else 0.05 if quick else 0.15) if pause is None else pause
    say = log or (lambda line: None)

    def build(name, layer_dims, X, Y, W0, b0):
        if name in factories:
            return factories[name](layer_dims, X, Y, [w.copy() for w in W0], [b.copy() for b in b0],
                                   LEARNING_RATE)
        return make_implementation(name, layer_dims, X, Y, W0, b0)

    results = []
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_before is not None and load_before[0] > 0.5 and not smoke:
        say(f"warning: the machine is busy (load average {load_before[0]:.1f} on "
            f"{os.cpu_count()} cores); timings of multithreaded BLAS degrade badly under load")
    with limit_threads(threads):
        threads_seen = thread_info()
        for shape, (layer_dims, m) in shapes.items():
            layer_dims = tuple(int(n) for n in layer_dims)
            for dtype in dtypes:
                X, Y, W0, b0 = make_problem(layer_dims, m, dtype)
                impls = {name: build(name, layer_dims, X, Y, W0, b0) for name in implementations}
                costs = {name: [impl.step() for _ in range(_CHECK_STEPS)] for name, impl in impls.items()}
                reference = costs["numpy"]
                for name, seq in costs.items():
                    if name == "gemm":
                        continue
                    if not np.allclose(seq, reference, rtol=_RTOL[dtype], atol=0):
                        raise RuntimeError(
                            f"{name} disagrees with the NumPy backend on {shape} ({dtype}): "
                            f"costs {seq} vs {reference}"
                        )
                inner = {}
                for name, impl in impls.items():
                    for _ in range(warmup):
                        impl.step()
                    t = _time_batch(impl, 1)
                    inner[name] = max(1, int(batch_seconds / max(t, 1e-7)))
                times = {name: [] for name in impls}
                order = list(impls)
                for r in range(repeats):
                    for name in order[r % len(order):] + order[:r % len(order)]:
                        if pause:
                            time.sleep(pause)
                        impls[name].step()  # wakes this library's threads
                        times[name].append(_time_batch(impls[name], inner[name]))
                med = {name: float(np.median(ts)) for name, ts in times.items()}
                for name in impls:
                    row = {
                        "shape": shape, "layer_dims": list(layer_dims), "m": m, "dtype": dtype,
                        "implementation": name,
                        "ms_per_step": med[name] * 1e3,
                        "ms_all": [t * 1e3 for t in times[name]],
                        "steps_per_batch": inner[name],
                        "speedup_vs_numpy": med["numpy"] / med[name],
                        "ratio_to_gemm": med[name] / med["gemm"] if "gemm" in med else None,
                        "costs": costs[name] if name != "gemm" else None,
                    }
                    if name == "compiled" and shape in TARGETS:
                        row.update(_target_columns(row))
                    results.append(row)
                say(format_table([r for r in results if r["shape"] == shape and r["dtype"] == dtype],
                                 header=False))
                del impls
                gc.collect()
    return {
        "machine": machine_info(),
        "threads": {"per_library": threads, "threadpoolctl": threads_seen},
        "settings": {"repeats": repeats, "warmup": warmup, "quick": quick, "smoke": smoke,
                     "batch_seconds": batch_seconds, "pause": pause,
                     "learning_rate": LEARNING_RATE, "implementations": list(implementations),
                     "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
                     "loadavg_before": load_before,
                     "seconds": round(time.time() - started, 1)},
        "results": results,
    }


def _target_cell(row):
    if "meets_targets" not in row:
        return ""
    met = {k: "ok" if v else "NO" for k, v in row["targets_met"].items()}
    cell = (f"{'met' if row['meets_targets'] else 'MISSED'}: "
            f"/GEMM<={row['target_ratio_to_gemm']} {met['ratio_to_gemm']}, "
            f"x numpy>={row['target_speedup']} {met['speedup_vs_numpy']}")
    if "memory_vs_numpy" in met:  # added by bench/train_step.py's memory probe
        mem = row.get("memory_vs_numpy")
        cell += (f", mem {'?' if mem is None else f'{mem:.2f}'}<={row['target_memory_vs_numpy']} "
                 f"{met['memory_vs_numpy']}")
    return cell


def format_table(results, header=True, columns=()):
    """The results as a text table (one line per shape, dtype and implementation).

    Parameters
    ----------
    results : dict or list
        What :func:`run` returns, or its ``"results"`` list.
    header : bool, default True
    columns : sequence of (title, width, function of a row -> str), optional
        More columns, printed between ``/ GEMM`` and the targets (the
        peers' and memory columns of ``bench/train_step.py``).

    Returns
    -------
    str
    """
    rows = results["results"] if isinstance(results, dict) else results
    lines = []
    if header:
        extra = "".join(f" {title:>{width}}" for title, width, _ in columns)
        lines.append(f"{'shape':<9} {'dtype':<8} {'impl':<9} {'ms/step':>10} {'x numpy':>8} "
                     f"{'/ GEMM':>7}{extra}  target")
        lines.append("-" * (57 + sum(w + 1 for _, w, _ in columns)))
    for r in rows:
        ratio = f"{r['ratio_to_gemm']:7.3f}" if r.get("ratio_to_gemm") is not None else f"{'-':>7}"
        extra = "".join(f" {cell(r):>{width}}" for _, width, cell in columns)
        lines.append(f"{r['shape']:<9} {r['dtype']:<8} {r['implementation']:<9} "
                     f"{r['ms_per_step']:10.4f} {r['speedup_vs_numpy']:8.2f} {ratio}{extra}  "
                     f"{_target_cell(r)}".rstrip())
    return "\n".join(lines)


def parser(prog="python -m dnnblocks.benchmark", implementations=IMPLEMENTATIONS):
    """The command line's options (shared with ``bench/train_step.py``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--shapes", help=f"comma-separated, from {','.join(SHAPES)}")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--implementations", help=f"comma-separated, from {','.join(implementations)}")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", help="write the results to this JSON file")
    return p


def run_options(args):
    """:func:`run`'s keyword arguments from parsed :func:`parser` options."""
    def split(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    return dict(shapes=split(args.shapes), dtypes=tuple(split(args.dtypes)),
                implementations=split(args.implementations), repeats=args.repeats,
                warmup=args.warmup, quick=args.quick, smoke=args.smoke, threads=args.threads)


def write_json(results, path):
    """Write `results` as indented JSON to `path` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    return path


def main(argv=None):
    """Command line: ``python -m dnnblocks.benchmark [--quick] [--shapes cat,tabular] ...``."""
    args = parser().parse_args(argv)
    results = run(**run_options(args), log=print)
    print()
    print(format_table(results))
    if args.json:
        print(f"results written to {write_json(results, args.json)}")
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
