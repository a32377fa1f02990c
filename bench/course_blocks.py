#!/usr/bin/env python
"""Time a learner's own training loop, written with the course's building blocks, against the textbook code.

    python bench/course_blocks.py [--shapes cat,tabular,mnistish,mb64] [--loops cat4,cat2,circles,moons]

Two tables.

1. ``--shapes``: one iteration of the step-by-step assignment's loop written
   with :mod:`dnnblocks.course` (``L_model_forward``, ``compute_cost``,
   ``L_model_backward``, ``update_parameters``) on each backend, against the
   same iteration in the textbook NumPy code (``bench/peers.py``'s
   ``textbook`` implementation), on the benchmark's shapes and data.
2. ``--loops``: the loops a learner writes in the other assignments, each as
   the course's helper file writes it in NumPy ("textbook", written out
   below) and with the same names imported from dnnblocks instead:

   - ``cat4``: Course 1 Week 4 A2, the L-layer cat model [12288, 20, 7, 5, 1],
     209 images (data: ``catvnoncat.npz`` when found, else random data of
     that shape), blocks of :mod:`dnnblocks.course.app`;
   - ``cat2``: the same with the two-layer model [12288, 7, 1];
   - ``circles``: Course 2 Initialization, [2, 10, 5, 1] on 300 points, blocks
     of :mod:`dnnblocks.course.initialization`;
   - ``moons``: Course 2 Optimization, one epoch of Adam on 64-example
     mini-batches of 300 points, [2, 5, 2, 1], blocks of
     :mod:`dnnblocks.course.optimization`.

Median of interleaved repeats, with a pause before each (NumPy and SciPy
each load their own OpenBLAS, whose threads spin for a while after a call:
without the pause each implementation ran up to 2x slower right after one
that used the other library). Prints ms per iteration (per epoch for
``moons``) and the speed-up of the compiled blocks over the textbook code.
Run on a quiet machine.
"""

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

from dnnblocks import benchmark, course
from dnnblocks.course import app, initialization, optimization

import peers  # bench/peers.py: the textbook code


def course_iteration(X, Y, params, backend, learning_rate=benchmark.LEARNING_RATE):
    AL, caches = course.L_model_forward(X, params, backend=backend)
    cost = course.compute_cost(AL, Y, backend=backend)
    grads = course.L_model_backward(AL, Y, caches, backend=backend)
    params.update(course.update_parameters(params, grads, learning_rate, backend=backend))
    return cost


# ------------------------------------------- the helper files, in NumPy
def tb_L_forward(X, p):
    caches, A, L = [], X, len(p) // 2
    for l in range(1, L + 1):
        W, b = p["W" + str(l)], p["b" + str(l)]
        Z = W.dot(A) + b
        caches.append(((A, W, b), Z))
        A = 1 / (1 + np.exp(-Z)) if l == L else np.maximum(0, Z)
    return A, caches


def tb_L_cost(AL, Y):
    m = Y.shape[1]
    return np.squeeze((1. / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T)))


def tb_L_backward(AL, Y, caches):
    grads, L = {}, len(caches)
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(L)):
        (A_prev, W, b), Z = caches[l]
        if l == L - 1:
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:
            dZ = np.array(dA, copy=True)
            dZ[Z <= 0] = 0
        m = A_prev.shape[1]
        grads["dW" + str(l + 1)] = 1. / m * np.dot(dZ, A_prev.T)
        grads["db" + str(l + 1)] = 1. / m * np.sum(dZ, axis=1, keepdims=True)
        grads["dA" + str(l)] = dA = np.dot(W.T, dZ)
    return grads


