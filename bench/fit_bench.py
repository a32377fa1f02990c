"""Fit benchmark: DNNClassifier vs MLPClassifier (and PyTorch), idle and under load.

For each data set (scikit-learn's digits and breast cancer, a 50,000 x 50
synthetic table with 2 and 10 classes; 75/25 split) and each seed, the same
training — one hidden layer of 100 relu units, Adam (learning rate 1e-3),
L2 alpha 1e-4, batches of 200, a fixed number of epochs (no early stop),
float64 — is timed as:

* ``DNNClassifier.fit`` as it is today (the per-step loop of ``train``);
* ``train loop``: ``dnnblocks.training.train`` on a Network (the per-step
  loop without the estimator's own work);
* ``epoch runner``: the same training driven by :class:`dnnblocks.epoch.EpochRunner`,
  one compiled call per epoch, as the training loop will call it (its
  weights are checked to equal the train loop's to the bit);
* ``MLPClassifier`` with the same hyper-parameters (when scikit-learn is installed);
* a PyTorch loop (``torch.optim.Adam``, weight decay alpha/m; when torch is installed).

``GEMM-only`` is the time of the matrix products of the fit's steps alone
(``dnnblocks.profiling.gemm_only_step`` for each batch size, times the steps).
Each condition (idle / N busy processes; BLAS threads as dnnblocks' policy
sets them / ``DNNBLOCKS_BLAS_THREADS=1``) runs in a fresh subprocess, the load
processes (``fit_under_load.py``'s helper) around it.

    python bench/fit_bench.py [--seeds 3] [--load 2] [--quick] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_under_load import _with_load  # noqa: E402  (the bench's shared load helper)

HIDDEN = 100
BATCH = 200
LR = 1e-3
ALPHA = 1e-4


def datasets(quick=False):
    """name -> (X_train, y_train, X_test, y_test, epochs), float64 C-ordered rows."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_digits, make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    out = {}
    X, y = load_digits(return_X_y=True)
    out["digits"] = (X / 16.0, y, 10 if quick else 30)
    X, y = load_breast_cancer(return_X_y=True)
    out["breast_cancer"] = (X, y, 10 if quick else 30)
    for k in (2, 10):
        X, y = make_classification(n_samples=50_000, n_features=50, n_informative=20, n_redundant=10,
                                   n_classes=k, random_state=0)
        out[f"table50k_{k}"] = (X, y, 2 if quick else 5)
    split = {}
    for name, (X, y, epochs) in out.items():
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
        scaler = StandardScaler().fit(Xtr)
        Xtr = np.ascontiguousarray(scaler.transform(Xtr))
        Xte = np.ascontiguousarray(scaler.transform(Xte))
        split[name] = (Xtr, ytr, Xte, yte, epochs)
    return split


def _one_hot(y, classes):
    import numpy as np

    if len(classes) == 2:
        return (y == classes[1]).astype(np.float64).reshape(1, -1)
    Y = np.zeros((len(classes), len(y)))
    Y[np.searchsorted(classes, y), np.arange(len(y))] = 1
    return Y


def _network(n_features, classes, rng):
    """The network DNNClassifier builds (Glorot init drawn from the fit's generator)."""
    from dnnblocks import Network

    k = len(classes)
    out, units = ("sigmoid", 1) if k == 2 else ("softmax", k)
    return Network([n_features, HIDDEN, units], init="glorot", seed=rng, output=out)


def _net_accuracy(net, X, y, classes):
    import numpy as np

    Z = net.decision_function(X.T)
    pred = classes[(Z[0] > 0).astype(int)] if len(classes) == 2 else classes[np.argmax(Z, axis=0)]
    return float(np.mean(pred == y))


