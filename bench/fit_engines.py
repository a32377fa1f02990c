"""CPU time of fits by train()'s engines and routes: what the defaults buy.

* ``DNNClassifier(hidden_layer_sizes=(100,), batch_size=200, max_iter=5).fit``
  on a 20,000 x 50 synthetic table (2 classes), with the default
  ``engine="epoch"`` (each epoch in one compiled call) and with the per-step
  loop (``engine="step"``);
* ``Network.fit`` full batch on a wide problem (default 12,288 features x 209
  examples, the course's cat-model shape, layers [n0, 20, 7, 5, 1], 300
  epochs of gradient descent) with ``route="gram"`` (what ``"auto"`` picks
  there) and ``route="plain"``.

CPU time (``time.process_time``, all threads of the process) per fit, the
median and the minimum of ``--repeats`` runs, BLAS threads as dnnblocks'
policy sets them. Weights are checked to agree between the two ways.

    python bench/fit_engines.py [--repeats 5] [--wide-features 12288] [--wide-examples 209]
"""

import argparse
import statistics
import time
import warnings

import numpy as np

import dnnblocks._estimator_base as estimator_base
from dnnblocks import DNNClassifier, Network
from dnnblocks import training


def _cpu(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), min(times), result


def classifier_fit(engine, X, y):
    original = training.train

    def with_engine(*args, **kwargs):
        return original(*args, engine=engine, **kwargs)

    estimator_base.train = with_engine
    try:
        clf = DNNClassifier(hidden_layer_sizes=(100,), batch_size=200, max_iter=5, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return clf.fit(X, y)
    finally:
        estimator_base.train = original


def wide_fit(route, X, Y, epochs):
    net = Network([X.shape[0], 20, 7, 5, 1], seed=1)
    history = net.fit(X, Y, epochs=epochs, learning_rate=0.0075, route=route)
    assert history.route == route
    return net


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wide-features", type=int, default=12288)
    parser.add_argument("--wide-examples", type=int, default=209)
    parser.add_argument("--wide-epochs", type=int, default=300)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 50))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    fits = {}
    for engine in ("step", "epoch"):
        med, low, fits[engine] = _cpu(lambda: classifier_fit(engine, X, y), args.repeats)
        print(f"DNNClassifier 20000x50 (100,) batch 200, 5 epochs, engine={engine!r}: "
              f"median {med:.3f} s, min {low:.3f} s CPU")
    np.testing.assert_array_equal(fits["step"].loss_curve_, fits["epoch"].loss_curve_)

    Xw = rng.standard_normal((args.wide_features, args.wide_examples)) / 10
    Yw = (Xw[0] + Xw[1] > 0).astype(float).reshape(1, -1)
    nets = {}
    for route in ("plain", "gram"):
        med, low, nets[route] = _cpu(lambda: wide_fit(route, Xw, Yw, args.wide_epochs), args.repeats)
        print(f"Network.fit wide {args.wide_features}x{args.wide_examples} [n0, 20, 7, 5, 1] full batch, "
              f"{args.wide_epochs} epochs, route={route!r}: median {med:.3f} s, min {low:.3f} s CPU")
    drift = np.max(np.abs(nets["gram"].W[0] - nets["plain"].W[0])) / np.max(np.abs(nets["plain"].W[0]))
    print(f"W[0] relative difference gram vs plain: {drift:.2e}")


if __name__ == "__main__":
    main()
