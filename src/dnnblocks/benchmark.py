"""The speed benchmark: one training step of dnnblocks against NumPy and peers.

Every implementation does the same work on the same data from the same
initial parameters: one full gradient-descent step (forward, cost, backward,
update) of an L-layer relu network with a sigmoid output and the binary
cross-entropy cost. They are

``compiled``
    dnnblocks' compiled backend (``Network.step``).
``numpy``
    dnnblocks' NumPy backend: vectorised NumPy, the baseline of the speed-ups.
    Written as a NumPy programmer who keeps buffers between steps would
    (``out=`` products into the cached Z, A and dA/dZ, in-place updates).
``textbook``
    The course assignment's NumPy code as a learner writes it: every step
    makes fresh arrays (Z, A, the caches, dA of every layer including the
    first, dW, the new W), the cost from ``log(AL)`` and the backward pass from
    ``dAL = -(Y/AL - (1-Y)/(1-AL))``. What a learner switching to
    ``dnnblocks.course`` starts from.
``torch``
    PyTorch on the CPU, autograd and ``torch.optim.SGD`` (when importable).
``jax``
    JAX, the whole step under ``jax.jit`` (when importable).
``gemm``
    The GEMM-only lower bound: just the matrix products of a step (W A per
    layer, dZ A^T per layer, W^T dZ for every layer but the first) through
    ``numpy.dot`` into preallocated outputs.

How it measures (see :func:`run`)
---------------------------------
* Interleaved: each repeat times every implementation once, in an order that
  rotates from repeat to repeat, so a slow phase of the machine hits all of
  them alike. Each timing is a batch of consecutive steps (about 50 ms) after
  ``warmup`` untimed steps; the result is the median over the repeats, in ms
  per step.
* Threads: NumPy and SciPy each load their own OpenBLAS; both are limited to
  the same number of threads (default: every core), and so are PyTorch
  (``torch.set_num_threads``) and JAX (XLA's CPU client uses every core).
  A pause between implementations lets the previous library's BLAS threads
  stop spinning. ``threadpoolctl``'s view of the loaded libraries is saved.
* Agreement: before timing, every implementation does three steps from the
  same start and its costs must match the NumPy backend's (rtol 1e-9 in
  float64, 1e-4 in float32), or the run fails.
* Memory: the peak memory a training run needs beyond its data and
  parameters. ``rss``: in a fresh subprocess per implementation, the data and
  parameters are built (JAX's step compiled ahead of time), the kernel's peak
  resident-set counter is reset (``/proc/self/clear_refs``), three steps run,
  and the peak minus the resident size before them is reported (Linux only;
  page-granular, so a few KiB of noise). ``tracemalloc``: for the NumPy-based
  implementations, the traced peak of the same three steps (NumPy reports its
  buffers to tracemalloc), and ``buffers``: the bytes dnnblocks holds
  between steps, counted from its arrays.
"""

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: name -> (layer sizes, batch size m)
SHAPES = {
    "cat": ((12288, 20, 7, 5, 1), 209),
    "tabular": ((30, 16, 8, 1), 455),
    "mnistish": ((784, 256, 128, 1), 1024),
    "mb64": ((784, 256, 128, 1), 64),
    "large": ((1024, 1024, 1024, 1), 4096),
}

#: Tiny shapes of the smoke mode (runs in the test suite).
SMOKE_SHAPES = {
    "tiny": ((6, 5, 3, 1), 17),
    "tiny_mb": ((9, 4, 1), 5),
}

#: The targets of the compiled backend: (max ratio to the GEMM bound, min speed-up over NumPy).
#: A third one holds for every shape: peak extra memory at most :data:`MEMORY_TARGET` of the
#: NumPy backend's.
TARGETS = {
    "cat": (1.15, 1.6),
    "tabular": (1.0, 5.0),
    "mnistish": (1.05, 1.5),
    "mb64": (1.15, 1.8),
    "large": (1.03, 1.2),
}

#: Max ratio of the compiled backend's peak extra memory to the NumPy backend's.
MEMORY_TARGET = 0.5

#: Every implementation the benchmark knows, in table order.
IMPLEMENTATIONS = ("compiled", "numpy", "textbook", "torch", "jax", "gemm")

LEARNING_RATE = 0.01
_CHECK_STEPS = 3
_RTOL = {"float64": 1e-9, "float32": 1e-4}


