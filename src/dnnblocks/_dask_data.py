"""The Dask data source of the training loop, and the code its workers run.

:class:`DistributedData` holds a fit's row blocks, validated and encoded on
the workers, as one shard per worker thread, and follows the data-source
protocol of :func:`dnnblocks.training.train_on_source`: every ``step``
sends the parameters once to each worker (inside a task), each shard computes the gradient *sums* of
its rows with :func:`dnnblocks.propagation.gradient`, one array per worker
comes back, and the driver applies the optimizer step with the very
optimizer object and kernels of in-memory training (L2 added there, once).
The parameters change only after every gradient of the step has arrived, so
a failed step leaves the model at the last completed step. Batches and
dropout masks depend only on the seed, the epoch/step and the block index,
never on which worker runs them, so a retried step computes the same
gradient.

:func:`blockwise` maps a fitted estimator's prediction over the row blocks
of a dask array. The estimators (``DNNClassifier``) call this module; the
user-facing functions are in :mod:`dnnblocks.dask_support`.

Importing this module does not import dask; its functions do, and raise an
ImportError that names the ``dnnblocks[dask]`` extra when it is missing.
"""

import asyncio
import math
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from concurrent.futures import CancelledError

import numpy as np

from . import backend, propagation
from ._validation import encode_labels
from .network import Network, check_step_cost
from .training import accuracy, split_validation

class DistributedFitError(RuntimeError):
    """A distributed fit stopped because a step could not be completed.

    Raised when a step fails on the cluster after Dask's own retries (a worker
    lost more often than ``distributed.scheduler.allowed-failures`` allows,
    the scheduler gone, ...), or when a step, its retries included, lasts
    longer than the dask config ``dnnblocks.step-timeout`` (300 s unless set,
    e.g. ``dask.config.set({"dnnblocks.step-timeout": "10 minutes"})``; None:
    no limit), as it does when a worker stalls without dying. The model keeps
    the parameters, optimizer state and history of the last completed step;
    the original exception (a ``TimeoutError`` for the time limit) is the
    ``__cause__``.

    Attributes
    ----------
    steps_completed : int
        Optimizer steps completed by the failed ``fit``/``partial_fit`` call.
    """

    def __init__(self, message, steps_completed):
        super().__init__(message)
        self.steps_completed = steps_completed


# ----------------------------------------------------------------- detection
class _StepTimeout(TimeoutError):
    """A step outlasted ``dnnblocks.step-timeout`` (the cause of the DistributedFitError)."""


def is_dask_collection(x):
    """True if `x` is a dask collection (array, DataFrame, Series, ...).

    Uses the dask collection protocol, so it never imports dask.
    """
    graph = getattr(type(x), "__dask_graph__", None)
    if graph is None:
        return False
    try:
        return x.__dask_graph__() is not None
    except Exception:
        return False


def require_dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "dask inputs need the optional dependencies dask[array] and distributed: "
            "pip install 'dnnblocks[dask]'"
        ) from exc
    return dask, da


def resolve_client(client):
    """The client given, else the active distributed client, else None."""
    if client is not None:
        if not (hasattr(client, "submit") and hasattr(client, "scatter")):
            raise TypeError(f"client must be a distributed.Client; got {type(client).__name__}")
        return client
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client has been started
        return None


# ------------------------------------------------------------- input shapes
def as_row_array(X, name="X"):
    """A 2-D dask array with one chunk along the features; (array, column names or None)."""
    _, da = require_dask()
    columns = None
    if hasattr(X, "to_dask_array") and hasattr(X, "columns"):  # dask DataFrame
        columns = list(X.columns)
        X = X.to_dask_array(lengths=True)
    elif not isinstance(X, da.Array):
        if is_dask_collection(X):
            raise TypeError(f"{name} must be a dask array or DataFrame; got {type(X).__name__}")
        X = da.asarray(np.asarray(X))
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array for {name}, got {X.ndim}D array instead; reshape your data "
                         f"with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample")
    if any(math.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X, columns


def as_row_vector(y, row_chunks, name="y"):
    """A 1-D dask array with the given row chunks."""
    _, da = require_dask()
    if y is None:
        raise ValueError(f"DNNClassifier requires {name} to be passed, but the target {name} is None.")
    if hasattr(y, "to_dask_array"):  # dask Series or one-column DataFrame
        y = y.to_dask_array(lengths=True)
    elif not isinstance(y, da.Array):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim == 1 and len(y) != sum(row_chunks):
            raise ValueError(f"X and {name} have inconsistent numbers of samples: "
                             f"{sum(row_chunks)} and {len(y)}")
        y = da.from_array(y, chunks=(tuple(row_chunks),) + y.shape[1:])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} should be a 1d array, got an array of shape {y.shape} instead.")
    if any(math.isnan(c) for c in y.chunks[0]):
        y = y.compute_chunk_sizes()
    m = sum(row_chunks)
    if y.shape[0] != m:
        raise ValueError(f"X and {name} have inconsistent numbers of samples: {m} and {y.shape[0]}")
    if y.chunks[0] != tuple(row_chunks):
        y = y.rechunk((tuple(row_chunks),))
    return y


