"""Optimizers: plain gradient descent, momentum and Adam.

An optimizer object keeps its state (velocity, moment estimates, step count)
per parameter of the network it trains, and applies one update per layer
through the backend's fused update kernels. Pass one to
:meth:`dnnblocks.Network.step` (or a name to :meth:`dnnblocks.Network.fit`);
the same object must keep training the same network for its state to mean
anything.

Conventions are the course's (and, for Adam, Kingma & Ba's):

- momentum: ``v = beta * v + (1 - beta) * dW``; ``W -= learning_rate * v``
  (the exponentially weighted form: with the same ``learning_rate`` it moves
  ``1/(1 - beta)`` times less per step than the ``v = mu v - lr dW`` form of
  scikit-learn's ``MLPClassifier``);
- Adam: bias-corrected first and second moments,
  ``W -= learning_rate * m_hat / (sqrt(v_hat) + epsilon)``.

L2 regularisation is applied inside the kernels to the weights only, never to
the biases.
"""

import inspect

import numpy as np

from ._validation import check_scalar

#: Names accepted wherever an optimizer may be given by name.
OPTIMIZERS = ("sgd", "momentum", "adam")


class Optimizer:
    """Base class: per-parameter state bound to one network's shapes.

    Subclasses define ``name``, ``_STATE`` (names of the per-parameter state
    arrays), ``hyperparameters()`` and ``update_layer``.
    """

    name = None
    _STATE = ()

    def __init__(self):
        self.t = 0
        self._state = None  # {state name: [array per W and b]} once bound
        self._shapes = None

    # -------------------------------------------------------------- binding
    def _bind(self, W, b):
        shapes = tuple((w.shape, bb.shape) for w, bb in zip(W, b))
        dtype = W[0].dtype
        if self._state is None:
            self._state = {
                key: [np.zeros_like(p) for p in (*W, *b)] for key in self._STATE
            }
            self._shapes = (shapes, dtype)
        elif self._shapes != (shapes, dtype):
            raise ValueError(
                f"this {type(self).__name__} optimizer holds state for a network with other "
                f"layer shapes or dtype; use a new optimizer object for each network"
            )

    def _slot(self, key, l, n_layers, bias):
        return self._state[key][l + n_layers if bias else l]

    def reset(self):
        """Forget the state (as if no step had been taken)."""
        self.t = 0
        self._state = None
        self._shapes = None

    def start_step(self, W, b):
        """Bind to the network's parameters if needed and count one step."""
        self._bind(W, b)
        self.t += 1

    def update_layer(self, kernels, l, W, dW, b, db, learning_rate, weight_decay):
        """Update layer l's parameters in place from their gradients."""
        raise NotImplementedError

    # --------------------------------------------------------- persistence
    def hyperparameters(self):
        """Scalars that define the optimizer, as a JSON-serialisable dict."""
        return {}

    def state_dict(self):
        """Everything needed to resume: ``(scalars, arrays)``.

        ``arrays`` maps ``"<state>/<index>"`` to the state arrays (weights
        first, then biases); it is empty before the first step.
        """
        scalars = {"name": self.name, "t": self.t, **self.hyperparameters()}
        arrays = {}
        if self._state is not None:
            for key, arrs in self._state.items():
                for i, a in enumerate(arrs):
                    arrays[f"{key}/{i}"] = a
        return scalars, arrays

    def load_state(self, t, arrays, W, b):
        """Restore a state saved by :meth:`state_dict` for parameters `W`, `b`."""
        self.reset()
        if not arrays:
            self.t = int(t)
            return
        self._bind(W, b)
        for key, arrs in self._state.items():
            for i, a in enumerate(arrs):
                src = arrays.get(f"{key}/{i}")
                if src is None or src.shape != a.shape:
                    raise ValueError(f"optimizer state {key}/{i} is missing or has the wrong shape")
                np.copyto(a, src, casting="same_kind")
        self.t = int(t)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class GradientDescent(Optimizer):
    """Plain gradient descent: ``W -= learning_rate * dW``.

    :meth:`dnnblocks.Network.step` fuses this update into the backward GEMM,
    so no gradient is ever stored.
    """

    name = "sgd"

    def update_layer(self, kernels, l, W, dW, b, db, learning_rate, weight_decay):
        if weight_decay:
            # dW += weight_decay * W, then the plain step (W is still the
            # pre-step weight when the L2 term is added).
            kernels.gradient_descent_update(dW, W, -weight_decay)
        kernels.gradient_descent_update(W, dW, learning_rate)
        kernels.gradient_descent_update(b, db, learning_rate)


