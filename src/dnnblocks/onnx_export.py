"""Export a trained model to ONNX, for runtimes other than Python (onnxruntime, ...).

The exported graph takes examples as rows, ``X`` of shape (N, n_features), and
computes what :meth:`DNNClassifier.predict_proba` (or, for a bare
:class:`~dnnblocks.Network`, ``predict_proba(X.T).T``) computes: per layer one
``MatMul`` with the transposed weights, an ``Add`` of the bias and the
activation (``Relu``, ``Tanh``, ``Sigmoid``), then the output layer's
``Sigmoid`` or ``Softmax``. A standardisation ``(X - mean) / scale`` (the one
``dnnblocks train`` stores in the model file) can be put in front, so the ONNX
model reads raw feature values as the command line's ``predict`` does.

Outputs: ``probabilities`` (N, n_classes), columns in the order of ``classes_``
(two columns for a binary classifier, as scikit-learn has them); for a
classifier also ``label`` (N,), the class of the largest probability.

Needs the optional packages ``onnx`` (to build the graph; ``pip install
"dnnblocks[onnx]"`` also brings ``onnxruntime`` to run it). They are imported
only when a model is exported.

Layer 4 (a view over the model): it reads a Network's parameters and, for a
classifier, only its public ``network_`` and ``classes_``, so that
``DNNClassifier.to_onnx`` (layer 5) and ``dnnblocks export`` (layer 6) can
both call it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._version import __version__
from .network import Network

if TYPE_CHECKING:  # for annotations only: onnx is an optional package
    import onnx

__all__ = ["OPSET", "require_onnx", "to_onnx"]

#: The ONNX operator set the graphs use: opset 17 (onnx 1.12, onnxruntime 1.12 and later).
OPSET: int = 17
# The IR version that goes with opset 17: newer runtimes read it, older ones are not refused.
_IR_VERSION = 8

_HIDDEN_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": None}


def require_onnx():
    """The onnx module; an ImportError naming the extra when it is not installed."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('ONNX export needs the onnx package: pip install "dnnblocks[onnx]"') from exc
    return onnx


def _network_and_classes(model):
    """The fitted Network behind `model`, and the classifier's classes (None for a Network)."""
    if isinstance(model, Network):
        return model, None
    network = getattr(model, "network_", None)  # a fitted DNNClassifier
    if isinstance(network, Network) and hasattr(model, "classes_"):
        return network, np.asarray(model.classes_)
    if hasattr(model, "classes_") or hasattr(model, "hidden_layer_sizes"):
        raise ValueError("model must be fitted before it is exported to ONNX")
    raise TypeError(f"model must be a fitted DNNClassifier or a Network; got {type(model).__name__}")


def _check_dtype(dtype: DTypeLike | None, network: Network) -> np.dtype[Any]:
    if dtype is None:
        return np.dtype(network.dtype)
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32, float64 or None; got {dtype!r}") from None
    if chosen not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32, float64 or None; got {chosen}")
    return chosen


