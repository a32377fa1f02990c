"""Saving and loading models: :func:`load` builds the model a file holds.

The file format itself (layout, atomic writing, every check of a crafted
file) is :mod:`dnnblocks.model_file`; this module turns its records into
objects and back: a :class:`~dnnblocks.Network` through its constructor and
public weight lists, a :class:`~dnnblocks.DNNClassifier` through its own
payload reader, chosen by the file's ``kind``.
"""

import os

from . import onnx_export
from .exceptions import ModelFileError
from .model_file import FORMAT_NAME, FORMAT_VERSION, read_model, with_path, write_model
from .network import network_from_record, network_record_of

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "load_as", "network_from_payload", "network_payload",
           "read_model", "save_network", "write_model", "export_model_file"]

#: Older names of the network record functions, which live with Network now.
network_payload = network_record_of
network_from_payload = network_from_record


def save_network(net, path, extra=None, optimizer=None):
    """Save a :class:`~dnnblocks.Network` (and optionally an optimizer's state) to `path`."""
    meta, arrays = network_record_of(net, optimizer)
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
            model, _ = network_from_record(meta, arrays)
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


def export_model_file(model_path, onnx_path, *, dtype=None, classifier_class=None):
    """Convert a model file (``.npz``) to ONNX, with the standardisation the command line stored.

    What ``dnnblocks export MODEL.npz MODEL.onnx`` does: the file is read with
    :func:`dnnblocks.load`; when its ``extra`` holds ``feature_mean`` and
    ``feature_scale`` (files written by ``dnnblocks train``) the ONNX graph
    standardises its input with them and records ``feature_names``, so it reads
    the raw feature columns in that order.

    Parameters
    ----------
    model_path : str or os.PathLike
    onnx_path : str or os.PathLike
    dtype : {None, numpy.float32, numpy.float64}, default None
    classifier_class : type or None
        As for :func:`load_as` (the command line passes its scikit-learn-free class).

    Returns
    -------
    onnx.ModelProto
    """
    model, extra = load_as(model_path, classifier_class, with_extra=True)
    mean = extra.get("feature_mean") if isinstance(extra, dict) else None
    scale = extra.get("feature_scale") if isinstance(extra, dict) else None
    names = extra.get("feature_names") if isinstance(extra, dict) else None
    return onnx_export.to_onnx(model, onnx_path, dtype=dtype, feature_mean=mean,
                               feature_scale=scale, feature_names=names)
