"""`Network`: an L-layer fully connected classifier built from the kernels.

This is the thin Python layer of dnnblocks. It owns the parameters, the
per-batch-size buffers and the caches between the forward and backward steps,
and it calls one kernel per building block; the arithmetic itself happens in
the chosen backend (compiled or NumPy), which is the only difference between
the two.
"""

import math
from collections import OrderedDict

import numpy as np

from ._validation import (
    as_binary_labels,
    as_float_matrix,
    check_dtype,
    check_layer_dims,
    check_learning_rate,
)
from .backend import get_backend
from .exceptions import TrainingDivergedError
from .initializers import initialize

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")

# Buffers are kept for this many distinct batch sizes: the full batch and the
# short last mini-batch of an epoch are the common pair.
_MAX_WORKSPACES = 2


class _Workspace:
    """Z, A and dZ/dA buffers for one batch size, reused across steps.

    ``D[l]`` first receives dA[l] = W[l+1]^T dZ[l+1] and is then overwritten in
    place by dZ[l] = dA[l] * g'(Z[l]): the two are never needed together.
    """

    __slots__ = ("m", "Z", "A", "D")

    def __init__(self, layer_dims, m, dtype):
        self.m = m
        self.Z = [np.empty((n, m), dtype=dtype) for n in layer_dims[1:]]
        self.A = [np.empty((n, m), dtype=dtype) for n in layer_dims[1:]]
        self.D = [np.empty((n, m), dtype=dtype) for n in layer_dims[1:]]


