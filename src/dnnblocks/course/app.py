"""Course 1, Week 4, assignment 2 ("Deep Neural Network - Application") and its helper file ``dnn_app_utils_v3``.

A learner's notebook changes its imports only::

    from dnnblocks.course.app import *

instead of ``from dnn_app_utils_v3 import *`` (plus its own
``two_layer_model`` and ``L_layer_model``). Same names, arguments, return
values, printed text and seeded numbers as the helper file and the
notebook; the blocks run on dnnblocks' kernels and the two models train
with :class:`dnnblocks.Network`'s fused step. Every function takes an extra
keyword ``backend="compiled" | "numpy"``.

Where this differs from :mod:`dnnblocks.course` (the step-by-step
assignment), it follows the helper file, on purpose:

- :func:`initialize_parameters_deep` is the helper file's: ``np.random.seed(1)``
  and ``randn / sqrt(n[l-1])`` (the step-by-step one: seed 3, ``* 0.01``);
- :func:`compute_cost` takes any real labels (the course's own
  ``two_layer_model_test`` trains on ``Y = randn(1, 10)``) and returns a 0-d
  ndarray, as ``np.squeeze`` does in the course;
- :func:`L_model_backward` reshapes Y to the shape of AL, as the course;
- :func:`update_parameters` rebinds the keys of the dict it is given and
  returns it (the arrays it held are not changed);
- :func:`predict` broadcasts ``y`` against the predictions as the course
  does, so ``predict(image, [1], parameters)`` works;
- the models record each cost as a 0-d ndarray, every 100 iterations, and
  print "Cost after iteration i: ..." every 100 iterations *and on the last
  iteration even when ``print_cost=False``*: the course's condition is
  ``if print_cost and i % 100 == 0 or i == num_iterations - 1``, which Python
  reads as ``(print_cost and i % 100 == 0) or i == num_iterations - 1``.

:func:`load_data` reads the cat / non-cat images from the course's
``datasets/*.h5`` files (with h5py), or from ``catvnoncat.npz`` (a NumPy
archive of the same arrays); it downloads nothing.
"""

import os
from pathlib import Path

import numpy as np

from . import (
    L_model_forward, linear_activation_backward, linear_activation_forward, linear_backward,
    linear_forward,
)
from ._common import (
    as_matrix,
    draw_parameters,
    full_batch_costs,
    gradient_descent,
    kernels_for,
    layer_parameters,
)
from .._validation import check_layer_dims, check_positive_int, check_scalar
from ..network import Network

__all__ = [
    "sigmoid", "relu", "relu_backward", "sigmoid_backward", "load_data", "initialize_parameters",
    "initialize_parameters_deep", "linear_forward", "linear_activation_forward", "L_model_forward",
    "compute_cost", "linear_backward", "linear_activation_backward", "L_model_backward",
    "update_parameters", "predict", "print_mislabeled_images", "two_layer_model", "L_layer_model",
]


# ------------------------------------------------------- dnn_app_utils_v3
def _activation(Z, activation, backend):
    # The activation alone is one elementwise pass; the layer kernels fuse it
    # with the linear step, which this helper of the course does not have.
    kernels_for(backend)
    Z = as_matrix(Z, "Z")
    A = np.maximum(Z, 0) if activation == "relu" else 1 / (1 + np.exp(-Z))
    return A, Z


def sigmoid(Z, backend="compiled"):
    """``A = 1 / (1 + exp(-Z))``; returns ``(A, cache)`` with ``cache = Z``, as the helper file."""
    return _activation(Z, "sigmoid", backend)


def relu(Z, backend="compiled"):
    """``A = max(0, Z)``; returns ``(A, cache)`` with ``cache = Z``."""
    return _activation(Z, "relu", backend)


def _activation_backward(dA, cache, activation, backend):
    Z = as_matrix(cache, "cache (Z)")
    dA = as_matrix(dA, "dA")
    if dA.shape != Z.shape:
        raise ValueError(f"dA must have the shape of the cached Z {Z.shape}; got {dA.shape}")
    dZ = np.empty_like(Z)
    db = np.empty((Z.shape[0], 1))
    kernels_for(backend).activation_backward(dA, Z, None, activation, dZ, db, 1.0)
    return dZ


def relu_backward(dA, cache, backend="compiled"):
    """``dZ = dA`` where the cached Z > 0, else 0."""
    return _activation_backward(dA, cache, "relu", backend)


