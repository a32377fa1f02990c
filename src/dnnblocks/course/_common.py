"""What the per-assignment course modules share: array checks and one layer's kernels.

The Course 2 helper files (``init_utils``, ``reg_utils``, ``gc_utils``,
``opt_utils``) each write the same three-layer network
LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID with small differences
(where 1/m is applied, the names of the gradients, L2, dropout). The pieces
here are the ones they all need: a checked float matrix, the labels as a row,
the parameters of a three-layer network, and the compiled kernels of one
layer's forward and backward step, so that each module only writes its own
differences.
"""

import numpy as np

from .._validation import check_blas_shape, check_layer_dims, check_parameter_memory, check_scalar
from ..backend import get_backend
from ..wide import resolve_route, train_full_batch

__all__ = [
    "as_matrix", "labels_row", "layer_parameters", "three_layer_parameters", "layer_forward",
    "relu_backward", "linear_gradients", "cross_entropy", "draw_parameters", "kernels_for",
    "zeros_like_parameters", "require_sklearn", "input_matrix", "three_layer_forward",
    "unpack_three_layer_cache", "three_layer_backward", "gradient_descent", "predict_labels",
    "gradient_of", "parameter_keys", "full_batch_costs",
]


def full_batch_costs(net, X, Y, learning_rate, num_iterations, route="auto"):
    """The cost before each of `num_iterations` full-batch gradient-descent steps of `net`, in order.

    The steps change `net` in place. With few examples and many features (the
    cat model: 209 images of 12288 values) the steps run by the Gram-matrix
    route of :mod:`dnnblocks.wide`, all of them before the first cost is
    yielded (the costs equal the plain route's to ~1e-15 relative);
    otherwise one :meth:`dnnblocks.Network.step` per cost.

    Parameters
    ----------
    net : dnnblocks.Network
    X, Y : ndarray
        The checked training data, ``(n[0], m)`` and ``(n[L], m)``.
    learning_rate : float
    num_iterations : int
    route : {"auto", "gram", "plain"}, default "auto"
        See :func:`dnnblocks.wide.resolve_route`.
    """
    chosen = "plain"
    if X.shape[1] and num_iterations:  # an empty X is refused by the step, with its own message
        chosen = resolve_route(route, n0=net.layer_dims[0], m=X.shape[1], n1=net.layer_dims[1],
                               optimizer="sgd", output=net.output, backend_name=net.backend,
                               iterations=num_iterations)
    if chosen == "gram":
        yield from train_full_batch(net.W, net.b, list(net.activations), X, Y, learning_rate,
                                    num_iterations).tolist()
        return
    for _ in range(num_iterations):
        yield net.step(X, Y, learning_rate)


def kernels_for(backend):
    """The kernel table named `backend` ("compiled" or "numpy"); ValueError otherwise."""
    return get_backend(backend)


def as_matrix(a, name, order="C"):
    """`a` as a 2-D float64 array that the kernels accept, copied only when needed.

    Parameters
    ----------
    a : array_like
    name : str
        Named in the error message.
    order : {"C", "any"}
        "any" also accepts an F-ordered array as it is (the kernels read a
        layer's input either way).
    """
    if type(a) is np.ndarray and a.dtype == np.float64 and a.ndim == 2:  # the learner's loop
        if a.flags.c_contiguous or (order == "any" and a.flags.f_contiguous):
            return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {arr.shape}")
    check_blas_shape(arr, name)
    if order == "any" and arr.dtype == np.float64 and arr.flags.f_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=np.float64)


def labels_row(Y, name, m):
    """Labels as a (1, m) row (a view when possible; the dtype is kept, as the course keeps it).

    The helper files broadcast a (m,) or (1, m) Y the same way; only NumPy
    arithmetic reads it (``A3 - Y``, the cost), never a kernel, so an int
    array is not converted at every iteration.
    """
    if type(Y) is np.ndarray and Y.shape == (1, m) and Y.dtype.kind in "biuf":  # the learner's loop
        return Y
    arr = np.asarray(Y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.size != m or arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1):
        raise ValueError(f"{name} must have shape (1, {m}) or ({m},), one label per example; "
                         f"got shape {arr.shape}")
    return arr.reshape(1, m)


_KEYS = [("W%d" % l, "b%d" % l) for l in range(1, 65)]


def parameter_keys(l):
    """``("W<l>", "b<l>")``, made once for the usual depths (the loop runs every iteration)."""
    return _KEYS[l - 1] if l <= len(_KEYS) else ("W%d" % l, "b%d" % l)