# ---------------------------------------------------------------- problems
def make_problem(layer_dims, m, dtype, seed=0):
    """Data and initial parameters shared by every implementation.

    Returns X (n0, m) C-ordered, Y (1, m) labels, and lists W0, b0 (He
    initialisation, small random biases), all of `dtype`.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((layer_dims[0], m)).astype(dtype)
    Y = (rng.random((layer_dims[-1], m)) < 0.5).astype(dtype)
    W0, b0 = [], []
    for l in range(len(layer_dims) - 1):
        n, k = layer_dims[l + 1], layer_dims[l]
        W0.append((rng.standard_normal((n, k)) * math.sqrt(2.0 / k)).astype(dtype))
        b0.append((0.01 * rng.standard_normal((n, 1))).astype(dtype))
    return X, Y, W0, b0


def available_implementations():
    """The implementations that can run here (peers only when importable)."""
    found = []
    for name in IMPLEMENTATIONS:
        module = {"torch": "torch", "jax": "jax"}.get(name)
        if module is None or importlib.util.find_spec(module) is not None:
            found.append(name)
    return tuple(found)


class _Dnnblocks:
    def __init__(self, backend, dims, X, Y, W0, b0, lr):
        from .network import Network

        self.net = Network(dims, dtype=X.dtype, backend=backend, seed=0)
        for dst, src in zip(self.net.W + self.net.b, W0 + b0):
            np.copyto(dst, src)
        self.X, self.Y, self.lr = X, Y, lr

    def step(self):
        return self.net.step(self.X, self.Y, self.lr)

    def buffer_bytes(self):
        total = 0
        for ws in self.net._workspaces.values():
            if ws.fused is not None:
                total += ws.fused.nbytes
            for name in ("_Z", "_A", "_D"):
                arrays = getattr(ws, name)
                total += sum(a.nbytes for a in arrays) if arrays is not None else 0
        return total


class _Gemm:
    def __init__(self, dims, X, Y, W0, b0, lr):
        from .profiling import gemm_only_step

        self.run = gemm_only_step(dims, X.shape[1], X.dtype, X)

    def step(self):
        self.run()
        return float("nan")


class _Textbook:
    """The course's forward/backward/update functions, inlined (see the module docstring)."""

    def __init__(self, dims, X, Y, W0, b0, lr):
        self.W, self.b, self.X, self.Y, self.lr = list(W0), list(b0), X, Y, lr

    def step(self):
        W, b, X, Y, lr = self.W, self.b, self.X, self.Y, self.lr
        m, L = X.shape[1], len(W)
        caches, A = [], X
        for l in range(L):  # L_model_forward
            Z = np.dot(W[l], A) + b[l]
            caches.append((A, W[l], b[l], Z))
            A = 1 / (1 + np.exp(-Z)) if l == L - 1 else np.maximum(0, Z)
        AL = A
        cost = float(np.squeeze(-np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m))
        dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))  # L_model_backward
        grads = {}
        for l in range(L - 1, -1, -1):
            A_prev, W_l, b_l, Z = caches[l]
            if l == L - 1:  # sigmoid_backward
                s = 1 / (1 + np.exp(-Z))
                dZ = dA * s * (1 - s)
            else:  # relu_backward
                dZ = np.array(dA, copy=True)
                dZ[Z <= 0] = 0
            grads[l] = (np.dot(dZ, A_prev.T) / m, np.sum(dZ, axis=1, keepdims=True) / m)
            dA = np.dot(W_l.T, dZ)
        for l in range(L):  # update_parameters
            W[l] = W[l] - lr * grads[l][0]
            b[l] = b[l] - lr * grads[l][1]
        return cost


class _Torch:
    def __init__(self, dims, X, Y, W0, b0, lr):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.W = [torch.tensor(w, requires_grad=True) for w in W0]
        self.b = [torch.tensor(b, requires_grad=True) for b in b0]
        self.X = torch.from_numpy(X)
        self.Y = torch.from_numpy(Y)
        self.m = X.shape[1]
        self.opt = torch.optim.SGD(self.W + self.b, lr=lr)

    def step(self):
        W, b = self.W, self.b
        self.opt.zero_grad(set_to_none=False)
        A = self.X
        for l in range(len(W) - 1):
            A = self.torch.relu(W[l] @ A + b[l])
        Z = W[-1] @ A + b[-1]
        loss = self.F.binary_cross_entropy_with_logits(Z, self.Y, reduction="sum") / self.m
        loss.backward()
        self.opt.step()
        return float(loss.item())