class Momentum(Optimizer):
    """Gradient descent with momentum (the course's exponentially weighted form).

    Parameters
    ----------
    beta : float in [0, 1), default 0.9
        Weight of the past velocity; 0 is plain gradient descent.
    """

    name = "momentum"
    _STATE = ("velocity",)

    def __init__(self, beta=0.9):
        super().__init__()
        self.beta = check_scalar(beta, "beta", low=0.0, high=1.0, high_inclusive=False)

    def hyperparameters(self):
        return {"beta": self.beta}

    def update_layer(self, kernels, l, W, dW, b, db, learning_rate, weight_decay):
        n = len(self._state["velocity"]) // 2
        kernels.momentum_update(W, dW, self._slot("velocity", l, n, False),
                                learning_rate, self.beta, weight_decay)
        kernels.momentum_update(b, db, self._slot("velocity", l, n, True),
                                learning_rate, self.beta, 0.0)


class Adam(Optimizer):
    """Adam with bias correction.

    Parameters
    ----------
    beta1 : float in [0, 1), default 0.9
        Decay of the first-moment (mean) estimate.
    beta2 : float in [0, 1), default 0.999
        Decay of the second-moment (uncentred variance) estimate.
    epsilon : float > 0, default 1e-8
        Added to the denominator for numerical stability.
    """

    name = "adam"
    _STATE = ("m", "v")

    def __init__(self, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__()
        self.beta1 = check_scalar(beta1, "beta1", low=0.0, high=1.0, high_inclusive=False)
        self.beta2 = check_scalar(beta2, "beta2", low=0.0, high=1.0, high_inclusive=False)
        self.epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}

    def update_layer(self, kernels, l, W, dW, b, db, learning_rate, weight_decay):
        n = len(self._state["m"]) // 2
        for bias, p, g, wd in ((False, W, dW, weight_decay), (True, b, db, 0.0)):
            kernels.adam_update(p, g, self._slot("m", l, n, bias), self._slot("v", l, n, bias),
                                learning_rate, self.beta1, self.beta2, self.epsilon, self.t, wd)


_CLASSES = {"sgd": GradientDescent, "gd": GradientDescent, "momentum": Momentum, "adam": Adam}


def get_optimizer(optimizer, **hyperparameters):
    """Return an :class:`Optimizer` from a name or pass an instance through.

    Parameters
    ----------
    optimizer : {"sgd", "gd", "momentum", "adam"} or Optimizer
        ``"gd"`` is an alias of ``"sgd"`` (plain gradient descent; it is
        stochastic only when the batches are).
    **hyperparameters
        Passed to the class when `optimizer` is a name (``beta`` for
        momentum; ``beta1``, ``beta2``, ``epsilon`` for Adam).
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in _CLASSES:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} or an Optimizer; got {optimizer!r}")
    return _CLASSES[optimizer](**hyperparameters)


def optimizer_from_state(scalars):
    """Rebuild an optimizer (without arrays) from the scalars of :meth:`Optimizer.state_dict`.

    Raises ValueError or TypeError for scalars no optimizer could have saved
    (an unknown name or hyper-parameter, a step count that is not an integer
    in [0, 2**62]).
    """
    if not isinstance(scalars, dict):
        raise TypeError(f"optimizer scalars must be a dict; got {type(scalars).__name__}")
    scalars = dict(scalars)
    name = scalars.pop("name", None)
    if not isinstance(name, str) or name not in _CLASSES:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}; got {name!r}")
    t = scalars.pop("t", 0)
    # t is a count of steps: a float (Infinity), a bool or a negative value
    # would break the bias correction or overflow the kernels' integer.
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 2 ** 62:
        raise ValueError(f"optimizer step count t must be an integer in [0, 2**62]; got {t!r}")
    allowed = set(inspect.signature(_CLASSES[name]).parameters)
    unknown = set(scalars) - allowed
    if unknown:
        raise ValueError(f"unknown {name} hyper-parameters {sorted(unknown)}")
    opt = get_optimizer(name, **scalars)
    opt.t = t
    return opt
