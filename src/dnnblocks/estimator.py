"""`DNNClassifier`: a scikit-learn compatible classifier over :class:`dnnblocks.Network`.

Examples are rows, the scikit-learn way. A C-ordered (m, n) X is exactly the
F-ordered (n, m) ``X.T`` the network reads, so data reaches the compiled core
without a copy (only a dtype conversion copies, as in scikit-learn).

scikit-learn is optional. When it is installed, ``DNNClassifier`` derives
from ``sklearn.base.ClassifierMixin`` and ``BaseEstimator`` and uses
scikit-learn's own input validation, so it works in pipelines, grid searches,
``clone`` and passes ``sklearn.utils.estimator_checks``. Without it, the class
still imports and works (fit, partial_fit, predict, predict_proba,
decision_function, score, get_params/set_params, save/load) on NumPy arrays,
with a small built-in validation; pandas DataFrames are then converted with
``np.asarray`` and their column names are not recorded.

All the estimator's logic is in :class:`dnnblocks._estimator_base.DNNClassifierBase`
(no scikit-learn); this module adds scikit-learn's mixins and validation.
"""

from . import exceptions as _exc
from . import onnx_export
from ._dask_data import is_dask_collection
from ._estimator_base import ACTIVATIONS, INITS, SOLVERS, DNNClassifierBase
from ._validation import check_blas_shape

try:  # scikit-learn is optional
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning as _SkConvergenceWarning
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted

    try:
        from sklearn.utils.validation import validate_data as _sk_validate_data
    except ImportError:  # scikit-learn < 1.6
        def _sk_validate_data(estimator, *args, **kwargs):
            return estimator._validate_data(*args, **kwargs)

    HAVE_SKLEARN = True

    class ConvergenceWarning(_exc.ConvergenceWarning, _SkConvergenceWarning):
        """Both dnnblocks' and scikit-learn's ConvergenceWarning."""

    # scikit-learn's BaseEstimator before the base's stand-in: its
    # get_params, set_params and repr are the ones in force.
    _BASES = (ClassifierMixin, BaseEstimator, DNNClassifierBase)

except ImportError:
    from ._estimator_base import NotFittedError, check_classification_targets

    HAVE_SKLEARN = False
    ConvergenceWarning = _exc.ConvergenceWarning
    _BASES = (DNNClassifierBase,)


