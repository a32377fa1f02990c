"""Course 2, Week 2, "Optimization Methods": the notebook's functions and its helper file ``opt_utils_v1a``.

A learner's notebook changes its imports only::

    from dnnblocks.course.optimization import *

instead of ``from opt_utils_v1a import load_params_and_grads, initialize_parameters,
forward_propagation, backward_propagation, compute_cost, predict, predict_dec,
plot_decision_boundary, load_dataset`` (plus its own optimizers, learning-rate
decay and ``model``). Same names, arguments, return values, printed text and
seeded numbers; the passes and the parameter updates run on dnnblocks'
kernels (momentum and Adam in one pass over each parameter). Every function
takes an extra keyword ``backend="compiled" | "numpy"``.

As in the course, the update functions bind new arrays into the dicts they
are given (``parameters``, ``v``, ``s``) and return them; arrays held before
are not changed.

Differences from the course, on purpose: ``model`` and ``load_dataset`` draw
no plots; ``plot_decision_boundary`` needs matplotlib.
"""

import math

import numpy as np

from ._common import (
    as_matrix, cross_entropy, draw_parameters, gradient_descent, gradient_of, kernels_for,
    labels_row, layer_parameters, parameter_keys, predict_labels, require_sklearn, three_layer_backward,
    three_layer_forward, unpack_three_layer_cache, zeros_like_parameters,
)
from .._validation import check_positive_int, check_scalar
from .initialization import plot_decision_boundary, predict_dec, relu, sigmoid

__all__ = [
    "sigmoid", "relu", "load_params_and_grads", "initialize_parameters", "compute_cost",
    "forward_propagation", "backward_propagation", "predict", "predict_dec",
    "plot_decision_boundary", "load_dataset", "update_parameters_with_gd", "random_mini_batches",
    "initialize_velocity", "update_parameters_with_momentum", "initialize_adam",
    "update_parameters_with_adam", "model", "update_lr", "schedule_lr_decay",
]


# ----------------------------------------------------------- opt_utils_v1a
def load_params_and_grads(seed=1, backend="compiled"):
    """The helper file's small example: ``np.random.seed(seed)``, then W1, b1, W2, b2, dW1, db1, dW2, db2.

    Returns
    -------
    W1, b1, W2, b2, dW1, db1, dW2, db2 : ndarray
        Shapes (2, 3), (2, 1), (3, 3), (3, 1) and the same for the gradients.
    """
    kernels_for(backend)
    np.random.seed(seed)
    W1 = np.random.randn(2, 3)
    b1 = np.random.randn(2, 1)
    W2 = np.random.randn(3, 3)
    b2 = np.random.randn(3, 1)
    dW1 = np.random.randn(2, 3)
    db1 = np.random.randn(2, 1)
    dW2 = np.random.randn(3, 3)
    db2 = np.random.randn(3, 1)
    return W1, b1, W2, b2, dW1, db1, dW2, db2


def initialize_parameters(layer_dims, backend="compiled"):
    """He initialisation: ``np.random.seed(3)``; ``W = randn(n[l], n[l-1]) * sqrt(2 / n[l-1])``; ``b = 0``."""
    kernels_for(backend)
    return draw_parameters(layer_dims, 3, lambda draws, n_prev: draws * np.sqrt(2 / n_prev))


def compute_cost(a3, Y, backend="compiled"):
    """The *summed* cross-entropy ``sum(-y log a3 - (1 - y) log(1 - a3))`` (not divided by m).

    The model adds it over the mini-batches of an epoch and divides by m once.
    """
    a3 = as_matrix(a3, "a3")
    if a3.shape[0] != 1:
        raise ValueError(f"a3 must have shape (1, m); got {a3.shape}")
    kernels_for(backend)
    return cross_entropy(a3, labels_row(Y, "Y", a3.shape[1]), skip_nan=False)


def forward_propagation(X, parameters, backend="compiled"):
    """LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    Returns
    -------
    a3 : ndarray (1, m)
    cache : tuple ``(z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3)``
    """
    cache = three_layer_forward(kernels_for(backend), X, parameters)
    return cache[9], cache


def backward_propagation(X, Y, cache, backend="compiled"):
    """Gradients as ``opt_utils`` computes them (``dz3 = 1/m (a3 - Y)`` first).

    Returns
    -------
    gradients : dict
        ``"dz3"``, ``"dW3"``, ``"db3"``, ``"da2"``, ``"dz2"``, ``"dW2"``,
        ``"db2"``, ``"da1"``, ``"dz1"``, ``"dW1"``, ``"db1"``.
    """
    z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3 = unpack_three_layer_cache(cache)
    grads = three_layer_backward(kernels_for(backend), X, Y, z1, a1, W1, z2, a2, W2, z3, a3, W3,
                                 scale_output=True)
    return dict(zip(("dz3", "dW3", "db3", "da2", "dz2", "dW2", "db2", "da1", "dz1", "dW1", "db1"),
                    grads))


