"""Course 2, Week 1, "Initialization": the notebook's functions and its helper file ``init_utils``.

A learner's notebook changes its imports only::

    from dnnblocks.course.initialization import *

instead of ``from init_utils import sigmoid, relu, compute_loss, forward_propagation,
backward_propagation, update_parameters, predict, load_dataset, plot_decision_boundary,
predict_dec`` (plus its own ``initialize_parameters_zeros`` / ``_random`` / ``_he``
and ``model``). Same names, arguments, return values, printed text and seeded
numbers; the forward and backward passes run on dnnblocks' kernels (one fused
kernel per layer forward, the mask and the bias row-sum in one pass, BLAS
GEMMs). Every function takes an extra keyword ``backend="compiled" | "numpy"``.

Differences from the course, on purpose:

- ``model`` does not draw the cost plot (the notebook's ``plt.plot(costs)``);
  it prints the costs and returns the parameters as the course does.
- ``load_dataset`` does not draw the scatter plot; ``plot_decision_boundary``
  needs matplotlib (``pip install dnnblocks[plot]``).
- The "random" initialisation's first cost is ``inf`` as in the course, but
  without NumPy's divide-by-zero warning.
"""

import numpy as np

from ._common import (
    as_matrix, cross_entropy, draw_parameters, gradient_descent, input_matrix, kernels_for,
    labels_row, predict_labels, require_sklearn, three_layer_backward, three_layer_forward,
    unpack_three_layer_cache,
)
from .._validation import check_layer_dims, check_positive_int, check_scalar

__all__ = [
    "sigmoid", "relu", "compute_loss", "forward_propagation", "backward_propagation",
    "update_parameters", "predict", "predict_dec", "load_dataset", "plot_decision_boundary",
    "initialize_parameters_zeros", "initialize_parameters_random", "initialize_parameters_he",
    "model",
]


# ------------------------------------------------------------- init_utils
def sigmoid(x, backend="compiled"):
    """``1 / (1 + exp(-x))``, elementwise (``init_utils.sigmoid``).

    `backend` is accepted for symmetry; both compute it with NumPy.
    """
    kernels_for(backend)
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def relu(x, backend="compiled"):
    """``max(0, x)``, elementwise (``init_utils.relu``)."""
    kernels_for(backend)
    return np.maximum(0, x)


def compute_loss(a3, Y, backend="compiled"):
    """The mean cross-entropy ``1/m nansum(-y log a3 - (1 - y) log(1 - a3))``.

    Parameters
    ----------
    a3 : array (1, m)
        Output of :func:`forward_propagation`.
    Y : array (1, m)
        Labels.

    Returns
    -------
    loss : float
        ``inf`` when a confident prediction is wrong (as with the course's
        "random" initialisation); terms of weight 0 count 0, as ``nansum``
        makes them.
    """
    a3 = as_matrix(a3, "a3")
    Y = labels_row(Y, "Y", a3.shape[1])
    if a3.shape[0] != 1:
        raise ValueError(f"a3 must have shape (1, m); got {a3.shape}")
    m = a3.shape[1]
    kernels_for(backend)
    return 1. / m * cross_entropy(a3, Y)


def forward_propagation(X, parameters, backend="compiled"):
    """LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    Parameters
    ----------
    X : array (n_x, m)
    parameters : dict
        ``"W1"``, ``"b1"``, ``"W2"``, ``"b2"``, ``"W3"``, ``"b3"``.

    Returns
    -------
    a3 : ndarray (1, m)
    cache : tuple
        ``(z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3)``.
    """
    cache = three_layer_forward(kernels_for(backend), X, parameters)
    return cache[9], cache


def backward_propagation(X, Y, cache, backend="compiled"):
    """Gradients of the loss, as ``init_utils`` computes them (``dz3 = 1/m (a3 - Y)`` first).

    Returns
    -------
    gradients : dict
        ``"dz3"``, ``"dW3"``, ``"db3"``, ``"da2"``, ``"dz2"``, ``"dW2"``,
        ``"db2"``, ``"da1"``, ``"dz1"``, ``"dW1"``, ``"db1"`` (lower-case z
        and a, as in ``init_utils``).
    """
    z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3 = unpack_three_layer_cache(cache)
    grads = three_layer_backward(kernels_for(backend), X, Y, z1, a1, W1, z2, a2, W2, z3, a3, W3,
                                 scale_output=True)
    return dict(zip(("dz3", "dW3", "db3", "da2", "dz2", "dW2", "db2", "da1", "dz1", "dW1", "db1"),
                    grads))


def update_parameters(parameters, grads, learning_rate, backend="compiled"):
    """One gradient-descent step; binds new arrays into `parameters` and returns it (as the course)."""
    return gradient_descent(kernels_for(backend), parameters, grads, learning_rate)


def predict(X, y, parameters, backend="compiled"):
    """0/1 predictions of the model, and ``Accuracy: ...`` printed as ``init_utils`` prints it.

    Returns
    -------
    p : ndarray of int, shape (1, m)
    """
    a3, _ = forward_propagation(X, parameters, backend)
    p = predict_labels(a3)
    y = np.asarray(y)
    print("Accuracy: " + str(np.mean((p[0, :] == y[0, :]))))
    return p


def predict_dec(parameters, X, backend="compiled"):
    """Boolean predictions ``a3 > 0.5`` (used by :func:`plot_decision_boundary`)."""
    a3, _ = forward_propagation(X, parameters, backend)
    return a3 > 0.5


