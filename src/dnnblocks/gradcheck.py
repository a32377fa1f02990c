"""Gradient checking: back-propagation against centred finite differences.

The course's ``gradient_check_n`` for any :class:`dnnblocks.Network`: every
parameter is nudged by +/- epsilon, the cost is recomputed, and the numerical
gradient ``(J(theta + eps) - J(theta - eps)) / (2 eps)`` is compared with the
back-propagated one through their relative difference

    ||grad - gradapprox|| / (||grad|| + ||gradapprox||)

which is about 1e-7 or less when back-propagation is right (in float64).
"""

import numpy as np

from . import propagation
from ._validation import check_scalar


class GradientCheckResult(float):
    """The relative difference (a float), with the two gradients attached.

    Attributes
    ----------
    difference : float
        The relative difference (also the value of the object itself).
    grad : ndarray
        Back-propagated gradient, all parameters flattened in the order
        W1, b1, W2, b2, ...
    gradapprox : ndarray
        The centred finite-difference estimate, same order.
    names : list of str
        The parameter each entry belongs to, e.g. ``"W2[0, 3]"``.
    """

    def __new__(cls, difference, grad, gradapprox, names):
        obj = super().__new__(cls, difference)
        obj.difference = float(difference)
        obj.grad = grad
        obj.gradapprox = gradapprox
        obj.names = names
        return obj

    def worst(self, k=5):
        """The `k` entries with the largest absolute disagreement, as (name, grad, gradapprox)."""
        order = np.argsort(-np.abs(self.grad - self.gradapprox))[:k]
        return [(self.names[i], float(self.grad[i]), float(self.gradapprox[i])) for i in order]


def gradient_check(net, X, Y, epsilon=1e-7, l2=0.0, max_params=None, seed=0):
    """Compare back-propagation with centred finite differences on `net`.

    The network's parameters are left exactly as they were.

    Parameters
    ----------
    net : dnnblocks.Network
        Use ``dtype=np.float64``: in float32 the finite differences drown in
        rounding error (a difference around 1e-3 is then the best to expect,
        with ``epsilon`` around 1e-3).
    X : ndarray of shape (n[0], m)
    Y : array-like of shape (n[L], m)
    epsilon : float, default 1e-7
        The nudge.
    l2 : float, default 0
        Check the L2-regularised cost and gradient with this lambda.
    max_params : int, optional
        Check only this many parameters, chosen at random (with `seed`); all
        of them by default (two forward passes each).
    seed : int, default 0

    Returns
    -------
    GradientCheckResult
        A float, the relative difference, carrying ``grad``, ``gradapprox``
        and ``names``.

    Examples
    --------
    >>> import numpy as np, dnnblocks
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 10)); Y = (X[:1] > 0).astype(float)
    >>> net = dnnblocks.Network([4, 5, 3, 1], hidden_activation="tanh", seed=1)
    >>> bool(dnnblocks.gradient_check(net, X, Y) < 1e-7)
    True
    """
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    l2 = check_scalar(l2, "l2", low=0.0)
    net.forward(X)  # validates X, Y, l2 and the parameters
    net.backward(Y, l2=l2)
    grads = net.grads
    X = net.check_X(X)
    Y = net.check_Y(Y, X.shape[1])
    ws = propagation.Workspace(net.layer_dims, X.shape[1], net.dtype)
    db_last = np.empty_like(net.b[-1])

    def cost():
        # The cost of Network.cost, without validating X and Y again per nudge.
        propagation.forward(net.kernels, net.W, net.b, net.activations, X, ws)
        value = propagation.output_gradient(net.kernels, net.output, Y, ws, db_last)
        return value + propagation.l2_cost(net.W, l2, ws.m) if l2 else value
    params = []
    for l in range(net.n_layers):
        params.append((f"W{l + 1}", net.W[l], grads[f"dW{l + 1}"]))
        params.append((f"b{l + 1}", net.b[l], grads[f"db{l + 1}"]))
    entries = [(name, p, g, idx) for name, p, g in params for idx in np.ndindex(p.shape)]
    if max_params is not None and max_params < len(entries):
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(entries), size=max_params, replace=False))
        entries = [entries[i] for i in chosen]
    grad = np.empty(len(entries))
    approx = np.empty(len(entries))
    names = []
    for i, (name, p, g, idx) in enumerate(entries):
        grad[i] = g[idx]
        original = p[idx]
        try:
            p[idx] = original + epsilon
            plus = cost()
            p[idx] = original - epsilon
            minus = cost()
        finally:
            p[idx] = original
        approx[i] = (plus - minus) / (2 * epsilon)
        names.append(f"{name}[{', '.join(map(str, idx))}]")
    numerator = np.linalg.norm(grad - approx)
    denominator = np.linalg.norm(grad) + np.linalg.norm(approx)
    difference = numerator / denominator if denominator > 0 else 0.0
    return GradientCheckResult(difference, grad, approx, names)