def layer_parameters(parameters, n_layers=None, chained=True):
    """``[(W1, b1), (W2, b2), ...]`` from a course parameter dict, checked against each other.

    Parameters
    ----------
    parameters : dict
        ``"W1"``, ``"b1"``, ... (other keys are ignored only when `n_layers` is given).
    n_layers : int, optional
        The number of layers the caller's network has (3 for the Course 2
        helper files); by default ``len(parameters) // 2``.
    chained : bool, default True
        Whether each W must take the previous layer's output. The update
        functions do not need it (the course's own optimizer test cases
        hold parameters that do not chain).
    """
    if not isinstance(parameters, dict):
        raise TypeError(f"parameters must be a dict with keys 'W1', 'b1', ...; got {type(parameters).__name__}")
    L = len(parameters) // 2 if n_layers is None else n_layers
    out = []
    for l in range(1, L + 1):
        w_key, b_key = parameter_keys(l)
        W = parameters.get(w_key)
        b = parameters.get(b_key)
        if W is None or b is None:
            missing = [f"{p}{k}" for k in range(1, L + 1) for p in "Wb" if f"{p}{k}" not in parameters]
            raise ValueError(f"parameters must have the keys W1, b1, ..., W{L}, b{L}; missing {missing}")
        if not (type(W) is np.ndarray and W.dtype == np.float64 and W.ndim == 2 and W.flags.c_contiguous):
            W = as_matrix(W, w_key)
        if not (type(b) is np.ndarray and b.dtype == np.float64 and b.ndim == 2 and b.flags.c_contiguous):
            b = as_matrix(b, b_key)
        if chained and l > 1 and W.shape[1] != out[-1][0].shape[0]:
            raise ValueError(f"{w_key} must have {out[-1][0].shape[0]} columns (W{l - 1} has "
                             f"{out[-1][0].shape[0]} rows); got shape {W.shape}")
        if b.shape != (W.shape[0], 1):
            raise ValueError(f"{b_key} must have shape ({W.shape[0]}, 1) to match {w_key} {W.shape}; "
                             f"got {b.shape}")
        out.append((W, b))
    if not out:
        raise ValueError("parameters must have the keys W1, b1, ...; got none")
    return out


def three_layer_parameters(parameters):
    """The six arrays of the Course 2 helper files' three-layer network, checked."""
    return layer_parameters(parameters, 3)


def input_matrix(X, n_x, name="X"):
    """X as a (n_x, m) float64 matrix (C- or F-ordered, as given)."""
    X = as_matrix(X, name, order="any")
    if X.shape[0] != n_x:
        raise ValueError(f"{name} must have W1.shape[1] = {n_x} rows (one per feature); got shape {X.shape}")
    return X


def layer_forward(kernels, W, b, A_prev, activation):
    """``Z = W A_prev + b`` and ``A = g(Z)`` in one kernel call; returns new ``(Z, A)``."""
    Z = np.empty((W.shape[0], A_prev.shape[1]))
    A = np.empty_like(Z)
    kernels.linear_activation_forward(W, b, A_prev, activation, Z, A)
    return Z, A


def relu_backward(kernels, dA, Z, db_scale=1.0):
    """``dZ = dA * (Z > 0)`` and ``db = db_scale * rowsum(dZ)`` in one pass; returns new ``(dZ, db)``.

    The helper files mask with ``A > 0``; for ``A = relu(Z)`` (also after a
    dropout mask, whose zeros already zeroed dA) that is the same set.
    """
    dZ = np.empty_like(Z)
    db = np.empty((Z.shape[0], 1))
    kernels.activation_backward(dA, Z, None, "relu", dZ, db, db_scale)
    return dZ, db


def linear_gradients(kernels, dZ, A_prev, W, dW_scale=1.0, need_dA_prev=True):
    """``dW = dW_scale * dZ A_prev^T`` and ``dA_prev = W^T dZ`` (GEMMs); returns new ``(dW, dA_prev)``."""
    dW = np.empty_like(W)
    dA_prev = np.empty((W.shape[1], dZ.shape[1])) if need_dA_prev else None
    kernels.linear_backward(dZ, A_prev, W, dW, dA_prev, dW_scale)
    return dW, dA_prev


