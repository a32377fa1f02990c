"""Fit time idle and under a background load: the BLAS thread policy at work.

Times ``DNNClassifier.fit`` (20,000 x 50, hidden (100,), batch 200, 5 epochs,
float64) with the thread policy (``DNNBLOCKS_BLAS_THREADS`` unset: "auto"),
with BLAS allowed every core (the behaviour before the policy:
``DNNBLOCKS_BLAS_THREADS=<cores>``, which the policy cannot tell from a
user's choice) and, when installed, scikit-learn's MLPClassifier on the same
data. Each configuration is timed in a fresh subprocess (so each starts with
its own BLAS pools), interleaved over the repeats; the median is reported.

The load is `--load` busy Python processes (default 2, one per core here),
started before and stopped after each timed run, each ending by itself after
`--load-seconds` at most.

    python bench/fit_under_load.py [--repeats 5] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

_FIT = textwrap.dedent(
    """
    import time, warnings, numpy as np
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 50))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    which = {which!r}
    if which == "mlp":
        from sklearn.neural_network import MLPClassifier
        make = lambda: MLPClassifier(hidden_layer_sizes=(100,), batch_size=200, max_iter=5,
                                     random_state=0)
    else:
        import dnnblocks
        make = lambda: dnnblocks.DNNClassifier(hidden_layer_sizes=(100,), batch_size=200,
                                               max_iter=5, random_state=0)
    make().fit(X[:2000], y[:2000])  # warm up imports and pools
    start = time.perf_counter()
    est = make().fit(X, y)
    print(time.perf_counter() - start, est.score(X, y))
    """
)

_BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def _time_fit(which, env_threads):
    env = dict(os.environ)
    env.pop("DNNBLOCKS_BLAS_THREADS", None)
    if env_threads is not None:
        env["DNNBLOCKS_BLAS_THREADS"] = str(env_threads)
    out = subprocess.run([sys.executable, "-c", _FIT.format(which=which)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    seconds, accuracy = out.stdout.split()
    return float(seconds), float(accuracy)


def _with_load(n, seconds, function, *args):
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=seconds)])
            for _ in range(n)]
    try:
        time.sleep(0.2)
        return function(*args)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", type=int, default=2, help="busy background processes")
    parser.add_argument("--load-seconds", type=float, default=120.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    configs = [("dnnblocks policy", "dnnblocks", None),
               (f"dnnblocks {cores} threads", "dnnblocks", cores)]
    try:
        import sklearn  # noqa: F401
        configs.append(("MLPClassifier", "mlp", None))
    except ImportError:
        pass
    times = {(name, load): [] for name, _, _ in configs for load in ("idle", "load")}
    accuracy = {}
    for r in range(args.repeats):
        for load in ("idle", "load"):
            for name, which, threads in (configs if r % 2 == 0 else configs[::-1]):
                if load == "idle":
                    t, acc = _time_fit(which, threads)
                else:
                    t, acc = _with_load(args.load, args.load_seconds, _time_fit, which, threads)
                times[(name, load)].append(t)
                accuracy[name] = acc
    med = {key: statistics.median(v) for key, v in times.items()}
    base = {load: med[("dnnblocks policy", load)] for load in ("idle", "load")}
    print(f"{'configuration':<24} {'idle s':>8} {'load s':>8} {'idle x':>7} {'load x':>7}  train acc")
    for name, _, _ in configs:
        idle, loaded = med[(name, "idle")], med[(name, "load")]
        print(f"{name:<24} {idle:8.3f} {loaded:8.3f} {idle / base['idle']:7.2f} "
              f"{loaded / base['load']:7.2f}  {accuracy[name]:.4f}")
    print(f"(x: time / the policy's time in the same condition; load = {args.load} busy processes, "
          f"{args.repeats} repeats, median)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"median_seconds": {f"{k[0]}|{k[1]}": v for k, v in med.items()},
                       "all_seconds": {f"{k[0]}|{k[1]}": v for k, v in times.items()},
                       "train_accuracy": accuracy, "cores": cores, "load": args.load}, f, indent=1)


if __name__ == "__main__":
    main()