class _Jax:
    def __init__(self, dims, X, Y, W0, b0, lr):
        import jax

        if X.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        m = X.shape[1]
        L = len(W0)

        def loss_fn(params, X, Y):
            A = X
            for l in range(L - 1):
                A = jax.nn.relu(params[2 * l] @ A + params[2 * l + 1])
            Z = params[2 * L - 2] @ A + params[2 * L - 1]
            return jnp.sum(jax.nn.softplus(Z) - Y * Z) / m

        grad_fn = jax.value_and_grad(loss_fn)

        def step(params, X, Y):
            cost, grads = grad_fn(params, X, Y)
            return tuple(p - lr * g for p, g in zip(params, grads)), cost

        params = []
        for w, bias in zip(W0, b0):
            params += [jnp.asarray(w), jnp.asarray(bias)]
        self.params = tuple(params)
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)
        # Compiled ahead of time, so that no step pays for (or measures) XLA's compiler.
        self._step = jax.jit(step, donate_argnums=0).lower(self.params, self.X, self.Y).compile()

    def step(self):
        self.params, cost = self._step(self.params, self.X, self.Y)
        return float(cost)


def make_implementation(name, layer_dims, X, Y, W0, b0, lr=LEARNING_RATE):
    """An object whose ``step()`` runs one training step and returns its cost."""
    W0 = [w.copy() for w in W0]
    b0 = [b.copy() for b in b0]
    if name in ("compiled", "numpy"):
        return _Dnnblocks(name, layer_dims, X, Y, W0, b0, lr)
    if name == "gemm":
        return _Gemm(layer_dims, X, Y, W0, b0, lr)
    if name == "textbook":
        return _Textbook(layer_dims, X, Y, W0, b0, lr)
    if name == "torch":
        return _Torch(layer_dims, X, Y, W0, b0, lr)
    if name == "jax":
        return _Jax(layer_dims, X, Y, W0, b0, lr)
    raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")


# ------------------------------------------------------------------ memory
def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _memory_probe(name, shape, dtype, layer_dims=None, m=None, steps=3):
    """Peak resident memory (bytes) of `steps` training steps beyond data and parameters.

    Meant to run in a fresh process (see :func:`measure_memory_rss`).
    """
    if layer_dims is None:
        layer_dims, m = (SHAPES | SMOKE_SHAPES)[shape]
    X, Y, W0, b0 = make_problem(layer_dims, m, dtype)
    impl = make_implementation(name, layer_dims, X, Y, W0, b0)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM) to the current size
    base = _rss_kib("VmRSS")
    for _ in range(steps):
        impl.step()
    return (_rss_kib("VmHWM") - base) * 1024


def measure_memory_rss(name, shape, dtype, layer_dims, m, threads):
    """Run :func:`_memory_probe` in a fresh interpreter; None when unsupported."""
    if not sys.platform.startswith("linux"):
        return None
    code = (
        "import json, sys; from dnnblocks.benchmark import _memory_probe, _limit_threads\n"
        f"_limit_threads({threads!r}, {name!r})\n"
        f"print(json.dumps(_memory_probe({name!r}, {shape!r}, {dtype!r}, {tuple(layer_dims)!r}, {m!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure_memory_tracemalloc(name, layer_dims, X, Y, W0, b0, steps=3):
    """Traced peak (bytes) of `steps` steps of a NumPy-based implementation, and its held buffers."""
    impl = make_implementation(name, layer_dims, X, Y, W0, b0)
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(steps):
            impl.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = impl.buffer_bytes() if hasattr(impl, "buffer_bytes") else None
    return peak - base, held


# ----------------------------------------------------------------- threads
def _limit_threads(threads, name=None):
    """Limit every BLAS/OpenMP pool (and PyTorch's) to `threads`; returns a context."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is in the bench extra
        threadpool_limits = None
    if threadpool_limits is not None:
        import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS so it is limited too)

        stack.enter_context(threadpool_limits(limits=threads))
    if name in (None, "torch") and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return stack


def thread_info():
    """What threadpoolctl sees (one entry per BLAS/OpenMP library loaded)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [
        {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                               "threading_layer", "num_threads")}
        | {"library": os.path.basename(d.get("filepath", ""))}
        for d in threadpool_info()
    ]


