#!/usr/bin/env python
"""Time the course's building blocks against the assignment's own NumPy code.

    python bench/course_blocks.py [--shapes cat,tabular,mnistish,mb64]

One iteration of the course's training loop, written with the building blocks
of :mod:`dnnblocks.course` (``L_model_forward``, ``compute_cost``,
``L_model_backward``, ``update_parameters``) on each backend, against the
same iteration in the textbook NumPy code (``dnnblocks.benchmark``'s
``textbook`` implementation), on the benchmark's shapes and data, float64.
Median of interleaved repeats, with a pause before each (see the comment in
the loop: without it, each implementation ran up to 2x slower right after
one that used the other OpenBLAS); prints ms per iteration and the speed-up
of ``dnnblocks.course`` over the textbook code. Run on a quiet machine.
"""

import argparse
import time

import numpy as np

from dnnblocks import benchmark, course


def course_iteration(X, Y, params, backend, learning_rate=benchmark.LEARNING_RATE):
    AL, caches = course.L_model_forward(X, params, backend=backend)
    cost = course.compute_cost(AL, Y, backend=backend)
    grads = course.L_model_backward(AL, Y, caches, backend=backend)
    params.update(course.update_parameters(params, grads, learning_rate, backend=backend))
    return cost


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="cat,tabular,mnistish,mb64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between timed batches")
    args = parser.parse_args(argv)
    print(f"{'shape':<9} {'textbook':>10} {'course':>10} {'course/np':>10}  course speed-up (ms/iteration)")
    for shape in args.shapes.split(","):
        dims, m = benchmark.SHAPES[shape]
        X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
        textbook = benchmark.make_implementation("textbook", dims, X, Y, W0, b0)
        runs = {"textbook": textbook.step}
        for backend in ("compiled", "numpy"):
            params = {f"{p}{l + 1}": a.copy() for l in range(len(W0)) for p, a in (("W", W0[l]), ("b", b0[l]))}
            runs[backend] = (lambda p=params, bk=backend: course_iteration(X, Y, p, bk))
        costs = {name: run() for name, run in runs.items()}
        assert np.allclose(list(costs.values()), costs["textbook"], rtol=1e-9), costs
        inner = {}
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            inner[name] = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))
        times = {name: [] for name in runs}
        for r in range(args.repeats):
            for name, run in runs.items():
                # NumPy and SciPy each load their own OpenBLAS, whose threads
                # spin for a while after a call: a pause lets the other
                # library's go quiet, an untimed call wakes this one's.
                time.sleep(args.pause)
                run()
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    run()
                times[name].append((time.perf_counter() - t0) / inner[name] * 1e3)
        med = {name: float(np.median(t)) for name, t in times.items()}
        print(f"{shape:<9} {med['textbook']:10.4f} {med['compiled']:10.4f} {med['numpy']:10.4f}  "
              f"{med['textbook'] / med['compiled']:.2f}x")


if __name__ == "__main__":
    main()
