"""The epoch runner: every mini-batch step of an epoch in one compiled call.

A training loop that calls one step per mini-batch from Python pays, per
batch, for the gather, the argument checks, one kernel call per layer and per
optimizer update: for the small networks most fits train, as much time as
the arithmetic. :class:`EpochRunner` takes the arrays of a network (its ``W``
and ``b``, the optimizer's state) once, and :meth:`EpochRunner.run_epoch`
then runs a whole epoch — gather each shuffled mini-batch into preallocated
buffers, forward, cost, backward, update — in one ``nogil`` call of the
compiled backend (``csrc/_epoch.pyx``), or, with dropout, one call per block
of steps whose masks are drawn just before it (see :data:`MASK_BLOCK_BYTES`).
Python only does per-epoch work.

Same numbers as the per-step path (``Network.step`` batch after batch, as
:func:`dnnblocks.training.train` runs it): the same kernels run in the same
order on the same buffers, and the dropout draws come from the same
generator calls in the same order, so the weights after an epoch are equal to
the last bit (the tests check it for sgd, momentum and Adam, with and without
L2, dropout and a softmax output, float32 and float64). Only a cost with an
L2 term may differ in the last bits: the per-step path sums the squared
weights with ``numpy.dot``, the runner in a C loop.

The NumPy backend runs the same epoch as a Python loop over its own kernels
(the readable reference), with the same signature and results.

What a training loop passes, per epoch (what ``train`` does today):

* ``order``: the epoch's shuffled example indices — ``rng.shuffle(idx)`` of
  the loop's index array (int64), or None for the examples in order (read in
  place, no gather);
* ``rng``: the generator the loop draws dropout masks from (the same one that
  shuffles); the runner calls ``rng.random(out=..., dtype=...)`` once per
  block for all the masks of the block's steps, which yields exactly the
  draws of one ``rng.random`` per hidden layer per step;
* ``t``: the optimizer's step count before the epoch; the result's ``t`` is
  the count after it (momentum and Adam count one per step, plain gradient
  descent does not count).
"""

import math

import numpy as np

from . import backend as kernel_tables
from ._validation import FLOAT_DTYPES, check_learning_rate, check_positive_int, check_scalar
from .exceptions import TrainingDivergedError
from .optimizers import OPTIMIZERS, Optimizer

if kernel_tables.SIMD_LEVEL == "avx2":
    from . import _epoch_avx2 as _compiled_epoch
else:
    from . import _epoch as _compiled_epoch

#: Largest buffer (bytes) of dropout draws held at once; an epoch whose draws
#: would exceed it runs as several compiled calls of whole steps (at least one
#: step each), the draws of each made just before it.
MASK_BLOCK_BYTES = 8 << 20

#: Hidden activations the runner takes.
HIDDEN = ("relu", "tanh", "sigmoid", "identity")
#: Output layers the runner takes.
OUTPUT_KINDS = ("sigmoid", "softmax")
#: The optimizer state each optimizer keeps, in the order of ``state``.
STATE_NAMES = {"sgd": (), "momentum": ("velocity",), "adam": ("m", "v")}


class EpochResult:
    """What one :meth:`EpochRunner.run_epoch` did.

    Attributes
    ----------
    cost : float
        The example-weighted mean of the steps' costs (each before its
        update, with dropout and the L2 term), over the completed steps;
        NaN when none completed.
    step_costs : ndarray of float64
        The cost of every step run, the failing one last when it diverged.
    steps_completed : int
        Steps whose update was applied.
    samples_completed : int
        Examples in those steps.
    diverged : bool
        A step's cost was NaN or infinite: the epoch stopped there, before
        that step's update (the weights are those after the step before).
    t : int
        The optimizer's step count after the completed steps.
    """

    __slots__ = ("cost", "step_costs", "steps_completed", "samples_completed", "diverged", "t")

    def __init__(self, cost, step_costs, steps_completed, samples_completed, diverged, t):
        self.cost = cost
        self.step_costs = step_costs
        self.steps_completed = steps_completed
        self.samples_completed = samples_completed
        self.diverged = diverged
        self.t = t

    def raise_if_diverged(self, learning_rate):
        """Raise :class:`~dnnblocks.exceptions.TrainingDivergedError` as the per-step path does."""
        if self.diverged:
            raise TrainingDivergedError(
                f"the cost became {self.step_costs[-1]}; the parameters were left as they were. "
                f"Try a smaller learning_rate (got {learning_rate})."
            )

    def __repr__(self):
        return (f"EpochResult(cost={self.cost:.6g}, steps_completed={self.steps_completed}, "
                f"diverged={self.diverged}, t={self.t})")