class DNNClassifier(*_BASES):
    """A deep fully connected classifier with a compiled core, scikit-learn style.

    Binary problems use one sigmoid output unit, more classes a softmax
    output with the categorical cross-entropy. Parameters follow
    :class:`sklearn.neural_network.MLPClassifier` where they mean the same.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default (100,)
        Units of each hidden layer; ``()`` is (multinomial) logistic regression.
    activation : {"relu", "tanh", "logistic"}, default "relu"
        Hidden-layer activation (``"sigmoid"`` is accepted for ``"logistic"``).
    solver : {"adam", "momentum", "sgd"}, default "adam"
        The optimizer. ``"momentum"`` is the course's exponentially weighted
        form ``v = momentum * v + (1 - momentum) * dW``, ``W -= lr * v``.
    alpha : float, default 1e-4
        L2 strength lambda: each batch of m adds ``(alpha / 2m) sum ||W||^2``
        to the cost (biases are not penalised).
    batch_size : int, "auto" or None, default "auto"
        Examples per mini-batch: ``"auto"`` is ``min(200, n_samples)``; None
        is full batch.
    learning_rate : {"constant", "inverse_time"}, default "constant"
        Schedule: ``"inverse_time"`` uses
        ``learning_rate_init / (1 + decay_rate * epoch)``.
    learning_rate_init : float, default 1e-3
    decay_rate : float, default 1.0
        For ``learning_rate="inverse_time"``.
    max_iter : int, default 200
        Epochs (passes over the data).
    shuffle : bool, default True
        Reshuffle the mini-batches every epoch.
    random_state : int, numpy Generator or RandomState, or None
        Seeds the initial weights, shuffling, the validation split and dropout.
    tol : float, default 1e-4
        Stop when the training loss (or, with early stopping, the validation
        accuracy) has not improved by `tol` for more than `n_iter_no_change`
        epochs.
    verbose : bool or int, default False
        Progress on stderr: a bar with the cost on a terminal, plain lines otherwise.
    warm_start : bool, default False
        ``fit`` continues from the current weights (and optimizer state).
    momentum : float, default 0.9
        For ``solver="momentum"``.
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        For ``solver="adam"``.
    early_stopping : bool, default False
        Hold out `validation_fraction` of the training data (stratified),
        stop when its accuracy stops improving, and keep the best epoch's weights.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    init : {"auto", "glorot", "he", "xavier", "random", "zeros"}, default "auto"
        Weight initialisation (see :func:`dnnblocks.initializers.initialize`);
        ``"auto"`` is ``"glorot"``, uniform weights and biases, which suits
        the short runs typical of small tables.
    dropout : float in [0, 1), default 0.0
        Inverted-dropout probability for hidden units during training.
    dtype : numpy.float64 or numpy.float32, default numpy.float64
        Precision of the weights and of the computation (X is converted).
    backend : {"compiled", "numpy"}, default "compiled"

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names (scikit-learn installed).
    coefs_ : list of ndarray
        ``coefs_[i]`` has shape (n_in, n_out): a transposed view of the
        network's ``W[i]`` (writing to it changes the model).
    intercepts_ : list of ndarray
        ``intercepts_[i]`` has shape (n_out,), a view of ``b[i]``.
    loss_curve_ : list of float
        Training loss of each epoch.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation accuracy per epoch with early stopping.
    best_validation_score_ : float or None
    n_layers_ : int
        Layers including input and output.
    n_outputs_ : int
        Output units: 1 for binary problems, n_classes otherwise.
    out_activation_ : {"logistic", "softmax"}
    network_ : dnnblocks.Network
        The underlying network (examples as columns).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> import dnnblocks
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(),
    ...                     dnnblocks.DNNClassifier(hidden_layer_sizes=(16,), random_state=0))
    >>> bool(clf.fit(X, y).score(X, y) > 0.9)
    True
    """

    _convergence_warning = ConvergenceWarning
    _not_fitted_error = NotFittedError

    def _validate_X(self, X, reset, dtype):
        if not HAVE_SKLEARN:
            return super()._validate_X(X, reset, dtype)
        check_blas_shape(X, "X")  # in O(1), before anything converts or scans a huge view
        return _sk_validate_data(self, X, reset=reset, dtype=dtype, accept_sparse=False)

    def _validate_X_y(self, X, y, reset, dtype):
        if not HAVE_SKLEARN:
            return super()._validate_X_y(X, y, reset, dtype)
        check_blas_shape(X, "X")
        X, y = _sk_validate_data(self, X, y, reset=reset, dtype=dtype, accept_sparse=False)
        check_classification_targets(y)
        return X, y

    def _check_targets(self, y):
        check_classification_targets(y)

    def _check_is_fitted(self):
        if HAVE_SKLEARN:
            check_is_fitted(self)
        else:
            super()._check_is_fitted()

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
        if HAVE_SKLEARN and not is_dask_collection(X):
            return ClassifierMixin.score(self, X, y, sample_weight=sample_weight)
        return DNNClassifierBase.score(self, X, y, sample_weight)

    def to_onnx(self, path=None, *, dtype=None):
        """Write the fitted classifier as an ONNX graph; see :func:`dnnblocks.onnx_export.to_onnx`.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Where to write the ``.onnx`` file; None writes nothing.
        dtype : {None, numpy.float32, numpy.float64}, default None
            The graph's floating-point type; None keeps the model's.

        Returns
        -------
        onnx.ModelProto
            Input ``X`` (N, n_features); outputs ``probabilities`` (N,
            n_classes), equal to :meth:`predict_proba` to about 1e-6 in
            float32 and 1e-12 in float64 under onnxruntime, and ``label``.
        """
        return onnx_export.to_onnx(self, path, dtype=dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_label = False
        return tags


if not HAVE_SKLEARN:  # the fallback base has no tags
    del DNNClassifier.__sklearn_tags__

__all__ = ["ACTIVATIONS", "ConvergenceWarning", "DNNClassifier", "HAVE_SKLEARN", "INITS",
           "NotFittedError", "SOLVERS"]
