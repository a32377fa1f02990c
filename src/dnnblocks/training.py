"""The training loop: epochs of mini-batches, schedules, early stopping, progress.

:func:`train` drives a :class:`dnnblocks.Network` through epochs of
(mini-)batch steps with any optimizer, L2 and dropout. Mini-batches are
reshuffled every epoch with a seeded generator and gathered into buffers
allocated once per run (one for the full batch size, one for the short last
batch), so the steps themselves allocate nothing.
"""

import math
import sys
import time

import numpy as np

from . import backend, wide
from .epoch import HIDDEN, OUTPUT_KINDS, STATE_NAMES, EpochRunner, optimizer_arrays
from ._safeguards import TrainingGuard
from ._validation import check_learning_rate, check_positive_int, check_scalar
from .exceptions import TrainingDivergedError
from .optimizers import get_optimizer

#: Learning-rate schedules accepted by :func:`train`.
SCHEDULES = ("constant", "inverse_time")

#: How :func:`train` runs an epoch of in-memory data: ``"epoch"``, the whole
#: epoch in one compiled call of :class:`dnnblocks.epoch.EpochRunner` when it
#: takes the network and optimizer (the per-step loop otherwise), or
#: ``"step"``, one Python call per mini-batch step. Both give the same numbers.
ENGINES = ("epoch", "step")

#: The engine of ``train(engine=None)``, hence of ``Network.fit`` and the
#: estimators' in-memory fits; tests that watch the single steps set it to "step".
DEFAULT_ENGINE = "epoch"


def learning_rate_at(learning_rate, epoch, schedule="constant", decay_rate=1.0):
    """The learning rate of epoch `epoch` (counted from 0) under a schedule.

    Parameters
    ----------
    learning_rate : float
        The initial learning rate alpha0.
    epoch : int
    schedule : {"constant", "inverse_time"}
        ``"inverse_time"`` is the course's decay ``alpha0 / (1 + decay_rate * epoch)``.
    decay_rate : float >= 0
    """
    if schedule == "constant":
        return learning_rate
    if schedule == "inverse_time":
        return learning_rate / (1.0 + decay_rate * epoch)
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")


class History:
    """What happened during :func:`train`.

    Attributes
    ----------
    cost : list of float
        Training cost of each epoch: the mean over the epoch's batches of the
        cost before each step (with dropout and the L2 term, as optimised).
    validation_cost : list of float
        Cost on the validation set after each epoch (no dropout, no L2 term);
        empty without validation.
    validation_score : list of float
        Accuracy on the validation set after each epoch; empty without validation.
    learning_rate : list of float
        The learning rate used in each epoch.
    n_epochs : int
        Epochs run.
    n_examples : int
        Training examples per epoch (without the validation part).
    best_epoch : int or None
        With early stopping, the epoch (from 0) whose weights were kept.
    stop_reason : {"max_epochs", "converged", "early_stopping", "callback"}
    steps_completed : int
        Optimizer steps completed, including those of an epoch that an
        exception cut short.
    samples_seen : int
        Training examples in those completed steps.
    route : {"plain", "gram"}
        How the steps ran: ``"gram"`` is the Gram-matrix route of
        :mod:`dnnblocks.wide` (full batch, wide data), ``"plain"`` the usual one.

    When training stops with an exception (Ctrl-C, a callback's exception,
    :class:`~dnnblocks.exceptions.TrainingDivergedError`, ...), the history
    of the epochs that completed is attached to the exception as
    ``exc.dnnblocks_history``: `cost` and `n_epochs` cover the completed
    epochs only, `steps_completed` and `samples_seen` count every completed
    step. After a divergence whose last update had already made weights
    non-finite, the weights go back to those after an earlier epoch, and the
    history is cut back to that epoch too.
    """

    def __init__(self):
        self.cost = []
        self.validation_cost = []
        self.validation_score = []
        self.learning_rate = []
        self.n_epochs = 0
        self.n_examples = 0
        self.best_epoch = None
        self.stop_reason = "max_epochs"
        self.steps_completed = 0
        self.samples_seen = 0
        self.route = "plain"

    def __repr__(self):
        last = f"{self.cost[-1]:.6g}" if self.cost else "n/a"
        return (f"History(n_epochs={self.n_epochs}, last cost={last}, "
                f"stop_reason={self.stop_reason!r})")