def tb_update(p, g, lr):
    for l in range(1, len(p) // 2 + 1):
        p["W" + str(l)] = p["W" + str(l)] - lr * g["dW" + str(l)]
        p["b" + str(l)] = p["b" + str(l)] - lr * g["db" + str(l)]
    return p


def tb_forward3(X, p):
    z1 = np.dot(p["W1"], X) + p["b1"]
    a1 = np.maximum(0, z1)
    z2 = np.dot(p["W2"], a1) + p["b2"]
    a2 = np.maximum(0, z2)
    z3 = np.dot(p["W3"], a2) + p["b3"]
    a3 = 1 / (1 + np.exp(-z3))
    return a3, (z1, a1, p["W1"], p["b1"], z2, a2, p["W2"], p["b2"], z3, a3, p["W3"], p["b3"])


def tb_backward3(X, Y, cache):
    m = X.shape[1]
    (z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3) = cache
    dz3 = 1. / m * (a3 - Y)
    dW3 = np.dot(dz3, a2.T)
    db3 = np.sum(dz3, axis=1, keepdims=True)
    da2 = np.dot(W3.T, dz3)
    dz2 = np.multiply(da2, np.int64(a2 > 0))
    dW2 = np.dot(dz2, a1.T)
    db2 = np.sum(dz2, axis=1, keepdims=True)
    da1 = np.dot(W2.T, dz2)
    dz1 = np.multiply(da1, np.int64(a1 > 0))
    dW1 = np.dot(dz1, X.T)
    db1 = np.sum(dz1, axis=1, keepdims=True)
    return {"dz3": dz3, "dW3": dW3, "db3": db3, "da2": da2, "dz2": dz2, "dW2": dW2, "db2": db2,
            "da1": da1, "dz1": dz1, "dW1": dW1, "db1": db1}


def tb_loss3(a3, Y, mean=True):
    logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
    return 1. / Y.shape[1] * np.nansum(logprobs) if mean else np.sum(logprobs)


def tb_mini_batches(X, Y, size, seed):
    np.random.seed(seed)
    m = X.shape[1]
    perm = list(np.random.permutation(m))
    sx, sy = X[:, perm], Y[:, perm].reshape((1, m))
    out = [(sx[:, k * size:(k + 1) * size], sy[:, k * size:(k + 1) * size]) for k in range(math.floor(m / size))]
    if m % size:
        out.append((sx[:, int(m / size) * size:], sy[:, int(m / size) * size:]))
    return out


def tb_adam(p, g, v, s, t, lr=0.0007, beta1=0.9, beta2=0.999, epsilon=1e-8):
    for l in range(1, len(p) // 2 + 1):
        for k in ("W", "b"):
            key = "d" + k + str(l)
            v[key] = beta1 * v[key] + (1 - beta1) * g[key]
            vc = v[key] / (1 - np.power(beta1, t))
            s[key] = beta2 * s[key] + (1 - beta2) * np.power(g[key], 2)
            sc = s[key] / (1 - np.power(beta2, t))
            p[k + str(l)] = p[k + str(l)] - lr * vc / (np.sqrt(sc) + epsilon)
    return p, v, s


# ------------------------------------------------------------- the loops
def _cat_data():
    for folder in (os.environ.get("DNNBLOCKS_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if folder and (Path(folder) / "catvnoncat.npz").is_file():
            x, y, *_ = app.load_data(Path(folder) / "catvnoncat.npz")
            return x.reshape(x.shape[0], -1).T / 255., y, "catvnoncat.npz"
    rng = np.random.default_rng(0)
    X = np.asfortranarray(rng.random((12288, 209)))
    return X, (rng.random((1, 209)) < 0.35).astype(np.int64), "random data"


def cat_loops(dims):
    X, Y, source = _cat_data()
    lr = 0.0075

    def textbook(state):
        AL, caches = tb_L_forward(X, state["p"])
        cost = tb_L_cost(AL, Y)
        state["p"] = tb_update(state["p"], tb_L_backward(AL, Y, caches), lr)
        return float(cost)

    def blocks(backend):
        def run(state):
            AL, caches = app.L_model_forward(X, state["p"], backend=backend)
            cost = app.compute_cost(AL, Y, backend=backend)
            grads = app.L_model_backward(AL, Y, caches, backend=backend)
            state["p"] = app.update_parameters(state["p"], grads, lr, backend=backend)
            return float(cost)
        return run

    def start():
        return {"p": app.initialize_parameters_deep(dims)}

    return start, {"textbook": textbook, "compiled": blocks("compiled"), "numpy": blocks("numpy")}, source


def circles_loop():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 300))
    Y = (rng.random((1, 300)) < 0.5).astype(np.int64)
    lr = 0.01

    def textbook(state):
        a3, cache = tb_forward3(X, state["p"])
        cost = tb_loss3(a3, Y)
        state["p"] = tb_update(state["p"], tb_backward3(X, Y, cache), lr)
        return float(cost)

    def blocks(backend):
        def run(state):
            a3, cache = initialization.forward_propagation(X, state["p"], backend=backend)
            cost = initialization.compute_loss(a3, Y, backend=backend)
            grads = initialization.backward_propagation(X, Y, cache, backend=backend)
            state["p"] = initialization.update_parameters(state["p"], grads, lr, backend=backend)
            return float(cost)
        return run

    def start():
        return {"p": initialization.initialize_parameters_he([2, 10, 5, 1])}

    return start, {"textbook": textbook, "compiled": blocks("compiled"), "numpy": blocks("numpy")}, "random points"


def moons_loop():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 300))
    Y = (rng.random((1, 300)) < 0.5).astype(np.int64)

    def textbook(state):
        total = 0
        state["seed"] += 1
        for bx, by in tb_mini_batches(X, Y, 64, state["seed"]):
            a3, cache = tb_forward3(bx, state["p"])
            total += tb_loss3(a3, by, mean=False)
            g = tb_backward3(bx, by, cache)
            state["t"] += 1
            state["p"], state["v"], state["s"] = tb_adam(state["p"], g, state["v"], state["s"], state["t"])
        return float(total / 300)

    def blocks(backend):
        def run(state):
            total = 0
            state["seed"] += 1
            for bx, by in optimization.random_mini_batches(X, Y, 64, state["seed"], backend=backend):
                a3, cache = optimization.forward_propagation(bx, state["p"], backend=backend)
                total += optimization.compute_cost(a3, by, backend=backend)
                g = optimization.backward_propagation(bx, by, cache, backend=backend)
                state["t"] += 1
                state["p"], state["v"], state["s"], _, _ = optimization.update_parameters_with_adam(
                    state["p"], g, state["v"], state["s"], state["t"], 0.0007, backend=backend)
            return float(total / 300)
        return run

    def start():
        p = optimization.initialize_parameters([2, 5, 2, 1])
        v, s = optimization.initialize_adam(p)
        return {"p": p, "v": v, "s": s, "t": 0, "seed": 10}

    return start, {"textbook": textbook, "compiled": blocks("compiled"), "numpy": blocks("numpy")}, "random points"


