"""The course's functional API, computed by dnnblocks' kernels.

Same names, arguments, return values and cache layout as the step-by-step
assignment of the deep-learning course ("Building your Deep Neural Network:
Step by Step") and its application notebook, so that course code can change
one import::

    from dnnblocks.course import *

and get the same numbers, faster. Every function takes an extra keyword
``backend="compiled" | "numpy"``. Caches are the course's:
``linear_activation_forward`` returns ``((A_prev, W, b), Z)``.

Randomness follows the course exactly: initialisation draws from NumPy's
legacy global generator (``np.random.seed`` then ``np.random.randn``) in the
course's order.
"""

import importlib
import threading
import weakref

import numpy as np

from .._validation import (
    _all_finite, check_blas_shape, check_layer_dims, check_learning_rate, check_parameter_memory,
    check_positive_int,
)
from .._validation import HIDDEN_ACTIVATIONS
from ..backend import get_backend
from ..network import Network
from ._common import full_batch_costs

__all__ = [
    "initialize_parameters_deep",
    "linear_forward",
    "linear_activation_forward",
    "L_model_forward",
    "compute_cost",
    "linear_backward",
    "linear_activation_backward",
    "L_model_backward",
    "update_parameters",
    "predict",
    "L_layer_model",
]

_ACTIVATIONS = HIDDEN_ACTIVATIONS


# --------------------------------------------------------------------- helpers
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)


def _float_dtype(*arrays):
    """The dtype the textbook's NumPy code would compute in: float32 only if every input is."""
    dtypes = {a.dtype if type(a) is np.ndarray else None for a in arrays}
    if len(dtypes) == 1 and (_F64 in dtypes or _F32 in dtypes):  # the course's loop: no conversion
        return dtypes.pop()
    dtype = np.result_type(*[np.asarray(a).dtype for a in arrays], np.float32)
    return np.dtype(np.float64) if dtype != np.float32 else np.dtype(np.float32)


def _matrix(a, name, dtype, contiguous="C"):
    """`a` as a 2-D array of `dtype`, copied only when dtype or layout requires it."""
    if type(a) is np.ndarray and a.dtype == dtype and a.ndim == 2:  # the course's loop
        if a.flags.c_contiguous or (contiguous == "any" and a.flags.f_contiguous):
            check_blas_shape(a, name)
            return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {arr.shape}")
    # Before any conversion: a huge broadcast view must not be copied first.
    check_blas_shape(arr, name)
    if contiguous == "any" and arr.dtype == dtype and (arr.flags.c_contiguous or arr.flags.f_contiguous):
        return arr
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {activation!r}")


def _n_layers(parameters):
    if not isinstance(parameters, dict):
        raise TypeError(f"parameters must be a dict with keys 'W1', 'b1', ...; got {type(parameters).__name__}")
    L = len(parameters) // 2
    expected = {f"{p}{l}" for l in range(1, L + 1) for p in "Wb"}
    if L == 0 or set(parameters) != expected:
        raise ValueError(
            f"parameters must have exactly the keys W1, b1, ..., WL, bL; got {sorted(parameters)}"
        )
    return L


def _linear_inputs(A_prev, W, b, dtype, names=("A_prev", "W", "b")):
    """A_prev, W and b as `dtype` matrices (A_prev in either order), checked against each other."""
    A_prev = _matrix(A_prev, names[0], dtype, contiguous="any")
    W = _matrix(W, names[1], dtype)
    b = _matrix(b, names[2], dtype)
    # The NumPy backend would broadcast a wrong b or dA instead of failing,
    # so shapes are checked here, for both backends, before any kernel.
    if A_prev.shape[0] != W.shape[1]:
        raise ValueError(
            f"A_prev must have W.shape[1] = {W.shape[1]} rows (W has shape {W.shape}); "
            f"got shape {A_prev.shape}"
        )
    if b.shape != (W.shape[0], 1):
        raise ValueError(f"b must have shape ({W.shape[0]}, 1) to match W {W.shape}; got {b.shape}")
    return A_prev, W, b


def _check_same_shape(a, name, shape, what):
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}); got {a.shape}")


# The course's training loop passes the same X and Y at every iteration, and
# a full scan of X (finiteness) costs as much as a GEMM of the first layer
# (a fifth of a step for the cat model). So the last few arrays that passed a
# full-array check are remembered, by identity (a weak reference: no array is
# kept alive), and not scanned again. Only arrays used as they are (not
# converted copies) are remembered; one refilled in place is not re-checked,
# which at worst lets NaN propagate through the blocks as in the textbook code.
_MAX_REMEMBERED = 8
_remembered = {}  # (id, check function) -> weak reference; oldest first
_remembered_lock = threading.Lock()


def _passed_before(a, check):
    key = (id(a), check)
    with _remembered_lock:
        ref = _remembered.pop(key, None)
        if ref is None or ref() is not a:  # never seen, or a dead array's recycled id
            return False
        _remembered[key] = ref  # most recently used: last to go
        return True


def _remember(a, check):
    with _remembered_lock:
        for key in [k for k, ref in _remembered.items() if ref() is None]:
            del _remembered[key]
        while len(_remembered) >= _MAX_REMEMBERED:
            del _remembered[next(iter(_remembered))]
        _remembered[(id(a), check)] = weakref.ref(a)


def _scan_once(check, a, given, name):
    """``check(a, name)``, skipped for an array that passed it before as given.

    `given` is what the caller received: only when `a` is that very array
    (not a converted copy) is it remembered.
    """
    if a is given and _passed_before(a, check):
        return
    check(a, name)
    if a is given:
        _remember(a, check)


def _labels(Y, name, dtype, shape):
    given = Y
    Y = _matrix(Y, name, dtype)
    if Y.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {Y.shape}")
    _scan_once(_check_labels, Y, given, name)
    return Y


def _check_labels(Y, name):
    bad = (Y != 0) & (Y != 1)
    if bad.any():
        raise ValueError(f"{name} must contain only the labels 0 and 1; got {np.unique(Y[bad])[:5].tolist()}")


def _check_finite(a, name):
    # Only where the user's data and parameters enter (L_model_forward,
    # predict); the building blocks propagate NaN/inf as the textbook's NumPy does.
    if not _all_finite(a):
        raise ValueError(f"{name} contains NaN or infinity; all values must be finite")


def _unpack_cache(cache, name, size, layout):
    """Unpack a course cache, with an error that names it instead of a bare unpacking error."""
    if isinstance(cache, (tuple, list)) and len(cache) == size:
        return tuple(cache)
    what = f"{type(cache).__name__} of length {len(cache)}" if isinstance(cache, (tuple, list)) \
        else type(cache).__name__
    raise TypeError(f"{name} must be a tuple {layout}; got a {what}")


# ------------------------------------------------------------- initialisation
def initialize_parameters_deep(layer_dims, seed=3, scale=0.01, backend="compiled"):
    """The course's deep initialisation: ``W = randn(n[l], n[l-1]) * 0.01``, ``b = 0``.

    Parameters
    ----------
    layer_dims : list of int
        ``[n0, n1, ..., nL]``.
    seed : int or None, default 3
        Passed to ``np.random.seed`` first, as the step-by-step assignment
        does; None leaves the global generator as it is.
    scale : float or "sqrt", default 0.01
        Multiplier of the standard-normal draws. ``"sqrt"`` divides by
        ``sqrt(n[l-1])`` instead, as the application notebook does (with seed 1).
    backend : {"compiled", "numpy"}
        Accepted like every function's (the draws are NumPy's either way).

    Returns
    -------
    parameters : dict
        ``"W1"``, ``"b1"``, ..., float64 arrays.
    """
    get_backend(backend)
    dims = check_layer_dims(layer_dims)
    check_parameter_memory(dims, np.float64, "layer_dims")  # before the draws allocate
    if seed is not None:
        np.random.seed(seed)
    parameters = {}
    for l in range(1, len(dims)):
        draws = np.random.randn(dims[l], dims[l - 1])
        if isinstance(scale, str):
            if scale != "sqrt":
                raise ValueError(f"scale must be a number or 'sqrt'; got {scale!r}")
            parameters["W" + str(l)] = draws / np.sqrt(dims[l - 1])
        else:
            parameters["W" + str(l)] = draws * scale
        parameters["b" + str(l)] = np.zeros((dims[l], 1))
    return parameters