class _EpochTracker:
    """The end-of-epoch bookkeeping of a training loop: records and stopping rules.

    Used by :func:`train_on_source` for every data source, so that all keep
    the same history and stop (tol / n_iter_no_change / early stopping) by
    the same rules.

    Parameters
    ----------
    net : dnnblocks.Network
        Snapshotted at the best epoch under early stopping.
    history : History
        Filled in place.
    early_stopping : bool
    tol : float or None
        None: no convergence test (with early stopping None means 0).
    n_iter_no_change : int
    """

    def __init__(self, net, history, *, early_stopping, tol, n_iter_no_change):
        self.net = net
        self.history = history
        self.early_stopping = early_stopping
        self.tol = 0.0 if early_stopping and tol is None else tol
        self.n_iter_no_change = n_iter_no_change
        self._best_cost = math.inf
        self._best_score = -math.inf
        self._best_weights = None
        self._no_improvement = 0

    def epoch_done(self, cost, learning_rate):
        """Record a completed epoch's training cost and learning rate."""
        self.history.cost.append(cost)
        self.history.learning_rate.append(learning_rate)
        self.history.n_epochs += 1

    def validated(self, cost, score):
        """Record the epoch's validation cost and accuracy; returns them for :meth:`Progress.update`."""
        self.history.validation_cost.append(cost)
        self.history.validation_score.append(score)
        return {"val_cost": cost, "val_acc": score}

    def update(self, epoch, cost, score=None):
        """Count the epochs without improvement (`score` is needed with early stopping)."""
        if self.early_stopping:
            self._no_improvement = self._no_improvement + 1 if score < self._best_score + self.tol else 0
            if score > self._best_score:
                self._best_score = score
                self._best_weights = self.net.snapshot()
                self.history.best_epoch = epoch
        elif self.tol is not None:
            self._no_improvement = self._no_improvement + 1 if cost > self._best_cost - self.tol else 0
            self._best_cost = min(self._best_cost, cost)

    def should_stop(self):
        """True (and the history's stop_reason set) once there has been no improvement for too long."""
        if (self.early_stopping or self.tol is not None) and self._no_improvement > self.n_iter_no_change:
            self.history.stop_reason = "early_stopping" if self.early_stopping else "converged"
            return True
        return False

    def restore_best(self):
        """Under early stopping, put back the weights of the best epoch."""
        if self._best_weights is not None:
            self.net.restore(self._best_weights)