def predict(X, y, parameters, backend="compiled"):
    """0/1 predictions (int array (1, m)); prints ``Accuracy: ...`` as ``opt_utils`` does."""
    a3, _ = forward_propagation(X, parameters, backend)
    p = predict_labels(a3)
    y = np.asarray(y)
    print("Accuracy: " + str(np.mean((p[0, :] == y[0, :]))))
    return p


def load_dataset(backend="compiled"):
    """The notebook's two moons: ``np.random.seed(3)``, then ``make_moons(n_samples=300, noise=.2)``.

    Needs scikit-learn (``pip install dnnblocks[sklearn]``); no scatter plot.

    Returns
    -------
    train_X : ndarray (2, 300)
    train_Y : ndarray (1, 300)
    """
    kernels_for(backend)
    datasets = require_sklearn("load_dataset")
    np.random.seed(3)
    train_X, train_Y = datasets.make_moons(n_samples=300, noise=.2)
    return train_X.T, train_Y.reshape((1, train_Y.shape[0]))


# ------------------------------------------------------------ the notebook
def update_parameters_with_gd(parameters, grads, learning_rate, backend="compiled"):
    """One gradient-descent step; binds new arrays into `parameters` and returns it."""
    return gradient_descent(kernels_for(backend), parameters, grads, learning_rate)


def random_mini_batches(X, Y, mini_batch_size=64, seed=0, backend="compiled"):
    """Shuffle the examples (columns) and cut them into mini-batches, as the notebook.

    ``np.random.seed(seed)``, then ``np.random.permutation(m)``; full batches
    of `mini_batch_size` and, if m is not a multiple, a last smaller one.

    Returns
    -------
    mini_batches : list of (mini_batch_X, mini_batch_Y)
        Y of shape (1, size).
    """
    kernels_for(backend)
    mini_batch_size = check_positive_int(mini_batch_size, "mini_batch_size")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n_x, m); got shape {X.shape}")
    m = X.shape[1]
    Y = np.asarray(Y)
    if Y.size != m:
        raise ValueError(f"Y must hold one label per example ({m}); got shape {Y.shape}")
    np.random.seed(seed)
    # The same draws as the course's list(np.random.permutation(m)); an
    # index array gathers the columns without a Python list.
    permutation = np.random.permutation(m)
    # Gathered with the examples as rows and transposed back: every
    # mini-batch is then one contiguous block (F-ordered), which the kernels
    # read in place, instead of a strided slice copied at every use.
    shuffled_X = np.asarray(X).T[permutation].T
    shuffled_Y = Y.reshape(1, m)[:, permutation].reshape((1, m))
    mini_batches = []
    num_complete_minibatches = math.floor(m / mini_batch_size)
    for k in range(num_complete_minibatches):
        cut = slice(k * mini_batch_size, (k + 1) * mini_batch_size)
        mini_batches.append((shuffled_X[:, cut], shuffled_Y[:, cut]))
    if m % mini_batch_size != 0:
        cut = slice(num_complete_minibatches * mini_batch_size, m)
        mini_batches.append((shuffled_X[:, cut], shuffled_Y[:, cut]))
    return mini_batches


def initialize_velocity(parameters, backend="compiled"):
    """Zeros of each parameter's shape, keyed ``"dW1"``, ``"db1"``, ..."""
    kernels_for(backend)
    return zeros_like_parameters(parameters)


def _state_arrays(parameters, grads, states, state_names):
    """Every parameter with its gradient and optimizer states, all checked before anything changes."""
    checked = []
    for l, (W, b) in enumerate(layer_parameters(parameters, chained=False), start=1):
        for name, param in zip(parameter_keys(l), (W, b)):
            grad = gradient_of(grads, name, param.shape)
            own = [gradient_of(state, name, param.shape, what=what).copy()
                   for state, what in zip(states, state_names)]
            checked.append((name, param, grad, own))
    return checked


def update_parameters_with_momentum(parameters, grads, v, beta, learning_rate, backend="compiled"):
    """Momentum: ``v = beta v + (1 - beta) grad``; ``param = param - learning_rate v``.

    Returns
    -------
    parameters, v : dict
        The dicts given, with new arrays bound to their keys.
    """
    beta = check_scalar(beta, "beta")
    learning_rate = check_scalar(learning_rate, "learning_rate")
    kernels = kernels_for(backend)
    for name, param, grad, (velocity,) in _state_arrays(parameters, grads, (v,), ("v",)):
        new = param.copy()
        kernels.momentum_update(new, grad, velocity, learning_rate, beta)
        parameters[name] = new
        v["d" + name] = velocity
    return parameters, v


