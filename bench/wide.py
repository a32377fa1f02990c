#!/usr/bin/env python
"""Time the Gram-matrix route (dnnblocks.wide) against the plain routes on wide problems.

    python bench/wide.py                       # both cases, default BLAS threads
    python bench/wide.py --cases cat --threads 1
    python bench/wide.py --json bench/results/wide.json

Cases:

- ``cat``: the course's cat model, [12288, 20, 7, 5, 1] on the 209 training
  images of ``catvnoncat.npz`` (``../shared/data`` beside the repository, or
  ``--data``), the course's initialisation, learning rate 0.0075; without
  the file, random data of the same shape;
- ``wide``: a gene-expression-like table, 200 examples x 20,000 features,
  one hidden layer of 32 relu units ([20000, 32, 1]).

Implementations, all float64, full batch, plain gradient descent:

- ``plain``: the compiled backend's fused step (``Network.step``), today's route;
- ``gram``: :func:`dnnblocks.wide.train_full_batch`;
- ``numpy``: the NumPy backend (``Network(backend="numpy")``);
- ``textbook``: the course's own NumPy code (``bench/peers.py``);
- ``torch``, ``jax``: PyTorch (autograd + SGD) and JAX (jit), when importable (``bench/peers.py``).

"ms/iter" is the median over repeats of a batch of iterations (for ``gram``:
the steady state, one ``GramRoute.run`` of the batch, W1 not formed);
"setup ms" is what the route pays once (``G = X^T X``, ``P0 = W1 X``, and
forming W1 at the end); "run s" is the wall time of the whole run of
``--iterations`` (2500: the course's) — measured for ``gram`` (the complete
``train_full_batch`` call, setup included), extrapolated from ms/iter for the
others (marked ``~``). "x numpy" is the per-iteration speed-up over the NumPy
backend. The cost of every implementation after 20 iterations is compared
with the plain route's ("rel. diff").

``--clock cpu`` measures process CPU time (``time.process_time``) instead of
wall time: with ``--threads 1`` that is the single-core time of each
implementation, nearly independent of other processes on a busy machine.
Otherwise run on a quiet machine.
"""

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import dnnblocks
from dnnblocks import backend, benchmark, course, wide

import peers  # bench/peers.py: the textbook code, PyTorch and JAX

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catvnoncat.npz"
CAT_DIMS = [12288, 20, 7, 5, 1]
WIDE_DIMS = [20000, 32, 1]
#: Every implementation; torch and jax run when importable (bench/peers.py).
IMPLEMENTATIONS = ("plain", "gram", "numpy", "textbook", "torch", "jax")

#: The clock of every measurement, set by --clock.
clock = time.perf_counter