def _check_standardisation(feature_mean, feature_scale, n_features):
    if feature_mean is None and feature_scale is None:
        return None
    if feature_mean is None or feature_scale is None:
        raise ValueError("feature_mean and feature_scale go together: give both or neither")
    out = []
    for name, value in (("feature_mean", feature_mean), ("feature_scale", feature_scale)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu" or arr.shape != (n_features,):
            raise ValueError(f"{name} must be {n_features} numbers (one per input feature); "
                             f"got an array of shape {arr.shape} and dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        out.append(arr)
    if np.any(out[1] == 0):
        raise ValueError("feature_scale must not contain 0")
    return out


def to_onnx(model: Any, path: str | os.PathLike[str] | None = None, *,
            dtype: DTypeLike | None = None, feature_mean: ArrayLike | None = None,
            feature_scale: ArrayLike | None = None,
            feature_names: Sequence[str] | None = None) -> onnx.ModelProto:
    """Write `model` as an ONNX graph (examples as rows) and return the ``onnx.ModelProto``.

    Parameters
    ----------
    model : DNNClassifier or Network
        A fitted classifier, or a Network (its ``predict_proba`` transposed:
        rows in, rows out).
    path : str or os.PathLike, optional
        Where to write the ``.onnx`` file; None writes nothing (the model is
        still returned).
    dtype : {None, numpy.float32, numpy.float64}, default None
        The graph's floating-point type (input, parameters, outputs). None
        keeps the model's own dtype.
    feature_mean, feature_scale : array-like of shape (n_features,), optional
        A standardisation ``(X - feature_mean) / feature_scale`` put in front
        of the network, as ``dnnblocks train`` stores it in the model file's
        ``extra`` (``feature_mean``, ``feature_scale``). Give both or neither.
    feature_names : sequence of str, optional
        Recorded in the model's metadata (``feature_names``, comma-separated)
        so that a consumer can order its columns.

    Returns
    -------
    onnx.ModelProto
        Inputs ``X`` (N, n_features); outputs ``probabilities`` (N, n_classes)
        and, for a classifier, ``label`` (N,), the class of the largest
        probability (of the type of ``classes_``: int64, float64 or string).

    Raises
    ------
    ImportError
        If the onnx package is not installed.
    TypeError, ValueError
        For a model that is not a fitted DNNClassifier or Network, another
        dtype, or a standardisation of the wrong length.
    """
    network, classes = _network_and_classes(model)
    graph_dtype = _check_dtype(dtype, network)
    n_features = network.layer_dims[0]
    standardisation = _check_standardisation(feature_mean, feature_scale, n_features)
    if feature_names is not None:
        feature_names = [str(name) for name in feature_names]
        if len(feature_names) != n_features:
            raise ValueError(f"feature_names must name the {n_features} input features; "
                             f"got {len(feature_names)}")
    onnx = require_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    elem = helper.np_dtype_to_tensor_dtype(graph_dtype)

    nodes, initializers = [], []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name=name))
        return name

    current = "X"
    if standardisation is not None:
        mean, scale = standardisation
        nodes.append(helper.make_node("Sub", [current, constant("feature_mean", mean.astype(graph_dtype))],
                                      ["X_centred"]))
        nodes.append(helper.make_node("Div", ["X_centred", constant("feature_scale", scale.astype(graph_dtype))],
                                      ["X_standardised"]))
        current = "X_standardised"

    activations = network.activations
    for l, (W, b) in enumerate(zip(network.W, network.b), start=1):
        # Rows in: Z = A @ W.T + b.T (the course's Z = W A + b, transposed).
        nodes.append(helper.make_node("MatMul", [current, constant(f"W{l}_T", W.T.astype(graph_dtype))],
                                      [f"ZW{l}"]))
        nodes.append(helper.make_node("Add", [f"ZW{l}", constant(f"b{l}", b.reshape(-1).astype(graph_dtype))],
                                      [f"Z{l}"]))
        current = f"Z{l}"
        if l < network.n_layers:
            op = _HIDDEN_OPS[activations[l - 1]]
            if op is not None:
                nodes.append(helper.make_node(op, [current], [f"A{l}"]))
                current = f"A{l}"

    n_out = network.layer_dims[-1]
    if network.output == "softmax":
        nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=1))
        n_proba = n_out
    elif classes is not None:
        # A binary classifier: columns P(classes_[0]) = 1 - p and P(classes_[1]) = p.
        nodes.append(helper.make_node("Sigmoid", [current], ["p_positive"]))
        nodes.append(helper.make_node("Sub", [constant("one", np.ones(1, dtype=graph_dtype)), "p_positive"],
                                      ["p_negative"]))
        nodes.append(helper.make_node("Concat", ["p_negative", "p_positive"], ["probabilities"], axis=1))
        n_proba = 2
    else:
        nodes.append(helper.make_node("Sigmoid", [current], ["probabilities"]))
        n_proba = n_out

    outputs = [helper.make_tensor_value_info("probabilities", elem, ["N", n_proba])]
    if classes is not None:
        if classes.dtype.kind in "iub":
            class_values = classes.astype(np.int64)
        elif classes.dtype.kind == "f":
            class_values = classes.astype(np.float64)
        else:
            class_values = np.array([str(c) for c in classes], dtype=object)
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label_index"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Gather", [constant("classes", class_values), "label_index"],
                                      ["label"], axis=0))
        label_elem = helper.np_dtype_to_tensor_dtype(class_values.dtype) \
            if class_values.dtype != object else onnx.TensorProto.STRING
        outputs.append(helper.make_tensor_value_info("label", label_elem, ["N"]))

    graph = helper.make_graph(
        nodes, "dnnblocks", [helper.make_tensor_value_info("X", elem, ["N", n_features])], outputs,
        initializer=initializers,
    )
    onnx_model = helper.make_model(graph, producer_name="dnnblocks",
                                   producer_version=__version__,
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = _IR_VERSION
    onnx_model.doc_string = (f"dnnblocks {type(model).__name__} {list(network.layer_dims)}, "
                             f"hidden {network.hidden_activation}, output {network.output}, "
                             f"{graph_dtype.name}" + (", standardised input" if standardisation else ""))
    if feature_names is not None:
        helper.set_model_props(onnx_model, {"feature_names": ",".join(feature_names)})
    onnx.checker.check_model(onnx_model)
    if path is not None:
        _write_atomically(onnx_model.SerializeToString(), path)
    return onnx_model


def _write_atomically(data, path):
    # Same policy as model files: a failed write leaves any previous file intact.
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