def optimizer_arrays(optimizer, W, b):
    """The runner's view of an :class:`~dnnblocks.optimizers.Optimizer` bound to `W`, `b`.

    Binds the optimizer to the parameters if it holds no state yet (zero
    state, as its first step would), through its public ``state_dict`` and
    ``load_state``.

    Returns
    -------
    kind : {"sgd", "momentum", "adam"}
    state : tuple of lists of ndarray
        The optimizer's own state arrays (updated in place by the runner).
    hyper : dict
        Its hyper-parameters (``beta``; ``beta1``, ``beta2``, ``epsilon``).
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an Optimizer; got {type(optimizer).__name__}")
    kind = optimizer.name
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got {kind!r}")
    names = STATE_NAMES[kind]
    scalars, arrays = optimizer.state_dict()
    if names and not arrays:
        zeros = {f"{key}/{i}": np.zeros_like(p) for key in names for i, p in enumerate(list(W) + list(b))}
        optimizer.load_state(optimizer.t, zeros, list(W), list(b))
        scalars, arrays = optimizer.state_dict()
    n = 2 * len(W)
    state = tuple([arrays[f"{key}/{i}"] for i in range(n)] for key in names)
    hyper = {key: value for key, value in scalars.items() if key not in ("name", "t")}
    return kind, state, hyper


def _check_array(a, name, dtype, shape, writeable=True):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of shape {shape}; got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}; got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only; training updates it in place")


class EpochRunner:
    """Runs whole epochs of mini-batch training steps of one network.

    Parameters
    ----------
    W, b : list of ndarray
        The parameters, ``W[l]`` (n[l+1], n[l]) and ``b[l]`` (n[l+1], 1),
        C-contiguous and writeable, all float32 or all float64: updated in
        place. The runner keeps references to these very arrays (see
        :meth:`uses`).
    hidden_activation : {"relu", "tanh", "sigmoid", "identity"}
    output : {"sigmoid", "softmax"}
        Sigmoid units with binary cross-entropy, or a softmax over n[L] >= 2
        classes with the categorical cross-entropy.
    batch_size : int
        Examples per step; the last step of an epoch takes the rest.
    optimizer : {"sgd", "momentum", "adam"}, default "sgd"
    state : tuple of lists of ndarray, default ()
        The optimizer's state, updated in place: () for sgd, ``(velocity,)``
        for momentum, ``(m, v)`` for Adam, each a list of 2L arrays shaped
        like ``W`` then ``b`` (as :func:`optimizer_arrays` returns them).
    beta : float, default 0.9
        Momentum's weight of the past velocity.
    beta1, beta2, epsilon : float
        Adam's hyper-parameters.
    l2 : float >= 0, default 0
        L2 strength lambda (per step of m examples: cost
        ``+ (lambda/2m) sum ||W||^2``, gradient ``+ (lambda/m) W``).
    keep_prob : float in (0, 1], default 1
        Inverted dropout on the hidden layers (1: none).
    backend : {"compiled", "numpy"}, default "compiled"
    """

    def __init__(self, W, b, hidden_activation, output, batch_size, *, optimizer="sgd", state=(),
                 beta=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0, keep_prob=1.0,
                 backend="compiled"):
        if not isinstance(W, (list, tuple)) or not isinstance(b, (list, tuple)) or len(W) == 0:
            raise TypeError("W and b must be non-empty lists of arrays, one per layer")
        if len(b) != len(W):
            raise ValueError(f"W and b must have one array per layer; got {len(W)} and {len(b)}")
        if not isinstance(W[0], np.ndarray) or W[0].dtype not in FLOAT_DTYPES:
            raise TypeError("W[0] must be a float32 or float64 numpy.ndarray")
        dtype = W[0].dtype
        if W[0].ndim != 2:
            raise ValueError(f"W[0] must be 2-D; got shape {W[0].shape}")
        dims = [W[0].shape[1]]
        for l, w in enumerate(W):
            if not isinstance(w, np.ndarray) or w.ndim != 2:
                raise ValueError(f"W[{l}] must be a 2-D numpy.ndarray")
            _check_array(w, f"W[{l}]", dtype, (w.shape[0], dims[l]))
            if w.size == 0:
                raise ValueError(f"W[{l}] must not be empty; got shape {w.shape}")
            dims.append(w.shape[0])
        for l, bias in enumerate(b):
            _check_array(bias, f"b[{l}]", dtype, (dims[l + 1], 1))
        if not isinstance(hidden_activation, str) or hidden_activation not in HIDDEN:
            raise ValueError(f"hidden_activation must be one of {HIDDEN}; got {hidden_activation!r}")
        if not isinstance(output, str) or output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}; got {output!r}")
        if output == "softmax" and dims[-1] < 2:
            raise ValueError(f"a softmax output needs at least 2 units; the last layer has {dims[-1]}")
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > 2**31 - 1:
            raise ValueError(f"batch_size must be at most {2**31 - 1}; got {batch_size}")
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        names = STATE_NAMES[optimizer]
        if not isinstance(state, (list, tuple)) or len(state) != len(names):
            raise ValueError(f"state must be a tuple of {len(names)} lists {names} for {optimizer!r}; "
                             f"got {type(state).__name__}")
        params = list(W) + list(b)
        state = tuple(state)
        for key, arrays in zip(names, state):
            if not isinstance(arrays, (list, tuple)) or len(arrays) != len(params):
                raise ValueError(f"state {key!r} must be a list of {len(params)} arrays (W's, then b's)")
            for i, (a, p) in enumerate(zip(arrays, params)):
                _check_array(a, f"state {key!r}[{i}]", dtype, p.shape)
        self.beta = check_scalar(beta, "beta", low=0.0, high=1.0, high_inclusive=False)
        self.beta1 = check_scalar(beta1, "beta1", low=0.0, high=1.0, high_inclusive=False)
        self.beta2 = check_scalar(beta2, "beta2", low=0.0, high=1.0, high_inclusive=False)
        self.epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
        self.l2 = check_scalar(l2, "l2", low=0.0)
        self.keep_prob = check_scalar(keep_prob, "keep_prob", low=0.0, high=1.0, low_inclusive=False)
        if backend not in ("compiled", "numpy"):
            raise ValueError(f"backend must be 'compiled' or 'numpy'; got {backend!r}")
        self.backend = backend
        self.W, self.b = list(W), list(b)
        self.state = state
        self.dtype = dtype
        self.layer_dims = tuple(int(d) for d in dims)
        self.hidden_activation = hidden_activation
        self.output = output
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.hidden_units = sum(self.layer_dims[1:-1])
        self.dropout = self.keep_prob < 1.0 and len(W) > 1
        activations = (hidden_activation,) * (len(W) - 1) + (output,)
        hyper = {"l2": self.l2, "keep_prob": self.keep_prob, "beta": self.beta, "beta1": self.beta1,
                 "beta2": self.beta2, "epsilon": self.epsilon}
        if backend == "compiled":
            self._engine = _compiled_epoch.EpochWorkspace(self.W, self.b, activations, batch_size,
                                                          optimizer, state, hyper)
        else:
            self._engine = _PythonEpoch(self, kernel_tables.get_backend("numpy"))
        self._masks = None

    def uses(self, W, b):
        """Whether `W` and `b` are the very arrays this runner was built with, still usable.

        False once one was replaced in the list, made read-only or reshaped:
        build a new runner then.
        """
        return self._engine.uses(W, b)

    def _check_data(self, X, Y, order):
        n0, nL = self.layer_dims[0], self.layer_dims[-1]
        for name, a in (("X", X), ("Y", Y)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy.ndarray; got {type(a).__name__}")
            if a.dtype != self.dtype:
                raise TypeError(f"{name} must have the parameters' dtype {self.dtype}; got {a.dtype}")
            if a.ndim != 2:
                raise ValueError(f"{name} must be 2-D (examples as columns); got shape {a.shape}")
        if X.shape[0] != n0 or X.shape[1] < 1:
            raise ValueError(f"X must have shape ({n0}, m) with m >= 1; got {X.shape}")
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            raise ValueError("X must be C- or F-contiguous (an F-ordered X is read row-wise); got a strided view")
        m_total = X.shape[1]
        if Y.shape != (nL, m_total) or not Y.flags.c_contiguous:
            raise ValueError(f"Y must be a C-contiguous ({nL}, {m_total}) array; got shape {Y.shape}")
        if order is None:
            return m_total
        if not isinstance(order, np.ndarray) or order.dtype != np.int64 or order.ndim != 1:
            raise TypeError("order must be None or a 1-D int64 numpy.ndarray of example indices")
        if len(order) < 1:
            raise ValueError("order must hold at least one example index")
        if not order.flags.c_contiguous:
            raise ValueError("order must be C-contiguous")
        lo, hi = int(order.min()), int(order.max())
        if lo < 0 or hi >= m_total:
            raise ValueError(f"order must hold indices into X's {m_total} columns; got values in [{lo}, {hi}]")
        return len(order)

    def run_epoch(self, X, Y, order, learning_rate, *, t=0, rng=None):
        """Run one epoch: every mini-batch of `order`, in order.

        Parameters
        ----------
        X : ndarray of shape (n[0], m_total)
            Examples as columns, C- or F-ordered (``data.T`` of row-major
            data is gathered row by row), of the parameters' dtype, finite.
        Y : ndarray of shape (n[L], m_total)
            C-contiguous 0/1 labels (one-hot columns for a softmax output).
        order : None or 1-D int64 ndarray
            The epoch's example indices, batch after batch (e.g. the loop's
            index array after ``rng.shuffle``); None: all examples in order,
            read in place.
        learning_rate : float
            This epoch's learning rate.
        t : int, default 0
            The optimizer's step count before the epoch.
        rng : numpy.random.Generator, optional
            Draws the dropout masks; required when ``keep_prob < 1``.

        Returns
        -------
        EpochResult
        """
        n_examples = self._check_data(X, Y, order)
        learning_rate = check_learning_rate(learning_rate, dtype=self.dtype)
        t = check_positive_int(t, "t", minimum=0)
        if self.dropout and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator with dropout; got {type(rng).__name__}")
        if not self.uses(self.W, self.b):
            raise ValueError("W, b or the optimizer state were made read-only, reshaped or resized since "
                             "this runner was built; build a new EpochRunner")
        bs = self.batch_size
        n_steps = -(-n_examples // bs)
        costs = np.full(n_steps, np.nan)
        # Blocks of whole steps, so that the dropout draws held at once stay bounded.
        if self.dropout:
            per_step = self.hidden_units * bs * self.dtype.itemsize
            steps_per_block = max(1, MASK_BLOCK_BYTES // per_step)
        else:
            steps_per_block = n_steps
        done = 0
        diverged = False
        step_t = t
        for first_step in range(0, n_steps, steps_per_block):
            start = first_step * bs
            count = min(n_examples, (first_step + steps_per_block) * bs) - start
            masks = None
            if self.dropout:
                masks = self._mask_buffer(self.hidden_units * count, rng)
            block_order = None if order is None else order[start:start + count]
            completed = self._engine.run(X, Y, block_order, start, count, learning_rate, step_t,
                                         masks, costs[first_step:])
            done += completed
            if self.optimizer != "sgd":
                step_t += completed
            if completed < -(-count // bs):
                diverged = True
                break
        samples = min(done * bs, n_examples)
        weights = np.full(done, bs, dtype=np.float64)
        if done and done == n_steps:
            weights[-1] = n_examples - (n_steps - 1) * bs
        total = 0.0
        for cost, size in zip(costs[:done].tolist(), weights.tolist()):
            total += cost * size  # in step order, as the per-step loop sums
        cost = total / samples if samples else math.nan
        step_costs = costs[:done + 1] if diverged else costs[:done]
        return EpochResult(cost, step_costs, done, samples, diverged, step_t)

    def _mask_buffer(self, count, rng):
        if self._masks is None or len(self._masks) < count:
            self._masks = np.empty(count, dtype=self.dtype)
        out = self._masks[:count]
        rng.random(out=out, dtype=self.dtype)
        return out


class _PythonEpoch:
    """The NumPy backend's epoch: the per-step path as a Python loop over its kernels."""

    def __init__(self, runner, kernels):
        self.runner = runner
        self.k = kernels
        dims, bs, dtype = runner.layer_dims, runner.batch_size, runner.dtype
        self.fused = runner.optimizer == "sgd" and runner.keep_prob == 1.0 and runner.output == "sigmoid"
        self.activations = (runner.hidden_activation,) * (len(dims) - 2) + (runner.output,)
        self._steps = {}
        self._bufs = {}
        self._dW = [np.empty_like(w) for w in runner.W]
        self._db = [np.empty((n, 1), dtype) for n in dims[1:]]

    def uses(self, W, b):
        r = self.runner
        ok = (len(W) == len(r.W) and len(b) == len(r.b)
              and all(x is y for x, y in zip(W, r.W)) and all(x is y for x, y in zip(b, r.b)))
        arrays = list(r.W) + list(r.b) + [a for group in r.state for a in group]
        return ok and all(a.flags.writeable and a.flags.c_contiguous for a in arrays)

    def _buffers(self, m):
        bufs = self._bufs.get(m)
        if bufs is None:
            dtype = self.runner.dtype
            bufs = self._bufs[m] = tuple([np.empty((n, m), dtype) for n in self.runner.layer_dims[1:]]
                                         for _ in range(3))
        return bufs

    def run(self, X, Y, order, first, count, learning_rate, t0, masks, costs):
        r, k = self.runner, self.k
        bs = r.batch_size
        rows = X.flags.f_contiguous and not X.flags.c_contiguous
        done = 0
        mask_at = 0
        for start in range(0, count, bs):
            m = min(bs, count - start)
            if order is None:
                xb = X[:, first + start:first + start + m]
                yb = np.ascontiguousarray(Y[:, first + start:first + start + m])
                if not (xb.flags.c_contiguous or xb.flags.f_contiguous):
                    xb = np.ascontiguousarray(xb)
            else:
                ids = order[start:start + m]
                xb = X.T[ids].T if rows else np.ascontiguousarray(X[:, ids])
                yb = np.ascontiguousarray(Y[:, ids])
            if self.fused:
                step = self._steps.get(m)
                if step is None:
                    step = self._steps[m] = k.make_training_step(r.W, r.b, self.activations, m)
                cost = step.run(xb, yb, learning_rate, r.l2)
            else:
                cost, mask_at = self._layered_step(xb, yb, m, learning_rate, t0 + done + 1, masks, mask_at)
            costs[done] = cost
            if not math.isfinite(cost):
                return done
            done += 1
        return done

    def _layered_step(self, X, Y, m, learning_rate, t, masks, mask_at):
        r, k = self.runner, self.k
        Z, A, D = self._buffers(m)
        W, b, L = r.W, r.b, len(r.W)
        last = L - 1
        dropout = r.dropout
        M = [None] * L
        A_prev = X
        for l, act in enumerate(self.activations):
            if l == last and act == "softmax":
                k.linear_activation_forward(W[l], b[l], A_prev, "identity", Z[l], Z[l])
                k.softmax_forward(Z[l], A[l])
                break
            k.linear_activation_forward(W[l], b[l], A_prev, act, Z[l], A[l])
            if dropout and l < last:
                size = Z[l].size
                M[l] = masks[mask_at:mask_at + size].reshape(Z[l].shape)
                mask_at += size
                k.dropout_forward(A[l], M[l], r.keep_prob)
            A_prev = A[l]
        kernel = k.softmax_cross_entropy if r.output == "softmax" else k.sigmoid_cross_entropy
        cost = kernel(Z[-1], A[-1], Y, D[-1], self._db[-1], 1.0 / m)
        if r.l2:
            cost += r.l2 / (2.0 * m) * sum(float(np.dot(w.reshape(-1), w.reshape(-1))) for w in W)
        if not math.isfinite(cost):
            return cost, mask_at
        inv_m = 1.0 / m
        wd = r.l2 / m
        n_params = len(W)
        for l in range(last, -1, -1):
            if l < last:
                A_cached = A[l]
                if dropout:
                    k.dropout_backward(D[l], M[l])
                    A_cached = None
                k.activation_backward(D[l], Z[l], A_cached, self.activations[l], D[l], self._db[l], inv_m)
            A_prev = X if l == 0 else A[l - 1]
            dA_prev = None if l == 0 else D[l - 1]
            if r.optimizer == "sgd":
                k.linear_backward_update(D[l], A_prev, W[l], dA_prev, inv_m, learning_rate, wd)
                k.gradient_descent_update(b[l], self._db[l], learning_rate)
                continue
            k.linear_backward(D[l], A_prev, W[l], self._dW[l], dA_prev, inv_m)
            if r.optimizer == "momentum":
                vel = r.state[0]
                k.momentum_update(W[l], self._dW[l], vel[l], learning_rate, r.beta, wd)
                k.momentum_update(b[l], self._db[l], vel[n_params + l], learning_rate, r.beta, 0.0)
            else:
                m1, m2 = r.state
                k.adam_update(W[l], self._dW[l], m1[l], m2[l], learning_rate, r.beta1, r.beta2,
                              r.epsilon, t, wd)
                k.adam_update(b[l], self._db[l], m1[n_params + l], m2[n_params + l], learning_rate,
                              r.beta1, r.beta2, r.epsilon, t, 0.0)
        return cost, mask_at



__all__ = ["EpochResult", "EpochRunner", "MASK_BLOCK_BYTES", "optimizer_arrays"]
