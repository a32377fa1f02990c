"""The estimators' logic, without scikit-learn: hyper-parameters, one fit for every data source.

:class:`DNNEstimatorBase` holds what every dnnblocks estimator shares: the
hyper-parameters and their checks, the network, the one transactional
``_fit`` (in-memory data through :func:`dnnblocks.training.train`, Dask data
through :class:`dnnblocks._dask_data.DistributedData`, both the same training
loop), the fitted record and model files. :class:`DNNClassifierBase` adds
what is particular to classification: classes and their encoding, the
output layer (sigmoid for two classes, softmax for more), prediction.

Nothing here imports scikit-learn or dask: the command line builds
:class:`DNNClassifierBase` directly. :class:`dnnblocks.DNNClassifier`
(:mod:`dnnblocks.estimator`) is this class with scikit-learn's mixins and
validation when scikit-learn is installed.
"""

import copy
import inspect
import numbers
import warnings

import numpy as np

from . import _dask_data
from . import exceptions as _exc
from ._validation import (
    BLAS_INT_MAX,
    ESTIMATOR_ACTIVATIONS,
    check_blas_shape,
    check_dtype,
    check_parameter_memory,
    check_positive_int,
    check_scalar,
    encode_labels,
)
from .network import Network
from .optimizers import get_optimizer
from .training import SCHEDULES, train, train_on_source