def sigmoid_backward(dA, cache, backend="compiled"):
    """``dZ = dA * s * (1 - s)`` with ``s = sigmoid(Z)`` recomputed from the cached Z."""
    return _activation_backward(dA, cache, "sigmoid", backend)


def _cat_files(path):
    """Where the images are: the course's two .h5 files or one catvnoncat.npz."""
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    else:
        if os.environ.get("DNNBLOCKS_DATA"):
            candidates.append(Path(os.environ["DNNBLOCKS_DATA"]))
        candidates += [Path("datasets"), Path(".")]
    for place in candidates:
        if place.is_file():
            return place
        if (place / "train_catvnoncat.h5").is_file() and (place / "test_catvnoncat.h5").is_file():
            return place
        if (place / "catvnoncat.npz").is_file():
            return place / "catvnoncat.npz"
    raise FileNotFoundError(
        "load_data: the cat / non-cat images were not found; looked for datasets/train_catvnoncat.h5 "
        "and datasets/test_catvnoncat.h5 (the course's files) or catvnoncat.npz in "
        + ", ".join(str(c) for c in candidates)
        + ". Pass path= (a folder or the .npz file) or set DNNBLOCKS_DATA; nothing is downloaded."
    )


def load_data(path=None, backend="compiled"):
    """The cat / non-cat images, as the helper file returns them.

    Parameters
    ----------
    path : str or path-like, optional
        A folder holding the course's ``train_catvnoncat.h5`` and
        ``test_catvnoncat.h5`` (read with h5py, which must then be
        installed) or ``catvnoncat.npz``; or the path of that .npz file. By
        default: ``$DNNBLOCKS_DATA``, then ``datasets/`` (the course's
        layout), then the current folder.

    Returns
    -------
    train_x_orig : ndarray of uint8 (209, 64, 64, 3)
    train_y : ndarray (1, 209)
    test_x_orig : ndarray of uint8 (50, 64, 64, 3)
    test_y : ndarray (1, 50)
    classes : ndarray of bytes (2,)
        ``[b'non-cat', b'cat']``.
    """
    kernels_for(backend)
    where = _cat_files(path)
    if where.suffix == ".npz":
        with np.load(where, allow_pickle=False) as f:
            train_x, train_y = f["train_x"], f["train_y"]
            test_x, test_y, classes = f["test_x"], f["test_y"], f["classes"]
    else:
        try:
            import h5py
        except ImportError as exc:
            raise ImportError("load_data: reading the course's .h5 files needs h5py "
                              "(`pip install h5py`), or pass path= to a catvnoncat.npz") from exc
        with h5py.File(where / "train_catvnoncat.h5", "r") as train:
            train_x = np.array(train["train_set_x"][:])
            train_y = np.array(train["train_set_y"][:])
        with h5py.File(where / "test_catvnoncat.h5", "r") as test:
            test_x = np.array(test["test_set_x"][:])
            test_y = np.array(test["test_set_y"][:])
            classes = np.array(test["list_classes"][:])
    return (train_x, train_y.reshape((1, train_y.shape[0])), test_x,
            test_y.reshape((1, test_y.shape[0])), classes)


def initialize_parameters(n_x, n_h, n_y, backend="compiled"):
    """The two-layer model's start: ``np.random.seed(1)``; ``W = randn * 0.01``; ``b = 0``."""
    kernels_for(backend)
    for name, n in (("n_x", n_x), ("n_h", n_h), ("n_y", n_y)):
        check_positive_int(n, name)
    return draw_parameters([n_x, n_h, n_y], 1, lambda draws, n_prev: draws * 0.01)


def initialize_parameters_deep(layer_dims, backend="compiled"):
    """The helper file's deep start: ``np.random.seed(1)``; ``W = randn(n[l], n[l-1]) / sqrt(n[l-1])``; ``b = 0``."""
    kernels_for(backend)
    return draw_parameters(layer_dims, 1, lambda draws, n_prev: draws / np.sqrt(n_prev))


def compute_cost(AL, Y, backend="compiled"):
    """``(1/m) (-Y log(AL)^T - (1 - Y) log(1 - AL)^T)``, squeezed: a 0-d ndarray.

    Y may hold any real values (the formula does not need 0/1 labels); it
    must have the shape of AL.
    """
    AL = as_matrix(AL, "AL")
    Y = as_matrix(Y, "Y")
    if Y.shape != AL.shape:
        raise ValueError(f"Y must have the shape of AL {AL.shape}; got {Y.shape}")
    m = Y.shape[1]
    if m == 0:
        raise ValueError("AL and Y must hold at least one example; got 0 columns")
    return np.squeeze(np.asarray(kernels_for(backend).cross_entropy_cost(AL, Y)))


