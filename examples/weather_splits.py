"""How good is ``dnnblocks train`` on the weather task, over many splits?

Repeats what ``dnnblocks train --seed S`` does (the same stratified 80/20
split, standardisation from the training rows, the same network and training
settings) for seeds 0, 1, ..., and reports train and test accuracy per seed
and on average, next to a logistic regression on the same splits when
scikit-learn is installed. This is how the table in README.md was made.

Usage::

    python examples/weather_splits.py [--splits 16]
"""

import argparse
import sys

import numpy as np

from dnnblocks import DNNClassifier
from dnnblocks.cli import DEFAULTS, stratified_split
from dnnblocks.datasets import load_weather


def dnnblocks_default(seed):
    d = DEFAULTS
    return DNNClassifier(hidden_layer_sizes=d["layers"], activation=d["activation"],
                         solver=d["optimizer"], alpha=d["l2"], batch_size=d["batch_size"],
                         learning_rate_init=d["learning_rate"], dropout=d["dropout"],
                         random_state=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=16, help="number of seeds (0, 1, ...)")
    args = parser.parse_args(argv)
    if args.splits < 1:
        parser.error(f"--splits must be at least 1; got {args.splits}")
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        LogisticRegression = None
        print("scikit-learn is not installed: no logistic-regression baseline")

    X, y, _ = load_weather()
    labels = np.where(y == 1, "rain", "dry")
    classes = np.unique(labels)
    scores = {"dnnblocks": [], "logistic regression": []}
    print(f"{'seed':>4}  {'dnnblocks train':>15}  {'test':>6}  {'logreg train':>12}  {'test':>6}")
    for seed in range(args.splits):
        train, test = stratified_split(labels, DEFAULTS["test_fraction"], np.random.default_rng(seed))
        mean, scale = X[train].mean(axis=0), X[train].std(axis=0)
        Xs = (X - mean) / scale
        models = {"dnnblocks": dnnblocks_default(seed)}
        for _ in range(DEFAULTS["epochs"]):
            models["dnnblocks"].partial_fit(Xs[train], labels[train], classes=classes)
        if LogisticRegression is not None:
            models["logistic regression"] = LogisticRegression().fit(Xs[train], labels[train])
        row = f"{seed:>4}"
        for name, model in models.items():
            pair = (model.score(Xs[train], labels[train]), model.score(Xs[test], labels[test]))
            scores[name].append(pair)
            row += f"  {pair[0]:>{15 if name == 'dnnblocks' else 12}.4f}  {pair[1]:>6.4f}"
        print(row)
    print()
    for name, pairs in scores.items():
        if pairs:
            a = np.array(pairs)
            print(f"{name}: train {a[:, 0].mean():.3f}, test {a[:, 1].mean():.3f} "
                  f"+- {a[:, 1].std():.3f} (mean and standard deviation over {len(a)} splits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
