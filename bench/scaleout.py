"""Scale-out benchmark: the same data-parallel fit on 1 and on 2 Dask workers.

    python bench/scaleout.py                 # 40,000 x 256, hidden (512, 512), float64
    python bench/scaleout.py --quick         # a small shape, seconds (a smoke run)

For each cluster size a fresh ``LocalCluster`` (worker processes, one thread
and one BLAS thread each) generates the same seeded data *on the workers*
(``dask.array.random``, persisted, never on the driver), then
``DNNClassifier(solver="sgd", batch_size=None)`` trains on it. One step is
one full-batch gradient step over all rows. Reported per cluster size:

- the median step time (the first step, which builds the workers' networks
  and buffers, is left out), and the speed-up of 2 workers over 1;
- the bytes per step the algorithm moves (parameters broadcast to every
  worker, one parameter-sized gradient sum back from every worker), and the
  bytes the loopback interface actually carried per step (everything:
  payloads, scheduler messages, heartbeats; Linux only, via psutil);
- for reference, one in-memory step in this process with one BLAS thread
  (``Network.step``), i.e. the cost of the same arithmetic without Dask.

Writes bench/scaleout.json and prints a Markdown table (pasted into
bench/SCALEOUT.md). Needs ``pip install "dnnblocks[dask]" threadpoolctl``.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({p["num_threads"] for p in threadpool_info()})


def _make_data(m, n, chunk):
    """Seeded data built on the workers: features, and labels from a fixed random rule."""
    import dask.array as da

    rs = da.random.default_rng(12345)
    X = rs.standard_normal((m, n), chunks=(chunk, n))
    w = np.random.default_rng(7).standard_normal(n) / np.sqrt(n)
    y = ((X @ w) + 0.3 * da.sin(3 * X[:, 0]) > 0).astype(np.int64)
    return X, y


def _loopback_bytes():
    try:
        import psutil

        lo = psutil.net_io_counters(pernic=True).get("lo")
        return None if lo is None else lo.bytes_sent
    except ImportError:
        return None


def run_cluster(n_workers, args):
    import dask
    from distributed import Client, LocalCluster, wait

    import dnnblocks

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, env=ONE_THREAD) as cluster, Client(cluster) as client:
        threads = client.run(_blas_threads)
        X, y = _make_data(args.rows, args.features, args.chunk)
        X, y = dask.persist(X, y)
        wait([X, y])
        marks = []

        def on_step(n):
            marks.append((time.perf_counter(), _loopback_bytes()))

        est = dnnblocks.DNNClassifier(hidden_layer_sizes=tuple(args.hidden), solver="sgd",
                                      batch_size=None, learning_rate_init=0.05,
                                      max_iter=args.steps + 1, tol=0.0, random_state=0)
        from dnnblocks import dask_support

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the step budget
            dask_support.fit(est, X, y, client=client, step_callback=on_step)
        wall = time.perf_counter() - start
        times = np.diff([t for t, _ in marks])  # steps 2..N+1
        nets = [b for _, b in marks]
        lo_per_step = None
        if None not in nets:
            lo_per_step = (nets[-1] - nets[0]) / (len(nets) - 1)
        stats = est.dask_stats_
        return {
            "workers": n_workers,
            "blas_threads_per_worker": threads,
            "median_step_s": float(np.median(times)),
            "min_step_s": float(np.min(times)),
            "steps_timed": int(len(times)),
            "fit_wall_s": wall,
            "parameter_bytes": stats["parameter_bytes"],
            "payload_bytes_per_step": stats["broadcast_bytes_per_step"] + stats["gathered_bytes_per_step"],
            "loopback_bytes_per_step": lo_per_step,
            "shards": stats["n_shards"],
            "blocks": stats["n_blocks"],
            "final_cost": est.loss_curve_[-1],
            "coefs": [c.copy() for c in est.coefs_],
        }


def in_memory_step(args):
    """One full-batch Network.step on the same shape, this process, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    import dnnblocks

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.features))
    Y = (X[:, 0] > 0).astype(np.float64).reshape(1, -1)
    net = dnnblocks.Network([args.features, *args.hidden, 1], seed=0)
    times = []
    with threadpool_limits(1):
        for _ in range(args.steps + 1):
            t = time.perf_counter()
            net.step(X.T, Y, learning_rate=0.01)
            times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--chunk", type=int, default=5_000, help="rows per dask block")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up step)")
    parser.add_argument("--quick", action="store_true", help="a small shape, for a smoke run")
    parser.add_argument("--json", default=str(Path(__file__).with_name("scaleout.json")))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.hidden, args.chunk, args.steps = 4_000, 32, [64, 64], 500, 3

    print(f"shape: {args.rows} x {args.features}, hidden {tuple(args.hidden)}, float64, full batch, "
          f"blocks of {args.chunk} rows; {os.cpu_count()} CPUs", flush=True)
    reference = in_memory_step(args)
    print(f"in-memory Network.step, 1 BLAS thread: {reference:.3f} s", flush=True)
    runs = []
    for n in (1, 2):
        r = run_cluster(n, args)
        runs.append(r)
        print(f"{n} worker(s): median step {r['median_step_s']:.3f} s, payload "
              f"{r['payload_bytes_per_step'] / 1e6:.2f} MB/step, BLAS threads {r['blas_threads_per_worker']}",
              flush=True)
    one, two = runs
    speedup = one["median_step_s"] / two["median_step_s"]
    agree = max(float(np.max(np.abs(a - b))) for a, b in zip(one["coefs"], two["coefs"]))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "shape": {"rows": args.rows, "features": args.features, "hidden": args.hidden,
                  "chunk": args.chunk, "dtype": "float64"},
        "in_memory_step_s": reference,
        "runs": [{k: v for k, v in r.items() if k != "coefs"} for r in runs],
        "speedup_2_over_1": speedup,
        "max_abs_coef_diff_1_vs_2_workers": agree,
    }
    Path(args.json).write_text(json.dumps(result, indent=2))

    mb = 1e6
    print()
    print("| workers | median step (s) | speed-up | vs in-memory step | payload / step | "
          "loopback / step | parameters |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        lo = "n/a" if r["loopback_bytes_per_step"] is None else f"{r['loopback_bytes_per_step'] / mb:.2f} MB"
        print(f"| {r['workers']} | {r['median_step_s']:.3f} | "
              f"{one['median_step_s'] / r['median_step_s']:.2f}x | "
              f"{r['median_step_s'] / reference:.2f} | {r['payload_bytes_per_step'] / mb:.2f} MB | {lo} | "
              f"{r['parameter_bytes'] / mb:.2f} MB |")
    print(f"\nin-memory step (1 BLAS thread): {reference:.3f} s; speed-up of 2 workers over 1: "
          f"{speedup:.2f}x; 1- and 2-worker models differ by at most {agree:.1e}")
    return result


if __name__ == "__main__":
    main()