def plot_decision_boundary(model, X, y, backend="compiled"):
    """Draw the decision boundary of ``model`` (a function of an (m, 2) grid) over the data.

    Needs matplotlib (``pip install dnnblocks[plot]``).
    """
    kernels_for(backend)
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plot_decision_boundary needs matplotlib; install it with "
                          "`pip install dnnblocks[plot]`") from exc
    X = np.asarray(X)
    x_min, x_max = X[0, :].min() - 1, X[0, :].max() + 1
    y_min, y_max = X[1, :].min() - 1, X[1, :].max() + 1
    h = 0.01
    xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
    Z = np.asarray(model(np.c_[xx.ravel(), yy.ravel()])).reshape(xx.shape)
    plt.contourf(xx, yy, Z, cmap=plt.cm.Spectral)
    plt.ylabel("x2")
    plt.xlabel("x1")
    plt.scatter(X[0, :], X[1, :], c=np.ravel(y), cmap=plt.cm.Spectral)
    plt.show()


def load_dataset(backend="compiled"):
    """The notebook's two circles: 300 training and 100 test points.

    Built as ``init_utils`` builds them: ``np.random.seed(1)``, then
    ``sklearn.datasets.make_circles(n_samples=300, noise=.05)``, then
    ``np.random.seed(2)`` and 100 test points (scikit-learn draws from the
    global generator when it is given no ``random_state``). Needs
    scikit-learn (``pip install dnnblocks[sklearn]``). No scatter plot is drawn.

    Returns
    -------
    train_X : ndarray (2, 300)
    train_Y : ndarray (1, 300)
    test_X : ndarray (2, 100)
    test_Y : ndarray (1, 100)
    """
    kernels_for(backend)
    datasets = require_sklearn("load_dataset")
    np.random.seed(1)
    train_X, train_Y = datasets.make_circles(n_samples=300, noise=.05)
    np.random.seed(2)
    test_X, test_Y = datasets.make_circles(n_samples=100, noise=.05)
    return train_X.T, train_Y.reshape((1, train_Y.shape[0])), test_X.T, test_Y.reshape((1, test_Y.shape[0]))


# ------------------------------------------------------------ the notebook
def initialize_parameters_zeros(layers_dims, backend="compiled"):
    """Every W and b zero (the notebook's first, failing, initialisation); draws nothing."""
    kernels_for(backend)
    dims = check_layer_dims(layers_dims)
    parameters = {}
    for l in range(1, len(dims)):
        parameters["W" + str(l)] = np.zeros((dims[l], dims[l - 1]))
        parameters["b" + str(l)] = np.zeros((dims[l], 1))
    return parameters


def initialize_parameters_random(layers_dims, backend="compiled"):
    """``np.random.seed(3)``; ``W = randn(n[l], n[l-1]) * 10``; ``b = 0``."""
    kernels_for(backend)
    return draw_parameters(layers_dims, 3, lambda draws, n_prev: draws * 10)


def initialize_parameters_he(layers_dims, backend="compiled"):
    """He initialisation: ``np.random.seed(3)``; ``W = randn(n[l], n[l-1]) * sqrt(2 / n[l-1])``; ``b = 0``."""
    kernels_for(backend)
    return draw_parameters(layers_dims, 3, lambda draws, n_prev: draws * np.sqrt(2. / n_prev))


_INITIALIZERS = {
    "zeros": initialize_parameters_zeros,
    "random": initialize_parameters_random,
    "he": initialize_parameters_he,
}


def model(X, Y, learning_rate=0.01, num_iterations=15000, print_cost=True, initialization="he",
          backend="compiled"):
    """The notebook's three-layer model LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID, layers [n_x, 10, 5, 1].

    Prints ``Cost after iteration i: cost`` every 1000 iterations when
    `print_cost`, as the notebook does; the plot of the costs is not drawn.

    Parameters
    ----------
    X : array (2, m)
    Y : array (1, m)
    learning_rate : float, default 0.01
    num_iterations : int, default 15000
    print_cost : bool, default True
    initialization : {"zeros", "random", "he"}, default "he"
    backend : {"compiled", "numpy"}

    Returns
    -------
    parameters : dict
    """
    if initialization not in _INITIALIZERS:
        raise ValueError(f"initialization must be one of {sorted(_INITIALIZERS)}; got {initialization!r}")
    num_iterations = check_positive_int(num_iterations, "num_iterations", minimum=0)
    learning_rate = check_scalar(learning_rate, "learning_rate")
    kernels = kernels_for(backend)
    X = as_matrix(X, "X", order="any")
    Y = labels_row(Y, "Y", X.shape[1])
    layers_dims = [X.shape[0], 10, 5, 1]
    parameters = _INITIALIZERS[initialization](layers_dims)
    input_matrix(X, layers_dims[0])
    for i in range(num_iterations):
        cache = three_layer_forward(kernels, X, parameters)
        a3 = cache[9]
        cost = 1. / X.shape[1] * cross_entropy(a3, Y)
        z1, a1, W1, _, z2, a2, W2, _, z3, _, W3, _ = cache
        dz3, dW3, db3, _, _, dW2, db2, _, _, dW1, db1 = three_layer_backward(
            kernels, X, Y, z1, a1, W1, z2, a2, W2, z3, a3, W3, scale_output=True)
        grads = {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dW3": dW3, "db3": db3}
        parameters = gradient_descent(kernels, parameters, grads, learning_rate)
        if print_cost and i % 1000 == 0:
            print("Cost after iteration {}: {}".format(i, cost))
    return parameters