# ------------------------------------------------------------------- forward
def linear_activation_forward(A_prev, W, b, activation, backend="compiled"):
    """``Z = W A_prev + b``, ``A = g(Z)``.

    Parameters
    ----------
    A_prev : array (n[l-1], m)
    W : array (n[l], n[l-1])
    b : array (n[l], 1)
    activation : {"relu", "sigmoid", "tanh"}
    backend : {"compiled", "numpy"}

    Returns
    -------
    A : ndarray (n[l], m)
    cache : tuple
        ``((A_prev, W, b), Z)``, the course's layout.
    """
    _check_activation(activation)
    return _forward(A_prev, W, b, activation, backend)


def _forward(A_prev, W, b, activation, backend):
    dtype = _float_dtype(A_prev, W, b)
    A_prev, W, b = _linear_inputs(A_prev, W, b, dtype)
    return _forward_checked(A_prev, W, b, activation, get_backend(backend))


def _forward_checked(A_prev, W, b, activation, kernels):
    """The layer's kernel on inputs that passed :func:`_linear_inputs`."""
    Z = np.empty((W.shape[0], A_prev.shape[1]), dtype=W.dtype)
    A = Z if activation == "identity" else np.empty_like(Z)
    kernels.linear_activation_forward(W, b, A_prev, activation, Z, A)
    return A, ((A_prev, W, b), Z)


def linear_forward(A, W, b, backend="compiled"):
    """The linear part of a layer: ``Z = W A + b``.

    Returns
    -------
    Z : ndarray (n[l], m)
    cache : tuple
        ``(A, W, b)``.
    """
    Z, (cache, _) = _forward(A, W, b, "identity", backend)
    return Z, cache


def L_model_forward(X, parameters, backend="compiled", hidden_activation="relu"):
    """Forward pass of the L-layer model: [LINEAR -> RELU] * (L-1) -> LINEAR -> SIGMOID.

    Returns
    -------
    AL : ndarray (n[L], m)
    caches : list
        One ``((A_prev, W, b), Z)`` per layer.
    """
    _check_activation(hidden_activation)
    L = _n_layers(parameters)
    kernels = get_backend(backend)
    caches = []
    A = X
    for l in range(1, L + 1):
        activation = "sigmoid" if l == L else hidden_activation
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        dtype = _float_dtype(A, W, b)
        A, W, b = _linear_inputs(A, W, b, dtype, ("A_prev (X)" if l == 1 else "A_prev", f"W{l}", f"b{l}"))
        if l == 1:
            _scan_once(_check_finite, A, X, "X")
        _check_finite(W, f"W{l}")
        _check_finite(b, f"b{l}")
        A, cache = _forward_checked(A, W, b, activation, kernels)
        caches.append(cache)
    return A, caches


def compute_cost(AL, Y, backend="compiled"):
    """Cross-entropy cost ``-(1/m) sum(Y log AL + (1-Y) log(1-AL))``.

    Returns
    -------
    cost : float
    """
    dtype = _float_dtype(AL, Y)
    AL = _matrix(AL, "AL", dtype)
    Y = _labels(Y, "Y", dtype, AL.shape)
    return float(get_backend(backend).cross_entropy_cost(AL, Y))