def row_blocks(X, y, client):
    """``(X, y, column names or None)`` of a fit on `client`, as row-chunked dask arrays.

    A NumPy X is split into one block per worker thread. Raises ValueError
    for an empty X, complex data, or an X and y that do not match.
    """
    if not is_dask_collection(X):
        X = np.asarray(X)
        if X.ndim == 2 and X.shape[0] > 0:
            _, da = require_dask()
            n = max(1, sum(client.nthreads().values()))
            X = da.from_array(X, chunks=(max(1, -(-X.shape[0] // n)), X.shape[1]))
    X, columns = as_row_array(X)
    y = as_row_vector(y, X.chunks[0])
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X has shape {X.shape}: at least one sample and one feature are required")
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    return X, y, columns


def unique_labels(y, client):
    """The sorted distinct labels of dask y, computed on the cluster."""
    _, da = require_dask()
    return client.compute(da.unique(y)).result()


def compute_rows(X, y):
    """Dask (X, y) computed into memory with the default scheduler (a fit without a cluster)."""
    dask, _ = require_dask()
    X, _ = as_row_array(X)
    return dask.compute(X, as_row_vector(y, X.chunks[0]))


# --------------------------------------------------------- flat parameters
class _Layout:
    """All W then all b of a network in one flat array (one message per step)."""

    def __init__(self, layer_dims):
        shapes = [(n, n_prev) for n_prev, n in zip(layer_dims[:-1], layer_dims[1:])]
        shapes += [(n, 1) for n in layer_dims[1:]]
        self.n_layers = len(layer_dims) - 1
        self.shapes = shapes
        self.offsets = np.cumsum([0] + [a * b for a, b in shapes]).tolist()
        self.size = self.offsets[-1]

    def views(self, flat):
        """(W list, b list) as C-contiguous views of `flat`."""
        parts = [flat[lo:hi].reshape(shape)
                 for lo, hi, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]
        return parts[:self.n_layers], parts[self.n_layers:]

    def pack(self, W, b):
        flat = np.empty(self.size, dtype=W[0].dtype)
        for dst, src in zip(sum(self.views(flat), []), list(W) + list(b)):
            np.copyto(dst, src)
        return flat


# ------------------------------------------------------------ worker side
# Everything from here to the driver section runs in the worker processes.
# Networks live in a per-process cache keyed by (fit id, shard id) so their
# buffers survive from one step to the next; a shard recomputed on another
# worker after a failure simply builds a new one there.
_CACHE_SIZE = 16
_CACHE = OrderedDict()
_CACHE_LOCK = threading.Lock()


class _ShardState:
    """A shard's Network and its per-epoch batch permutations, in one worker."""

    def __init__(self, spec):
        layer_dims, hidden_activation, output, dtype, backend = spec
        self.net = Network(layer_dims, hidden_activation=hidden_activation, dtype=np.dtype(dtype),
                           backend=backend, init="zeros", output=output)
        self.layout = _Layout(self.net.layer_dims)
        self.dW, self.db = propagation.gradient_buffers(self.net.W, self.net.b)
        self.workspaces = OrderedDict()  # batch size -> propagation.Workspace
        self.lock = threading.Lock()
        self.perm_key = None
        self.perms = {}

    def load(self, flat):
        W, b = self.layout.views(flat)
        for dst, src in zip(self.net.W + self.net.b, W + b):
            np.copyto(dst, src)

    def workspace(self, m):
        """The buffers for batches of m rows (the two last used sizes are kept)."""
        ws = self.workspaces.pop(m, None)
        if ws is None:
            ws = propagation.Workspace(self.net.layer_dims, m, self.net.dtype)
        self.workspaces[m] = ws
        while len(self.workspaces) > 2:
            self.workspaces.popitem(last=False)
        return ws

    def batch_rows(self, index, m, epoch, k, n_batches, shuffle, seed, start=None):
        """Row numbers of block `index` (m rows) that go into batch k of the epoch.

        A block of at least `n_batches` rows gives every batch its k-th slice.
        A smaller one would leave the same batches empty in every block of its
        size, so its rows are dealt out instead: its j-th row goes to batch
        ``(start + j) % n_batches``, `start` being the training rows of the
        blocks before it, so that consecutive small blocks fill the batches in
        turn and no step of an epoch is empty.
        """
        if start is not None and m < n_batches:
            lo = (k - start) % n_batches
            hi = lo + 1 if lo < m else lo
        else:
            lo, hi = (k * m) // n_batches, ((k + 1) * m) // n_batches
        if not shuffle:
            return np.arange(lo, hi)
        if self.perm_key != (seed, epoch):
            self.perm_key, self.perms = (seed, epoch), {}
        perm = self.perms.get(index)
        if perm is None:
            perm = self.perms[index] = np.random.default_rng([seed, epoch, index]).permutation(m)
        # Sorted: the gather then reads X in order (the sum does not care).
        return np.sort(perm[lo:hi])


def _shard_state(key, spec):
    with _CACHE_LOCK:
        state = _CACHE.get(key)
        if state is None:
            state = _CACHE[key] = _ShardState(spec)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
        return state


def _forget(fit_key):
    """Drop the cached networks of one fit (run on every worker when a fit ends)."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] == fit_key]:
            del _CACHE[key]
    return None


def _prepare_block(index, xb, yb, classes, dtype, n_out, seed, validation_fraction):
    """Validate and encode one row block: ``(index, X (m, n) C-ordered, Y (n_out, m), X_val, Y_val)``."""
    xb = np.asarray(xb)
    if xb.dtype.kind not in "biuf":
        if xb.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        try:
            xb = xb.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"X must hold numbers; row block {index} has dtype {xb.dtype}") from None
    X = np.ascontiguousarray(xb, dtype=dtype)
    if not np.isfinite(X).all():
        raise ValueError(f"Input X contains NaN or infinity (row block {index})")
    yb = np.asarray(yb).ravel()
    if yb.shape[0] != X.shape[0]:
        raise ValueError(f"X and y blocks {index} have {X.shape[0]} and {yb.shape[0]} rows")
    Y = encode_labels(yb, classes, dtype, f" (row block {index})")
    if not validation_fraction or X.shape[0] < 2:
        return (index, X, Y, None, None)
    labels = Y[0].astype(np.intp) if n_out == 1 else np.argmax(Y, axis=0)
    try:
        train, val = split_validation(labels, X.shape[0], validation_fraction,
                                      np.random.default_rng([seed, index]))
    except ValueError:  # every class of this block has one example: keep it all for training
        return (index, X, Y, None, None)
    return (index, np.take(X, train, axis=0), np.take(Y, train, axis=1),
            np.take(X, val, axis=0), np.take(Y, val, axis=1))


def _block_sizes(part):
    _, X, _, Xv, _ = part
    return X.shape[0], 0 if Xv is None else Xv.shape[0]


def _make_shard(shard_id, *parts):
    # A plain tuple of arrays, so dask's sizeof sees the data it holds.
    return (shard_id, tuple(parts))


def _gradient(state, X, Y, keep_prob, rng):
    """Mean gradients of (X, Y) into the shard's gradient buffers; returns the mean cost (no L2)."""
    net = state.net
    return propagation.gradient(net.kernels, net.W, net.b, net.activations, X, Y,
                                state.workspace(X.shape[1]), state.dW, state.db, keep_prob, rng)


def _shard_gradient(shard, flat_params, fit_key, spec, plan, block_starts=None):
    """Gradient *sums* of one shard at the given parameters.

    Returns ``(flat sums, cost sum, rows, wall seconds, CPU seconds)``; the
    times (of this thread) tell compute from waiting in the driver's stats.
    `plan` is ``(epoch, k, n_batches, shuffle, seed, keep_prob, step)``;
    `block_starts` maps the blocks smaller than the batch count to their first
    row's place among the training rows (see ``_ShardState.batch_rows``).
    """
    wall, cpu = time.perf_counter(), time.thread_time()
    shard_id, parts = shard
    epoch, k, n_batches, shuffle, seed, keep_prob, step = plan
    state = _shard_state((fit_key, shard_id), spec)
    # The worker's share of a step, under the same BLAS thread policy as
    # in-memory training (a worker's pool must not spin against its neighbours').
    rows = max(X.shape[0] for _, X, _, _, _ in parts) if parts else 0
    threads = backend.blas_threads_policy(spec[0], max(1, -(-rows // n_batches)))
    with state.lock, backend.limit_blas_threads(threads):
        net = state.net
        state.load(flat_params)
        kernels = net.kernels
        out = np.zeros(state.layout.size, dtype=net.dtype)
        gW, gb = state.layout.views(out)
        cost_sum, count = 0.0, 0
        for index, X, Y, _, _ in parts:
            if n_batches > 1:
                rows = state.batch_rows(index, X.shape[0], epoch, k, n_batches, shuffle, seed,
                                        None if block_starts is None else block_starts.get(index))
                X, Y = np.take(X, rows, axis=0), np.take(Y, rows, axis=1)
            m = X.shape[0]
            if m == 0:
                continue
            rng = np.random.default_rng([seed, step, index]) if keep_prob < 1.0 else None
            # X.T: the (n, m) F-ordered view the network reads in place.
            cost = _gradient(state, X.T, Y, keep_prob, rng)
            for l in range(net.n_layers):
                # sum += m * mean, through the update kernel (param -= rate * grad).
                kernels.gradient_descent_update(gW[l], state.dW[l], -float(m))
                kernels.gradient_descent_update(gb[l], state.db[l], -float(m))
            cost_sum += cost * m
            count += m
    return out, cost_sum, count, time.perf_counter() - wall, time.thread_time() - cpu


def _shard_evaluate(shard, flat_params, fit_key, spec):
    """Validation ``(correct, cost sum, rows)`` of one shard at the given parameters."""
    shard_id, parts = shard
    state = _shard_state((fit_key, shard_id), spec)
    correct = cost_sum = 0.0
    count = 0
    with state.lock:
        net = state.net
        state.load(flat_params)
        for _, _, _, Xv, Yv in parts:
            if Xv is None or Xv.shape[0] == 0:
                continue
            m = Xv.shape[0]
            cost_sum += net.cost(Xv.T, Yv) * m
            correct += accuracy(net, Xv.T, Yv) * m
            count += m
    return correct, cost_sum, count


def _combine(*results):
    """Add up shard results (on the worker that holds them)."""
    first = results[0][0]
    if isinstance(first, np.ndarray):
        total = first.copy()
        for r in results[1:]:
            total += r[0]
    else:
        total = sum(r[0] for r in results)
    rest = [sum(r[i] for r in results) for i in range(1, len(results[0]))]
    return (total, *rest)


def _parameters(flat):
    """The parameters of a step, as a task on a worker (see ``DistributedData._broadcast``)."""
    return flat


def _call_block(block, model, method):
    if block.shape[0] == 0:
        # The estimator refuses an empty input, as in memory, but an empty
        # chunk is an ordinary part of a dask array (a filter, a concatenation,
        # a partition with no rows): its result is empty, with the trailing
        # shape and the dtype of any other block's.
        return getattr(model, method)(np.zeros((1, block.shape[1])))[:0]
    return getattr(model, method)(block)


# ------------------------------------------------------------ driver side
def _place_blocks(rows, holders, nthreads):
    """The worker that prepares (and then keeps) each row block.

    Each worker's share of the rows is proportional to its threads. A block
    stays on a worker that already holds it while that worker is within its
    share (give or take half the block); every other block goes to the worker
    furthest below its share. So data already spread evenly never moves,
    and data piled up on one worker is spread once, worker to worker, at the
    start of the fit (a step lasts as long as its slowest worker).

    Parameters
    ----------
    rows : sequence of int
        Rows of each block.
    holders : sequence of (list of str or None)
        Workers holding each block already (persisted data), if any.
    nthreads : dict
        Worker address -> threads.
    """
    total_threads = sum(nthreads.values())
    m = sum(rows)
    room = {a: m * n / total_threads for a, n in nthreads.items()}
    target = [None] * len(rows)
    for i, (r, where) in enumerate(zip(rows, holders)):
        for a in where or ():
            if a in room and room[a] - r >= -0.5 * r:
                target[i] = a
                room[a] -= r
                break
    # Larger blocks first, each to the worker with the most room left.
    for i in sorted((i for i in range(len(rows)) if target[i] is None), key=lambda i: -rows[i]):
        a = max(sorted(room), key=lambda w: room[w])
        target[i] = a
        room[a] -= rows[i]
    return target


class DistributedData:
    """Prepared row blocks held as shards on the workers, and the steps over them.

    A data source of :func:`dnnblocks.training.train_on_source` (see
    :class:`dnnblocks.training.InMemoryData` for the protocol). Full batch
    (``batch_size=None``) computes exactly the in-memory gradient; with
    mini-batches, step k of an epoch takes the k-th slice of a seeded
    per-block permutation from *every* block (each block contributes about
    ``rows_in_block / n_batches`` rows, every row once per epoch; a block
    with fewer rows than batches deals its rows out in turn, so no step is empty).

    Parameters
    ----------
    client : distributed.Client
    X : dask array of shape (n_samples, n_features)
        Row chunks, one column chunk (see :func:`as_row_array`).
    y : dask array of shape (n_samples,)
        The same row chunks.
    net : dnnblocks.Network
        The driver's network, trained in place.
    classes : ndarray
        Every class, in the order of the network's outputs.
    seed : int
        Seeds the validation split, the batches and the dropout masks.
    validation_fraction : float or None
        Hold out this fraction of every block (stratified) for :meth:`evaluate`.
    optimizer : Optimizer
        Applied by the driver to the mean gradient of each step.
    l2 : float
    keep_prob : float
        1 - dropout.
    shuffle : bool
    batch_size : int or None
        None (or at least the training rows) is full batch.
    """

    def __init__(self, client, X, y, net, *, classes, seed, validation_fraction, optimizer=None,
                 l2=0.0, keep_prob=1.0, shuffle=True, batch_size=None):
        import dask
        from distributed import futures_of, wait

        self.step_timeout = self._configured_step_timeout()  # bad config: refused before any work
        self.client = client
        self.net = net
        self.optimizer, self.l2, self.keep_prob = optimizer, l2, keep_prob
        self.shuffle, self.seed = bool(shuffle), seed
        self.fit_key = uuid.uuid4().hex[:12]
        self.spec = (tuple(net.layer_dims), net.hidden_activation, net.output, net.dtype.name,
                     net.backend)
        self.layout = _Layout(net.layer_dims)
        self._params = None
        self._param_version = 0
        self._starts = (None, None)  # (n_batches, starts of the blocks smaller than n_batches)
        self._n_steps = 0
        self.step_seconds, self.compute_seconds, self.cpu_seconds = [], [], []

        nthreads = dict(client.nthreads())
        if not nthreads:
            raise RuntimeError("the dask cluster has no workers; start some (dask worker ...) and retry")
        addresses = sorted(nthreads)
        n_blocks = X.numblocks[0]

        x_keys = [key[0] for key in X.__dask_keys__()]
        held = {}
        persisted = futures_of(X)
        if persisted:
            held = {k: v for k, v in client.who_has(persisted).items() if v}
        target = _place_blocks(X.chunks[0], [held.get(k) or held.get(str(k)) for k in x_keys],
                               {a: nthreads[a] for a in addresses})

        xd = X.to_delayed().ravel()
        yd = y.to_delayed().ravel()
        prepare = dask.delayed(_prepare_block, pure=True)
        n_out = net.layer_dims[-1]
        futures = [None] * n_blocks
        for a in addresses:
            mine = [i for i in range(n_blocks) if target[i] == a]
            if not mine:
                continue
            tasks = [prepare(i, xd[i], yd[i], classes, net.dtype, n_out, seed, validation_fraction)
                     for i in mine]
            for i, f in zip(mine, client.compute(tasks, workers=[a], allow_other_workers=True)):
                futures[i] = f
        wait(futures)
        for f in futures:
            if f.status == "error":
                f.result()  # re-raises the worker's ValueError/TypeError

        sizes = client.gather(client.map(_block_sizes, futures, pure=False))
        self.block_rows = [s[0] for s in sizes]
        self.n_blocks = n_blocks
        self.m_train = sum(s[0] for s in sizes)
        self.m_val = sum(s[1] for s in sizes)
        if validation_fraction and self.m_val == 0:
            raise ValueError("validation_fraction leaves no example to validate on: the row blocks "
                             "are too small to hold any out")

        # One shard per worker thread, from the blocks the worker holds.
        where = client.who_has(futures)
        per_worker = OrderedDict((a, []) for a in addresses)
        for i, f in enumerate(futures):
            holders = where.get(f.key) or [target[i]]
            per_worker.setdefault(holders[0], []).append(i)
        self.shards, self.groups, self.shard_rows = [], [], []
        self.group_workers = []  # where each group's parameters are sent first
        for a, blocks in per_worker.items():
            if not blocks:
                continue
            self.group_workers.append(a)
            n_sh = min(nthreads.get(a, 1), len(blocks))
            group = []
            for j in range(n_sh):
                members = blocks[j * len(blocks) // n_sh:(j + 1) * len(blocks) // n_sh]
                shard_id = len(self.shards)
                self.shard_rows.append(sum(self.block_rows[i] for i in members))
                self.shards.append(client.submit(
                    _make_shard, shard_id, *[futures[i] for i in members],
                    key=f"dnnblocks-shard-{self.fit_key}-{shard_id}", workers=[a],
                    allow_other_workers=True))
                group.append(shard_id)
            self.groups.append(group)
        wait(self.shards)
        del futures  # the shards hold the blocks now
        self.n_workers = len(self.groups)
        self.n_shards = len(self.shards)
        self.n_examples = self.m_train
        self.has_validation = bool(validation_fraction)
        full = batch_size is None or batch_size >= self.m_train
        self.n_batches = 1 if full else max(1, -(-self.m_train // batch_size))
        self.steps_completed = 0  # of this fit: numbers the dropout masks

    # ---------------------------------------------- the data-source protocol
    def thread_limit(self, blas_threads):
        """None: the driver only adds up and updates; the workers limit their own BLAS threads."""
        return None

    def batches(self, epoch):
        """The batches of epoch `epoch`: (epoch, k) for k < n_batches."""
        return [(epoch, k) for k in range(self.n_batches)]

    # ------------------------------------------------------------- steps
    def _broadcast(self):
        """The current parameters as one small task per worker (made anew once per change).

        Tasks, not ``client.scatter(..., broadcast=True)``: a broadcast scatter
        can wait for ever on a worker that died during the replication
        (dask/distributed#5704), and scattered data lost with the worker that
        held it cannot be rebuilt ("lost dependencies"). A task keeps its input
        on the scheduler, so a copy lost with a worker is made again elsewhere.
        """
        if self._params is None:
            flat = self.layout.pack(self.net.W, self.net.b)
            self._param_version += 1
            stem = f"dnnblocks-params-{self.fit_key}-{self._param_version}"
            with warnings.catch_warnings():
                # The parameters are the payload: a large one is expected here.
                warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
                self._params = [
                    self.client.submit(_parameters, flat, key=f"{stem}-{w}", workers=[address],
                                       allow_other_workers=True)
                    for w, address in enumerate(self.group_workers)]
            self.param_bytes = flat.nbytes
        return self._params

    #: Attempts of a step whose messages fail (a worker dying while the
    #: parameters are sent, ...). Tasks lost with a worker are retried by Dask
    #: itself, up to ``distributed.scheduler.allowed-failures``.
    COMM_ATTEMPTS = 4

    #: Seconds a step (or a validation pass), its retries included, may last
    #: before the fit stops with DistributedFitError; the dask config key
    #: ``dnnblocks.step-timeout`` (seconds, a string such as "10 minutes", or
    #: None for no limit) overrides it.
    STEP_TIMEOUT = 300.0
    STEP_TIMEOUT_KEY = "dnnblocks.step-timeout"

    #: Seconds the workers get to drop the fit's cached networks at its end.
    FORGET_SECONDS = 5.0

    @classmethod
    def _configured_step_timeout(cls):
        """``dnnblocks.step-timeout`` from the dask config, in seconds (None: no limit)."""
        import dask
        from dask.utils import parse_timedelta

        value = dask.config.get(cls.STEP_TIMEOUT_KEY, cls.STEP_TIMEOUT)
        if value is None:
            return None
        seconds = None
        if not isinstance(value, bool):
            try:
                seconds = float(parse_timedelta(value, default="s"))
            except (TypeError, ValueError, KeyError, AttributeError):  # not a duration
                pass
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"the dask config {cls.STEP_TIMEOUT_KEY} must be a positive number of "
                             f"seconds, a duration such as '10 minutes', or None; got {value!r}")
        return seconds

    def _run(self, function, args, tag):
        """Run `function(shard, params, *args)` on every shard; gather the per-worker sums.

        Nothing on the driver changes until the results are in, so a step
        whose communication fails, or whose parameters were lost with a
        worker, is simply run again (with the parameters sent anew). The whole
        of it, retries included, lasts at most ``self.step_timeout`` seconds.
        """
        deadline = None if self.step_timeout is None else time.monotonic() + self.step_timeout
        for attempt in range(self.COMM_ATTEMPTS):
            try:
                return self._run_once(function, args, tag, attempt, deadline)
            # CommClosedError, connection refused, ...; CancelledError: the
            # scheduler forgot a task the step needs ("lost dependencies").
            except (OSError, CancelledError) as exc:
                self._params = None
                if isinstance(exc, _StepTimeout):
                    raise
                pause = 0.5 * 2**attempt
                if self._timed_out(deadline, pause):
                    raise self._timeout_error(tag) from exc
                # A shard Dask gave up on (its source data gone with a worker,
                # e.g. scattered): no retry can bring it back.
                lost = [shard.key for shard in self.shards if shard.status == "cancelled"]
                if lost or attempt == self.COMM_ATTEMPTS - 1:
                    if lost:
                        raise RuntimeError(
                            f"the cluster lost the prepared row blocks of {len(lost)} shard(s) and "
                            f"cannot rebuild them ({type(exc).__name__}: {exc})") from exc
                    raise
                time.sleep(pause)

    @staticmethod
    def _timed_out(deadline, margin=0.0):
        return deadline is not None and time.monotonic() + margin >= deadline

    def _timeout_error(self, tag):
        # No question to the cluster here: the scheduler itself may be gone.
        what = "step" if tag == "grad" else "validation pass"
        return _StepTimeout(f"a {what} did not complete within {self.step_timeout:g} s (a worker "
                            f"stalled or unreachable?); the limit is the dask config "
                            f"{self.STEP_TIMEOUT_KEY}")

    def _run_once(self, function, args, tag, attempt, deadline=None):
        params = self._broadcast()
        submit = self.client.submit
        stem = f"{self.fit_key}-{self._n_steps}"
        tasks = [None] * len(self.shards)
        per_worker = []
        for w, group in enumerate(self.groups):
            for j in group:
                tasks[j] = submit(function, self.shards[j], params[w], *args,
                                  key=f"dnnblocks-{tag}-{stem}-{j}-{attempt}")
            if len(group) == 1:
                per_worker.append(tasks[group[0]])
            else:
                per_worker.append(submit(_combine, *[tasks[j] for j in group],
                                         key=f"dnnblocks-{tag}sum-{stem}-{w}-{attempt}"))
        if deadline is None:
            return self.client.gather(per_worker)
        try:
            # A bounded wait: a lost worker may be noticed late, or never
            # replaced, and then a plain gather would wait for ever.
            return self._within(max(0.001, deadline - time.monotonic()), self.client.gather,
                                per_worker)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if self._timed_out(deadline):
                raise self._timeout_error(tag) from exc
            raise

    def _within(self, seconds, method, *args):
        """``method(*args)``, a blocking method of the client, given up after `seconds`.

        Raises TimeoutError (asyncio's on Python 3.10) when time is up.
        """
        async def call():
            # In the client's event loop its methods return awaitables.
            return await method(*args)

        return self.client.sync(call, callback_timeout=seconds)

    def _small_block_starts(self, n_batches):
        """``{block: rows of the blocks before it}`` for the blocks smaller than `n_batches`, or None."""
        if n_batches <= 1 or min(self.block_rows) >= n_batches:
            return None
        if self._starts[0] != n_batches:
            starts = np.cumsum([0] + self.block_rows[:-1]).tolist()
            self._starts = (n_batches, {i: starts[i] for i, rows in enumerate(self.block_rows)
                                        if rows < n_batches})
        return self._starts[1]

    def step(self, batch, learning_rate):
        """One optimizer step on the gradient of `batch`; returns (cost, rows)."""
        epoch, k = batch
        plan = (epoch, k, self.n_batches, self.shuffle, self.seed, self.keep_prob,
                self.steps_completed)
        cost, count = self._step(self.optimizer, learning_rate, self.l2, plan)
        self.steps_completed += 1
        return cost, count

    def _step(self, optimizer, learning_rate, l2, plan):
        """The step of the batch `plan` selects (see :func:`_shard_gradient`)."""
        start = time.perf_counter()
        results = self._run(_shard_gradient,
                            (self.fit_key, self.spec, plan, self._small_block_starts(plan[2])), "grad")
        self.gathered_bytes = sum(r[0].nbytes for r in results)
        total = results[0][0].astype(self.net.dtype, copy=True)
        for r in results[1:]:
            total += r[0]
        cost_sum = sum(r[1] for r in results)
        count = sum(r[2] for r in results)
        # Per worker, the compute of its shards: the slowest one bounds the step.
        self.compute_seconds.append(max(r[3] for r in results))
        self.cpu_seconds.append(max(r[4] for r in results))
        self._n_steps += 1
        if count == 0:
            return math.nan, 0
        net = self.net
        cost = cost_sum / count
        if l2:
            cost += propagation.l2_cost(net.W, l2, count)
        check_step_cost(cost, learning_rate)
        total *= 1.0 / count  # sums -> means, as the kernels scale by 1/m
        dW, db = self.layout.views(total)
        kernels = net.kernels
        optimizer.start_step(net.W, net.b)
        for l in range(net.n_layers):
            optimizer.update_layer(kernels, l, net.W[l], dW[l], net.b[l], db[l], learning_rate,
                                   l2 / count)
        self._params = None  # changed: broadcast anew at the next use
        self.step_seconds.append(time.perf_counter() - start)
        return cost, count

    def evaluate(self):
        """Validation (cost, accuracy) of the current parameters, over every shard."""
        results = self._run(_shard_evaluate, (self.fit_key, self.spec), "val")
        correct = sum(r[0] for r in results)
        cost_sum = sum(r[1] for r in results)
        count = sum(r[2] for r in results)
        return cost_sum / count, correct / count

    def stats(self):
        steps = self.step_seconds

        def median(values):
            return float(np.median(values)) if values else None

        return {
            "n_workers": self.n_workers,
            "n_shards": self.n_shards,
            "n_blocks": self.n_blocks,
            "rows_per_shard": list(self.shard_rows),
            "n_steps": len(steps),
            "median_step_seconds": median(steps),
            "median_worker_compute_seconds": median(self.compute_seconds),
            "median_worker_cpu_seconds": median(self.cpu_seconds),
            "parameter_bytes": self.layout.size * self.net.dtype.itemsize,
            "broadcast_bytes_per_step": self.layout.size * self.net.dtype.itemsize * self.n_workers,
            "gathered_bytes_per_step": getattr(self, "gathered_bytes", None),
        }

    def close(self):
        self._params = None
        self.shards = []
        try:
            # Bounded: a stalled worker never answers (its cache then ages out).
            self._within(self.FORGET_SECONDS, self.client.run, _forget, self.fit_key)
        except Exception:  # a worker gone: its cache went with it
            pass


# -------------------------------------------------------------- prediction
def blockwise(est, X, method, model):
    """``model.<method>`` over the row blocks of dask X, as a lazy dask array.

    Parameters
    ----------
    est : fitted estimator
        Its public fitted attributes (``n_features_in_``, ``classes_``,
        ``feature_names_in_``, ``network_``) describe the output.
    X : dask array or DataFrame of shape (n_samples, n_features)
    method : {"predict", "predict_proba", "predict_log_proba", "decision_function"}
    model : estimator
        What the workers call: a light copy of `est` that stays as it is
        even if `est` goes on training.
    """
    dask, _ = require_dask()
    X, columns = as_row_array(X)
    names = getattr(est, "feature_names_in_", None)
    if columns is not None and names is not None and list(map(str, columns)) != list(names):
        raise ValueError(f"The feature names should match those that were passed during fit: "
                         f"fitted with {list(names)}, got {list(columns)}")
    if X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                         f"{est.n_features_in_} features as input.")
    if X.shape[0] == 0:  # as in memory; empty blocks among others are fine
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is "
                         f"required by {type(est).__name__}.")
    model = dask.delayed(model, name=f"dnnblocks-model-{uuid.uuid4().hex}")
    n_classes = len(est.classes_)
    dtype = est.network_.dtype
    if method == "predict":
        return X.map_blocks(_call_block, model, method, drop_axis=1, dtype=est.classes_.dtype,
                            chunks=(X.chunks[0],), meta=np.empty((0,), est.classes_.dtype))
    if method == "decision_function" and n_classes == 2:
        return X.map_blocks(_call_block, model, method, drop_axis=1, dtype=dtype,
                            chunks=(X.chunks[0],), meta=np.empty((0,), dtype))
    return X.map_blocks(_call_block, model, method, dtype=dtype, chunks=(X.chunks[0], (n_classes,)),
                        meta=np.empty((0, 0), dtype))


def score(est, X, y, sample_weight=None):
    """Mean accuracy of `est` on dask (X, y), computed on the cluster; a float."""
    pred = est.predict(X)
    y = as_row_vector(y, pred.chunks[0])
    hit = pred == y
    if sample_weight is None:
        result = hit.mean()
    else:
        w = as_row_vector(sample_weight, pred.chunks[0], "sample_weight").astype(np.float64)
        result = (w * hit).sum() / w.sum()
    return float(result.compute())