ACTIVATIONS = tuple(ESTIMATOR_ACTIVATIONS)
SOLVERS = ("sgd", "momentum", "adam")
INITS = ("auto", "glorot", "he", "xavier", "random", "zeros")


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (scikit-learn's class when it is installed)."""


class BaseEstimator:
    """Minimal stand-in for scikit-learn's BaseEstimator: parameters and repr."""

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}. "
                                 f"Valid parameters are: {valid!r}.")
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = type(self)().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not _same_param(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same_param(a, b):
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else False
    except (TypeError, ValueError):
        return a is b


def check_classification_targets(y):
    """Labels must be classes, not continuous values (scikit-learn's check when it is installed)."""
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        raise ValueError("Unknown label type: continuous. Labels must be classes "
                         "(integers, strings, ...), not continuous values.")


def check_array(X, dtype, name="X"):
    """Input validation of a dense 2-D X when scikit-learn is not used."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a sparse matrix; DNNClassifier needs dense data (use X.toarray())")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"{name}: complex data not supported")
    if X.dtype.kind not in "biuf":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers; got dtype {X.dtype}") from None
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array for {name}, got {X.ndim}D array instead; reshape your "
                         f"data with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) "
                         f"for a single sample")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} has shape {X.shape}: at least one sample and one feature are required")
    X = X.astype(dtype, copy=False)
    if not np.isfinite(X).all():
        raise ValueError(f"Input {name} contains NaN or infinity")
    return X


def first_partial_fit_classes(classes):
    """The sorted unique `classes` of a first partial_fit call, where they are required."""
    if classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit "
                         "(all the labels the model will ever see)")
    return np.unique(np.asarray(classes))


def check_hyperparameters(est):
    """The checked hyper-parameters of `est` as a dict (at fit time, never in __init__)."""
    sizes = est.hidden_layer_sizes
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"hidden_layer_sizes must be an int or a tuple of ints; got {sizes!r}") from None
    sizes = tuple(check_positive_int(s, f"hidden_layer_sizes[{i}]") for i, s in enumerate(sizes))
    if any(s > BLAS_INT_MAX for s in sizes):
        raise ValueError(f"hidden_layer_sizes exceeds BLAS's 32-bit limit: {sizes}")
    check_parameter_memory((1, *sizes, 1), check_dtype(est.dtype), "hidden_layer_sizes")  # >= 1 input and output
    if est.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {est.activation!r}")
    if est.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {est.solver!r}")
    if est.learning_rate not in SCHEDULES:
        raise ValueError(f"learning_rate must be one of {SCHEDULES}; got {est.learning_rate!r}")
    if est.init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {est.init!r}")
    if est.backend not in ("compiled", "numpy"):
        raise ValueError(f"backend must be 'compiled' or 'numpy'; got {est.backend!r}")
    batch_size = est.batch_size
    if not (batch_size is None or (isinstance(batch_size, str) and batch_size == "auto")):
        batch_size = check_positive_int(batch_size, "batch_size")
    unit = dict(low=0.0, high=1.0, high_inclusive=False)
    p = {
        "sizes": sizes,
        "activation": ESTIMATOR_ACTIVATIONS[est.activation],
        "alpha": check_scalar(est.alpha, "alpha", low=0.0),
        "batch_size": batch_size,
        "learning_rate_init": check_scalar(est.learning_rate_init, "learning_rate_init",
                                           low=0.0, low_inclusive=False),
        "decay_rate": check_scalar(est.decay_rate, "decay_rate", low=0.0),
        "max_iter": check_positive_int(est.max_iter, "max_iter"),
        "tol": check_scalar(est.tol, "tol", low=0.0),
        "momentum": check_scalar(est.momentum, "momentum", **unit),
        "beta_1": check_scalar(est.beta_1, "beta_1", **unit),
        "beta_2": check_scalar(est.beta_2, "beta_2", **unit),
        "epsilon": check_scalar(est.epsilon, "epsilon", low=0.0, low_inclusive=False),
        "validation_fraction": check_scalar(est.validation_fraction, "validation_fraction",
                                            low=0.0, high=1.0, low_inclusive=False,
                                            high_inclusive=False),
        "n_iter_no_change": check_positive_int(est.n_iter_no_change, "n_iter_no_change"),
        "dropout": check_scalar(est.dropout, "dropout", **unit),
        "dtype": check_dtype(est.dtype),
        "verbose": int(est.verbose),
    }
    for flag in ("shuffle", "warm_start", "early_stopping"):
        value = getattr(est, flag)
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False; got {value!r}")
    return p


class DNNEstimatorBase(BaseEstimator):
    """A deep fully connected network as an estimator: what classifier and regressor share.

    Subclasses say what the targets are: :meth:`_first_targets` (what a
    first fit learns from y), :meth:`_initialize` (the network for them),
    :meth:`_check_continued_targets`, :meth:`_encode` (y as the network's
    output matrix) and :meth:`_fitted_targets` / :meth:`_restore_targets`
    (their part of a model file). Parameters: see :class:`dnnblocks.DNNClassifier`.
    """

    #: The category of the warning that training stopped at max_iter.
    _convergence_warning = _exc.ConvergenceWarning
    #: The exception of a method called before fit.
    _not_fitted_error = NotFittedError

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=1e-4,
                 batch_size="auto", learning_rate="constant", learning_rate_init=1e-3,
                 decay_rate=1.0, max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 init="auto", dropout=0.0, dtype=np.float64, backend="compiled"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.decay_rate = decay_rate
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.init = init
        self.dropout = dropout
        self.dtype = dtype
        self.backend = backend

    # ------------------------------------------------------------ checking
    def _check_params(self):
        return check_hyperparameters(self)

    def _validate_X(self, X, reset, dtype):
        check_blas_shape(X, "X")  # in O(1), before anything converts or scans a huge view
        X = check_array(X, dtype)
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    def _validate_X_y(self, X, y, reset, dtype):
        check_blas_shape(X, "X")  # in O(1), before anything converts or scans a huge view
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        X = self._validate_X(X, reset, dtype)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; "
                          "it is raveled.", UserWarning, stacklevel=4)
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
        if len(y) != X.shape[0]:
            raise ValueError(f"X and y have inconsistent numbers of samples: {X.shape[0]} and {len(y)}")
        self._check_targets(y)
        return X, y

    def _check_targets(self, y):
        """Raise if `y` cannot be this estimator's targets."""

    def _check_is_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise self._not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this estimator."
            )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_network")

    # ------------------------------------------------------------- fitting
    def _make_rng(self):
        rs = self.random_state
        if isinstance(rs, np.random.Generator):
            return rs
        if isinstance(rs, np.random.RandomState):
            return np.random.default_rng(rs.randint(0, 2**31 - 1, size=4))
        if rs is None or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)):
            return np.random.default_rng(rs)
        raise TypeError(f"random_state must be None, an int, a numpy Generator or RandomState; got {rs!r}")

    def _make_optimizer(self, p):
        if self.solver == "momentum":
            return get_optimizer("momentum", beta=p["momentum"])
        if self.solver == "adam":
            return get_optimizer("adam", beta1=p["beta_1"], beta2=p["beta_2"], epsilon=p["epsilon"])
        return get_optimizer("sgd")

    def _start_network(self, layer_dims, output, p):
        """A new network (and optimizer, generator and record) for a first fit."""
        init = "glorot" if self.init == "auto" else self.init
        self._rng = self._make_rng()
        self._network = Network(layer_dims, hidden_activation=p["activation"], dtype=p["dtype"],
                                backend=self.backend, init=init, seed=self._rng, output=output)
        self._optimizer = self._make_optimizer(p)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self.validation_scores_ = None
        self.best_validation_score_ = None

    def _starts_anew(self, incremental, p):
        """Whether this fit starts a new network (else it continues the fitted one, in `p`'s dtype)."""
        fitted = self.__sklearn_is_fitted__()
        first = not fitted if incremental else not (self.warm_start and fitted)
        if fitted and not first and np.dtype(self._network.dtype) != p["dtype"]:
            raise ValueError(f"dtype changed from {self._network.dtype} to {p['dtype']} "
                             f"since the model was fitted; fit it anew")
        return first

    def _record(self, history, early):
        """Add the epochs of `history` (a :class:`dnnblocks.training.History`) to the fitted attributes."""
        self.loss_curve_.extend(history.cost)
        self.n_iter_ += history.n_epochs
        # Samples seen, scikit-learn's t_: those of every completed step, the
        # steps of an epoch that an exception cut short included.
        self.t_ += history.samples_seen
        if early:
            self.validation_scores_ = list(history.validation_score)
            # Empty only when a distributed fit failed within its first epoch.
            self.best_validation_score_ = max(history.validation_score) if history.validation_score else None
            self.best_loss_ = None
        elif history.cost:
            best = self.best_loss_ if self.best_loss_ is not None else np.inf
            self.best_loss_ = min(best, min(history.cost))

    def _snapshot_state(self):
        """What :meth:`_restore_state` needs to undo a fit that failed before training."""
        state = dict(self.__dict__)
        for name in ("loss_curve_", "validation_scores_"):  # lists _record mutates in place
            if isinstance(state.get(name), list):
                state[name] = list(state[name])
        rng = state.get("_rng")
        # The validation split and shuffling draw from the estimator's
        # generator before a step can fail (train's own checks).
        rng_state = rng.bit_generator.state if isinstance(rng, np.random.Generator) else None
        return state, rng_state

    def _restore_state(self, snapshot):
        state, rng_state = snapshot
        self.__dict__.clear()
        self.__dict__.update(state)
        if rng_state is not None:
            self._rng.bit_generator.state = rng_state

    def _fit(self, X, y, incremental, classes=None, *, client=None, distributed=False,
             step_callback=None):
        """One fit/partial_fit call for every data source, transactional.

        In-memory data trains through :func:`dnnblocks.training.train`; dask
        data (or any data when `client` is given or `distributed` is true)
        through the Dask data source on the cluster, in the same loop. Without
        a cluster, dask data are computed into memory first.

        An exception before training starts (bad hyper-parameter or data,
        one class, a MemoryError building the network, bad data found on a
        worker, ...) leaves the estimator exactly as it was. An exception
        from the training loop itself (Ctrl-C, divergence, a lost cluster)
        keeps the weights of the last completed step, and the record
        (n_iter_, loss_curve_, t_, ...) of the completed epochs and steps
        that the loop attaches as ``exc.dnnblocks_history``; a failure of the
        cluster is raised as :class:`~dnnblocks.dask_support.DistributedFitError`.
        """
        if distributed or client is not None or _dask_data.is_dask_collection(X):
            _dask_data.require_dask()
            client = _dask_data.resolve_client(client)
            if client is None and _dask_data.is_dask_collection(X):
                X, y = _dask_data.compute_rows(X, y)
        snapshot = self._snapshot_state()
        early = self.early_stopping and not incremental
        try:
            if client is None:
                history, p = self._fit_in_memory(X, y, incremental, classes, early)
            else:
                with client.as_current():  # every dask call below uses this client
                    history, p = self._fit_distributed(X, y, incremental, classes, early, client,
                                                       step_callback)
        except BaseException as exc:
            partial = getattr(exc, "dnnblocks_history", None)
            if partial is None:
                self._restore_state(snapshot)
                raise
            self._record(partial, early)
            if client is None or not isinstance(exc, Exception) or isinstance(
                    exc, (_exc.TrainingDivergedError, ValueError, TypeError)):
                raise
            raise _dask_data.DistributedFitError(
                f"distributed training stopped after {partial.steps_completed} completed step(s): "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. The model keeps the parameters of the "
                f"last completed step (n_iter_={self.n_iter_}).", partial.steps_completed) from exc
        self._record(history, early)
        if not incremental and history.stop_reason == "max_epochs":
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({p['max_iter']}) reached and the "
                f"optimization hasn't converged yet.", self._convergence_warning, stacklevel=3)
        return self

    def _loop_options(self, p, incremental):
        """The options of the training loop that do not depend on the data source."""
        options = dict(learning_rate=p["learning_rate_init"], schedule=self.learning_rate,
                       decay_rate=p["decay_rate"], start_epoch=self.n_iter_, verbose=p["verbose"])
        if incremental:
            options.update(epochs=1)
        else:
            options.update(epochs=p["max_iter"], tol=p["tol"], n_iter_no_change=p["n_iter_no_change"])
        return options

    def _fit_in_memory(self, X, y, incremental, classes, early):
        p = self._check_params()
        first = self._starts_anew(incremental, p)
        X, y = self._validate_X_y(X, y, reset=first, dtype=p["dtype"])
        if first:
            self._initialize(self._first_targets(y, incremental, classes), X.shape[1], p)
        elif incremental:
            self._check_continued_targets(classes)
        Y = self._encode(y, p["dtype"])
        m = X.shape[0]
        options = self._loop_options(p, incremental)
        options.update(
            batch_size=min(200, m) if p["batch_size"] == "auto" else p["batch_size"],
            optimizer=self._optimizer, l2=p["alpha"], dropout=p["dropout"],
            shuffle=bool(self.shuffle), random_state=self._rng)
        if early:
            if m < 2:
                raise ValueError("early_stopping needs at least 2 samples")
            options.update(validation_fraction=p["validation_fraction"], early_stopping=True)
        # X (m, n) C-ordered is the F-ordered (n, m) X.T the network reads in place.
        return train(self._network, X.T, Y, **options), p

    def _fit_distributed(self, X, y, incremental, classes, early, client, step_callback):
        X, y, columns = _dask_data.row_blocks(X, y, client)
        p = self._check_params()
        first = self._starts_anew(incremental, p)
        m, n_features = X.shape
        if not first and n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        if first:
            if incremental:
                targets = first_partial_fit_classes(classes)
            else:
                targets = _dask_data.unique_labels(y, client)
            self._check_targets(targets)
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            if columns is not None and all(isinstance(c, str) for c in columns):
                self.feature_names_in_ = np.asarray(columns, dtype=object)
            self._initialize(targets, n_features, p)
        elif incremental:
            self._check_continued_targets(classes)
        batch_size = p["batch_size"]
        if batch_size == "auto":
            batch_size = min(200, m)
        elif batch_size is not None:
            batch_size = min(batch_size, m)
        # Validation, batches and dropout masks are seeded per fit, from the
        # estimator's generator, never by the worker that runs them.
        seed = int(self._rng.integers(2**63 - 1))
        source = _dask_data.DistributedData(
            client, X, y, self._network, classes=self._worker_targets(), seed=seed,
            validation_fraction=p["validation_fraction"] if early else None,
            optimizer=self._optimizer, l2=p["alpha"], keep_prob=1.0 - p["dropout"],
            shuffle=bool(self.shuffle), batch_size=batch_size)
        try:
            history = train_on_source(self._network, source, early_stopping=early,
                                      step_callback=step_callback, **self._loop_options(p, incremental))
        finally:
            self.dask_stats_ = source.stats()
            source.close()
        return history, p

    # ---------------------------------------------------------- prediction
    def _prediction_copy(self):
        """A light copy for Dask workers: no optimizer state, its own network (the model as it is now)."""
        model = copy.copy(self)
        for attr in ("_optimizer", "feature_names_in_", "dask_stats_"):
            model.__dict__.pop(attr, None)
        model._network = copy.deepcopy(self._network)
        return model

    def _blockwise(self, X, method):
        """`method` over the row blocks of dask X, as a lazy dask array."""
        _dask_data.require_dask()
        self._check_is_fitted()
        return _dask_data.blockwise(self, X, method, self._prediction_copy())

    # ---------------------------------------------------------- attributes
    @property
    def network_(self):
        """The fitted :class:`dnnblocks.Network`."""
        if not self.__sklearn_is_fitted__():
            raise AttributeError("network_ exists after fit")
        return self._network

    @property
    def coefs_(self):
        """Weights per layer, scikit-learn's layout (n_in, n_out): views of the network's W.T."""
        return [w.T for w in self.network_.W]

    @property
    def intercepts_(self):
        """Biases per layer, shape (n_out,): views of the network's b."""
        return [b.reshape(-1) for b in self.network_.b]

    @property
    def n_layers_(self):
        return len(self.network_.layer_dims)

    @property
    def n_outputs_(self):
        return self.network_.layer_dims[-1]

    # -------------------------------------------------------------- files
    def save(self, path, extra=None):
        """Save the fitted model to one ``.npz`` file (written atomically).

        Parameters
        ----------
        path : str or os.PathLike
            Written as given (no suffix added).
        extra : dict, optional
            str -> ndarray or JSON-serialisable value, stored alongside (for
            example standardisation statistics and feature names); read back
            with ``dnnblocks.load(path, with_extra=True)``.

        Returns
        -------
        path
        """
        # model_io (the file format) imports the estimators to load them.
        from .model_io import network_payload, write_model

        self._check_is_fitted()
        meta, arrays = network_payload(self._network, self._optimizer)
        params = {}
        for key, value in self.get_params(deep=False).items():
            if key == "dtype":
                value = np.dtype(value).name
            elif key == "hidden_layer_sizes" and not isinstance(value, numbers.Integral):
                value = [int(v) for v in value]
            elif key == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
                value = None  # a generator object: its current state is saved below instead
            elif isinstance(value, np.generic):
                value = value.item()
            params[key] = value
        fitted = self._fitted_targets()
        fitted.update({
            "n_features_in_": int(self.n_features_in_),
            "n_iter_": int(self.n_iter_),
            "t_": int(self.t_),
            "loss_curve_": [float(c) for c in self.loss_curve_],
            "best_loss_": None if self.best_loss_ is None else float(self.best_loss_),
            "validation_scores_": self.validation_scores_,
            "best_validation_score_": self.best_validation_score_,
            "rng_state": meta.pop("rng_state"),
        })
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(f) for f in self.feature_names_in_]
        meta["estimator"] = {"params": params, "fitted": fitted}
        return write_model(path, self._model_kind, meta, arrays, extra)

    @classmethod
    def _from_payload(cls, meta, arrays):
        """The estimator of a model file's metadata and arrays (see :func:`dnnblocks.load`)."""
        # model_io (the file format) imports the estimators to load them.
        from .model_io import _restore_rng, network_from_payload

        est_meta = meta["estimator"]
        params = dict(est_meta["params"])
        params["dtype"] = np.dtype(params["dtype"]).type
        if isinstance(params.get("hidden_layer_sizes"), list):
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        valid = set(cls._get_param_names())
        est = cls(**{k: v for k, v in params.items() if k in valid})
        fitted = est_meta["fitted"]
        net, optimizer = network_from_payload(meta, arrays)
        est._network = net
        est._optimizer = optimizer if optimizer is not None else est._make_optimizer(est._check_params())
        rng = _restore_rng(fitted.get("rng_state"))
        est._rng = rng if rng is not None else np.random.default_rng()
        net.rng = est._rng
        est._restore_targets(fitted)
        est.n_features_in_ = fitted["n_features_in_"]
        if "feature_names_in_" in fitted:
            est.feature_names_in_ = np.array(fitted["feature_names_in_"], dtype=object)
        est.n_iter_ = fitted["n_iter_"]
        est.t_ = fitted["t_"]
        est.loss_curve_ = list(fitted["loss_curve_"])
        est.best_loss_ = np.inf if fitted["best_loss_"] is None and not est.early_stopping else fitted["best_loss_"]
        est.validation_scores_ = fitted["validation_scores_"]
        est.best_validation_score_ = fitted["best_validation_score_"]
        if net.layer_dims[0] != est.n_features_in_ or net.layer_dims[-1] != est._n_network_outputs():
            raise ValueError("the network's shape does not match n_features_in_ and classes_")
        return est


