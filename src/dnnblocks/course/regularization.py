"""Course 2, Week 1, "Regularization": the notebook's functions and its helper file ``reg_utils``.

A learner's notebook changes its imports only::

    from dnnblocks.course.regularization import *

instead of ``from reg_utils import sigmoid, relu, plot_decision_boundary,
initialize_parameters, load_2D_dataset, predict_dec, compute_cost, predict,
forward_propagation, backward_propagation, update_parameters`` (plus its own
L2 and dropout functions and ``model``). Same names, arguments, return values,
printed text and seeded numbers; the passes run on dnnblocks' kernels. Every
function takes an extra keyword ``backend="compiled" | "numpy"``.

Differences from the course, on purpose:

- :func:`load_2D_dataset` cannot read the course's ``datasets/data.mat`` (the
  goalkeeper's kicks, not shipped with dnnblocks): it builds a data set of the
  same kind and size instead (211 training and 200 test points in the square
  [-0.75, 0.75]^2, two classes split by a wavy boundary, some labels
  flipped), from its own seeded generator. So the notebook's printed costs and
  accuracies *after* loading the data differ from the course's; every
  function computes what the course's computes on the same arrays (pass the
  course's arrays to reproduce its numbers).
- ``model`` draws no plot of the costs, ``load_2D_dataset`` no scatter plot.
"""

import numpy as np

from ._common import (
    as_matrix, cross_entropy, draw_parameters, gradient_descent, input_matrix, kernels_for,
    labels_row, layer_forward, predict_labels, three_layer_backward, three_layer_forward,
    three_layer_parameters, unpack_three_layer_cache,
)
from .._validation import check_positive_int, check_scalar
from .initialization import plot_decision_boundary, predict_dec, relu, sigmoid

__all__ = [
    "sigmoid", "relu", "initialize_parameters", "compute_cost", "forward_propagation",
    "backward_propagation", "update_parameters", "predict", "predict_dec", "load_2D_dataset",
    "plot_decision_boundary", "compute_cost_with_regularization",
    "backward_propagation_with_regularization", "forward_propagation_with_dropout",
    "backward_propagation_with_dropout", "model",
]

_GRAD_KEYS = ("dZ3", "dW3", "db3", "dA2", "dZ2", "dW2", "db2", "dA1", "dZ1", "dW1", "db1")


# -------------------------------------------------------------- reg_utils
def initialize_parameters(layer_dims, backend="compiled"):
    """``np.random.seed(3)``; ``W = randn(n[l], n[l-1]) / sqrt(n[l-1])``; ``b = 0``."""
    kernels_for(backend)
    return draw_parameters(layer_dims, 3, lambda draws, n_prev: draws / np.sqrt(n_prev))


def compute_cost(a3, Y, backend="compiled"):
    """The mean cross-entropy ``1/m nansum(-y log a3 - (1 - y) log(1 - a3))`` (a float)."""
    a3 = as_matrix(a3, "a3")
    if a3.shape[0] != 1:
        raise ValueError(f"a3 must have shape (1, m); got {a3.shape}")
    Y = labels_row(Y, "Y", a3.shape[1])
    kernels_for(backend)
    return 1. / a3.shape[1] * cross_entropy(a3, Y)


def forward_propagation(X, parameters, backend="compiled"):
    """LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    Returns
    -------
    A3 : ndarray (1, m)
    cache : tuple ``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)``
    """
    cache = three_layer_forward(kernels_for(backend), X, parameters)
    return cache[9], cache


def _backward(X, Y, cache, backend, lambd=0.0):
    Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3 = unpack_three_layer_cache(cache)
    grads = three_layer_backward(kernels_for(backend), X, Y, Z1, A1, W1, Z2, A2, W2, Z3, A3, W3,
                                 lambd=lambd)
    return dict(zip(_GRAD_KEYS, grads))