# ------------------------------------------------------------------ backward
def linear_backward(dZ, cache, backend="compiled"):
    """The linear part of the backward step of one layer.

    Parameters
    ----------
    dZ : array (n[l], m)
    cache : tuple ``(A_prev, W, b)``

    Returns
    -------
    dA_prev : ndarray (n[l-1], m)
    dW : ndarray (n[l], n[l-1])
    db : ndarray (n[l], 1)
    """
    A_prev, W, b = _unpack_cache(cache, "cache", 3, "(A_prev, W, b)")
    dtype = _float_dtype(dZ, A_prev, W, b)
    dZ = _matrix(dZ, "dZ", dtype)
    A_prev, W, b = _linear_inputs(A_prev, W, b, dtype)
    _check_same_shape(dZ, "dZ", (W.shape[0], A_prev.shape[1]), "W.shape[0] rows, one column per example of A_prev")
    kernels = get_backend(backend)
    m = dZ.shape[1]
    dW = np.empty_like(W)
    dA_prev = np.empty((W.shape[1], m), dtype=dtype)
    kernels.linear_backward(dZ, A_prev, W, dW, dA_prev, 1.0 / m)
    db = dZ.sum(axis=1, keepdims=True) / m
    return dA_prev, dW, db


def linear_activation_backward(dA, cache, activation, backend="compiled"):
    """Backward step of a LINEAR -> ACTIVATION layer.

    Parameters
    ----------
    dA : array (n[l], m)
    cache : tuple ``((A_prev, W, b), Z)``
    activation : {"relu", "sigmoid", "tanh"}

    Returns
    -------
    dA_prev, dW, db : ndarray
    """
    _check_activation(activation)
    linear_cache, Z = _unpack_cache(cache, "cache", 2, "((A_prev, W, b), Z)")
    A_prev, W, b = _unpack_cache(linear_cache, "cache[0]", 3, "(A_prev, W, b)")
    dtype = _float_dtype(dA, Z, A_prev, W, b)
    dA = _matrix(dA, "dA", dtype)
    Z = _matrix(Z, "Z", dtype)
    A_prev, W, b = _linear_inputs(A_prev, W, b, dtype)
    _check_same_shape(Z, "Z", (W.shape[0], A_prev.shape[1]), "W.shape[0] rows, one column per example of A_prev")
    _check_same_shape(dA, "dA", Z.shape, "the shape of the cached Z")
    kernels = get_backend(backend)
    m = Z.shape[1]
    dZ = np.empty_like(Z)
    db = np.empty_like(b)
    # The course's cache keeps Z only, so g'(Z) is recomputed from it (A=None).
    kernels.activation_backward(dA, Z, None, activation, dZ, db, 1.0 / m)
    dW = np.empty_like(W)
    dA_prev = np.empty((W.shape[1], m), dtype=dtype)
    kernels.linear_backward(dZ, A_prev, W, dW, dA_prev, 1.0 / m)
    return dA_prev, dW, db


def L_model_backward(AL, Y, caches, backend="compiled", hidden_activation="relu"):
    """Backward pass of the L-layer model.

    Starts, as the course does, from ``dAL = -(Y/AL - (1-Y)/(1-AL))`` and the
    sigmoid's derivative at the cached Z.

    Returns
    -------
    grads : dict
        ``"dA0"``, ..., ``"dA{L-1}"``, ``"dW1"``, ..., ``"db1"``, ...
    """
    _check_activation(hidden_activation)
    L = len(caches)
    if L == 0:
        raise ValueError("caches must hold one cache per layer; got none")
    dtype = _float_dtype(AL, Y)
    AL = _matrix(AL, "AL", dtype)
    Y = _labels(Y, "Y", dtype, AL.shape)
    grads = {}
    dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    dA_prev, dW, db = linear_activation_backward(dAL, caches[L - 1], "sigmoid", backend)
    grads["dA" + str(L - 1)], grads["dW" + str(L)], grads["db" + str(L)] = dA_prev, dW, db
    for l in reversed(range(L - 1)):
        dA_prev, dW, db = linear_activation_backward(grads["dA" + str(l + 1)], caches[l], hidden_activation, backend)
        grads["dA" + str(l)], grads["dW" + str(l + 1)], grads["db" + str(l + 1)] = dA_prev, dW, db
    return grads