class DNNClassifierBase(DNNEstimatorBase):
    """:class:`dnnblocks.DNNClassifier` without scikit-learn (what the command line builds).

    Binary problems use one sigmoid output unit, more classes a softmax
    output with the categorical cross-entropy. Same parameters, attributes
    and methods as :class:`dnnblocks.DNNClassifier`, with the built-in input
    validation; a model it saves loads as a ``DNNClassifier``.
    """

    _model_kind = "DNNClassifier"
    _estimator_type = "classifier"

    # ------------------------------------------------------------- targets
    def _check_targets(self, y):
        check_classification_targets(y)

    def _first_targets(self, y, incremental, classes):
        return first_partial_fit_classes(classes) if incremental else np.unique(y)

    def _initialize(self, classes, n_features, p):
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                f"got 1 class: {classes[0]!r}"
            )
        n_out = 1 if len(classes) == 2 else len(classes)
        self._start_network([n_features, *p["sizes"], n_out], "sigmoid" if n_out == 1 else "softmax", p)
        self.classes_ = classes

    def _check_continued_targets(self, classes):
        """A later partial_fit call: `classes`, when given, must be those of the first call."""
        if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={np.unique(np.asarray(classes)).tolist()} differs from the "
                             f"classes of the first partial_fit call {self.classes_.tolist()}")

    def _encode(self, y, dtype):
        """Labels -> (n_out, m) 0/1 matrix in the network's layout."""
        return encode_labels(y, self.classes_, dtype)

    def _worker_targets(self):
        """What the Dask workers encode their labels with: the classes."""
        return self.classes_

    def _n_network_outputs(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _fitted_targets(self):
        classes = self.classes_
        if classes.dtype.hasobject:
            values = [c.item() if isinstance(c, np.generic) else c for c in classes]
            class_dtype = "object"
        else:
            values = classes.tolist()
            class_dtype = classes.dtype.str
        return {"classes": {"dtype": class_dtype, "values": values}}

    def _restore_targets(self, fitted):
        spec = fitted["classes"]
        if spec["dtype"] == "object":
            classes = np.empty(len(spec["values"]), dtype=object)
            classes[:] = spec["values"]
        else:
            classes = np.array(spec["values"], dtype=np.dtype(spec["dtype"]))
        self.classes_ = classes

    # ------------------------------------------------------------- fitting
    def fit(self, X, y, *, client=None):
        """Fit the network to data (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or a dask array/DataFrame chunked by rows: trained data-parallel
            on the active ``distributed.Client`` (see :mod:`dnnblocks.dask_support`).
        y : array-like of shape (n_samples,)
            Class labels: numbers or strings, at least two distinct.
        client : distributed.Client, optional
            Train on this Dask cluster (default: the active client, for dask inputs).

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=False, client=client)

    def partial_fit(self, X, y, classes=None, *, client=None):
        """One epoch over (X, y), continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or a dask array/DataFrame chunked by rows (see :meth:`fit`).
        y : array-like of shape (n_samples,)
        classes : array-like, required on the first call
            Every class the model will ever see.
        client : distributed.Client, optional
            Train on this Dask cluster (default: the active client, for dask inputs).

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=True, classes=classes, client=client)

    # ---------------------------------------------------------- prediction
    def _logits(self, X):
        self._check_is_fitted()
        X = self._validate_X(X, reset=False, dtype=self._network.dtype)
        return self._network.decision_function(X.T)

    def decision_function(self, X):
        """The output logits.

        Returns
        -------
        ndarray of shape (n_samples,) for two classes (positive means
        ``classes_[1]``), else (n_samples, n_classes); a lazy dask array for dask X.
        """
        if _dask_data.is_dask_collection(X):
            return self._blockwise(X, "decision_function")
        Z = self._logits(X)
        return Z[0] if Z.shape[0] == 1 else Z.T

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``.

        For dask X, a lazy dask array computed block by block on the workers.
        """
        if _dask_data.is_dask_collection(X):
            return self._blockwise(X, "predict_proba")
        self._check_is_fitted()
        X = self._validate_X(X, reset=False, dtype=self._network.dtype)
        A = self._network.predict_proba(X.T)
        if A.shape[0] == 1:
            proba = np.empty((A.shape[1], 2), dtype=A.dtype)
            proba[:, 1] = A[0]
            np.subtract(1, A[0], out=proba[:, 0])
            return proba
        return A.T

    def predict_log_proba(self, X):
        """Log of the class probabilities, computed stably from the logits (lazy for dask X)."""
        if _dask_data.is_dask_collection(X):
            return self._blockwise(X, "predict_log_proba")
        Z = self._logits(X)
        if Z.shape[0] == 1:
            z = Z[0]
            return np.column_stack([-np.logaddexp(0, z), -np.logaddexp(0, -z)])
        zmax = Z.max(axis=0, keepdims=True)
        return (Z - (zmax + np.log(np.exp(Z - zmax).sum(axis=0, keepdims=True)))).T

    def predict(self, X):
        """Predicted class labels, shape (n_samples,), from ``classes_`` (lazy for dask X)."""
        if _dask_data.is_dask_collection(X):
            return self._blockwise(X, "predict")
        Z = self._logits(X)
        if Z.shape[0] == 1:
            return self.classes_[(Z[0] > 0).astype(np.intp)]
        return self.classes_[np.argmax(Z, axis=0)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y); for dask inputs computed on the cluster.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        score : float
        """
        if _dask_data.is_dask_collection(X):
            return _dask_data.score(self, X, y, sample_weight)
        return self._accuracy(X, y, sample_weight)

    def _accuracy(self, X, y, sample_weight):
        y_pred = self.predict(X)
        y = np.asarray(y)
        if sample_weight is None:
            return float(np.mean(y_pred == y))
        w = np.asarray(sample_weight, dtype=float)
        return float(np.sum(w * (y_pred == y)) / np.sum(w))

    @property
    def out_activation_(self):
        return "logistic" if self.network_.output == "sigmoid" else "softmax"


__all__ = ["DNNClassifierBase", "DNNEstimatorBase", "NotFittedError"]
