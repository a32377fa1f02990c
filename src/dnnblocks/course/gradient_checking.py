"""Course 2, Week 1, "Gradient Checking": the notebook's functions and its helper file ``gc_utils``.

A learner's notebook changes its imports only::

    from dnnblocks.course.gradient_checking import *

instead of ``from gc_utils import sigmoid, relu, dictionary_to_vector,
vector_to_dictionary, gradients_to_vector`` (plus its own functions). Same
names, arguments, return values, printed messages and numbers; the N-D
network's passes run on dnnblocks' kernels. Every function takes an extra
keyword ``backend="compiled" | "numpy"``.

Differences from the course, on purpose:

- :func:`backward_propagation_n` is the *correct* back-propagation. The
  notebook's version carries two planted mistakes (``dW2`` doubled, ``db1``
  times 4) for the learner to find with :func:`gradient_check_n`; pass such
  gradients to :func:`gradient_check_n` to see its "There is a mistake"
  message.
- :func:`vector_to_dictionary` takes an optional ``layer_dims`` (the course's
  is fixed to the notebook's network, [4, 5, 3, 1], which stays the default).
"""

import numpy as np

from ._common import (
    as_matrix, cross_entropy, kernels_for, labels_row, three_layer_backward, three_layer_forward,
    unpack_three_layer_cache,
)
from .._validation import check_layer_dims, check_scalar
from .initialization import relu, sigmoid

__all__ = [
    "sigmoid", "relu", "dictionary_to_vector", "vector_to_dictionary", "gradients_to_vector",
    "forward_propagation", "backward_propagation", "gradient_check", "forward_propagation_n",
    "backward_propagation_n", "gradient_check_n",
]

#: The notebook's network: 4 inputs, hidden layers of 5 and 3 units, one output.
LAYER_DIMS = (4, 5, 3, 1)
_PARAMETER_KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")
_THRESHOLD = 2e-7


# --------------------------------------------------------------- gc_utils
def dictionary_to_vector(parameters, backend="compiled"):
    """Stack W1, b1, W2, b2, W3, b3 (each flattened row by row) into one column.

    Returns
    -------
    theta : ndarray (n, 1)
    keys : list of str
        The name of the parameter each row came from.
    """
    kernels_for(backend)
    return _stack(parameters, _PARAMETER_KEYS, "parameters")


def _stack(values, keys, what):
    if not isinstance(values, dict):
        raise TypeError(f"{what} must be a dict with keys {list(keys)}; got {type(values).__name__}")
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f"{what} is missing {missing}")
    pieces = [np.reshape(values[k], (-1, 1)) for k in keys]
    names = []
    for k, piece in zip(keys, pieces):
        names += [k] * piece.shape[0]
    return np.concatenate(pieces, axis=0), names


def vector_to_dictionary(theta, layer_dims=LAYER_DIMS, backend="compiled"):
    """Unstack a column made by :func:`dictionary_to_vector` back into W1, b1, ..., b3.

    Parameters
    ----------
    theta : array (n, 1)
    layer_dims : sequence of 4 ints, default (4, 5, 3, 1)
        The network's sizes (the course fixes them to the notebook's).

    Returns
    -------
    parameters : dict
        Views into `theta`, as the course's slices are.
    """
    kernels_for(backend)
    dims = check_layer_dims(layer_dims)
    if len(dims) != 4:
        raise ValueError(f"layer_dims must have 4 entries (a three-layer network); got {list(dims)}")
    theta = np.asarray(theta)
    sizes = []
    for l in range(1, 4):
        sizes += [(f"W{l}", (dims[l], dims[l - 1])), (f"b{l}", (dims[l], 1))]
    total = sum(r * c for _, (r, c) in sizes)
    if theta.size != total or (theta.ndim == 2 and theta.shape[1] != 1) or theta.ndim > 2:
        raise ValueError(f"theta must have shape ({total}, 1) for layer_dims {list(dims)}; got {theta.shape}")
    parameters, start = {}, 0
    for name, (r, c) in sizes:
        parameters[name] = theta[start:start + r * c].reshape((r, c))
        start += r * c
    return parameters


def gradients_to_vector(gradients, backend="compiled"):
    """Stack dW1, db1, dW2, db2, dW3, db3 into one column (n, 1)."""
    kernels_for(backend)
    theta, _ = _stack(gradients, ["d" + k for k in _PARAMETER_KEYS], "gradients")
    return theta


# ------------------------------------------------------------- 1-D case
def forward_propagation(x, theta, backend="compiled"):
    """``J = theta * x``."""
    kernels_for(backend)
    return theta * x


def backward_propagation(x, theta, backend="compiled"):
    """``dJ/dtheta = x``."""
    kernels_for(backend)
    return x


def _difference(grad, gradapprox):
    numerator = np.linalg.norm(grad - gradapprox)
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)
    return numerator / denominator


