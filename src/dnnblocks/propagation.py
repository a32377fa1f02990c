"""The one forward and backward pass over the layers of a fully connected network.

Every path that propagates through the layers runs these functions:
:class:`dnnblocks.Network` (forward, backward, step, cost, prediction),
gradient checking and the Dask workers. They work on public data only:

* the parameters, as the lists ``W`` and ``b`` (``W[l]`` of shape
  (n[l+1], n[l]), ``b[l]`` of shape (n[l+1], 1));
* the activation of each layer, hidden layers first, output
  (``"sigmoid"`` or ``"softmax"``) last;
* a :class:`Workspace` holding the buffers of one batch size;
* the kernel table of a backend (:func:`dnnblocks.backend.get_backend`),
  which does all the arithmetic: the two backends differ in nothing else.

Nothing here validates its arguments: the callers check the data and the
parameters before any kernel runs (never a half-updated model).
"""

import numpy as np


class Workspace:
    """Z, A and dZ/dA buffers for one batch size, reused across steps.

    ``D[l]`` first receives dA[l] = W[l+1]^T dZ[l+1] and is then overwritten in
    place by dZ[l] = dA[l] * g'(Z[l]): the two are never needed together.

    Z, A and D are allocated on first use: a training loop of fused
    gradient-descent steps runs in ``fused`` (a backend ``TrainingStep`` with
    its own, smaller, buffers) and never needs them.

    Parameters
    ----------
    layer_dims : sequence of int
        ``[n0, n1, ..., nL]``.
    m : int
        Examples (columns) per batch.
    dtype : numpy.dtype
    """

    __slots__ = ("m", "_dims", "_dtype", "_Z", "_A", "_D", "M", "fused")

    def __init__(self, layer_dims, m, dtype):
        self.m = m
        self._dims = tuple(layer_dims[1:])
        self._dtype = dtype
        self._Z = self._A = self._D = None
        self.M = None  # dropout masks of the hidden layers, made on first use
        self.fused = None  # the backend's TrainingStep for this batch size

    def _buffers(self):
        return [np.empty((n, self.m), dtype=self._dtype) for n in self._dims]

    @property
    def Z(self):
        """Pre-activations Z[l] of each layer, shape (n[l+1], m)."""
        if self._Z is None:
            self._Z = self._buffers()
        return self._Z

    @property
    def A(self):
        """Activations A[l] of each layer (after dropout, for hidden layers that drop)."""
        if self._A is None:
            self._A = self._buffers()
        return self._A

    @property
    def D(self):
        """dA[l], then dZ[l] in place, of each layer during the backward pass."""
        if self._D is None:
            self._D = self._buffers()
        return self._D

    def masks(self):
        """The dropout masks of the hidden layers (allocated on first use)."""
        if self.M is None:
            self.M = [np.empty_like(a) for a in self.A[:-1]]
        return self.M


def gradient_buffers(W, b):
    """New (dW, db) lists shaped like (W, b), for :func:`backward`."""
    return [np.empty_like(w) for w in W], [np.empty_like(v) for v in b]


def forward(kernels, W, b, activations, X, ws, keep_prob=1.0, rng=None):
    """Forward pass over X into the buffers of `ws`; returns A[L] (``ws.A[-1]``).

    Parameters
    ----------
    kernels : backend kernel table
    W, b : list of ndarray
    activations : sequence of str
        One per layer; the last is ``"sigmoid"`` or ``"softmax"``.
    X : ndarray of shape (n[0], ws.m)
    ws : Workspace
    keep_prob : float, default 1.0
        Below 1 (training only), the hidden activations get inverted dropout
        with masks drawn from `rng` into ``ws.M``.
    rng : numpy.random.Generator, optional
    """
    A_prev = X
    last = len(W) - 1
    for l, activation in enumerate(activations):
        if l == last and activation == "softmax":
            # Logits into Z (A may alias Z for the identity), then the
            # column-wise softmax into A.
            kernels.linear_activation_forward(W[l], b[l], A_prev, "identity", ws.Z[l], ws.Z[l])
            kernels.softmax_forward(ws.Z[l], ws.A[l])
            break
        kernels.linear_activation_forward(W[l], b[l], A_prev, activation, ws.Z[l], ws.A[l])
        if keep_prob < 1.0 and l < last:
            mask = ws.masks()[l]
            rng.random(out=mask, dtype=mask.dtype)
            kernels.dropout_forward(ws.A[l], mask, keep_prob)
        A_prev = ws.A[l]
    return ws.A[-1]


def output_gradient(kernels, output, Y, ws, db_last):
    """Cost of the last forward pass in `ws`; dZ[L] into ``ws.D[-1]``, db[L] into `db_last`.

    Parameters
    ----------
    output : {"sigmoid", "softmax"}
        The output layer (cross-entropy of independent sigmoids, or categorical).
    Y : ndarray of shape (n[L], ws.m)
    db_last : ndarray of shape (n[L], 1)

    Returns
    -------
    float
        The mean cross-entropy, computed stably from the logits (no L2 term).
    """
    kernel = kernels.softmax_cross_entropy if output == "softmax" else kernels.sigmoid_cross_entropy
    return kernel(ws.Z[-1], ws.A[-1], Y, ws.D[-1], db_last, 1.0 / ws.m)