class Gradients(dict):
    """The dict :func:`L_model_backward` returns, with ``"dA0"`` formed on first use.

    ``dA0 = W1^T dZ1``, the gradient with respect to X, is as large a
    product as the first layer's forward GEMM and no update uses it; the
    textbook code forms it anyway, a third of an iteration of the cat model.
    Here it is formed when it is first read (by key, ``in``, iteration,
    ``len``, ``keys``/``values``/``items``, printing, comparing, copying or
    pickling), from the W1 and dZ1 of the call (a copy of W1 is kept, so a
    later in-place change of W1 does not change it), and then stays, in the
    course's key order. Until then nothing else differs from a plain dict.
    """

    def __init__(self, values, lazy_key, compute, after=()):
        super().__init__(values)
        self._lazy = (lazy_key, compute, tuple(after))

    def _fill(self):
        lazy = self._lazy
        if lazy is None:
            return
        self._lazy = None
        key, compute, after = lazy
        value = compute()
        # Keep the course's insertion order: dA0 before dW1 and db1.
        moved = [(k, dict.pop(self, k)) for k in after if dict.__contains__(self, k)]
        dict.__setitem__(self, key, value)
        for k, v in moved:
            dict.__setitem__(self, k, v)

    @property
    def deferred(self):
        """The keys not formed yet: ``("dA0",)`` until it is first read, then ``()``."""
        return () if self._lazy is None else (self._lazy[0],)

    def _pending(self, key):
        return self._lazy is not None and key == self._lazy[0]

    def __missing__(self, key):
        if self._pending(key):
            self._fill()
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __setitem__(self, key, value):
        if self._pending(key):
            self._lazy = None
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        if self._pending(key):
            self._lazy = None
            return
        dict.__delitem__(self, key)

    def __contains__(self, key):
        return self._pending(key) or dict.__contains__(self, key)

    def _filled(name):
        method = getattr(dict, name)

        def filled(self, *args, **kwargs):
            self._fill()
            return method(self, *args, **kwargs)

        filled.__name__ = name
        filled.__doc__ = method.__doc__
        return filled

    for _name in ("__iter__", "__len__", "__repr__", "__eq__", "__ne__", "__reversed__", "__or__",
                  "keys", "values", "items", "get", "pop", "popitem", "setdefault", "copy", "update"):
        locals()[_name] = _filled(_name)
    del _name, _filled

    def __reduce_ex__(self, protocol):
        # Copies and pickles are plain dicts (the deferred product is not picklable).
        self._fill()
        return (dict, (dict(dict.items(self)),))

    def __reduce__(self):
        return self.__reduce_ex__(2)


def _first_layer_backward(dA, cache, activation, kernels):
    """dW1 and db1 now, and the function that forms dA0 = W1^T dZ1 when it is needed.

    Returns None when the arrays are not float64 (the eager path then handles them).
    """
    if not (isinstance(cache, (tuple, list)) and len(cache) == 2
            and isinstance(cache[0], (tuple, list)) and len(cache[0]) == 3):
        return None
    (A_prev, W, b), Z = cache
    if not all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in (dA, A_prev, W, b, Z)):
        return None
    dA, Z, W, b = as_matrix(dA, "dA"), as_matrix(Z, "Z"), as_matrix(W, "W"), as_matrix(b, "b")
    A_prev = as_matrix(A_prev, "A_prev", order="any")
    m = A_prev.shape[1]
    if A_prev.shape[0] != W.shape[1] or b.shape != (W.shape[0], 1) or Z.shape != (W.shape[0], m) \
            or dA.shape != Z.shape:
        return None  # the eager path raises the precise error
    dZ = np.empty_like(Z)
    db = np.empty_like(b)
    kernels.activation_backward(dA, Z, None, activation, dZ, db, 1.0 / m)
    dW = np.empty_like(W)
    kernels.linear_backward(dZ, A_prev, W, dW, None, 1.0 / m)
    W_then = W.copy()
    return dW, db, (lambda: np.dot(W_then.T, dZ))


