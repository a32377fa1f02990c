"""What keeps a training run whole when it is interrupted or diverges.

:func:`dnnblocks.training.train` wraps its steps in a :class:`TrainingGuard`:

* **Ctrl-C** (SIGINT) is held until the step in progress has finished, so an
  interrupted run keeps the weights of its last *completed* step. A step of
  momentum, Adam or dropout updates the layers one after the other in Python,
  where Python's default handler would raise ``KeyboardInterrupt`` between
  two layers and leave a half-updated model. A second Ctrl-C interrupts at
  once (a step that never ends must still be stoppable). An epoch that the
  compiled epoch runner (``train``'s default engine) runs in one call is one
  step here: the Ctrl-C is held until the epoch in progress completes. Only in the main
  thread, and only while Python's default handler is installed: a handler of
  the application's own is left alone.
* **Divergence**: a step whose cost is NaN or infinite updates nothing and
  raises :class:`~dnnblocks.exceptions.TrainingDivergedError`. The weights
  are then those of the previous step, which are finite unless that step's
  update itself overflowed; in that case the guard puts back the weights of
  the last epoch that ended with finite weights (kept as one copy of the
  parameters, refreshed once per epoch).
"""

import signal
import threading

import numpy as np

from ._validation import _all_finite as _finite
from .exceptions import TrainingDivergedError


def _all_finite(arrays):
    return all(_finite(a) for a in arrays)


class TrainingGuard:
    """Interrupt deferral and divergence recovery for one call of ``train``.

    Parameters
    ----------
    net : dnnblocks.Network
        The network being trained; its parameters are copied once.
    """

    def __init__(self, net):
        self.net = net
        self._checkpoint = net.snapshot()
        #: Epochs (of this run) after which the checkpoint was taken; 0 is the start.
        self.checkpoint_epoch = 0
        self._checkpoint_finite = _all_finite(net.W + net.b)
        self._pending = False
        self._previous_handler = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        if self._pending:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._pending = True

    def step(self, train_step, *args):
        """Return ``train_step(*args)``, one training step, with Ctrl-C held until it completes.

        A divergence is re-raised after the weights are made finite again
        (see the module docstring). A Ctrl-C that arrived during the step is
        raised by :meth:`deliver_interrupt`, once the caller has recorded the
        step.
        """
        try:
            return train_step(*args)
        except TrainingDivergedError as exc:
            raise self._diverged(exc) from None

    def deliver_interrupt(self):
        """Raise the ``KeyboardInterrupt`` of a Ctrl-C held during the last step, if any."""
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def epoch_done(self, n_epochs):
        """Remember the weights after epoch `n_epochs` if they are all finite."""
        params = self.net.W + self.net.b
        if _all_finite(params):
            for dst, src in zip(self._checkpoint[0] + self._checkpoint[1], params):
                np.copyto(dst, src)
            self.checkpoint_epoch = n_epochs
            self._checkpoint_finite = True

    def _diverged(self, exc):
        if _all_finite(self.net.W + self.net.b):
            return exc  # nothing was updated and the weights are finite: as they are
        if not self._checkpoint_finite:
            return TrainingDivergedError(
                f"{exc} The parameters were not finite when training started (NaN or infinity in W or b)."
            )
        self.net.restore(self._checkpoint)
        when = ("the initial weights" if self.checkpoint_epoch == 0
                else f"the weights after epoch {self.checkpoint_epoch} of this run")
        return TrainingDivergedError(
            f"{exc} The update before had already made some weights NaN or infinite, so {when} "
            f"(the last finite ones) were restored."
        )

    def close(self):
        """Put the SIGINT handler back; raise a Ctrl-C that arrived after the last step."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt
