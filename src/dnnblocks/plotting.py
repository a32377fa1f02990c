"""Learning-curve plots. Needs matplotlib (``pip install "dnnblocks[plot]"``).

matplotlib is imported only when a plot is made, so ``import dnnblocks``
never needs it.
"""

__all__ = ["MatplotlibMissingError", "plot_learning_curve", "require_matplotlib"]


class MatplotlibMissingError(ImportError):
    """matplotlib is not installed; plotting needs it."""


def require_matplotlib():
    """Import matplotlib or raise :class:`MatplotlibMissingError` with the install command.

    Callers use this to fail before a long computation rather than after it.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise MatplotlibMissingError(
            'plotting needs matplotlib, which is not installed: pip install "dnnblocks[plot]"'
        ) from exc


def plot_learning_curve(path, train_cost, validation_cost=None, title=None,
                        validation_label="validation"):
    """Write the cost per epoch as an image file (PNG, or any format matplotlib knows from the suffix).

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its suffix picks the format (``.png``, ``.svg``, ``.pdf``...).
    train_cost : sequence of float
        Cost on the training data after each epoch.
    validation_cost : sequence of float, optional
        Cost on held-out data after each epoch, same length as `train_cost`.
    title : str, optional
    validation_label : str, default "validation"
        Legend entry of the held-out curve.

    Raises
    ------
    MatplotlibMissingError
        If matplotlib is not installed.
    ValueError
        If the curves are empty or differ in length.
    """
    require_matplotlib()
    # The object-oriented API with the Agg canvas: no pyplot global state, no
    # dependence on a display or on the user's configured backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train_cost = list(train_cost)
    if not train_cost:
        raise ValueError("train_cost is empty; nothing to plot")
    if validation_cost is not None:
        validation_cost = list(validation_cost)
        if len(validation_cost) != len(train_cost):
            raise ValueError(
                f"validation_cost has {len(validation_cost)} values but train_cost has {len(train_cost)}"
            )
    epochs = range(1, len(train_cost) + 1)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, train_cost, label="train", color="tab:blue")
    if validation_cost is not None:
        ax.plot(epochs, validation_cost, label=validation_label, color="tab:orange")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost (cross-entropy)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100)
