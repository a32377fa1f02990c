"""The deep-learning course's cat / non-cat L-layer model, with dnnblocks.

Reproduces the application assignment of the course's week 4: a
[12288, 20, 7, 5, 1] network (relu hidden layers, sigmoid output), learning
rate 0.0075, 2500 iterations of full-batch gradient descent, the course's
seeded initialisation (``np.random.seed(1)``, ``randn / sqrt(n[l-1])``),
through :func:`dnnblocks.course.L_layer_model`. It runs once on each
backend, printing the cost every 100 iterations, the train and test
accuracy, and how long each backend took.

Usage::

    python examples/cat_vs_noncat.py [PATH/catvnoncat.npz] [--iterations N]

The data file is not part of dnnblocks. ``catvnoncat.npz`` holds the
course's two HDF5 files (``train_catvnoncat.h5``, ``test_catvnoncat.h5``)
as arrays ``train_x`` (209, 64, 64, 3) uint8, ``train_y`` (209,),
``test_x`` (50, 64, 64, 3), ``test_y`` (50,) and ``classes``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dnnblocks import course

LAYERS = [12288, 20, 7, 5, 1]
LEARNING_RATE = 0.0075

# Beside the repository: <repo>/../shared/data/catvnoncat.npz
DEFAULT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catvnoncat.npz"

MISSING = """\
cat_vs_noncat.py: data file not found: {path}
The cat / non-cat images are the deep-learning course's (week 4, "Deep Neural
Network - Application"); they are not shipped with dnnblocks. Convert the
course's train_catvnoncat.h5 and test_catvnoncat.h5 once (needs h5py):

    import h5py, numpy as np
    tr, te = h5py.File("train_catvnoncat.h5"), h5py.File("test_catvnoncat.h5")
    np.savez_compressed("catvnoncat.npz",
        train_x=tr["train_set_x"][:], train_y=tr["train_set_y"][:],
        test_x=te["test_set_x"][:], test_y=te["test_set_y"][:], classes=te["list_classes"][:])

then run:  python examples/cat_vs_noncat.py path/to/catvnoncat.npz"""


def load(path):
    """Flatten and scale the images as the course does: X (12288, m) in [0, 1], Y (1, m)."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    out = {}
    for part in ("train", "test"):
        x = data[part + "_x"]
        out[part] = (x.reshape(x.shape[0], -1).T / 255.0, data[part + "_y"].reshape(1, -1))
    return out


def accuracy(X, Y, parameters, backend):
    AL, _ = course.L_model_forward(X, parameters, backend=backend)
    return float(np.mean((AL > 0.5) == Y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH, type=Path,
                        help=f"catvnoncat.npz (default: {DEFAULT_PATH})")
    parser.add_argument("--iterations", type=int, default=2500,
                        help="gradient-descent iterations (the course uses 2500)")
    parser.add_argument("--backends", default="compiled,numpy",
                        help="comma-separated backends to run, in order")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1; got {args.iterations}")
    if not args.path.is_file():
        print(MISSING.format(path=args.path), file=sys.stderr)
        return 1

    data = load(args.path)
    (X, Y), (X_test, Y_test) = data["train"], data["test"]
    print(f"train: {X.shape[1]} images, test: {X_test.shape[1]} images, "
          f"each {X.shape[0]} values; layers {LAYERS}")
    times, final = {}, {}
    for backend in args.backends.split(","):
        print(f"\n--- backend: {backend}")
        start = time.perf_counter()
        parameters, costs = course.L_layer_model(
            X, Y, LAYERS, learning_rate=LEARNING_RATE, num_iterations=args.iterations,
            print_cost=True, backend=backend,
        )
        times[backend] = time.perf_counter() - start
        final[backend] = costs[-1]
        print(f"train accuracy: {accuracy(X, Y, parameters, backend):.4f}")
        print(f"test accuracy:  {accuracy(X_test, Y_test, parameters, backend):.4f}")
        print(f"time: {times[backend]:.2f} s for {args.iterations} iterations")

    print("\n--- time per backend")
    for backend, seconds in times.items():
        print(f"{backend:>10}: {seconds:7.2f} s")
    if len(times) > 1:
        names = list(times)
        base = names[-1]
        for name in names[:-1]:
            print(f"{name} is {times[base] / times[name]:.1f}x the speed of {base}; "
                  f"last recorded cost differs by {abs(final[name] - final[base]):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