def L_model_backward(AL, Y, caches, backend="compiled"):
    """Backward pass of [LINEAR->RELU]*(L-1) -> LINEAR->SIGMOID, as the helper file.

    Y is reshaped to AL's shape first (the course's ``Y = Y.reshape(AL.shape)``),
    and any real labels are taken.

    Returns
    -------
    grads : dict
        ``"dA0"``, ..., ``"dA{L-1}"``, ``"dW1"``, ..., ``"db1"``, ... in the
        course's order; a :class:`Gradients` dict, whose ``"dA0"`` (used by
        no update) is formed only when it is read.
    """
    if not isinstance(caches, (list, tuple)) or len(caches) == 0:
        raise ValueError("caches must be the list of one cache per layer that L_model_forward returns")
    kernels = kernels_for(backend)
    AL = as_matrix(AL, "AL")
    Y = np.asarray(Y)
    if Y.size != AL.size:
        raise ValueError(f"Y must hold one label per entry of AL {AL.shape}; got shape {Y.shape}")
    Y = as_matrix(Y.reshape(AL.shape), "Y")
    L = len(caches)
    grads = {}
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(L)):
        activation = "sigmoid" if l == L - 1 else "relu"
        if l == 0:
            first = _first_layer_backward(dA, caches[0], activation, kernels)
            if first is not None:
                grads["dW1"], grads["db1"] = first[0], first[1]
                return Gradients(grads, "dA0", first[2], after=("dW1", "db1"))
        dA, dW, db = linear_activation_backward(dA, caches[l], activation, kernels)
        grads["dA" + str(l)], grads["dW" + str(l + 1)], grads["db" + str(l + 1)] = dA, dW, db
    return grads


def update_parameters(parameters, grads, learning_rate, backend="compiled"):
    """``W = W - learning_rate dW``, ``b = b - learning_rate db`` for every layer.

    As the helper file: the dict given is updated (its keys rebound to new
    arrays) and returned.
    """
    return gradient_descent(kernels_for(backend), parameters, grads, learning_rate)


def predict(X, y, parameters, backend="compiled"):
    """0/1 predictions ``probas > 0.5`` of the L-layer model; prints ``Accuracy: ...``.

    `y` is compared with the predictions by NumPy broadcasting, as the helper
    file does (``np.sum((p == y) / m)``), so a list such as ``[1]`` works for
    one image.

    Returns
    -------
    p : ndarray (1, m) of 0. and 1.
    """
    X = as_matrix(X, "X", order="any")
    m = X.shape[1]
    probas, _ = L_model_forward(X, parameters, backend=backend)
    p = (probas > 0.5).astype(np.float64)
    print("Accuracy: " + str(np.sum((p == y) / m)))
    return p


def print_mislabeled_images(classes, X, y, p, backend="compiled"):
    """Show the images whose prediction is wrong (needs matplotlib: ``pip install dnnblocks[plot]``)."""
    kernels_for(backend)
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("print_mislabeled_images needs matplotlib; install it with "
                          "`pip install dnnblocks[plot]`") from exc
    a = p + y
    mislabeled_indices = np.asarray(np.where(a == 1))
    plt.rcParams["figure.figsize"] = (40.0, 40.0)
    num_images = len(mislabeled_indices[0])
    for i in range(num_images):
        index = mislabeled_indices[1][i]
        plt.subplot(2, num_images, i + 1)
        plt.imshow(X[:, index].reshape(64, 64, 3), interpolation="nearest")
        plt.axis("off")
        plt.title("Prediction: " + classes[int(p[0, index])].decode("utf-8") + " \n Class: "
                  + classes[int(y[0, index])].decode("utf-8"))


# ------------------------------------------------------------ the models
def _is_binary(Y):
    return bool(np.all((Y == 0) | (Y == 1)))


