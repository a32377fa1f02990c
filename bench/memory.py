"""Memory probes of the benchmark: peak extra memory of a few training steps.

``rss``
    In a fresh interpreter per implementation, the data and parameters are
    built (JAX's step compiled ahead of time), the kernel's peak resident-set
    counter is reset (``/proc/self/clear_refs``), three steps run, and the peak
    minus the resident size before them is reported (Linux only; page-granular,
    so a few KiB of noise).
``tracemalloc``
    For the NumPy-based implementations, the traced peak of the same three
    steps (NumPy reports its buffers to tracemalloc).
``buffers``
    The bytes dnnblocks holds between steps, counted from its workspaces.

Import it from a script in this folder (``import memory``).
"""

import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from dnnblocks import benchmark

import peers

#: Max ratio of the compiled backend's peak extra memory to the NumPy backend's.
MEMORY_TARGET = 0.5
#: Implementations whose allocations tracemalloc sees (NumPy arrays).
TRACED = ("compiled", "numpy", "textbook")


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def held_buffer_bytes(impl):
    """Bytes a dnnblocks implementation keeps between steps (its workspaces), else None.

    The workspaces are not public: counting them is a measurement of the
    Network's internals, which is what this number is about.
    """
    net = getattr(impl, "net", None)
    if net is None:
        return None
    total = 0
    for ws in net._workspaces.values():
        if ws.fused is not None:
            total += ws.fused.nbytes
        for name in ("_Z", "_A", "_D"):
            arrays = getattr(ws, name)
            total += sum(a.nbytes for a in arrays) if arrays is not None else 0
    return total


def rss_probe(name, layer_dims, m, dtype, steps=3):
    """Peak resident memory (bytes) of `steps` training steps beyond data and parameters.

    Meant to run in a fresh process (see :func:`measure_rss`).
    """
    X, Y, W0, b0 = benchmark.make_problem(layer_dims, m, dtype)
    impl = peers.make_implementation(name, layer_dims, X, Y, W0, b0)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM) to the current size
    base = _rss_kib("VmRSS")
    for _ in range(steps):
        impl.step()
    return (_rss_kib("VmHWM") - base) * 1024


def measure_rss(name, layer_dims, m, dtype, threads):
    """Run :func:`rss_probe` in a fresh interpreter; None when unsupported or failed."""
    if not sys.platform.startswith("linux"):
        return None
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r})\n"
        "import memory, peers; from dnnblocks import benchmark\n"
        f"ctx = benchmark.limit_threads({threads!r}); ctx.__enter__(); peers.limit_torch_threads({threads!r})\n"
        f"print(json.dumps(memory.rss_probe({name!r}, {tuple(layer_dims)!r}, {m!r}, {dtype!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure_tracemalloc(name, layer_dims, X, Y, W0, b0, steps=3):
    """Traced peak (bytes) of `steps` steps of a NumPy-based implementation, and its held buffers."""
    impl = peers.make_implementation(name, layer_dims, X, Y, W0, b0)
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(steps):
            impl.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, held_buffer_bytes(impl)


def memory_ratio(compiled, numpy_):
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


def add_memory(results, kind, threads):
    """Measure every row's peak extra memory (`kind`: "rss" or "tracemalloc") into `results`.

    Adds ``peak_extra_bytes`` to every row and, to the compiled rows, the
    ratio to the NumPy backend's and the memory target.
    """
    rows = results["results"]
    for shape, dtype in dict.fromkeys((r["shape"], r["dtype"]) for r in rows):
        group = {r["implementation"]: r for r in rows if r["shape"] == shape and r["dtype"] == dtype}
        any_row = next(iter(group.values()))
        layer_dims, m = tuple(any_row["layer_dims"]), any_row["m"]
        X, Y, W0, b0 = benchmark.make_problem(layer_dims, m, dtype)
        for name, row in group.items():
            entry = {}
            if name in TRACED:
                entry["tracemalloc"], entry["buffers"] = measure_tracemalloc(name, layer_dims, X, Y, W0, b0)
            if kind == "rss" and name != "gemm":
                entry["rss"] = measure_rss(name, layer_dims, m, dtype, threads)
            row["peak_extra_bytes"] = entry
        compiled = group.get("compiled")
        if compiled is not None:
            compiled["memory_vs_numpy"] = memory_ratio(compiled["peak_extra_bytes"],
                                                       group["numpy"]["peak_extra_bytes"])
            if "targets_met" in compiled:
                ratio = compiled["memory_vs_numpy"]
                compiled["target_memory_vs_numpy"] = MEMORY_TARGET
                compiled["targets_met"]["memory_vs_numpy"] = ratio is None or ratio <= MEMORY_TARGET
                compiled["meets_targets"] = all(compiled["targets_met"].values())
    results["settings"]["memory"] = kind
    return results


def memory_cell(row):
    """The table's "peak MiB" cell: the resident-set probe, else tracemalloc."""
    entry = row.get("peak_extra_bytes") or {}
    for key in ("rss", "tracemalloc"):
        if entry.get(key) is not None:
            return f"{entry[key] / 2**20:.2f}"
    return "-"