LOOPS = {
    "cat4": lambda: cat_loops([12288, 20, 7, 5, 1]),
    "cat2": lambda: cat_loops([12288, 7, 1]),
    "circles": circles_loop,
    "moons": moons_loop,
}


def _median_times(runs, repeats, pause, budget=0.2):
    """Median ms per call of each run, interleaved; `runs` maps name -> zero-argument callable."""
    inner = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        run()
        inner[name] = max(1, int(budget / max(time.perf_counter() - t0, 1e-6)))
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            time.sleep(pause)
            run()  # wakes this library's BLAS threads
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                run()
            times[name].append((time.perf_counter() - t0) / inner[name] * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def shapes_table(shapes, repeats, pause):
    print(f"{'shape':<9} {'textbook':>10} {'course':>10} {'course/np':>10}  course speed-up (ms/iteration)")
    for shape in shapes:
        dims, m = benchmark.SHAPES[shape]
        X, Y, W0, b0 = benchmark.make_problem(dims, m, "float64")
        textbook = peers.make_implementation("textbook", dims, X, Y, W0, b0)
        runs = {"textbook": textbook.step}
        for backend in ("compiled", "numpy"):
            params = {f"{p}{l + 1}": a.copy() for l in range(len(W0)) for p, a in (("W", W0[l]), ("b", b0[l]))}
            runs[backend] = (lambda p=params, bk=backend: course_iteration(X, Y, p, bk))
        costs = {name: run() for name, run in runs.items()}
        assert np.allclose(list(costs.values()), costs["textbook"], rtol=1e-9), costs
        med = _median_times(runs, repeats, pause)
        print(f"{shape:<9} {med['textbook']:10.4f} {med['compiled']:10.4f} {med['numpy']:10.4f}  "
              f"{med['textbook'] / med['compiled']:.2f}x")


def loops_table(loops, repeats, pause):
    print(f"\n{'loop':<9} {'textbook':>10} {'compiled':>10} {'numpy':>10}  {'speed-up':>8} {'np/tb':>6}  data")
    for name in loops:
        start, runs, source = LOOPS[name]()
        states = {impl: start() for impl in runs}
        # Same start, same numbers: each implementation's first costs agree.
        firsts = {impl: [run(states[impl]) for _ in range(2)] for impl, run in runs.items()}
        for impl, costs in firsts.items():
            assert np.allclose(costs, firsts["textbook"], rtol=1e-9), (name, firsts)
        med = _median_times({impl: (lambda r=run, s=states[impl]: r(s)) for impl, run in runs.items()},
                            repeats, pause)
        print(f"{name:<9} {med['textbook']:10.4f} {med['compiled']:10.4f} {med['numpy']:10.4f}  "
              f"{med['textbook'] / med['compiled']:7.2f}x {med['textbook'] / med['numpy']:5.2f}x  {source}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="cat,tabular,mnistish,mb64", help="'' for none")
    parser.add_argument("--loops", default=",".join(LOOPS), help="'' for none")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between timed batches")
    args = parser.parse_args(argv)
    if args.shapes:
        shapes_table(args.shapes.split(","), args.repeats, args.pause)
    if args.loops:
        loops_table(args.loops.split(","), args.repeats, args.pause)


if __name__ == "__main__":
    main()