def cat_problem(path):
    """X (12288, 209) F-ordered as the course makes it, Y, the course's initial W and b."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            x, y = f["train_x"], f["train_y"]
        X = x.reshape(x.shape[0], -1).T / 255.0
        Y = y.reshape(1, -1).astype(np.float64)
        source = "catvnoncat.npz"
    else:
        X, Y, _, _ = benchmark.make_problem(CAT_DIMS, 209, "float64")
        source = "random (catvnoncat.npz not found)"
    initial = course.initialize_parameters_deep(CAT_DIMS, seed=1, scale="sqrt")
    W = [initial[f"W{l}"] for l in range(1, len(CAT_DIMS))]
    b = [initial[f"b{l}"] for l in range(1, len(CAT_DIMS))]
    return CAT_DIMS, X, Y, W, b, 0.0075, source


def wide_problem():
    X, Y, W, b = benchmark.make_problem(WIDE_DIMS, 200, "float64")
    # Labels that depend on the features, so that the run learns something.
    Y = (X[:10].sum(axis=0) > 0).astype(np.float64).reshape(1, -1)
    return WIDE_DIMS, X, Y, W, b, 0.01, "random"


class PlainRoute:
    """Network.step on one backend, from the given parameters."""

    def __init__(self, backend_name, dims, X, Y, W, b, lr):
        self.net = dnnblocks.Network(dims, dtype=np.float64, backend=backend_name)
        for dst, src in zip(self.net.W + self.net.b, W + b):
            np.copyto(dst, src)
        self.X, self.Y, self.lr = X, Y, lr

    def iterate(self, n):
        for _ in range(n):
            cost = self.net.step(self.X, self.Y, self.lr)
        return cost


class Peer:
    """A peer of bench/peers.py (the textbook code, PyTorch, JAX): one full-batch step per call."""

    def __init__(self, name, dims, X, Y, W, b, lr):
        self.impl = peers.make_implementation(name, dims, np.ascontiguousarray(X), Y, W, b, lr)

    def iterate(self, n):
        for _ in range(n):
            cost = self.impl.step()
        return cost


class Gram:
    def __init__(self, dims, X, Y, W, b, lr):
        self.W, self.b = [w.copy() for w in W], [v.copy() for v in b]
        self.route = wide.GramRoute(self.W, self.b, ["relu"] * (len(dims) - 2) + ["sigmoid"], X, Y)
        self.lr = lr

    def iterate(self, n):
        return float(self.route.run(n, self.lr, write_back=False)[-1])


def make(name, problem):
    dims, X, Y, W, b, lr, _ = problem
    W, b = [w.copy() for w in W], [v.copy() for v in b]
    if name == "plain":
        return PlainRoute("compiled", dims, X, Y, W, b, lr)
    if name == "numpy":
        return PlainRoute("numpy", dims, X, Y, W, b, lr)
    if name in ("textbook", "torch", "jax"):
        return Peer(name, dims, X, Y, W, b, lr)
    return Gram(dims, X, Y, W, b, lr)


def whole_gram_run(problem, iterations):
    dims, X, Y, W, b, lr, _ = problem
    W, b = [w.copy() for w in W], [v.copy() for v in b]
    t0 = clock()
    costs = wide.train_full_batch(W, b, ["relu"] * (len(dims) - 2) + ["sigmoid"], X, Y, lr, iterations)
    return clock() - t0, costs


def gram_setup_seconds(problem, repeats, per_iteration):
    """Building the route (G, P0) and forming W1 once: a one-step run less its step."""
    dims, X, Y, W, b, lr, _ = problem
    times = []
    for _ in range(repeats):
        Wc, bc = [w.copy() for w in W], [v.copy() for v in b]
        t0 = clock()
        route = wide.GramRoute(Wc, bc, ["relu"] * (len(dims) - 2) + ["sigmoid"], X, Y)
        route.run(1, lr)
        times.append(clock() - t0 - per_iteration)
    return statistics.median(times)


def time_case(name, problem, implementations, repeats, iterations, pause):
    dims, X, Y, W, b, lr, source = problem
    rows = []
    check_iterations = 20
    reference = make("plain", problem).iterate(check_iterations)
    per_iter = {}
    for impl_name in implementations:
        impl = make(impl_name, problem)
        cost = impl.iterate(check_iterations)  # also the warm-up
        agree = abs(cost - reference) / abs(reference)
        # Batches of about 0.2 s.
        t0 = clock()
        impl.iterate(3)
        inner = max(3, int(0.2 / max((clock() - t0) / 3, 1e-7)))
        samples = []
        for _ in range(repeats):
            # NumPy and SciPy load one OpenBLAS each, whose threads spin for a
            # while after a call: a pause lets the other library's go quiet.
            time.sleep(pause)
            impl.iterate(1)
            t0 = clock()
            impl.iterate(inner)
            samples.append((clock() - t0) / inner)
        per_iter[impl_name] = statistics.median(samples)
        rows.append({"case": name, "impl": impl_name, "ms_per_iter": 1e3 * per_iter[impl_name],
                     "cost_rel_diff_after_20": agree, "data": source, "dims": list(dims),
                     "m": int(X.shape[1])})
    setup = gram_setup_seconds(problem, 3, per_iter["gram"]) if "gram" in per_iter else None
    for row in rows:
        row["x_numpy"] = per_iter["numpy"] / per_iter[row["impl"]] if "numpy" in per_iter else None
        if row["impl"] == "gram":
            row["setup_ms"] = 1e3 * setup
            time.sleep(pause)
            seconds, costs = whole_gram_run(problem, iterations)
            row["run_s"], row["run_measured"] = seconds, True
            row["final_cost"] = float(costs[-1])
        else:
            row["run_s"], row["run_measured"] = iterations * per_iter[row["impl"]], False
    return rows


def format_rows(rows, iterations, header=True):
    lines = []
    if header:
        lines.append(f"{'case':<6} {'impl':<9} {'ms/iter':>9} {'x numpy':>8} {'setup ms':>9} "
                     f"{'run s':>9}  ({iterations} iterations)  agreement after 20 iterations")
        lines.append("-" * len(lines[0]))
    for r in rows:
        setup = f"{r['setup_ms']:9.1f}" if r.get("setup_ms") is not None else f"{'-':>9}"
        run = f"{r['run_s']:8.3f}" + (" " if r["run_measured"] else "~")
        xnp = f"{r['x_numpy']:8.1f}" if r["x_numpy"] is not None else f"{'-':>8}"
        lines.append(f"{r['case']:<6} {r['impl']:<9} {r['ms_per_iter']:9.4f} {xnp} {setup} {run}"
                     f"  rel. diff {r['cost_rel_diff_after_20']:.1e}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="cat,wide")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None,
                        help="cap every BLAS pool at this many threads (default: as they are)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default) or process CPU time")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    implementations = args.implementations.split(",")
    if args.implementations == parser.get_default("implementations"):
        runnable = peers.available_peers()
        implementations = [n for n in implementations if n not in ("torch", "jax") or n in runnable]
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"unknown implementations {sorted(unknown)}; expected {IMPLEMENTATIONS}")
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    problems = {"cat": lambda: cat_problem(args.data), "wide": wide_problem}
    rows = []
    with _thread_limit(args.threads):
        for case in args.cases.split(","):
            if case not in problems:
                parser.error(f"unknown case {case!r}; expected {sorted(problems)}")
            case_rows = time_case(case, problems[case](), implementations, args.repeats,
                                  args.iterations, args.pause)
            print(format_rows(case_rows, args.iterations, header=not rows), flush=True)
            rows += case_rows
    print(f"clock {args.clock}, simd {backend.SIMD_LEVEL}, threads {args.threads or 'default'}, "
          f"machine {benchmark.machine_info().get('processor')}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": benchmark.machine_info(), "clock": args.clock,
                                         "threads": args.threads, "rows": rows},
                                        indent=1, default=str))
    return 0


def _thread_limit(threads):
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # the bench extra

    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, the compiled kernels', so it is limited too)

    return threadpool_limits(limits=threads)


if __name__ == "__main__":
    sys.exit(main())
