"""Charts of the benchmark's results (needs matplotlib).

Import it from a script in this folder (``import charts``).
"""

import numpy as np

import peers


def plot(results, path):
    """Bar chart of ms/step relative to the GEMM bound; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    impls = [i for i in peers.IMPLEMENTATIONS if any(r["implementation"] == i for r in rows) and i != "gemm"]
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