def initialize_adam(parameters, backend="compiled"):
    """``v`` and ``s``: zeros of each parameter's shape, keyed ``"dW1"``, ``"db1"``, ..."""
    kernels_for(backend)
    return zeros_like_parameters(parameters), zeros_like_parameters(parameters)


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01, beta1=0.9, beta2=0.999,
                                epsilon=1e-8, backend="compiled"):
    """One Adam step, bias-corrected with the step count `t` (from 1).

    ``v = beta1 v + (1 - beta1) g``, ``s = beta2 s + (1 - beta2) g**2``,
    ``param = param - learning_rate v_corrected / (sqrt(s_corrected) + epsilon)``
    with ``v_corrected = v / (1 - beta1**t)`` and ``s_corrected = s / (1 - beta2**t)``.

    Returns
    -------
    parameters, v, s : dict
        The dicts given, with new arrays bound to their keys.
    v_corrected, s_corrected : dict
        The bias-corrected moments of this step.
    """
    learning_rate = check_scalar(learning_rate, "learning_rate")
    beta1 = check_scalar(beta1, "beta1", low=0.0, high=1.0, high_inclusive=False)
    beta2 = check_scalar(beta2, "beta2", low=0.0, high=1.0, high_inclusive=False)
    epsilon = check_scalar(epsilon, "epsilon")
    t = check_positive_int(t, "t")
    kernels = kernels_for(backend)
    v_corrected, s_corrected = {}, {}
    correction1 = 1 - np.power(beta1, t)  # the course's factors, computed once per step
    correction2 = 1 - np.power(beta2, t)
    for name, param, grad, (first, second) in _state_arrays(parameters, grads, (v, s), ("v", "s")):
        new = param.copy()
        kernels.adam_update(new, grad, first, second, learning_rate, beta1, beta2, epsilon, t)
        parameters[name] = new
        key = "d" + name
        v[key], s[key] = first, second
        v_corrected[key] = first / correction1
        s_corrected[key] = second / correction2
    return parameters, v, s, v_corrected, s_corrected


def update_lr(learning_rate0, epoch_num, decay_rate, backend="compiled"):
    """``learning_rate0 / (1 + decay_rate * epoch_num)``."""
    kernels_for(backend)
    return 1 / (1 + decay_rate * epoch_num) * learning_rate0


def schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000, backend="compiled"):
    """``learning_rate0 / (1 + decay_rate * floor(epoch_num / time_interval))``."""
    kernels_for(backend)
    return 1 / (1 + decay_rate * np.floor(epoch_num / time_interval)) * learning_rate0


def model(X, Y, layers_dims, optimizer, learning_rate=0.0007, mini_batch_size=64, beta=0.9,
          beta1=0.9, beta2=0.999, epsilon=1e-8, num_epochs=5000, print_cost=True, decay=None,
          decay_rate=1, backend="compiled"):
    """The notebook's three-layer model trained by mini-batch "gd", "momentum" or "adam".

    Mini-batches are reshuffled every epoch with seeds 11, 12, ... (the
    notebook's ``seed = seed + 1`` from 10); ``decay`` (e.g. :func:`update_lr`
    or :func:`schedule_lr_decay`) sets the learning rate after each epoch
    from the initial one. Prints ``Cost after epoch i: cost`` (and the
    learning rate, with a decay) every 1000 epochs when `print_cost`; no plot.

    Returns
    -------
    parameters : dict
    """
    if optimizer not in ("gd", "momentum", "adam"):
        raise ValueError(f"optimizer must be 'gd', 'momentum' or 'adam'; got {optimizer!r}")
    num_epochs = check_positive_int(num_epochs, "num_epochs", minimum=0)
    kernels = kernels_for(backend)
    t = 0
    seed = 10
    m = np.shape(X)[1]
    learning_rate0 = learning_rate
    parameters = initialize_parameters(layers_dims)
    if optimizer == "momentum":
        v = initialize_velocity(parameters)
    elif optimizer == "adam":
        v, s = initialize_adam(parameters)
    for i in range(num_epochs):
        seed = seed + 1
        cost_total = 0
        for minibatch_X, minibatch_Y in random_mini_batches(X, Y, mini_batch_size, seed):
            a3, caches = forward_propagation(minibatch_X, parameters, kernels)
            cost_total += compute_cost(a3, minibatch_Y, kernels)
            grads = backward_propagation(minibatch_X, minibatch_Y, caches, kernels)
            if optimizer == "gd":
                parameters = update_parameters_with_gd(parameters, grads, learning_rate, kernels)
            elif optimizer == "momentum":
                parameters, v = update_parameters_with_momentum(parameters, grads, v, beta, learning_rate,
                                                                kernels)
            else:
                t = t + 1
                parameters, v, s, _, _ = update_parameters_with_adam(
                    parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon, kernels)
        cost_avg = cost_total / m
        if decay:
            learning_rate = decay(learning_rate0, i, decay_rate)
        if print_cost and i % 1000 == 0:
            print("Cost after epoch %i: %f" % (i, cost_avg))
            if decay:
                print("learning rate after epoch %i: %f" % (i, learning_rate))
    return parameters