def backward_propagation(X, Y, cache, backend="compiled"):
    """Gradients of the unregularised cost (``dZ3 = A3 - Y``, 1/m on every dW and db).

    Returns
    -------
    gradients : dict
        ``"dZ3"``, ``"dW3"``, ``"db3"``, ``"dA2"``, ``"dZ2"``, ``"dW2"``,
        ``"db2"``, ``"dA1"``, ``"dZ1"``, ``"dW1"``, ``"db1"``.
    """
    return _backward(X, Y, cache, backend)


def update_parameters(parameters, grads, learning_rate, backend="compiled"):
    """One gradient-descent step; binds new arrays into `parameters` and returns it."""
    return gradient_descent(kernels_for(backend), parameters, grads, learning_rate)


def predict(X, y, parameters, backend="compiled"):
    """0/1 predictions (int array (1, m)); prints ``Accuracy: ...`` as ``reg_utils`` does."""
    a3, _ = forward_propagation(X, parameters, backend)
    p = predict_labels(a3)
    y = np.asarray(y)
    print("Accuracy: " + str(np.mean((p[0, :] == y[0, :]))))
    return p


def _two_dimensional_points(rng, m):
    """`m` points in [-0.75, 0.75]^2 labelled by a wavy boundary, 8% of labels flipped."""
    X = rng.uniform(-0.75, 0.75, size=(2, m))
    boundary = 0.25 * np.sin(3.0 * X[0]) - 0.05
    Y = (X[1] > boundary).astype(np.int64)
    flip = rng.random(m) < 0.08
    Y[flip] = 1 - Y[flip]
    return X, Y.reshape(1, m)


def load_2D_dataset(seed=0, backend="compiled"):
    """A two-class 2-D data set shaped like the notebook's (211 training, 200 test points).

    **Not the course's data**: the course reads ``datasets/data.mat``, which
    dnnblocks does not have. This builds points of the same kind (two
    features in [-0.75, 0.75], labels 0/1 split by a curved boundary with 8%
    of the labels flipped, so that an unregularised network overfits) from
    ``numpy.random.default_rng(seed)``, leaving NumPy's global generator as
    it was (``loadmat`` does not touch it either).

    Parameters
    ----------
    seed : int, default 0

    Returns
    -------
    train_X : ndarray (2, 211)
    train_Y : ndarray of int (1, 211)
    test_X : ndarray (2, 200)
    test_Y : ndarray of int (1, 200)
    """
    kernels_for(backend)
    rng = np.random.default_rng(seed)
    train_X, train_Y = _two_dimensional_points(rng, 211)
    test_X, test_Y = _two_dimensional_points(rng, 200)
    return train_X, train_Y, test_X, test_Y


# ------------------------------------------------------------ the notebook
def compute_cost_with_regularization(A3, Y, parameters, lambd, backend="compiled"):
    """Cross-entropy plus ``(1/m)(lambd/2)(||W1||^2 + ||W2||^2 + ||W3||^2)``."""
    lambd = check_scalar(lambd, "lambd")
    A3 = as_matrix(A3, "A3")
    m = A3.shape[1]
    (W1, _), (W2, _), (W3, _) = three_layer_parameters(parameters)
    cross_entropy_cost = compute_cost(A3, Y, backend)
    L2_regularization_cost = (1 / m) * (lambd / 2) * (
        np.sum(np.square(W1)) + np.sum(np.square(W2)) + np.sum(np.square(W3)))
    return cross_entropy_cost + L2_regularization_cost


def backward_propagation_with_regularization(X, Y, cache, lambd, backend="compiled"):
    """:func:`backward_propagation` with ``(lambd/m) W`` added to every dW."""
    lambd = check_scalar(lambd, "lambd")
    return _backward(X, Y, cache, backend, lambd)


def _check_keep_prob(keep_prob):
    return check_scalar(keep_prob, "keep_prob", low=0.0, high=1.0, low_inclusive=False)