def l2_cost(W, l2, m):
    """``(l2 / 2m) * sum of squared weights`` (biases are not regularised)."""
    total = 0.0
    # Weights large enough to overflow make the cost inf, which the step
    # reports as TrainingDivergedError: no RuntimeWarning on top of it.
    with np.errstate(over="ignore", invalid="ignore"):
        for w in W:
            flat = w.reshape(-1)
            total += float(np.dot(flat, flat))
    return l2 / (2.0 * m) * total


def backward(kernels, W, b, activations, X, ws, dW, db, learning_rate=None, optimizer=None,
             weight_decay=0.0, dropout=False):
    """Back-propagate dZ[L] (already in ``ws.D[-1]``, db[L] in ``db[-1]``) through every layer.

    With `learning_rate` and no `optimizer` the gradient-descent step is
    fused into the dW GEMM and dW is never stored. With an `optimizer`
    (whose ``start_step`` the caller has run), dW is stored and each layer is
    updated as soon as its gradient is ready (its weights are no longer
    needed by then). Without `learning_rate` the gradients are left in `dW`
    and `db`, with the L2 term in dW.

    Parameters
    ----------
    kernels, W, b, activations, X, ws
        As for :func:`forward`, after the forward pass over X.
    dW, db : list of ndarray
        Gradient buffers shaped like W and b (see :func:`gradient_buffers`).
    learning_rate : float, optional
    optimizer : dnnblocks.optimizers.Optimizer, optional
    weight_decay : float, default 0
        The L2 coefficient lambda/m.
    dropout : bool, default False
        Whether the forward pass used the masks in ``ws.M``.
    """
    inv_m = 1.0 / ws.m
    n_layers = len(W)
    for l in range(n_layers - 1, -1, -1):
        if l < n_layers - 1:
            A_cached = ws.A[l]
            if dropout:
                kernels.dropout_backward(ws.D[l], ws.M[l])
                # ws.A[l] holds the dropped-out activation, not g(Z):
                # tanh' and sigmoid' must come from Z (relu's needs only Z).
                A_cached = None
            # ws.D[l] holds dA[l]; turn it into dZ[l] in place, with db.
            kernels.activation_backward(ws.D[l], ws.Z[l], A_cached, activations[l], ws.D[l], db[l],
                                        inv_m)
        A_prev = X if l == 0 else ws.A[l - 1]
        dA_prev = None if l == 0 else ws.D[l - 1]
        if learning_rate is None:
            kernels.linear_backward(ws.D[l], A_prev, W[l], dW[l], dA_prev, inv_m)
            if weight_decay:
                # dW += (lambda/m) W, through the update kernel with a negative rate.
                kernels.gradient_descent_update(dW[l], W[l], -weight_decay)
        elif optimizer is None:
            kernels.linear_backward_update(ws.D[l], A_prev, W[l], dA_prev, inv_m, learning_rate,
                                           weight_decay)
            kernels.gradient_descent_update(b[l], db[l], learning_rate)
        else:
            kernels.linear_backward(ws.D[l], A_prev, W[l], dW[l], dA_prev, inv_m)
            optimizer.update_layer(kernels, l, W[l], dW[l], b[l], db[l], learning_rate, weight_decay)


def gradient(kernels, W, b, activations, X, Y, ws, dW, db, keep_prob=1.0, rng=None):
    """Mean gradients of the cost on (X, Y) into `dW` and `db`; returns the mean cost (no L2 term).

    One :func:`forward`, :func:`output_gradient` and :func:`backward` without
    an update (what a data-parallel worker computes for its rows).
    """
    forward(kernels, W, b, activations, X, ws, keep_prob, rng)
    cost = output_gradient(kernels, activations[-1], Y, ws, db[-1])
    backward(kernels, W, b, activations, X, ws, dW, db, dropout=keep_prob < 1.0)
    return cost


def fused_training_step(kernels, W, b, activations, ws, before_build=None):
    """The backend's fused gradient-descent step for (W, b) and batches of ``ws.m``.

    Plain gradient descent (forward, cost, backward and update, no dropout,
    sigmoid output) as one backend call: ``step.run(X, Y, learning_rate, l2)``
    returns the cost before the update. The ``TrainingStep`` of
    ``make_training_step`` is kept in ``ws.fused`` and rebuilt when the
    parameter arrays change; `before_build` (e.g. a parameter check) runs
    before each build. It keeps its own lean buffers, so ``ws.Z`` and ``ws.A``
    are not filled.
    """
    fused = ws.fused
    if fused is None or not fused.uses(W, b):
        if before_build is not None:
            before_build()
        fused = ws.fused = kernels.make_training_step(W, b, activations, ws.m)
    return fused


__all__ = ["Workspace", "backward", "forward", "fused_training_step", "gradient", "gradient_buffers", "l2_cost",
           "output_gradient"]