def cross_entropy(a3, Y, skip_nan=True):
    """``sum(-y log a3 - (1 - y) log(1 - a3))`` over all examples (not divided by m), as the helper files.

    A (1, m) pass, computed exactly as the course writes it (NumPy's
    summation order), because the gradient check divides differences of
    this cost by 2e-7: any other rounding shows in its printed difference.
    `skip_nan` is ``np.nansum`` (``init_utils``, ``reg_utils``: a term
    ``0 * log(0)`` counts 0) rather than ``np.sum`` (``gc_utils``,
    ``opt_utils``). NumPy's divide-by-zero warnings are not raised.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
        total = np.sum(logprobs)
    if skip_nan and total != total:
        # Only a NaN term makes the sum NaN: then drop those terms, as np.nansum
        # does (which sums the same array, NaNs as 0, in the same order).
        total = np.nansum(logprobs)
    return total


def draw_parameters(layers_dims, seed, transform):
    """``np.random.seed(seed)``, then ``W[l] = transform(randn(n[l], n[l-1]), n[l-1])``, ``b[l] = 0``.

    `transform` is written as the helper file writes it (``draws * 10``,
    ``draws / np.sqrt(n_prev)``): multiplying by ``1 / sqrt(n)`` instead of
    dividing would round differently.

    The draws come from NumPy's legacy global generator in the helper files'
    order, so the numbers are theirs.
    """
    dims = check_layer_dims(layers_dims)
    check_parameter_memory(dims, np.float64, "layers_dims")
    np.random.seed(seed)
    parameters = {}
    for l in range(1, len(dims)):
        parameters["W" + str(l)] = transform(np.random.randn(dims[l], dims[l - 1]), dims[l - 1])
        parameters["b" + str(l)] = np.zeros((dims[l], 1))
    return parameters


def zeros_like_parameters(parameters):
    """``{"dW1": zeros, "db1": zeros, ...}`` of the parameters' shapes (float64)."""
    layers = layer_parameters(parameters, chained=False)
    state = {}
    for l, (W, b) in enumerate(layers, start=1):
        state["dW" + str(l)] = np.zeros(W.shape)
        state["db" + str(l)] = np.zeros(b.shape)
    return state


def require_sklearn(what):
    """Import ``sklearn.datasets`` (an optional dependency) or say which extra brings it."""
    try:
        import sklearn.datasets
    except ImportError as exc:
        raise ImportError(
            f"{what} builds its data with scikit-learn, which is not installed; "
            "install it with `pip install dnnblocks[sklearn]` (or `pip install scikit-learn`)"
        ) from exc
    return sklearn.datasets


# ------------------------------------------------ the helper files' network
def three_layer_forward(kernels, X, parameters):
    """LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID on the helper files' parameters.

    Returns
    -------
    cache : tuple
        ``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)``, the helper
        files' layout (the W and b are the caller's arrays when they are
        float64 and C-ordered).
    """
    (W1, b1), (W2, b2), (W3, b3) = three_layer_parameters(parameters)
    X = input_matrix(X, W1.shape[1])
    Z1, A1 = layer_forward(kernels, W1, b1, X, "relu")
    Z2, A2 = layer_forward(kernels, W2, b2, A1, "relu")
    Z3, A3 = layer_forward(kernels, W3, b3, A2, "sigmoid")
    return (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)


def unpack_three_layer_cache(cache, size=12):
    """The cache of :func:`three_layer_forward` (12 entries, or 14 with the dropout masks)."""
    layout = ("(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)" if size == 12
              else "(Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3)")
    if not isinstance(cache, (tuple, list)) or len(cache) != size:
        got = f"a {type(cache).__name__} of length {len(cache)}" if isinstance(cache, (tuple, list)) \
            else f"a {type(cache).__name__}"
        raise TypeError(f"cache must be the tuple {layout} of the forward propagation; got {got}")
    return tuple(cache)