def forward_propagation_with_dropout(X, parameters, keep_prob=0.5, backend="compiled"):
    """Forward propagation with inverted dropout on both hidden layers.

    As the notebook: ``np.random.seed(1)`` first, then for each hidden layer
    ``D = np.random.rand(*A.shape) < keep_prob`` (as 0/1 ints) and
    ``A = A * D / keep_prob``; the output layer is not dropped.

    Returns
    -------
    A3 : ndarray (1, m)
    cache : tuple ``(Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3)``
    """
    keep_prob = _check_keep_prob(keep_prob)
    kernels = kernels_for(backend)
    (W1, b1), (W2, b2), (W3, b3) = three_layer_parameters(parameters)
    X = input_matrix(X, W1.shape[1])
    np.random.seed(1)
    Z1, A1 = layer_forward(kernels, W1, b1, X, "relu")
    D1 = _drop(kernels, A1, keep_prob)
    Z2, A2 = layer_forward(kernels, W2, b2, A1, "relu")
    D2 = _drop(kernels, A2, keep_prob)
    Z3, A3 = layer_forward(kernels, W3, b3, A2, "sigmoid")
    return A3, (Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3)


def _drop(kernels, A, keep_prob):
    """Draw the course's mask for A (``np.random.rand``), apply it in place; return D as 0/1 ints."""
    draws = np.random.rand(A.shape[0], A.shape[1])
    D = (draws < keep_prob).astype(int)
    # The kernel turns the draws into 0 or 1/keep_prob and multiplies in one pass.
    kernels.dropout_forward(A, draws, keep_prob)
    return D


def backward_propagation_with_dropout(X, Y, cache, keep_prob, backend="compiled"):
    """Back-propagation through the dropout masks of :func:`forward_propagation_with_dropout`.

    ``dA = dA * D / keep_prob`` on each hidden layer, as the notebook.

    Returns
    -------
    gradients : dict (the keys of :func:`backward_propagation`)
    """
    keep_prob = _check_keep_prob(keep_prob)
    Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3 = unpack_three_layer_cache(cache, 14)
    grads = three_layer_backward(kernels_for(backend), X, Y, Z1, A1, W1, Z2, A2, W2, Z3, A3, W3,
                                 masks=(np.asarray(D1), np.asarray(D2)), keep_prob=keep_prob)
    return dict(zip(_GRAD_KEYS, grads))


def model(X, Y, learning_rate=0.3, num_iterations=30000, print_cost=True, lambd=0, keep_prob=1,
          backend="compiled"):
    """The notebook's three-layer model [n_x, 20, 3, 1], with L2 (`lambd`) or dropout (`keep_prob`).

    Prints ``Cost after iteration i: cost`` every 10000 iterations when
    `print_cost`; no plot. As in the notebook, L2 and dropout are not used
    together (an AssertionError, the notebook's ``assert``).

    Returns
    -------
    parameters : dict
    """
    num_iterations = check_positive_int(num_iterations, "num_iterations", minimum=0)
    learning_rate = check_scalar(learning_rate, "learning_rate")
    lambd = check_scalar(lambd, "lambd")
    keep_prob = _check_keep_prob(keep_prob)
    assert lambd == 0 or keep_prob == 1
    kernels = kernels_for(backend)
    X = as_matrix(X, "X", order="any")
    Y = labels_row(Y, "Y", X.shape[1])
    parameters = initialize_parameters([X.shape[0], 20, 3, 1])
    for i in range(num_iterations):
        if keep_prob == 1:
            a3, cache = forward_propagation(X, parameters, kernels)
        else:
            a3, cache = forward_propagation_with_dropout(X, parameters, keep_prob, kernels)
        if lambd == 0:
            cost = compute_cost(a3, Y, kernels)
        else:
            cost = compute_cost_with_regularization(a3, Y, parameters, lambd, kernels)
        if keep_prob == 1:
            grads = _backward(X, Y, cache, kernels, lambd)
        else:
            grads = backward_propagation_with_dropout(X, Y, cache, keep_prob, kernels)
        parameters = update_parameters(parameters, grads, learning_rate, kernels)
        if print_cost and i % 10000 == 0:
            print("Cost after iteration {}: {}".format(i, cost))
    return parameters
