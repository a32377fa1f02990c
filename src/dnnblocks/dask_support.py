"""Data-parallel training and blockwise prediction on a Dask cluster.

:class:`dnnblocks.DNNClassifier` hands dask inputs to this module: its
``fit``, ``partial_fit``, ``predict``, ``predict_proba``, ``decision_function``,
``predict_log_proba`` and ``score`` accept ``dask.array`` arrays (and dask
DataFrames/Series) chunked by rows.

Training (with a ``distributed.Client``: the active one, or ``client=``)
-----------------------------------------------------------------------
1. Each row block of X and y is validated, converted to the model's dtype and
   its labels one-hot encoded *on a worker*. Each worker gets a share of the
   rows in proportion to its threads: blocks already in a worker's memory
   stay there while it is within its share, the others go to the workers
   furthest below theirs (so persisted data piled up on one worker is spread
   once, worker to worker). The blocks on a worker are grouped into one
   *shard* per worker thread. Nothing but small
   metadata (row counts, the class labels) ever reaches the driver.
2. Every step, the driver sends the parameters once to each worker (one flat
   array inside a task, so a copy lost with a worker is made again). Each shard runs the compiled
   forward/backward kernels on its blocks with a ``Network`` kept alive in the
   worker process across steps (so its buffers are reused) and returns the
   *sums* of the gradients (mean gradient x rows), the cost sum and the row
   count: one parameter-sized array. Shards on one worker are added up there,
   so one array per worker travels back.
3. The driver adds the worker sums, divides by the total row count and applies
   the optimizer step with the very optimizer object and kernels that
   in-memory training uses (L2 is added there, once). The parameters only
   change after every gradient of the step has arrived: a failed step leaves
   the model at the last completed step.

Full batch (``batch_size=None``) computes exactly the in-memory gradient, so
the model equals the in-memory fit up to floating-point rounding. With
mini-batches, step k of an epoch takes the k-th slice of a seeded per-block
permutation from *every* block (each block contributes about
``rows_in_block / n_batches`` rows, every row once per epoch; a block with
fewer rows than batches deals its rows out to the batches in turn, so that no
step is empty); that is a
different shuffle from the in-memory one, so the two fits are statistically
equivalent but not identical. Batches and dropout masks depend only on the
seed, the epoch/step and the block index, never on which worker runs them, so
a step retried after a worker failure computes the same gradient.

Without a distributed client, dask inputs to ``fit`` are computed into memory
with the default dask scheduler and fitted as NumPy arrays.

Prediction returns lazy dask arrays computed block by block (``map_blocks``)
wherever the blocks are, with any scheduler.

This module is the public face; the data source and the worker code are in
:mod:`dnnblocks._dask_data`, and the fit itself is the estimator's one fit
over that source (the training loop of :func:`dnnblocks.training.train`,
with its Ctrl-C and divergence guard, early stopping, history and progress).

Importing this module does not import dask; its functions do, and raise an
ImportError that names the ``dnnblocks[dask]`` extra when it is missing.
"""

from . import _dask_data
from ._dask_data import DistributedFitError, is_dask_collection

__all__ = [
    "DistributedFitError",
    "decision_function",
    "fit",
    "is_dask_collection",
    "predict",
    "predict_log_proba",
    "predict_proba",
    "score",
]


def fit(est, X, y, *, classes=None, incremental=False, client=None, step_callback=None):
    """Fit a :class:`~dnnblocks.DNNClassifier` on dask data, data-parallel on a cluster.

    ``DNNClassifier.fit(X, y, client=...)`` and ``partial_fit`` do this for
    dask inputs (or whenever `client` is given); it can also be called directly.

    Parameters
    ----------
    est : DNNClassifier
        Fitted in place, with its own hyper-parameters (solver, alpha,
        batch_size, max_iter, tol, early_stopping, dropout, dtype, ...).
    X : dask array or dask DataFrame of shape (n_samples, n_features)
        Chunked by rows (several column chunks are merged). A NumPy array is
        accepted when `client` is given: it is split into one block per worker
        thread and sent to the workers.
    y : dask array, dask Series or array-like of shape (n_samples,)
    classes : array-like, optional
        For ``incremental=True``: every class, required on the first call.
    incremental : bool, default False
        ``partial_fit`` semantics: one epoch, continuing from the current state.
    client : distributed.Client, optional
        The cluster; defaults to the active client. Without any, the data are
        computed into memory and fitted there.
    step_callback : callable, optional
        ``step_callback(n)`` on the driver after the n-th completed optimizer
        step of this call (for progress, timing or tests).

    Returns
    -------
    est

    Raises
    ------
    DistributedFitError
        A step could not be completed on the cluster; the model keeps the
        last completed step.
    """
    _dask_data.require_dask()
    return est._fit(X, y, incremental, classes, client=client, distributed=True,
                    step_callback=step_callback)


def _lazy(X):
    """X as a dask collection (a NumPy array becomes a one-block dask array)."""
    return X if is_dask_collection(X) else _dask_data.as_row_array(X)[0]


def predict(est, X):
    """Class labels of dask X, a lazy dask array of shape (n_samples,)."""
    return est.predict(_lazy(X))


def predict_proba(est, X):
    """Class probabilities of dask X, a lazy dask array of shape (n_samples, n_classes)."""
    return est.predict_proba(_lazy(X))


def predict_log_proba(est, X):
    """Log class probabilities of dask X, a lazy dask array of shape (n_samples, n_classes)."""
    return est.predict_log_proba(_lazy(X))


def decision_function(est, X):
    """Logits of dask X: (n_samples,) for two classes, else (n_samples, n_classes); lazy."""
    return est.decision_function(_lazy(X))


def score(est, X, y, sample_weight=None):
    """Mean accuracy on dask (X, y), computed on the cluster; a float."""
    return _dask_data.score(est, _lazy(X), y, sample_weight)
