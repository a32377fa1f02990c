#!/usr/bin/env python
"""Wall time of ``dnnblocks train`` (1 epoch) and ``dnnblocks predict`` on a large numeric CSV.

    python bench/csv_speed.py                  # 50,000 rows x 51 columns (about 24 MB)
    python bench/csv_speed.py --rows 10000 --repeats 1

Writes the file once (50 float features with six decimals, and a 0/1 target
column "y"), then times each command as a user runs it: a fresh
``python -m dnnblocks`` process, so the times include the interpreter start
and the imports. Reports, as medians of --repeats runs, the wall time and the
CPU time (user + system, from the children's rusage: on a busy machine the
better estimate of the wall time on a quiet one), and the peak resident memory.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_csv(path, rows, features, seed=0):
    """A numeric CSV: `features` columns x0.. and a 0/1 target y depending on two of them."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.standard_normal(rows) > 0).astype(int)
    header = ",".join([f"x{j}" for j in range(features)] + ["y"])
    table = np.column_stack([X, y])
    fmt = ",".join(["%.6f"] * features + ["%d"])
    np.savetxt(path, table, fmt=fmt, delimiter=",", header=header, comments="")
    return path


def timed(command):
    """(wall seconds, CPU seconds, peak RSS in MiB or None) of one run of `command` in a child.

    The CPU time (user + system, of the child and its threads) is what the
    command costs: on a busy machine the wall time also counts the waits for
    a core, the CPU time much less so.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of the children is the largest child so far: only a new maximum is exact.
    peak = after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else None
    return seconds, cpu, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="write the CSV and the model into this folder and keep them")
    args = parser.parse_args(argv)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="dnnblocks-csv-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = write_csv(folder / "data.csv", args.rows, args.features)
    model = folder / "model.npz"
    print(f"{data}: {args.rows} rows x {args.features + 1} columns, "
          f"{os.path.getsize(data) / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    dnnblocks = [sys.executable, "-m", "dnnblocks"]
    commands = {
        "train": dnnblocks + ["train", str(data), "--target", "y", "--epochs", "1", "--out", str(model),
                              "--quiet"],
        "predict": dnnblocks + ["predict", str(model), str(data), "--out", str(folder / "pred.csv")],
    }
    for name, command in commands.items():
        runs = [timed(command) for _ in range(args.repeats)]
        seconds = [s for s, _, _ in runs]
        cpu = [c for _, c, _ in runs]
        peaks = [p for _, _, p in runs if p is not None]
        print(f"{name:8s} median {statistics.median(seconds):6.2f} s wall, "
              f"{statistics.median(cpu):6.2f} s CPU  (wall: " + ", ".join(f"{s:.2f}" for s in seconds) + ")"
              + (f"  peak RSS {max(peaks):.0f} MiB" if peaks else ""))
    if not args.keep:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