def _report(difference, print_msg):
    if print_msg:
        if difference > _THRESHOLD:
            print("\033[93m" + "There is a mistake in the backward propagation! difference = "
                  + str(difference) + "\033[0m")
        else:
            print("\033[92m" + "Your backward propagation works perfectly fine! difference = "
                  + str(difference) + "\033[0m")


def gradient_check(x, theta, epsilon=1e-7, print_msg=False, backend="compiled"):
    """Centred difference of ``J = theta x`` against :func:`backward_propagation`.

    Returns
    -------
    difference : float
        ``||grad - gradapprox|| / (||grad|| + ||gradapprox||)``; with
        `print_msg`, the course's coloured message (threshold 2e-7).
    """
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    theta_plus = theta + epsilon
    theta_minus = theta - epsilon
    J_plus = forward_propagation(x, theta_plus, backend)
    J_minus = forward_propagation(x, theta_minus, backend)
    gradapprox = (J_plus - J_minus) / (2 * epsilon)
    grad = backward_propagation(x, theta, backend)
    difference = _difference(grad, gradapprox)
    _report(difference, print_msg)
    return difference


# ------------------------------------------------------------- N-D case
def forward_propagation_n(X, Y, parameters, backend="compiled"):
    """Cost of the three-layer network LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID.

    Parameters
    ----------
    X : array (n_x, m)
    Y : array (m,) or (1, m)
        Labels (the notebook's test case passes a 1-D array).
    parameters : dict W1, b1, W2, b2, W3, b3

    Returns
    -------
    cost : float
        ``1/m sum(-y log A3 - (1 - y) log(1 - A3))``.
    cache : tuple ``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)``
    """
    kernels = kernels_for(backend)
    cache = three_layer_forward(kernels, X, parameters)
    A3 = cache[9]
    m = A3.shape[1]
    cost = 1. / m * cross_entropy(A3, labels_row(Y, "Y", m), skip_nan=False)
    return cost, cache


def backward_propagation_n(X, Y, cache, backend="compiled"):
    """The gradients of :func:`forward_propagation_n`'s cost (correct; see the module notes).

    Returns
    -------
    gradients : dict
        ``"dZ3"``, ``"dW3"``, ``"db3"``, ``"dA2"``, ``"dZ2"``, ``"dW2"``,
        ``"db2"``, ``"dA1"``, ``"dZ1"``, ``"dW1"``, ``"db1"``.
    """
    Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3 = unpack_three_layer_cache(cache)
    grads = three_layer_backward(kernels_for(backend), X, Y, Z1, A1, W1, Z2, A2, W2, Z3, A3, W3)
    keys = ("dZ3", "dW3", "db3", "dA2", "dZ2", "dW2", "db2", "dA1", "dZ1", "dW1", "db1")
    return dict(zip(keys, grads))


def gradient_check_n(parameters, gradients, X, Y, epsilon=1e-7, print_msg=False, backend="compiled"):
    """Each parameter nudged by +-epsilon in turn: centred differences of the cost against `gradients`.

    Parameters
    ----------
    parameters : dict W1, ..., b3
    gradients : dict with dW1, ..., db3 (as :func:`backward_propagation_n` returns)
    X, Y : the data the cost is computed on
    epsilon : float, default 1e-7
    print_msg : bool, default False
        Print the course's message: "There is a mistake in the backward
        propagation! difference = ..." above 2e-7, else "Your backward
        propagation works perfectly fine! difference = ...".

    Returns
    -------
    difference : float
    """
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    kernels = kernels_for(backend)
    parameters_values, _ = dictionary_to_vector(parameters)
    parameters_values = as_matrix(parameters_values, "parameters")
    grad = as_matrix(gradients_to_vector(gradients), "gradients")
    if grad.shape != parameters_values.shape:
        raise ValueError(f"gradients must match the parameters' sizes ({parameters_values.shape[0]} "
                         f"values); got {grad.shape[0]}")
    dims = [parameters["W1"].shape[1], parameters["W1"].shape[0], parameters["W2"].shape[0],
            parameters["W3"].shape[0]]
    num_parameters = parameters_values.shape[0]
    J_plus = np.zeros((num_parameters, 1))
    J_minus = np.zeros((num_parameters, 1))
    gradapprox = np.zeros((num_parameters, 1))
    theta = parameters_values.copy()
    # One working copy, nudged and restored in place: the course copies the
    # whole vector twice per parameter; the result is the same numbers.
    nudged = vector_to_dictionary(theta, dims)
    for i in range(num_parameters):
        original = theta[i, 0]
        theta[i, 0] = original + epsilon
        J_plus[i], _ = forward_propagation_n(X, Y, nudged, kernels)
        theta[i, 0] = original - epsilon
        J_minus[i], _ = forward_propagation_n(X, Y, nudged, kernels)
        theta[i, 0] = original
        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)
    difference = _difference(grad, gradapprox)
    _report(difference, print_msg)
    return difference
