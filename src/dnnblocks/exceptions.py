"""Exceptions raised by dnnblocks beyond the built-in ValueError and TypeError."""


class TrainingDivergedError(FloatingPointError):
    """The cost became NaN or infinite during training.

    Raised before the step that would have used the non-finite cost updates
    anything, so the parameters are those of the last finite step. The usual
    cure is a smaller learning rate.
    """


class ModelFileError(ValueError):
    """A file given to :func:`dnnblocks.load` is not a readable dnnblocks model.

    Raised for a file that is not a dnnblocks model at all (another ``.npz``,
    a CSV, ...), one that is truncated or corrupted, and one written in a
    newer model-file format than this version of dnnblocks reads. The message
    says which, and names the file. A subclass of :class:`ValueError`.
    """


class ConvergenceWarning(UserWarning):
    """Training stopped at ``max_iter`` before the cost settled.

    When scikit-learn is installed, :class:`dnnblocks.DNNClassifier` issues a
    subclass of both this and ``sklearn.exceptions.ConvergenceWarning``, so
    filters on either catch it.
    """