def three_layer_backward(kernels, X, Y, Z1, A1, W1, Z2, A2, W2, Z3, A3, W3, *,
                         scale_output=False, lambd=0.0, masks=None, keep_prob=1.0):
    """Back-propagation through the helper files' three-layer network.

    Parameters
    ----------
    kernels : backend kernel table
    X, Y : the inputs and labels of the forward pass
    Z1, A1, W1, ... : the forward pass's cache entries
    scale_output : bool
        True: ``dZ3 = 1/m (A3 - Y)`` and the other gradients unscaled
        (``init_utils``, ``opt_utils``); False: ``dZ3 = A3 - Y`` and 1/m on
        every dW and db (``reg_utils``, ``gc_utils``).
    lambd : float
        L2 strength: ``(lambd / m) W`` is added to each dW.
    masks : (D1, D2) or None
        Dropout masks of the forward pass: ``dA = dA * D / keep_prob``.

    Returns
    -------
    tuple
        ``(dZ3, dW3, db3, dA2, dZ2, dW2, db2, dA1, dZ1, dW1, db1)``.
    """
    W1 = as_matrix(W1, "W1")
    X = input_matrix(X, W1.shape[1])
    m = X.shape[1]
    Y = labels_row(Y, "Y", m)
    A1, A2, A3 = (as_matrix(a, n, "any") for a, n in ((A1, "A1"), (A2, "A2"), (A3, "A3")))
    Z1, Z2 = as_matrix(Z1, "Z1"), as_matrix(Z2, "Z2")
    W2, W3 = as_matrix(W2, "W2"), as_matrix(W3, "W3")
    for name, a, shape in (("A3", A3, (W3.shape[0], m)), ("Z2", Z2, (W2.shape[0], m)),
                           ("A2", A2, (W3.shape[1], m)), ("Z1", Z1, (W1.shape[0], m)),
                           ("A1", A1, (W2.shape[1], m))):
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (from the W's and X); got {a.shape}")
    if A3.shape[0] != 1:
        raise ValueError(f"the output layer must have one unit; W3 has shape {W3.shape}")
    inv_m = 1.0 / m
    if scale_output:
        dZ3 = inv_m * (A3 - Y)
        scale = 1.0
    else:
        dZ3 = A3 - Y
        scale = inv_m
    db3 = np.sum(dZ3, axis=1, keepdims=True)
    if not scale_output:
        db3 = inv_m * db3
    dW3, dA2 = linear_gradients(kernels, dZ3, A2, W3, scale)
    if masks is not None:
        dA2 = dA2 * masks[1]
        dA2 = dA2 / keep_prob
    dZ2, db2 = relu_backward(kernels, dA2, Z2, scale)
    dW2, dA1 = linear_gradients(kernels, dZ2, A1, W2, scale)
    if masks is not None:
        dA1 = dA1 * masks[0]
        dA1 = dA1 / keep_prob
    dZ1, db1 = relu_backward(kernels, dA1, Z1, scale)
    dW1, _ = linear_gradients(kernels, dZ1, X, W1, scale, need_dA_prev=False)
    if lambd:
        dW3 += (lambd / m) * W3
        dW2 += (lambd / m) * W2
        dW1 += (lambd / m) * W1
    return dZ3, dW3, db3, dA2, dZ2, dW2, db2, dA1, dZ1, dW1, db1


def gradient_descent(kernels, parameters, grads, learning_rate):
    """``parameters[k] = parameters[k] - learning_rate * grads["d" + k]`` for every W and b.

    As the helper files do, the dict is updated (new arrays bound to its
    keys; the arrays it held before are not changed) and returned.
    """
    learning_rate = check_scalar(learning_rate, "learning_rate")
    layers = layer_parameters(parameters, chained=False)
    checked = []  # every gradient is checked before the first key is rebound
    for l, (W, b) in enumerate(layers, start=1):
        for name, param in zip(parameter_keys(l), (W, b)):
            checked.append((name, param, gradient_of(grads, name, param.shape)))
    for name, param, grad in checked:
        new = param.copy()
        kernels.gradient_descent_update(new, grad, learning_rate)
        parameters[name] = new
    return parameters


def gradient_of(grads, name, shape, prefix="d", what="grads"):
    """``grads[prefix + name]`` as a float64 matrix of `shape`; a clear error when missing or wrong."""
    grad = grads.get(prefix + name) if type(grads) is dict else None
    if (type(grad) is np.ndarray and grad.shape == shape and grad.dtype == np.float64
            and grad.flags.c_contiguous):  # the learner's loop
        return grad
    if not isinstance(grads, dict):
        raise TypeError(f"{what} must be a dict with keys '{prefix}W1', '{prefix}b1', ...; "
                        f"got {type(grads).__name__}")
    key = prefix + name
    if key not in grads:
        raise ValueError(f"{what} is missing {key!r}")
    grad = as_matrix(grads[key], f"{what}[{key!r}]")
    if grad.shape != shape:
        raise ValueError(f"{what}[{key!r}] must have shape {shape}; got {grad.shape}")
    return grad


def predict_labels(a3):
    """``1`` where ``a3 > 0.5``, else ``0``, as an int array (the helper files' ``p``)."""
    return (a3 > 0.5).astype(int)
