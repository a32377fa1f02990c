"""Saving and loading models: :func:`load` builds the model a file holds.

The file format itself (layout, atomic writing, every check of a crafted
file) is :mod:`dnnblocks.model_file`; this module turns its records into
objects and back: a :class:`~dnnblocks.Network` through its constructor and
public weight lists, a :class:`~dnnblocks.DNNClassifier` through its own
payload reader, chosen by the file's ``kind``.
"""

import os

import numpy as np

from .exceptions import ModelFileError
from .model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    check_network_arrays,
    network_record,
    optimizer_from_record,
    read_model,
    restore_rng,
    with_path,
    write_model,
)
from .network import Network

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "load_as", "network_from_payload", "network_payload",
           "read_model", "save_network", "write_model"]

#: The name DNNClassifier._from_payload imports today (it predates model_file).
_restore_rng = restore_rng


def network_payload(net, optimizer=None):
    """Metadata and arrays describing `net` (and an optimizer's state)."""
    return network_record(layer_dims=net.layer_dims, hidden_activation=net.hidden_activation,
                          output=net.output, dtype=net.dtype, init=net.init, backend=net.backend,
                          W=net.W, b=net.b, rng=getattr(net, "_rng", None), optimizer=optimizer)


def network_from_payload(meta, arrays):
    """Rebuild ``(network, optimizer or None)`` from :func:`network_payload`'s output."""
    spec = meta["network"]
    # Checked before the Network is built: a corrupted architecture must not
    # allocate (or initialise) a huge network.
    check_network_arrays(meta, arrays)
    net = Network(spec["layer_dims"], hidden_activation=spec["hidden_activation"],
                  dtype=spec["dtype"], backend=spec.get("backend", "compiled"),
                  init=spec.get("init", "he"), output=spec.get("output", "sigmoid"), seed=0)
    for l in range(net.n_layers):
        np.copyto(net.W[l], arrays[f"W{l}"])
        np.copyto(net.b[l], arrays[f"b{l}"])
    rng = restore_rng(meta.get("rng_state"))
    if rng is not None:
        net._rng = rng
    return net, optimizer_from_record(meta, arrays, net.W, net.b)


def save_network(net, path, extra=None, optimizer=None):
    """Save a :class:`~dnnblocks.Network` (and optionally an optimizer's state) to `path`."""
    meta, arrays = network_payload(net, optimizer)
    return write_model(path, "Network", meta, arrays, extra)


def load(path, with_extra=False):
    """Load a model saved by :meth:`DNNClassifier.save` or :meth:`Network.save`.

    Parameters
    ----------
    path : str or os.PathLike
    with_extra : bool, default False
        Also return the ``extra`` dict saved with the model.

    Returns
    -------
    model : DNNClassifier or Network
        Predicts bit for bit what the saved model predicted, and can continue
        training (the optimizer state and random generator are restored).
    extra : dict
        Only with ``with_extra=True``: str -> ndarray or JSON value.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    dnnblocks.exceptions.ModelFileError
        A ValueError: the file is not a dnnblocks model, is truncated or
        corrupted, or was written by a newer format version.
    """
    return load_as(path, None, with_extra=with_extra)


def load_as(path, classifier_class, with_extra=False):
    """:func:`load`, building a ``"DNNClassifier"`` file as `classifier_class`.

    The command line passes the estimator class that does not import
    scikit-learn; :func:`load` passes None, for :class:`dnnblocks.DNNClassifier`.

    Parameters
    ----------
    path : str or os.PathLike
    classifier_class : type or None
        Has the class method ``_from_payload(meta, arrays)`` and the method
        ``_check_params()`` of DNNClassifier. None: DNNClassifier.
    with_extra : bool, default False
    """
    meta, arrays, extra = read_model(path)
    kind = meta.get("kind")
    try:
        if kind == "Network":
            model, _ = network_from_payload(meta, arrays)
        elif kind == "DNNClassifier":
            if classifier_class is None:
                # Imported here, not at the top: the estimator module imports
                # scikit-learn (an optional dependency), which importing
                # dnnblocks and loading a Network must not pay for.
                from .estimator import DNNClassifier as classifier_class
            model = classifier_class._from_payload(meta, arrays)
            model._check_params()  # the hyper-parameters, as fit would check them
        else:
            raise ModelFileError(f"{os.fspath(path)} holds an unknown kind of model {kind!r}")
    except ModelFileError as exc:
        raise with_path(exc, path) from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError,
            RecursionError) as exc:
        raise ModelFileError(f"{os.fspath(path)} has inconsistent metadata ({exc!r})") from None
    return (model, extra) if with_extra else model