def _train(X, Y, dims, parameters, learning_rate, num_iterations, print_cost, backend, route="auto"):
    """Full-batch gradient descent from `parameters`, with the course's records and prints.

    With 0/1 labels the steps run in :class:`dnnblocks.Network` (one fused
    kernel call per step: no dW stored, no dA0 formed; the cost is computed
    stably from the logits, equal to the course's to ~1e-15 per step, and a
    step whose cost is not finite raises
    :class:`~dnnblocks.exceptions.TrainingDivergedError` where the course
    would go on with NaN); with other labels (the course's
    ``two_layer_model_test``) through the building blocks.
    """
    costs = []

    def record(i, cost):
        # The course's precedence: the last iteration prints even when print_cost is False.
        if print_cost and i % 100 == 0 or i == num_iterations - 1:
            print("Cost after iteration {}: {}".format(i, np.squeeze(cost)))
        if i % 100 == 0 or i == num_iterations:
            costs.append(cost)

    if _is_binary(Y):
        net = Network(dims, hidden_activation="relu", dtype=np.float64, backend=backend)
        for l in range(net.n_layers):
            net.W[l][...] = parameters["W" + str(l + 1)]
            net.b[l][...] = parameters["b" + str(l + 1)]
        for i, cost in enumerate(full_batch_costs(net, X, Y, learning_rate, num_iterations, route)):
            record(i, np.squeeze(np.asarray(cost)))
        return {name: arr.copy() for name, arr in net.parameters.items()}, costs
    for i in range(num_iterations):
        AL, caches = L_model_forward(X, parameters, backend=backend)
        cost = compute_cost(AL, Y, backend)
        grads = L_model_backward(AL, Y, caches, backend)
        parameters = update_parameters(parameters, grads, learning_rate, backend)
        record(i, cost)
    return parameters, costs


def _model_inputs(X, Y, learning_rate, num_iterations, n_y):
    num_iterations = check_positive_int(num_iterations, "num_iterations", minimum=0)
    learning_rate = check_scalar(learning_rate, "learning_rate", low=0.0, low_inclusive=False)
    X = as_matrix(X, "X", order="any")
    Y = np.asarray(Y)
    if Y.size != n_y * X.shape[1]:
        raise ValueError(f"Y must have shape ({n_y}, {X.shape[1]}) (one label per example of X); "
                         f"got {Y.shape}")
    Y = as_matrix(Y.reshape(n_y, X.shape[1]), "Y")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or infinity; all labels must be finite")
    return X, Y, learning_rate, num_iterations


def two_layer_model(X, Y, layers_dims, learning_rate=0.0075, num_iterations=3000, print_cost=False,
                    backend="compiled", route="auto"):
    """The notebook's LINEAR->RELU->LINEAR->SIGMOID model, started by :func:`initialize_parameters`.

    Parameters
    ----------
    X : array (n_x, m)
    Y : array (1, m)
    layers_dims : (n_x, n_h, n_y)
    learning_rate : float, default 0.0075
    num_iterations : int, default 3000
    print_cost : bool, default False
        Print the cost every 100 iterations (the last one is printed anyway,
        see the module notes).
    route : {"auto", "gram", "plain"}, default "auto"
        Not in the course: how the compiled steps run. With 0/1 labels and
        far more features than examples (the cat images) "auto" trains
        through the Gram matrix X^T X (:mod:`dnnblocks.wide`), an order of
        magnitude faster, with the same costs to ~1e-15 relative.

    Returns
    -------
    parameters : dict
    costs : list of 0-d ndarray
        The cost at iterations 0, 100, 200, ...
    """
    dims = check_layer_dims(layers_dims)
    if len(dims) != 3:
        raise ValueError(f"layers_dims must be (n_x, n_h, n_y); got {list(layers_dims)}")
    X, Y, learning_rate, num_iterations = _model_inputs(X, Y, learning_rate, num_iterations, dims[2])
    np.random.seed(1)
    parameters = initialize_parameters(*dims)
    layer_parameters(parameters)
    if X.shape[0] != dims[0]:
        raise ValueError(f"X must have n_x = {dims[0]} rows; got shape {X.shape}")
    return _train(X, Y, dims, parameters, learning_rate, num_iterations, print_cost, backend, route)


def L_layer_model(X, Y, layers_dims, learning_rate=0.0075, num_iterations=3000, print_cost=False,
                  backend="compiled", route="auto"):
    """The notebook's [LINEAR->RELU]*(L-1)->LINEAR->SIGMOID model, started by :func:`initialize_parameters_deep`.

    The arguments are :func:`two_layer_model`'s, `route` included.

    Returns
    -------
    parameters : dict
    costs : list of 0-d ndarray
        The cost at iterations 0, 100, 200, ... (see the module notes for
        what is printed).
    """
    dims = check_layer_dims(layers_dims)
    X, Y, learning_rate, num_iterations = _model_inputs(X, Y, learning_rate, num_iterations, dims[-1])
    if X.shape[0] != dims[0]:
        raise ValueError(f"X must have layers_dims[0] = {dims[0]} rows; got shape {X.shape}")
    np.random.seed(1)
    parameters = initialize_parameters_deep(dims)
    return _train(X, Y, dims, parameters, learning_rate, num_iterations, print_cost, backend, route)
