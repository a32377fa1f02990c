"""Exceptions raised by dnnblocks beyond the built-in ValueError and TypeError."""


class TrainingDivergedError(FloatingPointError):
    """The cost became NaN or infinite during training.

    Raised before the step that would have used the non-finite cost updates
    anything, so the parameters are those of the last finite step. The usual
    cure is a smaller learning rate.
    """
