#!/usr/bin/env python
"""Time one training step of dnnblocks against NumPy, the textbook code, PyTorch, JAX and the GEMM bound.

    python bench/train_step.py                 # full run: every shape, float64 and float32
    python bench/train_step.py --quick         # fewer repeats, tracemalloc instead of the RSS probe
    python bench/train_step.py --shapes cat,tabular --dtypes float64
    python bench/train_step.py --smoke --out /tmp/b   # tiny shapes: checks that everything runs

The timing loop is :func:`dnnblocks.benchmark.run` (what ``dnnblocks bench``
runs: compiled vs NumPy vs the GEMM bound); this script adds the peers
(bench/peers.py), the memory probes (bench/memory.py) and the chart
(bench/charts.py), and writes the JSON result and, when matplotlib is
installed, a bar chart, in bench/results/ (or --out). For numbers worth
quoting, run it on a quiet machine; on a machine whose OpenBLAS kernel is
pinned by OPENBLAS_CORETYPE, see bench/RESULTS.md.
"""

import importlib.util
import os
import sys
from datetime import datetime
from pathlib import Path

from dnnblocks import benchmark

import charts
import memory
import peers


def speedup_vs_textbook(results):
    """Add each row's speed relative to the textbook code of its shape and dtype."""
    textbook = {(r["shape"], r["dtype"]): r["ms_per_step"] for r in results["results"]
                if r["implementation"] == "textbook"}
    for r in results["results"]:
        base = textbook.get((r["shape"], r["dtype"]))
        r["speedup_vs_textbook"] = None if base is None else base / r["ms_per_step"]
    return results


def _textbook_cell(row):
    value = row.get("speedup_vs_textbook")
    return "-" if value is None else f"{value:.2f}"


#: The columns this script adds to the package's table.
COLUMNS = (("x textb", 8, _textbook_cell), ("peak MiB", 9, memory.memory_cell))


def main(argv=None):
    parser = benchmark.parser(prog="python bench/train_step.py", implementations=peers.IMPLEMENTATIONS)
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder of the JSON result and the chart (default: bench/results)")
    parser.add_argument("--name", default=None, help="file stem (default: train_step-<time>)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    args = parser.parse_args(argv)
    options = benchmark.run_options(args)
    available = peers.available_peers()
    if options["implementations"] is not None:
        unknown = [n for n in options["implementations"] if n not in peers.IMPLEMENTATIONS]
        if unknown:
            parser.error(f"unknown implementation(s) {unknown}; expected some of {peers.IMPLEMENTATIONS}")
        options["implementations"] = [n for n in options["implementations"]
                                      if n in available or n in benchmark.IMPLEMENTATIONS]
    threads = options["threads"]
    if "torch" in available:
        import torch  # noqa: F401  (imported before the thread limits, so that they reach it)

        peers.limit_torch_threads(threads or (os.cpu_count() or 1))

    def log(rows):
        print(rows, flush=True)

    results = benchmark.run(**options, factories=available, log=log)
    speedup_vs_textbook(results)
    if not args.no_memory and not args.smoke:
        memory.add_memory(results, "tracemalloc" if args.quick else "rss",
                          results["threads"]["per_library"])
    print()
    print(benchmark.format_table(results, columns=COLUMNS))
    stem = args.name or "train_step-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    print(f"results written to {benchmark.write_json(results, args.json or out / f'{stem}.json')}")
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no chart")
    else:
        print(f"chart written to {charts.plot(results, out / f'{stem}.png')}")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