def machine_info():
    """Processor, cores, memory, versions: what a result was measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    for module in ("scipy", "dnnblocks", "torch", "jax"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    from .backend import SIMD_LEVEL

    info["dnnblocks_simd"] = SIMD_LEVEL
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "XLA_"))}
    with contextlib.suppress(OSError):
        info["loadavg"] = os.getloadavg()
    return info


# ---------------------------------------------------------------- the run
def _time_batch(impl, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        impl.step()
    return (time.perf_counter() - t0) / inner


def run(shapes=None, dtypes=("float64", "float32"), implementations=None, repeats=7, warmup=3,
        quick=False, smoke=False, threads=None, memory=None, batch_seconds=None, pause=None,
        log=None):
    """Time one training step of every implementation on every shape.

    Parameters
    ----------
    shapes : sequence of str or dict, optional
        Names from :data:`SHAPES` (default: all of them; in smoke mode
        :data:`SMOKE_SHAPES`), or a dict ``name -> (layer_dims, m)``.
    dtypes : sequence of {"float64", "float32"}
    implementations : sequence of str, optional
        Default: every one of :data:`IMPLEMENTATIONS` that is importable.
    repeats : int, default 7
        Timed batches per implementation (the median is reported).
    warmup : int, default 3
        Untimed steps before the first timed batch.
    quick : bool
        Fewer repeats, shorter batches, no subprocess memory probe (the
        ``dnnblocks bench`` setting).
    smoke : bool
        Tiny shapes, one repeat, no pauses: checks only that everything runs
        and agrees (the test suite's setting; its timings mean nothing).
    threads : int, optional
        Threads for every library; default ``os.cpu_count()``.
    memory : {"rss", "tracemalloc", None}, optional
        Default "rss" (plus tracemalloc) for a full run, "tracemalloc" for
        quick, None for smoke.
    batch_seconds, pause : float, optional
        Length of one timed batch, and the pause between implementations.
    log : callable, optional
        Receives progress lines (e.g. ``print``).

    Returns
    -------
    dict
        ``{"machine", "threads", "settings", "results"}``; ``results`` is a
        list with one dict per (shape, dtype, implementation).

    Raises
    ------
    RuntimeError
        If an implementation's costs disagree with the NumPy backend's.
    """
    if smoke:
        quick = True
    if shapes is None:
        shapes = SMOKE_SHAPES if smoke else SHAPES
    if not isinstance(shapes, dict):
        unknown = [s for s in shapes if s not in SHAPES and s not in SMOKE_SHAPES]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; expected names from {list(SHAPES)}")
        shapes = {s: (SHAPES | SMOKE_SHAPES)[s] for s in shapes}
    for dt in dtypes:
        if dt not in ("float64", "float32"):
            raise ValueError(f"dtypes must be 'float64' and/or 'float32'; got {dt!r}")
    available = available_implementations()
    if implementations is None:
        implementations = available
    else:
        implementations = tuple(implementations)
        for name in implementations:
            if name not in IMPLEMENTATIONS:
                raise ValueError(f"unknown implementation {name!r}; expected some of {IMPLEMENTATIONS}")
        implementations = tuple(n for n in implementations if n in available)
    if "numpy" not in implementations:
        implementations = ("numpy",) + implementations  # the baseline of the speed-ups
    if smoke:
        repeats, warmup = 1, 1
    elif quick:
        repeats, warmup = min(repeats, 3), min(warmup, 2)
    threads = (os.cpu_count() or 1) if threads is None else int(threads)
    if memory is None and not smoke:
        memory = "tracemalloc" if quick else "rss"
    batch_seconds = (0.0 if smoke else 0.02 if quick else 0.05) if batch_seconds is None else batch_seconds
    pause = (0.0 if smoke else 0.05 if quick else 0.15) if pause is None else pause
    say = log or (lambda line: None)

    if "torch" in implementations:
        import torch  # noqa: F401  (imported before the limits so they reach it)
    results = []
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_before is not None and load_before[0] > 0.5 and not smoke:
        say(f"warning: the machine is busy (load average {load_before[0]:.1f} on "
            f"{os.cpu_count()} cores); timings of multithreaded BLAS degrade badly under load")
    with _limit_threads(threads):
        threads_seen = thread_info()
        for shape, (layer_dims, m) in shapes.items():
            layer_dims = tuple(int(n) for n in layer_dims)
            for dtype in dtypes:
                X, Y, W0, b0 = make_problem(layer_dims, m, dtype)
                impls = {name: make_implementation(name, layer_dims, X, Y, W0, b0)
                         for name in implementations}
                costs = {name: [impl.step() for _ in range(_CHECK_STEPS)] for name, impl in impls.items()}
                reference = costs["numpy"]
                for name, seq in costs.items():
                    if name == "gemm":
                        continue
                    if not np.allclose(seq, reference, rtol=_RTOL[dtype], atol=0):
                        raise RuntimeError(
                            f"{name} disagrees with the NumPy backend on {shape} ({dtype}): "
                            f"costs {seq} vs {reference}"
                        )
                inner = {}
                for name, impl in impls.items():
                    for _ in range(warmup):
                        impl.step()
                    t = _time_batch(impl, 1)
                    inner[name] = max(1, int(batch_seconds / max(t, 1e-7)))
                times = {name: [] for name in impls}
                order = list(impls)
                for r in range(repeats):
                    for name in order[r % len(order):] + order[:r % len(order)]:
                        if pause:
                            time.sleep(pause)
                        impls[name].step()  # wakes this library's threads
                        times[name].append(_time_batch(impls[name], inner[name]))
                med = {name: float(np.median(ts)) for name, ts in times.items()}
                mem = {}
                if memory:
                    for name in impls:
                        entry = {}
                        if name in ("compiled", "numpy", "textbook"):
                            traced, held = measure_memory_tracemalloc(name, layer_dims, X, Y, W0, b0)
                            entry["tracemalloc"] = traced
                            entry["buffers"] = held
                        if memory == "rss" and name != "gemm":
                            entry["rss"] = measure_memory_rss(name, shape, dtype, layer_dims, m, threads)
                        mem[name] = entry
                for name in impls:
                    row = {
                        "shape": shape, "layer_dims": list(layer_dims), "m": m, "dtype": dtype,
                        "implementation": name,
                        "ms_per_step": med[name] * 1e3,
                        "ms_all": [t * 1e3 for t in times[name]],
                        "steps_per_batch": inner[name],
                        "speedup_vs_numpy": med["numpy"] / med[name],
                        "speedup_vs_textbook": (med["textbook"] / med[name]
                                                if "textbook" in med else None),
                        "ratio_to_gemm": med[name] / med["gemm"] if "gemm" in med else None,
                        "costs": costs[name] if name != "gemm" else None,
                        "peak_extra_bytes": mem.get(name, {}),
                    }
                    if name == "compiled":
                        row["memory_vs_numpy"] = _memory_ratio(mem.get("compiled"), mem.get("numpy"))
                    if name == "compiled" and shape in TARGETS:
                        max_ratio, min_speedup = TARGETS[shape]
                        row["target_ratio_to_gemm"] = max_ratio
                        row["target_speedup"] = min_speedup
                        row["target_memory_vs_numpy"] = MEMORY_TARGET
                        checks = {
                            "ratio_to_gemm": row["ratio_to_gemm"] is None or row["ratio_to_gemm"] <= max_ratio,
                            "speedup_vs_numpy": row["speedup_vs_numpy"] >= min_speedup,
                            "memory_vs_numpy": (row["memory_vs_numpy"] is None
                                                or row["memory_vs_numpy"] <= MEMORY_TARGET),
                        }
                        row["targets_met"] = checks
                        row["meets_targets"] = all(checks.values())
                    results.append(row)
                say(format_table([r for r in results if r["shape"] == shape and r["dtype"] == dtype],
                                 header=False))
                del impls
                gc.collect()
    return {
        "machine": machine_info(),
        "threads": {"per_library": threads, "threadpoolctl": threads_seen},
        "settings": {"repeats": repeats, "warmup": warmup, "quick": quick, "smoke": smoke,
                     "memory": memory, "batch_seconds": batch_seconds, "pause": pause,
                     "learning_rate": LEARNING_RATE, "implementations": list(implementations),
                     "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
                     "loadavg_before": load_before,
                     "seconds": round(time.time() - started, 1)},
        "results": results,
    }


def _memory_ratio(compiled, numpy_):
    """Compiled over NumPy peak extra memory, from the tracemalloc probe.

    tracemalloc counts what each implementation allocates (both keep their
    buffers in NumPy arrays), to the byte. The resident-set probe also counts
    the pages OpenBLAS touches for its own packing buffers (about 1 MiB, the
    same for both, but NumPy and SciPy each load their own OpenBLAS) and
    rounds to pages, which swamps the comparison for small networks; it is
    reported beside, in the table's "peak MiB".
    """
    try:
        return compiled["tracemalloc"] / numpy_["tracemalloc"]
    except (TypeError, KeyError, ZeroDivisionError):
        return None


def _memory_cell(entry):
    for key in ("rss", "tracemalloc"):
        if entry.get(key) is not None:
            return f"{entry[key] / 2**20:9.2f}"
    return f"{'-':>9}"


def format_table(results, header=True):
    """The results as a text table (one line per shape, dtype and implementation).

    Parameters
    ----------
    results : dict or list
        What :func:`run` returns, or its ``"results"`` list.
    header : bool, default True

    Returns
    -------
    str
    """
    rows = results["results"] if isinstance(results, dict) else results
    lines = []
    if header:
        lines.append(f"{'shape':<9} {'dtype':<8} {'impl':<9} {'ms/step':>10} {'x numpy':>8} "
                     f"{'x textb':>8} {'/ GEMM':>7} {'peak MiB':>9}  target")
        lines.append("-" * 83)
    for r in rows:
        ratio = f"{r['ratio_to_gemm']:7.3f}" if r.get("ratio_to_gemm") is not None else f"{'-':>7}"
        vs_textbook = r.get("speedup_vs_textbook")
        vs_textbook = f"{vs_textbook:8.2f}" if vs_textbook is not None else f"{'-':>8}"
        target = ""
        if "meets_targets" in r:
            met = {k: "ok" if v else "NO" for k, v in r["targets_met"].items()}
            mem = r.get("memory_vs_numpy")
            mem = "?" if mem is None else f"{mem:.2f}"
            target = (f"{'met' if r['meets_targets'] else 'MISSED'}: "
                      f"/GEMM<={r['target_ratio_to_gemm']} {met['ratio_to_gemm']}, "
                      f"x numpy>={r['target_speedup']} {met['speedup_vs_numpy']}, "
                      f"mem {mem}<={r['target_memory_vs_numpy']} {met['memory_vs_numpy']}")
        lines.append(f"{r['shape']:<9} {r['dtype']:<8} {r['implementation']:<9} "
                     f"{r['ms_per_step']:10.4f} {r['speedup_vs_numpy']:8.2f} {vs_textbook} {ratio} "
                     f"{_memory_cell(r.get('peak_extra_bytes') or {})}  {target}".rstrip())
    return "\n".join(lines)


def plot(results, path):
    """Bar chart of ms/step relative to the GEMM bound (needs matplotlib); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    impls = [i for i in IMPLEMENTATIONS if any(r["implementation"] == i for r in rows) and i != "gemm"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4), squeeze=False)
    width = 0.8 / max(len(impls), 1)
    for ax, dtype in zip(axes[0], dtypes):
        for i, impl in enumerate(impls):
            vals = []
            for shape in shapes:
                match = [r for r in rows if r["dtype"] == dtype and r["shape"] == shape
                         and r["implementation"] == impl]
                vals.append(match[0]["ratio_to_gemm"] if match and match[0]["ratio_to_gemm"] else 0)
            ax.bar(np.arange(len(shapes)) + i * width, vals, width, label=impl)
        ax.axhline(1.0, color="k", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(shapes)) + width * (len(impls) - 1) / 2, shapes)
        ax.set_ylabel("time per step / GEMM-only bound (lower is better)")
        ax.set_title(f"one training step, {dtype}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    """Command line: ``python -m dnnblocks.benchmark [--quick] [--shapes cat,tabular] ...``."""
    parser = argparse.ArgumentParser(prog="dnnblocks-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", help=f"comma-separated, from {','.join(SHAPES)}")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--implementations", help=f"comma-separated, from {','.join(IMPLEMENTATIONS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--plot", help="write a bar chart to this PNG file (needs matplotlib)")
    args = parser.parse_args(argv)
    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    results = run(shapes=split(args.shapes), dtypes=tuple(split(args.dtypes)),
                  implementations=split(args.implementations), repeats=args.repeats,
                  warmup=args.warmup, quick=args.quick, smoke=args.smoke, threads=args.threads,
                  memory=False if args.no_memory else None, log=print)
    print()
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"results written to {args.json}")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not installed: no chart")
        else:
            print(f"chart written to {plot(results, args.plot)}")
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