def fit_estimator(Xtr, ytr, Xte, yte, epochs, seed):
    from dnnblocks import DNNClassifier

    est = DNNClassifier(hidden_layer_sizes=(HIDDEN,), batch_size=BATCH, learning_rate_init=LR, alpha=ALPHA,
                        max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(Xtr, ytr)
    return time.perf_counter() - t0, time.process_time() - c0, est.score(Xte, yte), est.network_


def fit_train_loop(Xtr, ytr, Xte, yte, epochs, seed):
    import numpy as np
    from dnnblocks.training import train

    classes = np.unique(ytr)
    rng = np.random.default_rng(seed)
    net = _network(Xtr.shape[1], classes, rng)
    Y = _one_hot(ytr, classes)
    t0, c0 = time.perf_counter(), time.process_time()
    train(net, Xtr.T, Y, epochs=epochs, batch_size=BATCH, learning_rate=LR, optimizer="adam", l2=ALPHA,
          random_state=rng)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, _net_accuracy(net, Xte, yte, classes), net


def fit_epoch_runner(Xtr, ytr, Xte, yte, epochs, seed):
    """The training loop's epochs through EpochRunner: what train() will do once wired."""
    import numpy as np
    from dnnblocks import backend
    from dnnblocks.epoch import EpochRunner, optimizer_arrays
    from dnnblocks.optimizers import get_optimizer

    classes = np.unique(ytr)
    rng = np.random.default_rng(seed)
    net = _network(Xtr.shape[1], classes, rng)
    Y = _one_hot(ytr, classes)
    t0, c0 = time.perf_counter(), time.process_time()
    X = net._check_X(Xtr.T)  # train() validates X once, so does the driver
    m = X.shape[1]
    opt = get_optimizer("adam")
    kind, state, hyper = optimizer_arrays(opt, net.W, net.b)
    bs = min(BATCH, m)
    runner = EpochRunner(net.W, net.b, net.hidden_activation, net.output, bs, optimizer=kind, state=state,
                         l2=ALPHA, **hyper)
    idx = np.arange(m, dtype=np.int64)
    with backend.limit_blas_threads(backend.blas_threads_policy(net.layer_dims, bs)):
        for _ in range(epochs):
            rng.shuffle(idx)
            result = runner.run_epoch(X, Y, idx, LR, t=opt.t, rng=rng)
            result.raise_if_diverged(LR)
            opt.t = result.t
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, _net_accuracy(net, Xte, yte, classes), net


def fit_mlp(Xtr, ytr, Xte, yte, epochs, seed):
    import warnings

    from sklearn.neural_network import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=(HIDDEN,), batch_size=BATCH, learning_rate_init=LR, alpha=ALPHA,
                        max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        est.fit(Xtr, ytr)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, est.score(Xte, yte)


def fit_torch(Xtr, ytr, Xte, yte, epochs, seed):
    import numpy as np
    import torch

    torch.manual_seed(seed)
    classes = np.unique(ytr)
    k = len(classes)
    X = torch.from_numpy(Xtr)
    Xt = torch.from_numpy(Xte)
    labels = np.searchsorted(classes, ytr)
    if k == 2:
        y = torch.from_numpy(labels.astype(np.float64)).reshape(-1, 1)
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        y = torch.from_numpy(labels.astype(np.int64))
        loss_fn = torch.nn.CrossEntropyLoss()
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 1 if k == 2 else k)).double()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=ALPHA / BATCH)
    m = X.shape[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(m)
        for start in range(0, m, BATCH):
            ids = perm[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[ids]), y[ids])
            loss.backward()
            opt.step()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        out = model(Xt).numpy()
    pred = classes[(out[:, 0] > 0).astype(int)] if k == 2 else classes[np.argmax(out, axis=1)]
    return seconds, cpu, float(np.mean(pred == yte))


