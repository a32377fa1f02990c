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
    HIDDEN_ACTIVATIONS,
    OUTPUTS,
    as_binary_labels,
    as_float_matrix,
    check_dtype,
    check_layer_dims,
    check_learning_rate,
    check_parameter_memory,
    check_parameters,
    check_scalar,
)
from . import profiling, propagation, training
from .backend import get_backend
from .exceptions import TrainingDivergedError
from .initializers import initialize
from .model_file import check_network_arrays, network_record, optimizer_from_record, restore_rng, write_model
from .optimizers import GradientDescent, Optimizer, get_optimizer
from .propagation import Workspace


# Buffers are kept for this many distinct batch sizes: the full batch and the
# short last mini-batch of an epoch are the common pair.
_MAX_WORKSPACES = 2


class _CheckedInputs:
    """The X and Y a training loop's steps last validated, so that they are not scanned again.

    The finiteness scan costs a full pass over X, as much as a GEMM for a
    small first layer. The array last validated is remembered by a strong
    reference (so its identity cannot be reused), and only when it is used
    as it is: a converted copy would go stale if the caller refilled the
    same array with the next batch.
    """

    __slots__ = ("_X", "_X_ready", "_Y", "_Y_ready")

    def __init__(self):
        self._X = self._X_ready = self._Y = self._Y_ready = None

    def X(self, X, check):
        """`check(X)`, or its result for the same array last time."""
        if X is not None and X is self._X:
            return self._X_ready
        ready = check(X)
        if ready is X:
            self._X, self._X_ready = X, ready
        return ready

    def Y(self, Y, m, check):
        """`check(Y, m)`, or its result for the same array (and m) last time."""
        if Y is not None and Y is self._Y and self._Y_ready.shape[1] == m:
            return self._Y_ready
        ready = check(Y, m)
        if ready is Y:
            self._Y, self._Y_ready = Y, ready
        return ready


