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
import contextlib
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


class _Cluster:
    """A LocalCluster of `n_workers` single-threaded workers holding the benchmark data."""

    def __init__(self, n_workers, args, stack):
        import logging

        from distributed import Client, LocalCluster, futures_of, wait

        self.n_workers, self.args = n_workers, args
        cluster = stack.enter_context(LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
            env=ONE_THREAD, silence_logs=logging.CRITICAL))
        self.client = stack.enter_context(Client(cluster, set_as_default=False,
                                                 direct_to_workers=args.direct))
        self.blas_threads = sorted({t for v in self.client.run(_blas_threads).values() for t in v})
        X, y = _make_data(args.rows, args.features, args.chunk)
        self.X, self.y = self.client.persist([X, y])
        with self.client.as_current():
            wait(futures_of([self.X, self.y]))
        self.step_times, self.loopback, self.stats, self.coefs, self.final_cost = [], [], None, None, None
        self.compute, self.cpu = [], []

    def fit(self):
        import dnnblocks
        from dnnblocks import dask_support

        marks = []

        def on_step(n):
            marks.append((time.perf_counter(), _loopback_bytes()))

        args = self.args
        est = dnnblocks.DNNClassifier(hidden_layer_sizes=tuple(args.hidden), solver="sgd",
                                      batch_size=None, learning_rate_init=0.05,
                                      max_iter=args.steps + 1, tol=0.0, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the step budget
            dask_support.fit(est, self.X, self.y, client=self.client, step_callback=on_step)
        # Step 1 builds the workers' networks and buffers: timed from step 2 on.
        self.step_times.extend(np.diff([t for t, _ in marks]).tolist())
        counters = [b for _, b in marks]
        if None not in counters:
            self.loopback.append((counters[-1] - counters[0]) / (len(counters) - 1))
        self.stats, self.final_cost = est.dask_stats_, est.loss_curve_[-1]
        self.compute.append(est.dask_stats_["median_worker_compute_seconds"])
        self.cpu.append(est.dask_stats_["median_worker_cpu_seconds"])
        self.coefs = [c.copy() for c in est.coefs_]

    def summary(self):
        stats = self.stats
        return {
            "workers": self.n_workers,
            "blas_threads_per_worker": self.blas_threads,
            "median_step_s": float(np.median(self.step_times)),
            "min_step_s": float(np.min(self.step_times)),
            "steps_timed": len(self.step_times),
            "worker_compute_s": float(np.median(self.compute)),
            "worker_cpu_s": float(np.median(self.cpu)),
            "rows_per_shard": stats["rows_per_shard"],
            "parameter_bytes": stats["parameter_bytes"],
            "payload_bytes_per_step": stats["broadcast_bytes_per_step"] + stats["gathered_bytes_per_step"],
            "loopback_bytes_per_step": float(np.median(self.loopback)) if self.loopback else None,
            "shards": stats["n_shards"],
            "blocks": stats["n_blocks"],
            "final_cost": self.final_cost,
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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved fits per cluster size")
    parser.add_argument("--direct", action="store_true",
                        help="Client(direct_to_workers=True): parameters and gradients skip the scheduler")
    parser.add_argument("--quick", action="store_true", help="a small shape, for a smoke run")
    parser.add_argument("--json", default=str(Path(__file__).with_name("scaleout.json")))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.hidden, args.chunk, args.steps = 4_000, 32, [64, 64], 500, 3
        args.rounds = 1

    print(f"shape: {args.rows} x {args.features}, hidden {tuple(args.hidden)}, float64, full batch, "
          f"blocks of {args.chunk} rows; {os.cpu_count()} CPUs", flush=True)
    reference = in_memory_step(args)
    print(f"in-memory Network.step, 1 BLAS thread: {reference:.3f} s", flush=True)
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        clusters = [_Cluster(n, args, stack) for n in (1, 2)]
        # Interleaved rounds, so that load from elsewhere hits both sizes alike.
        for r in range(args.rounds):
            for c in clusters:
                c.fit()
                print(f"round {r + 1}: {c.n_workers} worker(s), median step so far "
                      f"{np.median(c.step_times):.3f} s", flush=True)
        runs = [c.summary() for c in clusters]
        agree = max(float(np.max(np.abs(a - b))) for a, b in zip(clusters[0].coefs, clusters[1].coefs))
    load_after = os.getloadavg()
    one, two = runs
    speedup = one["median_step_s"] / two["median_step_s"]
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "shape": {"rows": args.rows, "features": args.features, "hidden": args.hidden,
                  "chunk": args.chunk, "dtype": "float64"},
        "in_memory_step_s": reference,
        "load_average_before_after": [list(load_before), list(load_after)],
        "runs": runs,
        "speedup_2_over_1": speedup,
        "max_abs_coef_diff_1_vs_2_workers": agree,
    }
    Path(args.json).write_text(json.dumps(result, indent=2))

    mb = 1e6
    print()
    print("| workers | median step (s) | min step (s) | speed-up (median) | worker compute (s) | "
          "worker CPU (s) | vs in-memory step | payload / step | loopback / step | parameters |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        lo = "n/a" if r["loopback_bytes_per_step"] is None else f"{r['loopback_bytes_per_step'] / mb:.2f} MB"
        print(f"| {r['workers']} | {r['median_step_s']:.3f} | {r['min_step_s']:.3f} | "
              f"{one['median_step_s'] / r['median_step_s']:.2f}x | {r['worker_compute_s']:.3f} | "
              f"{r['worker_cpu_s']:.3f} | "
              f"{r['median_step_s'] / reference:.2f} | {r['payload_bytes_per_step'] / mb:.2f} MB | {lo} | "
              f"{r['parameter_bytes'] / mb:.2f} MB |")
    print(f"\nin-memory step (1 BLAS thread): {reference:.3f} s; speed-up of 2 workers over 1: "
          f"{speedup:.2f}x (median), {one['min_step_s'] / two['min_step_s']:.2f}x (min); "
          f"1- and 2-worker models differ by at most {agree:.1e}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    return result


if __name__ == "__main__":
    main()