def gemm_only_fit(Xtr, ytr, epochs):
    """Seconds (wall, CPU) of the fit's matrix products alone: every step's GEMMs, per batch size."""
    import numpy as np
    from dnnblocks import backend
    from dnnblocks.profiling import gemm_only_step

    k = len(np.unique(ytr))
    dims = [Xtr.shape[1], HIDDEN, 1 if k == 2 else k]
    m = Xtr.shape[0]
    sizes = [BATCH] * (m // BATCH) + ([m % BATCH] if m % BATCH else [])
    total = total_cpu = 0.0
    with backend.limit_blas_threads(backend.blas_threads_policy(dims, min(BATCH, m))):
        for size in sorted(set(sizes)):
            X = np.ascontiguousarray(Xtr[:size]).T  # F-ordered, as the network reads it
            run = gemm_only_step(dims, size, np.float64, X)
            for _ in range(20):
                run()
            reps = max(50, int(2e7 // (size * HIDDEN * dims[0] + 1)))
            walls, cpus = [], []
            for _ in range(5):
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(reps):
                    run()
                walls.append((time.perf_counter() - t0) / reps)
                cpus.append((time.process_time() - c0) / reps)
            total += statistics.median(walls) * sizes.count(size)
            total_cpu += statistics.median(cpus) * sizes.count(size)
    return total * epochs, total_cpu * epochs


def measure(seeds, quick):
    """All implementations on all data sets, seeds interleaved; run in a fresh process per condition."""
    import numpy as np

    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("the fit benchmark needs scikit-learn (for the data sets and MLPClassifier)")
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = None
    data = datasets(quick)
    impls = {"DNNClassifier.fit": fit_estimator, "train loop": fit_train_loop,
             "epoch runner": fit_epoch_runner, "MLPClassifier": fit_mlp}
    if torch is not None:
        impls["PyTorch loop"] = fit_torch
    # Warm up imports, pools and the compiled modules on a small fit of each.
    Xtr, ytr, Xte, yte, _ = data["breast_cancer"]
    for fn in impls.values():
        fn(Xtr, ytr, Xte, yte, 2, 0)
    results = {}
    for name, (Xtr, ytr, Xte, yte, epochs) in data.items():
        entry = {"epochs": epochs, "n_train": int(Xtr.shape[0]), "seconds": {}, "cpu_seconds": {}, "accuracy": {},
                 "bit_identical": True}
        for seed in range(seeds):
            order = list(impls.items())
            if seed % 2:
                order.reverse()
            nets = {}
            for impl, fn in order:
                out = fn(Xtr, ytr, Xte, yte, epochs, seed)
                entry["seconds"].setdefault(impl, []).append(out[0])
                entry["cpu_seconds"].setdefault(impl, []).append(out[1])
                entry["accuracy"].setdefault(impl, []).append(out[2])
                if len(out) > 3:
                    nets[impl] = out[3]
            # The runner trains what DNNClassifier.fit trains (same init, shuffles, steps).
            for ref in ("DNNClassifier.fit", "train loop"):
                a, b = nets[ref], nets["epoch runner"]
                entry["bit_identical"] &= all(np.array_equal(x, y) for x, y in zip(a.W + a.b, b.W + b.b))
        entry["gemm_only"], entry["gemm_only_cpu"] = gemm_only_fit(Xtr, ytr, epochs)
        entry["loadavg"] = os.getloadavg()
        results[name] = entry
        print(f"  {name} done", file=sys.stderr, flush=True)
    return {"results": results, "torch": torch_version}


def _condition(load, threads, seeds, quick, load_count):
    env = dict(os.environ)
    env.pop("DNNBLOCKS_BLAS_THREADS", None)
    if threads is not None:
        env["DNNBLOCKS_BLAS_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", "--seeds", str(seeds)] + (["--quick"] if quick else [])

    def run():
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=3600)
        if out.returncode:
            raise SystemExit(f"benchmark child failed ({' '.join(cmd)})")
        return json.loads(out.stdout.strip().splitlines()[-1])

    if load:
        return _with_load(load_count, 3000, run)
    return run()


def _median(values):
    return statistics.median(values)


def report(conditions, load_count):
    """Markdown tables of the conditions' medians (over seeds)."""
    lines = []
    idle = conditions["idle|policy"]["results"]
    impls = list(next(iter(idle.values()))["seconds"])
    for cond in ("idle|policy", "load|policy"):
        if cond not in conditions:
            continue
        res = conditions[cond]["results"]
        label = "idle" if cond.startswith("idle") else f"under load ({load_count} busy processes)"
        lines.append(f"Fit time (s, median over seeds) and test accuracy (mean), {label}:")
        lines.append("")
        lines.append("| data | epochs | " + " | ".join(impls) + " | GEMM-only | fit / GEMM | runner / GEMM "
                     "| fit / GEMM (CPU) | runner / GEMM (CPU) | MLP / fit | MLP / runner |")
        lines.append("|---|---|" + "---|" * (len(impls) + 7))
        for name, e in res.items():
            sec = {k: _median(v) for k, v in e["seconds"].items()}
            acc = {k: statistics.mean(v) for k, v in e["accuracy"].items()}
            cells = [f"{sec[k]:.3f} ({acc[k]:.4f})" for k in impls]
            fit, run, gemm = sec["DNNClassifier.fit"], sec["epoch runner"], e["gemm_only"]
            mlp = sec.get("MLPClassifier", float("nan"))
            cpu = {k: _median(v) for k, v in e["cpu_seconds"].items()}
            gcpu = e["gemm_only_cpu"]
            lines.append(f"| {name} | {e['epochs']} | " + " | ".join(cells)
                         + f" | {gemm:.3f} | {fit / gemm:.2f} | {run / gemm:.2f} "
                         f"| {cpu['DNNClassifier.fit'] / gcpu:.2f} | {cpu['epoch runner'] / gcpu:.2f} "
                         f"| {mlp / fit:.2f} | {mlp / run:.2f} |")
        lines.append("")
        if "PyTorch loop" in impls:
            lines.append(f"Per epoch (ms), {label}: epoch runner vs PyTorch loop")
            lines.append("")
            lines.append("| data | epoch runner | train loop | PyTorch | PyTorch / runner |")
            lines.append("|---|---|---|---|---|")
            for name, e in res.items():
                r = _median(e["seconds"]["epoch runner"]) / e["epochs"] * 1e3
                t = _median(e["seconds"]["train loop"]) / e["epochs"] * 1e3
                p = _median(e["seconds"]["PyTorch loop"]) / e["epochs"] * 1e3
                lines.append(f"| {name} | {r:.2f} | {t:.2f} | {p:.2f} | {p / r:.2f} |")
            lines.append("")
    lines.append("Default BLAS threads (dnnblocks' policy) / DNNBLOCKS_BLAS_THREADS=1 (median fit times):")
    lines.append("")
    lines.append("| data | fit idle | runner idle | fit load | runner load |")
    lines.append("|---|---|---|---|---|")
    for name in idle:
        cells = []
        for load in ("idle", "load"):
            a, b = conditions.get(f"{load}|policy"), conditions.get(f"{load}|one")
            for impl in ("DNNClassifier.fit", "epoch runner"):
                if a is None or b is None:
                    cells.append("n/a")
                    continue
                ra = _median(a["results"][name]["seconds"][impl])
                rb = _median(b["results"][name]["seconds"][impl])
                cells.append(f"{ra / rb:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    identical = all(e["bit_identical"] for c in conditions.values() for e in c["results"].values())
    lines.append("")
    lines.append(f"Epoch runner weights equal to DNNClassifier.fit's and the train loop's to the bit: {identical}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--load", type=int, default=2, help="busy background processes")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    parser.add_argument("--no-load", action="store_true", help="only the idle conditions")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.seeds, args.quick)))
        return
    conditions = {}
    for load in ((0,) if args.no_load else (0, args.load)):
        for threads, tag in ((None, "policy"), (1, "one")):
            key = f"{'load' if load else 'idle'}|{tag}"
            conditions[key] = _condition(load, threads, args.seeds, args.quick, args.load)
            print(f"done: {key}", file=sys.stderr, flush=True)
            if args.json:  # as each condition completes, so that a cut-short run keeps them
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump({"conditions": conditions, "load": args.load, "cores": os.cpu_count()}, f, indent=1)
    text = report(conditions, args.load)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"conditions": conditions, "load": args.load, "cores": os.cpu_count()}, f, indent=1)


if __name__ == "__main__":
    main()