class Network:
    """An L-layer fully connected network for binary classification.

    Hidden layers use `hidden_activation`; the output layer is a sigmoid with
    the binary cross-entropy cost. Examples are columns (the course's
    convention): X has shape (n[0], m) and Y has shape (n[L], m).

    Parameters
    ----------
    layer_dims : sequence of int
        Layer sizes ``[n0, n1, ..., nL]``: n0 input features, nL outputs
        (1 for binary classification).
    hidden_activation : {"relu", "tanh", "sigmoid"}, default "relu"
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Precision of parameters, buffers and inputs.
    backend : {"compiled", "numpy"}, default "compiled"
        Which kernel set does the arithmetic. Both give the same numbers.
    init : {"he", "xavier", "random", "zeros"}, default "he"
        Weight initialisation; biases start at zero.
    seed : int, numpy.random.Generator or None
        Seeds the initialisation.

    Attributes
    ----------
    W, b : list of ndarray
        ``W[l-1]`` (shape (n[l], n[l-1])) and ``b[l-1]`` (shape (n[l], 1)) are
        layer l's parameters. They are updated in place by training.
    layer_dims : tuple of int
    dtype : numpy.dtype

    Examples
    --------
    >>> import numpy as np, dnnblocks
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((2, 200))
    >>> Y = (X[0] * X[1] > 0).astype(float).reshape(1, -1)
    >>> net = dnnblocks.Network([2, 8, 1], seed=0)
    >>> costs = [net.step(X, Y, learning_rate=0.5) for _ in range(500)]
    >>> bool(costs[-1] < costs[0])
    True
    """

    def __init__(self, layer_dims, hidden_activation="relu", dtype=np.float64,
                 backend="compiled", init="he", seed=None):
        self.layer_dims = check_layer_dims(layer_dims)
        if hidden_activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(
                f"hidden_activation must be one of {HIDDEN_ACTIVATIONS}; got {hidden_activation!r}"
            )
        self.hidden_activation = hidden_activation
        self.dtype = check_dtype(dtype)
        self._kernels = get_backend(backend)
        rng = np.random.default_rng(seed)
        self.W, self.b = initialize(self.layer_dims, init, rng, self.dtype)
        self.init = init
        self._workspaces = OrderedDict()
        self._dW = None
        self._db = None
        self._forward_state = None  # (X, workspace) of the last forward pass
        self._have_grads = False
        self._checked_X = None
        self._checked_Y = (None, None)

    # ------------------------------------------------------------------ views
    @property
    def backend(self):
        """Name of the kernel set in use: ``"compiled"`` or ``"numpy"``."""
        return self._kernels.name

    @property
    def n_layers(self):
        """L, the number of layers with parameters."""
        return len(self.layer_dims) - 1

    @property
    def activations(self):
        """The activation of each layer, hidden layers first, output last."""
        return (self.hidden_activation,) * (self.n_layers - 1) + ("sigmoid",)

    @property
    def parameters(self):
        """The course's parameter dict ``{"W1": ..., "b1": ..., ...}``, sharing memory with `W` and `b`."""
        params = {}
        for l in range(self.n_layers):
            params[f"W{l + 1}"] = self.W[l]
            params[f"b{l + 1}"] = self.b[l]
        return params

    @property
    def grads(self):
        """Gradients of the last :meth:`backward`, as ``{"dW1": ..., "db1": ..., ...}``."""
        if not self._have_grads:
            raise RuntimeError("no gradients yet: call forward(X) and backward(Y) first")
        out = {}
        for l in range(self.n_layers):
            out[f"dW{l + 1}"] = self._dW[l]
            out[f"db{l + 1}"] = self._db[l]
        return out

    @property
    def caches(self):
        """The last forward pass's caches in the course's layout.

        A list with one ``((A_prev, W, b), Z)`` per layer. The arrays are the
        network's reused buffers: the next forward pass overwrites them.
        """
        if self._forward_state is None:
            raise RuntimeError("no caches yet: call forward(X) first")
        X, ws = self._forward_state
        caches = []
        for l in range(self.n_layers):
            A_prev = X if l == 0 else ws.A[l - 1]
            caches.append(((A_prev, self.W[l], self.b[l]), ws.Z[l]))
        return caches

    # -------------------------------------------------------------- plumbing
    def _workspace(self, m):
        ws = self._workspaces.get(m)
        if ws is None:
            ws = _Workspace(self.layer_dims, m, self.dtype)
            self._workspaces[m] = ws
            while len(self._workspaces) > _MAX_WORKSPACES:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(m)
        return ws

    def _gradient_buffers(self):
        if self._dW is None:
            self._dW = [np.empty_like(w) for w in self.W]
            self._db = [np.empty_like(b) for b in self.b]
        return self._dW, self._db

    def _check_X(self, X, name="X"):
        return as_float_matrix(X, name, self.dtype, n_rows=self.layer_dims[0])

    def _check_training_X(self, X):
        # The finiteness scan costs a full pass over X, as much as a GEMM for
        # a small first layer, so the array last validated is remembered (by a
        # strong reference, so its identity cannot be reused) and not scanned
        # again on every step of a training loop.
        if X is self._checked_X:
            return self._checked_X_ready
        ready = self._check_X(X)
        self._checked_X, self._checked_X_ready = X, ready
        return ready

    def _check_training_Y(self, Y, m):
        held, ready = self._checked_Y
        if Y is held and ready.shape[1] == m:
            return ready
        ready = as_binary_labels(Y, "Y", self.dtype, (self.layer_dims[-1], m))
        self._checked_Y = (Y, ready)
        return ready

    def _forward_into(self, X, ws):
        k = self._kernels
        A_prev = X
        for l, activation in enumerate(self.activations):
            k.linear_activation_forward(self.W[l], self.b[l], A_prev, activation, ws.Z[l], ws.A[l])
            A_prev = ws.A[l]
        return ws.A[-1]

    def _output_gradient(self, Y, ws):
        """Cost of the last forward pass and dZ[L] into ws.D[-1], db[L] into its buffer."""
        _, db = self._gradient_buffers()
        return self._kernels.sigmoid_cross_entropy(
            ws.Z[-1], ws.A[-1], Y, ws.D[-1], db[-1], 1.0 / ws.m
        )

    def _backward_layers(self, X, ws, learning_rate=None):
        """Back-propagate dZ[L] (already in ws.D[-1]) through every layer.

        With `learning_rate` the gradient-descent step is fused into the dW
        GEMM and dW is never stored; without it dW and db are kept for
        :attr:`grads` and :meth:`update`.
        """
        k = self._kernels
        dW, db = self._gradient_buffers()
        inv_m = 1.0 / ws.m
        activations = self.activations
        for l in range(self.n_layers - 1, -1, -1):
            if l < self.n_layers - 1:
                # ws.D[l] holds dA[l]; turn it into dZ[l] in place, with db.
                k.activation_backward(ws.D[l], ws.Z[l], ws.A[l], activations[l], ws.D[l], db[l], inv_m)
            A_prev = X if l == 0 else ws.A[l - 1]
            dA_prev = None if l == 0 else ws.D[l - 1]
            if learning_rate is None:
                k.linear_backward(ws.D[l], A_prev, self.W[l], dW[l], dA_prev, inv_m)
            else:
                k.linear_backward_update(ws.D[l], A_prev, self.W[l], dA_prev, inv_m, learning_rate)
                k.gradient_descent_update(self.b[l], db[l], learning_rate)

    # ------------------------------------------------------------ public API
    def forward(self, X):
        """Forward pass over X, keeping the caches for :meth:`backward`.

        Parameters
        ----------
        X : ndarray of shape (n[0], m)
            C- or F-ordered; F-ordered data (e.g. ``data.T`` of row-major
            (m, n[0]) data) is read in place, not copied.

        Returns
        -------
        AL : ndarray of shape (n[L], m)
            The output probabilities (a copy; the caches keep their own).
        """
        X = self._check_X(X)
        ws = self._workspace(X.shape[1])
        self._forward_into(X, ws)
        self._forward_state = (X, ws)
        self._have_grads = False
        return ws.A[-1].copy()

    def backward(self, Y):
        """Back-propagate from labels Y through the caches of the last :meth:`forward`.

        Stores the gradients (see :attr:`grads`) and returns the cost.

        Parameters
        ----------
        Y : array-like of shape (n[L], m)
            Labels 0 and 1.

        Returns
        -------
        cost : float
            Binary cross-entropy of the last forward pass, from the logits.
        """
        if self._forward_state is None:
            raise RuntimeError("backward(Y) needs the caches of a forward(X) call first")
        X, ws = self._forward_state
        Y = as_binary_labels(Y, "Y", self.dtype, (self.layer_dims[-1], ws.m))
        cost = self._output_gradient(Y, ws)
        self._backward_layers(X, ws)
        self._have_grads = True
        return cost

    def update(self, learning_rate):
        """One gradient-descent step with the gradients of the last :meth:`backward`."""
        learning_rate = check_learning_rate(learning_rate)
        if not self._have_grads:
            raise RuntimeError("update() needs gradients: call forward(X) and backward(Y) first")
        k = self._kernels
        for l in range(self.n_layers):
            k.gradient_descent_update(self.W[l], self._dW[l], learning_rate)
            k.gradient_descent_update(self.b[l], self._db[l], learning_rate)
        # The gradients belong to the parameters before this step.
        self._have_grads = False

    def step(self, X, Y, learning_rate):
        """One full training step: forward, cost, backward and update.

        The update is fused into the backward GEMMs, so the step never stores
        dW. If the cost is not finite nothing is updated and
        :class:`~dnnblocks.exceptions.TrainingDivergedError` is raised.

        Parameters
        ----------
        X : ndarray of shape (n[0], m)
        Y : array-like of shape (n[L], m)
        learning_rate : float

        Returns
        -------
        cost : float
            The cost before the update.
        """
        learning_rate = check_learning_rate(learning_rate)
        X = self._check_training_X(X)
        m = X.shape[1]
        Y = self._check_training_Y(Y, m)
        ws = self._workspace(m)
        self._forward_into(X, ws)
        self._forward_state = (X, ws)
        self._have_grads = False
        cost = self._output_gradient(Y, ws)
        if not math.isfinite(cost):
            raise TrainingDivergedError(
                f"the cost became {cost}; the parameters were left as they were. "
                f"Try a smaller learning_rate (got {learning_rate})."
            )
        self._backward_layers(X, ws, learning_rate)
        return cost

    def predict_proba(self, X):
        """Output probabilities for X (n[0], m), without touching the training caches."""
        X = self._check_X(X)
        # Private buffers: prediction may run while another thread trains or
        # predicts with the same network.
        ws = _Workspace(self.layer_dims, X.shape[1], self.dtype)
        return self._forward_into(X, ws)

    def predict(self, X, threshold=0.5):
        """0/1 predictions for X: 1 where the output probability exceeds `threshold`."""
        return (self.predict_proba(X) > threshold).astype(np.int64)

    def cost(self, X, Y):
        """Binary cross-entropy of the network on (X, Y), computed stably from the logits."""
        X = self._check_X(X)
        Y = as_binary_labels(Y, "Y", self.dtype, (self.layer_dims[-1], X.shape[1]))
        ws = _Workspace(self.layer_dims, X.shape[1], self.dtype)
        self._forward_into(X, ws)
        db = np.empty_like(self.b[-1])
        return self._kernels.sigmoid_cross_entropy(ws.Z[-1], ws.A[-1], Y, ws.D[-1], db, 1.0 / ws.m)

    def __repr__(self):
        return (f"Network(layer_dims={list(self.layer_dims)}, hidden_activation="
                f"{self.hidden_activation!r}, dtype={self.dtype.name}, backend={self.backend!r})")
