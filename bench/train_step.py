#!/usr/bin/env python
"""Time one training step of dnnblocks against NumPy, PyTorch, JAX and the GEMM bound.

    python bench/train_step.py                 # full run: every shape, float64 and float32
    python bench/train_step.py --quick         # fewer repeats, no subprocess memory probe
    python bench/train_step.py --shapes cat,tabular --dtypes float64

The engine is :mod:`dnnblocks.benchmark` (installed with the package; see its
docstring for the method). This script adds the files: the JSON result and,
when matplotlib is installed, a bar chart, in bench/results/ (or --out).
For numbers worth quoting, run it on a quiet machine; on a machine whose
OpenBLAS kernel is pinned by OPENBLAS_CORETYPE, see bench/RESULTS.md.
"""

import argparse
import sys
from datetime import datetime
from pathlib import Path

from dnnblocks import benchmark


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--name", default=None, help="file stem (default: train_step-<time>)")
    own, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        print("Options of the engine (plus --out DIR and --name STEM):")
        return benchmark.main(["--help"])
    stem = own.name or "train_step-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(own.out)
    rest += ["--json", str(out / f"{stem}.json"), "--plot", str(out / f"{stem}.png")]
    benchmark.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