class _CourseViews:
    """The course's layouts of a :class:`Network`'s state: parameter and gradient dicts, caches."""

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

        A plain gradient-descent :meth:`step` (no optimizer, dropout or
        softmax) runs as one fused backend call that keeps only the buffers
        the step itself needs, not the course's caches: after it the list has
        the same arrays (and batch size), but their values are those of the
        last :meth:`forward`, if any. Call :meth:`forward` to fill them.
        """
        if self._forward_state is None:
            raise RuntimeError("no caches yet: call forward(X) first")
        X, ws = self._forward_state
        caches = []
        for l in range(self.n_layers):
            A_prev = X if l == 0 else ws.A[l - 1]
            caches.append(((A_prev, self.W[l], self.b[l]), ws.Z[l]))
        return caches


class Network(_CourseViews):
    """An L-layer fully connected classifier network.

    Hidden layers use `hidden_activation`. The output layer is a sigmoid with
    the binary cross-entropy cost (one unit for binary labels; several units
    are independent binary outputs) or, with ``output="softmax"``, a softmax
    over n[L] >= 2 classes with the categorical cross-entropy (Y one-hot).
    Examples are columns (the course's convention): X has shape (n[0], m) and
    Y has shape (n[L], m).

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
    init : {"he", "xavier", "glorot", "random", "zeros"}, default "he"
        Weight initialisation; biases start at zero (``"glorot"``: uniform
        weights and biases, see :mod:`dnnblocks.initializers`).
    seed : int, numpy.random.Generator or None
        Seeds the initialisation, and then the dropout masks of :meth:`step`
        when it is given no ``rng``.
    output : {"sigmoid", "softmax"}, default "sigmoid"
        The output layer.

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

    Training loops with optimizers, mini-batches, L2 and dropout are in
    :meth:`fit`; one step of any of them is :meth:`step`.
    """

    def __init__(self, layer_dims, hidden_activation="relu", dtype=np.float64,
                 backend="compiled", init="he", seed=None, output="sigmoid"):
        self.layer_dims = check_layer_dims(layer_dims)
        if not isinstance(hidden_activation, str) or hidden_activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(
                f"hidden_activation must be one of {HIDDEN_ACTIVATIONS}; got {hidden_activation!r}"
            )
        self.hidden_activation = str(hidden_activation)  # a numpy.str_ becomes a plain str
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        if output == "softmax" and self.layer_dims[-1] < 2:
            raise ValueError(
                f"a softmax output needs at least 2 units (one per class); layer_dims ends with "
                f"{self.layer_dims[-1]}. Use output='sigmoid' for binary labels."
            )
        self.output = output
        self.dtype = check_dtype(dtype)
        check_parameter_memory(self.layer_dims, self.dtype, "layer_dims")  # before initialize allocates
        self._kernels = get_backend(backend)
        rng = np.random.default_rng(seed)
        self.W, self.b = initialize(self.layer_dims, init, rng, self.dtype)
        self.init = init
        self._rng = rng
        self._workspaces = OrderedDict()
        self._dW = None
        self._db = None
        self._forward_state = None  # (X, workspace) of the last forward pass
        self._have_grads = False
        self._inputs = _CheckedInputs()

    # ------------------------------------------------------------------ views
    @property
    def backend(self):
        """Name of the kernel set in use: ``"compiled"`` or ``"numpy"``."""
        return self._kernels.name

    @property
    def kernels(self):
        """The kernel table of the backend in use (see :mod:`dnnblocks.backend`)."""
        return self._kernels

    @property
    def rng(self):
        """The generator of the dropout masks of :meth:`step` when it is given no ``rng``."""
        return self._rng

    @rng.setter
    def rng(self, generator):
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(generator).__name__}")
        self._rng = generator

    @property
    def n_layers(self):
        """L, the number of layers with parameters."""
        return len(self.layer_dims) - 1

    @property
    def activations(self):
        """The activation of each layer, hidden layers first, output last."""
        return (self.hidden_activation,) * (self.n_layers - 1) + (self.output,)

    # -------------------------------------------------------------- plumbing
    def _workspace(self, m):
        ws = self._workspaces.get(m)
        if ws is None:
            ws = Workspace(self.layer_dims, m, self.dtype)
            self._workspaces[m] = ws
            while len(self._workspaces) > _MAX_WORKSPACES:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(m)
        return ws

    def _gradient_buffers(self):
        if self._dW is None:
            self._dW, self._db = propagation.gradient_buffers(self.W, self.b)
        return self._dW, self._db

    def _check_parameters(self, writeable=False):
        # W and b are public lists users may assign to: O(L) checks before any
        # kernel touches them (never a half-updated model).
        check_parameters(self.W, self.b, self.layer_dims, self.dtype, writeable)

    def check_X(self, X, name="X"):
        """`X` checked for this network: a finite float (n[0], m) array of its dtype (C or F order kept).

        Raises ValueError/TypeError naming `name`; copies only to convert.
        """
        return as_float_matrix(X, name, self.dtype, n_rows=self.layer_dims[0])

    def check_Y(self, Y, m, name="Y"):
        """`Y` checked for this network: 0/1 labels of shape (n[L], m), one-hot for a softmax output."""
        Y = as_binary_labels(Y, name, self.dtype, (self.layer_dims[-1], m))
        if self.output == "softmax":
            bad = Y.sum(axis=0) != 1
            if bad.any():
                raise ValueError(
                    f"{name} must be one-hot for a softmax output: exactly one 1 per column; "
                    f"column {int(np.argmax(bad))} is not"
                )
        return Y

    def _forward_into(self, X, ws, keep_prob=1.0, rng=None):
        """:func:`dnnblocks.propagation.forward` with this network's parameters; returns A[L]."""
        return propagation.forward(self._kernels, self.W, self.b, self.activations, X, ws, keep_prob, rng)

    def _backward_from_output(self, X, Y, ws, learning_rate=None, optimizer=None, l2=0.0,
                              dropout=False):
        """Cost (with the L2 term) of the forward pass in `ws`, then the backward pass.

        Raises TrainingDivergedError, before any update, when a training
        step's cost is not finite; see :func:`dnnblocks.propagation.backward`.
        """
        dW, db = self._gradient_buffers()
        cost = propagation.output_gradient(self._kernels, self.output, Y, ws, db[-1])
        if l2:
            cost += propagation.l2_cost(self.W, l2, ws.m)
        if learning_rate is not None:
            check_step_cost(cost, learning_rate)
            if optimizer is not None:
                optimizer.start_step(self.W, self.b)
        propagation.backward(self._kernels, self.W, self.b, self.activations, X, ws, dW, db,
                             learning_rate, optimizer, l2 / ws.m, dropout)
        return cost

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
        X = self.check_X(X)
        self._check_parameters()
        ws = self._workspace(X.shape[1])
        self._forward_into(X, ws)
        self._forward_state = (X, ws)
        self._have_grads = False
        return ws.A[-1].copy()

    def backward(self, Y, l2=0.0):
        """Back-propagate from labels Y through the caches of the last :meth:`forward`.

        Stores the gradients (see :attr:`grads`) and returns the cost.

        Parameters
        ----------
        Y : array-like of shape (n[L], m)
            Labels 0 and 1 (one-hot columns for a softmax output).
        l2 : float >= 0, default 0
            L2 regularisation strength lambda: the cost gains
            ``(lambda / 2m) sum ||W||^2`` and each dW gains ``(lambda / m) W``.

        Returns
        -------
        cost : float
            Cross-entropy of the last forward pass, from the logits, plus the
            L2 term.
        """
        l2 = _check_l2(l2)
        if self._forward_state is None:
            raise RuntimeError("backward(Y) needs the caches of a forward(X) call first")
        X, ws = self._forward_state
        Y = self.check_Y(Y, ws.m)
        self._check_parameters()
        cost = self._backward_from_output(X, Y, ws, l2=l2)
        self._have_grads = True
        return cost

    def update(self, learning_rate, optimizer=None):
        """One update with the gradients of the last :meth:`backward`.

        Parameters
        ----------
        learning_rate : float > 0
        optimizer : None, {"sgd", "momentum", "adam"} or Optimizer
            None is plain gradient descent. Pass the same
            :class:`~dnnblocks.optimizers.Optimizer` object at every call: it
            keeps the momentum/Adam state between steps.
        """
        learning_rate = check_learning_rate(learning_rate, dtype=self.dtype)
        optimizer = GradientDescent() if optimizer is None else get_optimizer(optimizer)
        if not self._have_grads:
            raise RuntimeError("update() needs gradients: call forward(X) and backward(Y) first")
        self._check_parameters(writeable=True)
        k = self._kernels
        optimizer.start_step(self.W, self.b)
        for l in range(self.n_layers):
            # backward() already added the L2 term to dW.
            optimizer.update_layer(k, l, self.W[l], self._dW[l], self.b[l], self._db[l],
                                   learning_rate, 0.0)
        # The gradients belong to the parameters before this step.
        self._have_grads = False

    def step(self, X, Y, learning_rate, *, optimizer=None, l2=0.0, dropout=0.0, rng=None):
        """One full training step: forward, cost, backward and update.

        With plain gradient descent (the default) the update is fused into the
        backward GEMMs, so the step never stores dW; momentum and Adam update
        each layer as soon as its gradient is ready. If the cost is not finite
        nothing is updated and
        :class:`~dnnblocks.exceptions.TrainingDivergedError` is raised.

        Parameters
        ----------
        X : ndarray of shape (n[0], m)
        Y : array-like of shape (n[L], m)
        learning_rate : float
        optimizer : None, "sgd" or Optimizer, default None
            None (or ``"sgd"``) is plain gradient descent. For momentum or
            Adam pass an :class:`~dnnblocks.optimizers.Optimizer` object
            (e.g. ``dnnblocks.optimizers.Adam()``) and the same one at every
            step: it holds the state.
        l2 : float >= 0, default 0
            L2 regularisation strength lambda (see :meth:`backward`).
        dropout : float in [0, 1), default 0
            Probability of dropping each hidden unit (inverted dropout; the
            output layer never drops). 0 is no dropout.
        rng : numpy.random.Generator, optional
            Draws the dropout masks; defaults to the network's own generator
            (seeded by ``seed``).

        Returns
        -------
        cost : float
            The cost before the update (with the dropout masks of this step
            and the L2 term).
        """
        learning_rate = check_learning_rate(learning_rate, dtype=self.dtype)
        optimizer = _check_step_optimizer(optimizer)
        l2 = _check_l2(l2)
        keep_prob = 1.0 - _check_dropout(dropout)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
        X = self._inputs.X(X, self.check_X)
        m = X.shape[1]
        Y = self._inputs.Y(Y, m, self.check_Y)
        return self.validated_step(X, Y, learning_rate, optimizer, l2, keep_prob,
                                   self._rng if rng is None else rng)

    def validated_step(self, X, Y, learning_rate, optimizer, l2, keep_prob, rng):
        """:meth:`step` on arguments already checked: the training loop's entry point.

        `X` and `Y` as :meth:`step` returns them from its checks, `optimizer`
        None for plain gradient descent, `keep_prob` = 1 - dropout, `rng` a
        Generator. Nothing is checked again but the parameters.
        """
        ws = self._workspace(X.shape[1])
        if optimizer is None and keep_prob == 1.0 and self.output == "sigmoid":
            return self._fused_step(X, Y, learning_rate, l2, ws)
        self._check_parameters(writeable=True)
        self._forward_into(X, ws, keep_prob, rng)
        self._forward_state = (X, ws)
        self._have_grads = False
        return self._backward_from_output(X, Y, ws, learning_rate, optimizer, l2, keep_prob < 1.0)

    def _fused_step(self, X, Y, learning_rate, l2, ws):
        """Plain gradient descent as one backend call (``make_training_step``).

        The step keeps its own lean buffers (see ``csrc/_step.pyx``), so the
        caches of this step are not kept: :attr:`caches` shows the workspace's
        buffers but their values are those of the last :meth:`forward`.
        """
        fused = propagation.fused_training_step(
            self._kernels, self.W, self.b, self.activations, ws,
            before_build=lambda: self._check_parameters(writeable=True))
        self._forward_state = (X, ws)
        self._have_grads = False
        cost = fused.run(X, Y, learning_rate, l2)
        check_step_cost(cost, learning_rate)
        return cost

    def profile(self, X, Y, learning_rate=0.01, repeats=20, print_table=True):
        """Time each building block of one training step, per layer.

        See :func:`dnnblocks.profiling.profile`; the network's parameters are
        left as they were.
        """
        return profiling.profile(self, X, Y, learning_rate=learning_rate, repeats=repeats,
                                 print_table=print_table)

    def fit(self, X, Y, **options):
        """Train on (X, Y): epochs of (mini-)batches with any optimizer.

        A thin wrapper of :func:`dnnblocks.training.train`; see it for the
        options (``epochs``, ``batch_size``, ``learning_rate``, ``optimizer``,
        ``l2``, ``dropout``, ``schedule``, ``validation_fraction``,
        ``early_stopping``, ``route``, ``engine``, ``verbose``, ...).

        Returns
        -------
        history : dnnblocks.training.History
            Cost per epoch and, with validation, the validation scores.
        """
        return training.train(self, X, Y, **options)

    def predict_proba(self, X):
        """Output probabilities for X (n[0], m), without touching the training caches.

        Returns an (n[L], m) array: sigmoid outputs, or for a softmax output
        the class probabilities of each column (they sum to 1).
        """
        X = self.check_X(X)
        self._check_parameters()
        # Private buffers: prediction may run while another thread trains or
        # predicts with the same network.
        ws = Workspace(self.layer_dims, X.shape[1], self.dtype)
        return self._forward_into(X, ws)

    def decision_function(self, X):
        """The output logits Z[L] for X, shape (n[L], m): what the output activation is applied to."""
        X = self.check_X(X)
        self._check_parameters()
        ws = Workspace(self.layer_dims, X.shape[1], self.dtype)
        self._forward_into(X, ws)
        return ws.Z[-1]

    def predict(self, X, threshold=0.5):
        """Predictions for X.

        For a sigmoid output, 0/1 of shape (n[L], m): 1 where the output
        probability exceeds `threshold`. For a softmax output, the index of
        the most probable class, shape (1, m).
        """
        if self.output == "softmax":
            return np.argmax(self.predict_proba(X), axis=0).reshape(1, -1)
        return (self.predict_proba(X) > threshold).astype(np.int64)

    def cost(self, X, Y, l2=0.0):
        """Cross-entropy of the network on (X, Y), computed stably from the logits.

        With `l2` the L2 term ``(l2 / 2m) sum ||W||^2`` is added.
        """
        l2 = _check_l2(l2)
        X = self.check_X(X)
        Y = self.check_Y(Y, X.shape[1])
        self._check_parameters()
        ws = Workspace(self.layer_dims, X.shape[1], self.dtype)
        self._forward_into(X, ws)
        cost = propagation.output_gradient(self._kernels, self.output, Y, ws, np.empty_like(self.b[-1]))
        if l2:
            cost += propagation.l2_cost(self.W, l2, ws.m)
        return cost

    def save(self, path):
        """Write the network (architecture, dtype, weights) to a ``.npz`` model file.

        Read it back with :func:`dnnblocks.load`. See :mod:`dnnblocks.model_io`.
        """
        meta, arrays = network_record_of(self)
        return write_model(path, "Network", meta, arrays)

    # ------------------------------------------------------- copy and pickle
    def snapshot(self):
        """A copy of the parameters, ``(W copies, b copies)``, for :meth:`restore`."""
        return [w.copy() for w in self.W], [b.copy() for b in self.b]

    def restore(self, snapshot):
        """Copy the parameters of a :meth:`snapshot` back into `W` and `b` (in place)."""
        W, b = snapshot
        for dst, src in zip(self.W + self.b, W + b):
            np.copyto(dst, src)

    def __getstate__(self):
        state = self.__dict__.copy()
        # Buffers and caches are rebuilt on demand; kernels are named by backend.
        state["_kernels"] = self._kernels.name
        state["_workspaces"] = OrderedDict()
        state["_dW"] = state["_db"] = None
        state["_forward_state"] = None
        state["_have_grads"] = False
        state["_inputs"] = _CheckedInputs()
        return state

    def __setstate__(self, state):
        state = dict(state)
        state["_kernels"] = get_backend(state["_kernels"])
        self.__dict__.update(state)

    def __repr__(self):
        out = "" if self.output == "sigmoid" else f", output={self.output!r}"
        return (f"Network(layer_dims={list(self.layer_dims)}, hidden_activation="
                f"{self.hidden_activation!r}, dtype={self.dtype.name}, backend={self.backend!r}{out})")


def check_step_cost(cost, learning_rate):
    """Raise :class:`TrainingDivergedError` if a step's cost is NaN or infinite.

    Called after the cost and before any update, by every training path
    (in-memory steps and the Dask driver), so the parameters stay those of
    the last finite step.
    """
    if not math.isfinite(cost):
        raise TrainingDivergedError(
            f"the cost became {cost}; the parameters were left as they were. "
            f"Try a smaller learning_rate (got {learning_rate})."
        )


def _check_l2(l2):
    return check_scalar(l2, "l2", low=0.0)


def _check_dropout(dropout):
    return check_scalar(dropout, "dropout", low=0.0, high=1.0, high_inclusive=False)


def _check_step_optimizer(optimizer):
    """None or an Optimizer object for the step; plain gradient descent becomes None (fused)."""
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        if optimizer in ("sgd", "gd"):
            return None
        raise ValueError(
            f"step() needs an Optimizer object for {optimizer!r} (its state must persist between "
            f"steps): e.g. optimizer = dnnblocks.optimizers.get_optimizer({optimizer!r}), created "
            f"once and passed at every step"
        )
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be None, 'sgd' or an Optimizer; got {type(optimizer).__name__}")
    if isinstance(optimizer, GradientDescent):
        return None
    return optimizer


# ------------------------------------------------------------ model files
def network_record_of(net, optimizer=None):
    """The model-file record (metadata, arrays) of `net` and an optimizer's state.

    See :mod:`dnnblocks.model_file` for the format; :func:`network_from_record`
    reads it back.
    """
    return network_record(layer_dims=net.layer_dims, hidden_activation=net.hidden_activation,
                          output=net.output, dtype=net.dtype, init=net.init, backend=net.backend,
                          W=net.W, b=net.b, rng=net.rng, optimizer=optimizer)


def network_from_record(meta, arrays):
    """Rebuild ``(network, optimizer or None)`` from a record of :func:`network_record_of`."""
    spec = meta["network"]
    # Checked before the Network is built: a corrupted architecture must not
    # allocate (or initialise) a huge network.
    check_network_arrays(meta, arrays)
    net = Network(spec["layer_dims"], hidden_activation=spec["hidden_activation"],
                  dtype=spec["dtype"], backend=spec.get("backend", "compiled"),
                  init=spec.get("init", "he"), output=spec.get("output", "sigmoid"), seed=0)
    for l in range(net.n_layers):
        np.copyto(net.W[l], arrays[f"W{l}"])
        np.copyto(net.b[l], arrays[f"b{l}"])
    rng = restore_rng(meta.get("rng_state"))
    if rng is not None:
        net.rng = rng
    return net, optimizer_from_record(meta, arrays, net.W, net.b)