def update_parameters(parameters, grads, learning_rate, backend="compiled"):
    """One gradient-descent step; returns new parameters (the inputs are not modified).

    Parameters
    ----------
    parameters : dict ``"W1"``, ``"b1"``, ...
    grads : dict with ``"dW1"``, ``"db1"``, ...
    learning_rate : float

    Returns
    -------
    parameters : dict
    """
    L = _n_layers(parameters)
    learning_rate = check_learning_rate(learning_rate)
    kernels = get_backend(backend)
    updated = {}
    for name in sorted(parameters):
        if "d" + name not in grads:
            raise ValueError(f"grads is missing 'd{name}'")
        param = parameters[name]
        dtype = _float_dtype(param, grads["d" + name])
        new = np.array(_matrix(param, name, dtype), dtype=dtype, order="C", copy=True)
        grad = _matrix(grads["d" + name], "d" + name, dtype)
        if grad.shape != new.shape:
            raise ValueError(f"grads['d{name}'] must have shape {new.shape}; got {grad.shape}")
        kernels.gradient_descent_update(new, grad, learning_rate)
        updated[name] = new
    assert len(updated) == 2 * L
    return updated


# --------------------------------------------------------------- whole model
def predict(X, y, parameters, backend="compiled", hidden_activation="relu"):
    """Predict 0/1 labels with the L-layer model and print the accuracy.

    Returns
    -------
    p : ndarray (1, m)
        Predictions 0. and 1., as the course returns them.
    """
    probas, _ = L_model_forward(X, parameters, backend, hidden_activation)
    m = probas.shape[1]
    y = _labels(y, "y", probas.dtype, probas.shape)
    p = (probas > 0.5).astype(np.float64)
    print("Accuracy: " + str(np.sum((p == y) / m)))
    return p


def L_layer_model(X, Y, layers_dims, learning_rate=0.0075, num_iterations=3000,
                  print_cost=False, backend="compiled", hidden_activation="relu", route="auto"):
    """Train the L-layer model by full-batch gradient descent, as the application notebook does.

    Initialises as that notebook does (``np.random.seed(1)``, then
    ``randn / sqrt(n[l-1])``), and records the cost every 100 iterations.
    The training itself runs in :class:`dnnblocks.Network` (fused kernels,
    buffers reused across iterations); with far more features than examples
    (the cat images) through the Gram matrix X^T X (`route`, see
    :func:`dnnblocks.wide.resolve_route`: "auto", "gram" or "plain"), with
    the same costs to ~1e-15 relative.

    Returns
    -------
    parameters : dict
    costs : list of float
        The cost at iterations 0, 100, 200, ... (printed, with the last
        iteration's, when `print_cost` is true).
    """
    num_iterations = check_positive_int(num_iterations, "num_iterations", minimum=0)
    learning_rate = check_learning_rate(learning_rate)
    dims = check_layer_dims(layers_dims)
    check_parameter_memory(dims, np.float64, "layers_dims")  # named as this function's argument
    np.random.seed(1)
    initial = initialize_parameters_deep(dims, seed=1, scale="sqrt")
    dtype = _float_dtype(X)
    net = Network(dims, hidden_activation=hidden_activation, dtype=dtype, backend=backend)
    for l in range(net.n_layers):
        net.W[l][...] = initial["W" + str(l + 1)]
        net.b[l][...] = initial["b" + str(l + 1)]
    X = _matrix(X, "X", dtype, contiguous="any")
    Y = _labels(Y, "Y", dtype, (dims[-1], X.shape[1]))
    costs = []
    for i, cost in enumerate(full_batch_costs(net, X, Y, learning_rate, num_iterations, route)):
        if print_cost and (i % 100 == 0 or i == num_iterations - 1):
            print("Cost after iteration {}: {}".format(i, np.squeeze(cost)))
        if i % 100 == 0:
            costs.append(cost)
    return {name: arr.copy() for name, arr in net.parameters.items()}, costs


# ------------------------------------------------ the other assignments
#: One module per course file a learner imports (see each module's docstring),
#: loaded on first attribute access so that ``import dnnblocks.course`` stays light.
SUBMODULES = frozenset({"app", "initialization", "regularization", "gradient_checking", "optimization"})


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | SUBMODULES)