class _Batches:
    """Column mini-batches of (X, Y) for one network, buffers made once.

    X is (n, m) C- or F-ordered; an F-ordered X (row-major data seen through
    ``.T``) is gathered row-wise into an (b, n) C buffer whose transpose the
    network reads in place, so either layout costs one contiguous copy of the
    batch and no more.
    """

    def __init__(self, X, Y, batch_size, indices=None):
        self.X, self.Y = X, Y
        m_total = X.shape[1]
        self.rows = X.flags.f_contiguous and not X.flags.c_contiguous
        if indices is None:
            self.idx = np.arange(m_total, dtype=np.intp)
        else:
            self.idx = np.array(indices, dtype=np.intp)
        self.m = len(self.idx)
        b = self.m if batch_size is None else min(batch_size, self.m)
        self.batch_size = b
        self.n_batches = -(-self.m // b)
        # One batch covering X in order: no gathering at all.
        self.direct = indices is None and self.n_batches == 1
        self._buffers = {}
        if not self.direct:
            for size in {b, self.m - (self.n_batches - 1) * b}:
                self._buffers[size] = self._make_buffers(size)
            if self.n_batches == 1:
                # A fixed subset in one batch: its order does not matter, gather once.
                self._gather(self.idx)

    def _make_buffers(self, size):
        n, k = self.X.shape[0], self.Y.shape[0]
        xb = np.empty((size, n), self.X.dtype) if self.rows else np.empty((n, size), self.X.dtype)
        return xb, np.empty((k, size), self.Y.dtype)

    def _gather(self, ids):
        xb, yb = self._buffers[len(ids)]
        # mode="clip": the indices are valid by construction, and "raise" would
        # make NumPy buffer the output.
        if self.rows:
            np.take(self.X.T, ids, axis=0, out=xb, mode="clip")
            xb = xb.T
        else:
            np.take(self.X, ids, axis=1, out=xb, mode="clip")
        np.take(self.Y, ids, axis=1, out=yb, mode="clip")
        return xb, yb

    def epoch(self, rng, shuffle):
        """Yield the (X_batch, Y_batch) pairs of one epoch."""
        if self.direct:
            yield self.X, self.Y
            return
        if self.n_batches == 1:
            xb, yb = self._buffers[self.m]
            yield (xb.T if self.rows else xb), yb
            return
        if shuffle:
            rng.shuffle(self.idx)
        b = self.batch_size
        for start in range(0, self.m, b):
            yield self._gather(self.idx[start:start + b])

    def epoch_order(self, rng, shuffle):
        """The example indices of one epoch as :meth:`epoch` draws them, or None for X in order.

        The same generator call as :meth:`epoch` (one ``rng.shuffle`` of the
        index array per epoch of several batches), so that a whole-epoch run
        sees the very batches the per-step loop would.
        """
        if self.direct:
            return None
        if self.n_batches > 1 and shuffle:
            rng.shuffle(self.idx)
        return self.idx


class InMemoryData:
    """The in-memory data source of :func:`train_on_source`: mini-batches of (X, Y) and the steps over them.

    A data source is what the training loop runs epochs over. It has

    * ``n_examples`` (training examples per epoch), ``n_batches`` (steps per
      epoch) and ``has_validation``;
    * ``thread_limit(blas_threads)``: the BLAS thread count for the loop's
      process (see :func:`dnnblocks.backend.blas_threads_policy`), or None;
    * ``batches(epoch)``: an iterable of the batches of epoch number `epoch`
      (counted from 0 over every run of the model), objects only ``step``
      reads; a batch may be valid only until the next one is drawn (the
      in-memory batches share buffers);
    * ``step(batch, learning_rate)``: one optimizer step of the network on a
      batch, returning ``(cost, rows)``, the mean cost before the update and
      the examples in the step; it raises
      :class:`~dnnblocks.exceptions.TrainingDivergedError` before updating
      anything when the cost is not finite;
    * ``evaluate()``: ``(cost, accuracy)`` on the validation set, without
      dropout or the L2 term;
    * optionally ``run_epoch(epoch, learning_rate)``: the whole epoch at once,
      returning an :class:`~dnnblocks.epoch.EpochResult` (its steps and
      examples, its cost, whether it diverged, the weights those of the last
      completed step), or None to have the loop run the steps one by one;
    * optionally ``sync_parameters()``: for a source that keeps part of the
      parameters in its own form between epochs (:class:`GramData`), write
      them into the network; the loop calls it before anything else reads the
      weights, and then takes no per-epoch checkpoint of them.

    With ``engine="epoch"`` this source's :meth:`run_epoch` runs every epoch
    in one call of a :class:`~dnnblocks.epoch.EpochRunner` (built at the
    first epoch, rebuilt only if the parameter or optimizer arrays are
    replaced), on the same shuffled order and dropout draws as the steps, so
    with the same numbers; it returns None when the runner does not take the
    network (its activation or output) or the optimizer, and the steps run.

    Parameters
    ----------
    net : dnnblocks.Network
    X, Y : ndarray
        Checked by the network (``(n[0], m)`` C- or F-ordered, ``(n[L], m)``).
    batch_size : int or None
        None is full batch.
    indices : array of int, optional
        The columns to train on (the others are validation), in order.
    optimizer : Optimizer or None
        None is plain gradient descent (the fused step).
    l2 : float
    keep_prob : float
        1 - dropout.
    rng : numpy.random.Generator
        Shuffles the batches and draws the dropout masks.
    shuffle : bool
    validation : (X_val, Y_val) or None
    engine : {"epoch", "step"}, default "epoch"
        See :data:`ENGINES`.
    """

    def __init__(self, net, X, Y, *, batch_size, indices=None, optimizer=None, l2=0.0, keep_prob=1.0,
                 rng, shuffle=True, validation=None, engine="epoch"):
        self.net = net
        self._batches = _Batches(X, Y, batch_size, indices)
        self.n_examples = self._batches.m
        self.n_batches = self._batches.n_batches
        self.optimizer, self.l2, self.keep_prob = optimizer, l2, keep_prob
        self.rng, self.shuffle = rng, shuffle
        self.validation = validation
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
        self.engine = engine
        self._runner = None
        self._runner_state = ()

    @property
    def has_validation(self):
        return self.validation is not None

    def thread_limit(self, blas_threads):
        return backend.blas_threads_policy(self.net.layer_dims, self._batches.batch_size, blas_threads)

    def batches(self, epoch):
        return self._batches.epoch(self.rng, self.shuffle)

    def step(self, batch, learning_rate):
        xb, yb = batch
        cost = self.net.validated_step(xb, yb, learning_rate, self.optimizer, self.l2, self.keep_prob,
                                       self.rng)
        return cost, xb.shape[1]

    def evaluate(self):
        X_val, Y_val = self.validation
        return self.net.cost(X_val, Y_val), accuracy(self.net, X_val, Y_val)

    def run_epoch(self, epoch, learning_rate):
        """The whole epoch in one compiled call: an EpochResult, or None when the runner does not apply."""
        runner = self._epoch_runner()
        if runner is None:
            return None
        order = self._batches.epoch_order(self.rng, self.shuffle)
        t = 0 if self.optimizer is None else self.optimizer.t
        result = runner.run_epoch(self._batches.X, self._batches.Y, order, learning_rate, t=t,
                                  rng=self.rng)
        if self.optimizer is not None:
            self.optimizer.t = result.t
        return result

    def _epoch_runner(self):
        """The runner for this network and optimizer (built once, rebuilt if their arrays changed), or None."""
        if self.engine != "epoch":
            return None
        net, opt = self.net, self.optimizer
        kind = "sgd" if opt is None else opt.name
        if (net.hidden_activation not in HIDDEN or net.output not in OUTPUT_KINDS
                or kind not in STATE_NAMES or net.backend not in ("compiled", "numpy")
                or self._batches.X.dtype != net.dtype or self._batches.Y.dtype != net.dtype
                or not self._batches.Y.flags.c_contiguous):
            return None
        dims = net.layer_dims
        if (len(net.W) != len(dims) - 1 or len(net.b) != len(net.W)
                or any(getattr(w, "shape", None) != (dims[l + 1], dims[l]) for l, w in enumerate(net.W))
                or any(getattr(b, "shape", None) != (dims[l + 1], 1) for l, b in enumerate(net.b))):
            return None  # parameters replaced by others: the per-step path names what is wrong
        try:
            if opt is None:
                state, hyper = (), {}
            else:
                _, state, hyper = optimizer_arrays(opt, net.W, net.b)
            current = [a for group in state for a in group]
            if (self._runner is not None and self._runner.uses(net.W, net.b)
                    and len(current) == len(self._runner_state)
                    and all(x is y for x, y in zip(current, self._runner_state))):
                return self._runner
            self._runner = EpochRunner(net.W, net.b, net.hidden_activation, net.output,
                                       self._batches.batch_size, optimizer=kind, state=state, l2=self.l2,
                                       keep_prob=self.keep_prob, backend=net.backend, **hyper)
        except (KeyError, TypeError, ValueError):
            # Parameters or optimizer state the runner cannot take (read-only,
            # another network's shapes...): the per-step path says what is wrong.
            self._runner = None
            return None
        self._runner_state = current
        return self._runner


class GramData:
    """The data source of a full-batch fit on the Gram-matrix route (:class:`dnnblocks.wide.GramRoute`).

    Follows the protocol of :class:`InMemoryData`, with one batch per epoch:
    each step runs in the route's coordinates, where the first layer costs
    ``n1 m^2`` multiply-adds instead of ``2 n1 n0 m``, and ``W[0]`` is formed
    only by :meth:`sync_parameters` (the loop calls it before anything reads
    the weights, and at the end). The results are the plain route's to
    rounding (about 1e-12 relative in float64).

    Parameters
    ----------
    net : dnnblocks.Network
        A sigmoid output; its parameters are finite.
    X, Y : ndarray
        The whole training set, ``(n[0], m)`` and 0/1 labels ``(n[L], m)``.
    optimizer : Optimizer
        Plain gradient descent or momentum, holding no state yet; momentum
        gets the route's step count and velocities at :meth:`sync_parameters`.
    l2 : float
    validation : (X_val, Y_val) or None
    blas_threads : None, "auto" or int
        As in :func:`train`, for the route's products.
    """

    route = "gram"
    n_batches = 1

    def __init__(self, net, X, Y, *, optimizer, l2=0.0, validation=None, blas_threads=None):
        self.net = net
        self.optimizer = optimizer
        self.n_examples = X.shape[1]
        self.validation = validation
        self.blas_threads = blas_threads
        momentum = optimizer if optimizer.name == "momentum" else None
        self._route = wide.GramRoute(net.W, net.b, net.activations, X, Y, l2=l2, momentum=momentum,
                                     blas_threads=blas_threads)
        self._counted = 0  # route iterations already reported to the optimizer

    @property
    def has_validation(self):
        return self.validation is not None

    def thread_limit(self, blas_threads):
        return None  # the route limits the threads of its own products (GramRoute.run)

    def batches(self, epoch):
        return (None,)

    def step(self, batch, learning_rate):
        costs = self._route.run(1, learning_rate, write_back=False, blas_threads=self.blas_threads)
        return float(costs[0]), self.n_examples

    def sync_parameters(self):
        """Form ``W[0]`` into the network and give momentum its step count and velocities."""
        self._route.write_parameters()
        new = self._route.iterations_done - self._counted
        if new and self.optimizer.name == "momentum":
            vW, vb = self._route.velocities()
            self.optimizer.load_state(self.optimizer.t + new,
                                      {f"velocity/{i}": v for i, v in enumerate(vW + vb)},
                                      self.net.W, self.net.b)
        self._counted = self._route.iterations_done

    def evaluate(self):
        self.sync_parameters()
        X_val, Y_val = self.validation
        return self.net.cost(X_val, Y_val), accuracy(self.net, X_val, Y_val)


def _choose_route(route, net, optimizer, m, batch_size, dropout, epochs, reads_weights):
    """The route :func:`train` takes: ``"gram"`` or ``"plain"`` (see its `route` option)."""
    if not isinstance(route, str) or route not in wide.ROUTES:
        raise ValueError(f"route must be one of {wide.ROUTES}; got {route!r}")
    if route == "plain":
        return "plain"
    batch = None if batch_size is None or batch_size >= m else batch_size
    reasons = wide.gram_route_obstacles(optimizer=optimizer, dropout=dropout, batch=batch, m=m,
                                        output=net.output, backend_name=net.backend)
    if optimizer.name == "momentum" and (optimizer.t or optimizer.state_dict()[1]):
        reasons.append(f"it starts momentum from zero velocity, and the optimizer already holds state "
                       f"(t={optimizer.t})")
    if route == "gram":
        if reasons:
            raise ValueError("route='gram' cannot train this fit: " + "; ".join(reasons))
        return "gram"
    if reasons or reads_weights:
        return "plain"
    return wide.resolve_route("auto", n0=net.layer_dims[0], m=m, n1=net.layer_dims[1],
                              optimizer=optimizer, dropout=dropout, batch=batch, output=net.output,
                              backend_name=net.backend, iterations=epochs)


def _labels_of(net, Y):
    """Class index of each column of Y, for stratification and accuracy."""
    if net.output == "softmax":
        return np.argmax(Y, axis=0)
    if Y.shape[0] == 1:
        return Y[0].astype(np.intp)
    return None


def split_validation(labels, m, fraction, rng):
    """Indices ``(train, validation)`` holding out `fraction` of m examples.

    Stratified by `labels` (an int array, or None for a plain random split):
    every class keeps at least one training example, and the validation part
    has at least one example.
    """
    if labels is None:
        perm = rng.permutation(m)
        n_val = min(m - 1, max(1, int(round(fraction * m))))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        k = min(len(members) - 1, int(round(fraction * len(members))))
        val.append(members[:k])
    val = np.concatenate(val) if val else np.empty(0, np.intp)
    if len(val) == 0:
        counts = np.bincount(labels)
        biggest = np.flatnonzero(labels == np.argmax(counts))
        if len(biggest) < 2:
            raise ValueError(
                "validation_fraction leaves no example to validate on: every class has a single example"
            )
        val = biggest[rng.integers(len(biggest))].reshape(1)
    mask = np.zeros(m, bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def accuracy(net, X, Y):
    """Fraction of columns of Y that `net` predicts right (argmax for softmax, 0.5 threshold otherwise)."""
    if net.output == "softmax":
        return float(np.mean(np.argmax(net.decision_function(X), axis=0) == np.argmax(Y, axis=0)))
    pred = net.decision_function(X) > 0
    return float(np.mean(np.all(pred == (Y > 0.5), axis=0)))


class Progress:
    """Reports training progress on a stream.

    On a terminal, one line redrawn in place: a bar, the epoch and the cost
    (at most ten redraws a second). Elsewhere (a log file, a pipe, a notebook
    capture), plain lines: every epoch when ``verbose >= 2``, otherwise about
    fifty lines per run at most, and always the last epoch.
    """

    WIDTH = 30

    def __init__(self, total, verbose=1, stream=None, label="epoch"):
        self.total = max(1, int(total))
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):  # closed stream
            self.tty = False
        self.every = 1 if verbose >= 2 else max(1, self.total // 50)
        self.label = label
        self._last_draw = 0.0
        self._open = False

    @staticmethod
    def _describe(cost, extra):
        text = f"cost {cost:.6g}"
        for key, value in extra.items():
            text += f", {key} {value:.4g}" if isinstance(value, float) else f", {key} {value}"
        return text

    def update(self, done, cost, **extra):
        """Report that `done` epochs (of `total`) are finished, the last with `cost`."""
        if self.tty:
            now = time.monotonic()
            if done < self.total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(self.WIDTH * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self.label} {done}/{self.total} {self._describe(cost, extra)}\x1b[K")
            self._open = True
        elif done % self.every == 0 or done == self.total or done == 1:
            self.stream.write(f"{self.label} {done}/{self.total}: {self._describe(cost, extra)}\n")
        self.stream.flush()

    def close(self, message=None):
        """End the bar's line; print `message` (e.g. why training stopped) on its own line."""
        if self._open:
            self.stream.write("\n")
            self._open = False
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


def _check_training_options(net, epochs, batch_size, learning_rate, l2, dropout, schedule,
                            decay_rate, validation_fraction, tol, n_iter_no_change):
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate = check_learning_rate(learning_rate, dtype=net.dtype)
    l2 = check_scalar(l2, "l2", low=0.0)
    dropout = check_scalar(dropout, "dropout", low=0.0, high=1.0, high_inclusive=False)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    decay_rate = check_scalar(decay_rate, "decay_rate", low=0.0)
    if validation_fraction is not None:
        validation_fraction = check_scalar(validation_fraction, "validation_fraction", low=0.0,
                                           high=1.0, low_inclusive=False, high_inclusive=False)
    if tol is not None:
        tol = check_scalar(tol, "tol", low=0.0)
    n_iter_no_change = check_positive_int(n_iter_no_change, "n_iter_no_change")
    return (epochs, batch_size, learning_rate, l2, dropout, decay_rate, validation_fraction, tol,
            n_iter_no_change)


def train(net, X, Y, *, epochs=100, batch_size=None, learning_rate=0.01, optimizer="sgd",
          l2=0.0, dropout=0.0, schedule="constant", decay_rate=1.0, shuffle=True,
          validation_fraction=None, validation_data=None, early_stopping=False, tol=None,
          n_iter_no_change=10, random_state=None, verbose=0, start_epoch=0, callback=None,
          stream=None, blas_threads=None, engine=None, route="auto", **optimizer_options):
    """Train `net` on (X, Y) for up to `epochs` epochs.

    Parameters
    ----------
    net : dnnblocks.Network
        Trained in place.
    X : ndarray of shape (n[0], m)
        Examples as columns, C- or F-ordered (``data.T`` of row-major data is
        read in place).
    Y : array-like of shape (n[L], m)
        0/1 labels (one-hot columns for a softmax output).
    epochs : int, default 100
        Passes over the training data.
    batch_size : int or None, default None
        Examples per step; None is full batch (one step per epoch). The last
        batch of an epoch is shorter when the size does not divide m.
    learning_rate : float, default 0.01
        The initial learning rate.
    optimizer : {"sgd", "momentum", "adam"} or dnnblocks.optimizers.Optimizer, default "sgd"
        An Optimizer object keeps its state across calls (to continue
        training); a name makes a new one.
    l2 : float, default 0
        L2 strength lambda: cost ``+ (lambda/2m) sum ||W||^2`` per batch of m.
    dropout : float in [0, 1), default 0
        Inverted-dropout probability on hidden layers, training only.
    schedule : {"constant", "inverse_time"}, default "constant"
        ``"inverse_time"``: ``learning_rate / (1 + decay_rate * epoch)``.
    decay_rate : float, default 1.0
    shuffle : bool, default True
        Reshuffle the mini-batches every epoch (ignored for a single batch).
    validation_fraction : float in (0, 1), optional
        Hold out this fraction of the examples (stratified by class) to
        validate on after every epoch.
    validation_data : (X_val, Y_val), optional
        A validation set given explicitly instead.
    early_stopping : bool, default False
        Stop when the validation accuracy has not improved by `tol` for more
        than `n_iter_no_change` epochs, and restore the weights of the best
        epoch. Needs validation.
    tol : float, optional
        Without early stopping: stop when the training cost has not improved
        by `tol` for more than `n_iter_no_change` epochs. None never stops early
        (with early stopping None means 0).
    n_iter_no_change : int, default 10
    random_state : int, numpy.random.Generator or None
        Seeds shuffling, the validation split and the dropout masks.
    verbose : int, default 0
        1: progress bar on a terminal, plain lines otherwise; 2: a line per epoch.
    start_epoch : int, default 0
        Epochs already run (for the schedule when training continues).
    callback : callable, optional
        ``callback(epoch, history)`` after every epoch; returning True stops training.
    stream : file-like, optional
        Where progress goes (default ``sys.stderr``).
    blas_threads : None, "auto" or int, default None
        BLAS threads during training. "auto": one thread unless a step's
        largest matrix product reaches
        :data:`dnnblocks.backend.PARALLEL_PRODUCT_SIZE` multiply-adds (small
        products lose more to spinning threads than they gain, above all on a
        busy machine); an int caps the threads. None reads the environment
        variable ``DNNBLOCKS_BLAS_THREADS`` ("auto" when unset). A lower
        limit already in force (``threadpoolctl``) is kept; the counts are
        restored when training ends.
    engine : {"epoch", "step"} or None, default None
        None is :data:`DEFAULT_ENGINE` (``"epoch"``). ``"epoch"`` runs each epoch in one compiled call
        (:class:`dnnblocks.epoch.EpochRunner`: the gathers, steps and
        updates of every mini-batch without returning to Python), for the
        relu/tanh/sigmoid/identity hidden layers, sigmoid or softmax outputs
        and sgd/momentum/Adam; anything else runs step by step. ``"step"``
        calls one step per mini-batch from Python. The numbers are the same
        to the last bit (the training cost with an L2 term up to rounding).
        A Ctrl-C during a compiled epoch is held until the epoch in progress
        completes.
    route : {"auto", "gram", "plain"}, default "auto"
        The Gram-matrix route of :mod:`dnnblocks.wide` for full-batch fits
        of wide data (many more features than examples): the first layer's
        products with X become products with the (m, m) matrix ``X^T X``.
        ``"auto"`` takes it when it pays (:func:`dnnblocks.wide.resolve_route`)
        and can run (sigmoid output, sgd or momentum without state yet, no
        dropout, full batch, compiled backend) and nothing reads the weights
        every epoch (no validation, no callback); ``"gram"`` takes it or raises
        ValueError saying why it cannot; ``"plain"`` never. The results
        agree with the plain route to rounding; ``History.route`` says which
        ran.
    **optimizer_options
        ``beta`` (momentum), ``beta1``, ``beta2``, ``epsilon`` (Adam) when
        `optimizer` is a name.

    Returns
    -------
    History

    Raises
    ------
    TrainingDivergedError
        A step's cost is NaN or infinite; the weights are those of the last
        finite step (see :mod:`dnnblocks._safeguards`).

    Any exception from the epoch loop (Ctrl-C, a callback's, a divergence)
    carries the :class:`History` of the epochs completed so far as
    ``exc.dnnblocks_history``, with ``steps_completed`` and ``samples_seen``
    counting the completed steps of an unfinished epoch too. Errors in the
    arguments are raised before any step and carry no history.
    """
    (epochs, batch_size, learning_rate, l2, dropout, decay_rate, validation_fraction, tol,
     n_iter_no_change) = _check_training_options(
        net, epochs, batch_size, learning_rate, l2, dropout, schedule, decay_rate,
        validation_fraction, tol, n_iter_no_change)
    start_epoch = check_positive_int(start_epoch, "start_epoch", minimum=0)
    opt = get_optimizer(optimizer, **optimizer_options)
    step_optimizer = None if opt.name == "sgd" else opt
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    X = net.check_X(X)
    Y = net.check_Y(Y, X.shape[1])
    if validation_fraction is not None and validation_data is not None:
        raise ValueError("give validation_fraction or validation_data, not both")
    train_idx = None
    X_val = Y_val = None
    if validation_fraction is not None:
        if X.shape[1] < 2:
            raise ValueError("validation_fraction needs at least 2 examples")
        train_idx, val_idx = split_validation(_labels_of(net, Y), X.shape[1], validation_fraction, rng)
        X_val = np.ascontiguousarray(X[:, val_idx])
        Y_val = np.ascontiguousarray(Y[:, val_idx])
    elif validation_data is not None:
        X_val, Y_val = validation_data
        X_val = net.check_X(X_val, "X_val")
        Y_val = net.check_Y(Y_val, X_val.shape[1], "Y_val")
    if early_stopping and X_val is None:
        raise ValueError("early_stopping needs validation_fraction or validation_data")

    if engine is None:
        engine = DEFAULT_ENGINE
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
    validation = None if X_val is None else (X_val, Y_val)
    m_train = X.shape[1] if train_idx is None else len(train_idx)
    chosen = _choose_route(route, net, opt, m_train, batch_size, dropout, epochs,
                           reads_weights=validation is not None or callback is not None)
    source = None
    if chosen == "gram":
        X_fit, Y_fit = (X, Y) if train_idx is None else (X[:, train_idx], Y[:, train_idx])
        try:
            source = GramData(net, X_fit, Y_fit, optimizer=opt, l2=l2, validation=validation,
                              blas_threads=blas_threads)
        except ValueError:
            if route == "gram":  # e.g. labels other than 0/1, non-finite weights
                raise
    if source is None:
        source = InMemoryData(net, X, Y, batch_size=batch_size, indices=train_idx,
                              optimizer=step_optimizer, l2=l2, keep_prob=1.0 - dropout, rng=rng,
                              shuffle=shuffle, validation=validation, engine=engine)
    return train_on_source(net, source, epochs=epochs, learning_rate=learning_rate,
                           schedule=schedule, decay_rate=decay_rate, early_stopping=early_stopping,
                           tol=tol, n_iter_no_change=n_iter_no_change, verbose=verbose,
                           start_epoch=start_epoch, callback=callback, stream=stream,
                           blas_threads=blas_threads)


def train_on_source(net, source, *, epochs, learning_rate, schedule="constant", decay_rate=1.0,
                    early_stopping=False, tol=None, n_iter_no_change=10, verbose=0, start_epoch=0,
                    callback=None, stream=None, blas_threads=None, step_callback=None):
    """The training loop: up to `epochs` epochs of `source`'s steps, with the guard, history and stops.

    :func:`train` runs it over an :class:`InMemoryData`; a distributed fit
    runs it over the Dask data source. The options mean what they mean for
    :func:`train`, whose checks they have passed. `source` follows the
    data-source protocol described in :class:`InMemoryData`.

    Parameters
    ----------
    net : dnnblocks.Network
        The network `source` steps (guarded, snapshotted for early stopping).
    source : data source
    step_callback : callable, optional
        ``step_callback(n)`` after the n-th completed step of this call.

    Returns
    -------
    History
        See :func:`train` for the history an exception carries.
    """
    if early_stopping and not source.has_validation:
        raise ValueError("early_stopping needs validation_fraction or validation_data")
    history = History()
    history.n_examples = source.n_examples
    history.route = getattr(source, "route", "plain")
    # A source holding parameters in its own form writes them back before they are read.
    sync = getattr(source, "sync_parameters", None)
    tracker = _EpochTracker(net, history, early_stopping=early_stopping, tol=tol,
                            n_iter_no_change=n_iter_no_change)
    progress = Progress(epochs, verbose, stream) if verbose else None
    threads = source.thread_limit(blas_threads)
    # (steps, samples) at the end of each completed epoch, to cut the record
    # back if a divergence restores the weights of an earlier epoch.
    epoch_ends = [(0, 0)]
    # Holds Ctrl-C until the step in progress (an epoch run in one compiled call: that epoch)
    # completes; restores finite weights on divergence.
    guard = TrainingGuard(net)
    try:
        try:
            with backend.limit_blas_threads(threads):
                for epoch in range(epochs):
                    lr = learning_rate_at(learning_rate, start_epoch + epoch, schedule, decay_rate)
                    cost = _run_epoch(source, guard, tracker, start_epoch + epoch, lr, step_callback)
                    tracker.epoch_done(cost, lr)
                    epoch_ends.append((history.steps_completed, history.samples_seen))
                    if sync is None:
                        guard.epoch_done(history.n_epochs)
                    extra = {}
                    score = None
                    if source.has_validation:
                        val_cost, score = source.evaluate()
                        extra = tracker.validated(val_cost, score)
                    if progress is not None:
                        progress.update(epoch + 1, cost, **extra)
                    tracker.update(epoch, cost, score)
                    if callback is not None:
                        if sync is not None:
                            sync()
                        if callback(epoch, history):
                            history.stop_reason = "callback"
                            break
                    if tracker.should_stop():
                        break
                if sync is not None:
                    sync()
                # Only on a normal end: an interrupted run keeps its last completed step.
                tracker.restore_best()
        finally:
            guard.close()
    except BaseException as exc:
        if sync is not None:
            sync()  # the weights of the last completed step (a divergence's already are)
        # The record of the completed epochs goes with the exception, so that
        # callers (DNNClassifier) keep it in step with the weights.
        if isinstance(exc, TrainingDivergedError) and guard.checkpoint_epoch < history.n_epochs:
            # The guard put back the weights after epoch checkpoint_epoch:
            # the later epochs are undone, so is their record.
            _truncate(history, guard.checkpoint_epoch, epoch_ends[guard.checkpoint_epoch])
        try:
            exc.dnnblocks_history = history
        except (AttributeError, TypeError):  # an exception class that takes no attributes
            pass
        raise
    finally:
        if progress is not None:
            message = None
            if history.stop_reason == "early_stopping":
                message = (f"early stopping after epoch {history.n_epochs}: validation accuracy did not "
                           f"improve for {n_iter_no_change} epochs; kept epoch {history.best_epoch + 1}")
            elif history.stop_reason == "converged":
                message = (f"stopped after epoch {history.n_epochs}: the cost did not improve by "
                           f"{tracker.tol} for {n_iter_no_change} epochs")
            progress.close(message)
    return history


def _run_epoch(source, guard, tracker, epoch, learning_rate, step_callback):
    """The steps of one epoch; returns its cost (the mean over its examples of the cost before each step).

    Every completed step is counted in `history` before a Ctrl-C held
    during it is raised, so an interrupted run's record matches its weights;
    an epoch whose last step completed is recorded before the interrupt
    goes on.
    """
    history = tracker.history
    run_whole = getattr(source, "run_epoch", None)
    if run_whole is not None and step_callback is None:
        result = run_whole(epoch, learning_rate)
        if result is not None:
            return _record_whole_epoch(result, guard, tracker, learning_rate)
    total, seen, steps = 0.0, 0, 0
    try:
        for batch in source.batches(epoch):
            cost, rows = guard.step(source.step, batch, learning_rate)
            steps += 1
            history.steps_completed += 1
            history.samples_seen += rows
            if rows:  # a distributed batch may be empty (its cost is then NaN)
                total += cost * rows
                seen += rows
            if step_callback is not None:
                step_callback(history.steps_completed)
            guard.deliver_interrupt()
    except KeyboardInterrupt:
        if steps == source.n_batches:  # the epoch is whole: record it
            tracker.epoch_done(total / seen, learning_rate)
        raise
    return total / seen


def _record_whole_epoch(result, guard, tracker, learning_rate):
    """Count an epoch run in one call (an EpochResult); raise its divergence or a held Ctrl-C as the steps would."""
    history = tracker.history
    history.steps_completed += result.steps_completed
    history.samples_seen += result.samples_completed
    if result.diverged:
        # Through the guard, which puts back finite weights if the last update broke them.
        guard.step(result.raise_if_diverged, learning_rate)
    try:
        guard.deliver_interrupt()
    except KeyboardInterrupt:
        tracker.epoch_done(result.cost, learning_rate)  # the epoch is whole: record it
        raise
    return result.cost


def _truncate(history, n_epochs, ends):
    """Cut `history` back to its first `n_epochs` epochs, `ends` the (steps, samples) after them."""
    for name in ("cost", "learning_rate", "validation_cost", "validation_score"):
        del getattr(history, name)[n_epochs:]
    history.n_epochs = n_epochs
    history.steps_completed, history.samples_seen = ends
    if history.best_epoch is not None and history.best_epoch >= n_epochs:
        history.best_epoch = None


__all__ = ["DEFAULT_ENGINE", "ENGINES", "GramData", "History", "InMemoryData", "Progress", "SCHEDULES", "accuracy", "learning_rate_at",
           "split_validation", "train", "train_on_source"]
