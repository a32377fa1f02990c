"""The Gram-matrix route: full-batch training of wide, few-example problems.

When a network is trained on a fixed input X of n0 features and m examples,
full batch, with an update that is linear in the gradient (gradient descent,
momentum, L2 weight decay), its first layer's weights stay of the form
``W1 = s W1(0) + C X^T`` (C has shape (n1, m)). Then ``W1 X = s W1(0) X + C G``
with the Gram matrix ``G = X^T X`` (m x m) and ``W1(0) X`` computed once, and
each step's first layer costs ``2 n1 m^2`` multiply-adds instead of the
``4 n1 n0 m`` of its two products with X. For the course's cat model (12288
inputs, 209 images) that is 118 times less arithmetic for the layer that was
nearly all of the step. W1 is formed only when it is read.

The mathematics is the plain route's: the cost curve and the weights agree
with it to rounding (about 1e-12 relative in float64 after hundreds of
steps; see ``tests/test_wide.py``). Only the order of the floating-point
operations differs.

This module is the engine's entry point to the route (kernels in
``csrc/_gram.pyx``):

- :func:`train_full_batch` trains raw arrays in place, any number of
  iterations in one compiled call;
- :class:`GramRoute` is the same as an object that can be run again (one
  call per epoch, say) and writes W1 back when asked;
- :func:`should_use_gram_route` is the cost model that says when it pays, and
  :func:`resolve_route` the contract of a ``route=`` option
  (``"auto"``, ``"gram"``, ``"plain"``).
"""

import numpy as np

from . import _gram, backend
from ._validation import (
    FLOAT_DTYPES,
    HIDDEN_ACTIVATIONS,
    _all_finite,
    as_binary_labels,
    as_float_matrix,
    check_learning_rate,
    check_parameters,
    check_positive_int,
    check_scalar,
)
from .exceptions import TrainingDivergedError
from .optimizers import GradientDescent, Momentum, Optimizer

try:
    from . import _gram_avx2
except ImportError:  # pragma: no cover - a non-x86 build has no AVX2 modules
    _gram_avx2 = None

# The same build of the elementwise passes as the rest of the compiled backend.
_KERNELS = _gram_avx2 if backend.SIMD_LEVEL == "avx2" and _gram_avx2 is not None else _gram

#: Values of a ``route=`` option.
ROUTES = ("auto", "gram", "plain")

#: Optimizer names whose update is linear in the gradient (the route's condition).
LINEAR_OPTIMIZERS = ("sgd", "gd", "momentum")

#: The route is chosen when its first layer's arithmetic over the whole run is
#: at most this fraction of the plain route's: beside the first layer both do
#: the same work, and the route adds passes over (n1, m) blocks, so a smaller
#: saving would drown in the other layers. Per step the fraction is m / (2 n0):
#: a long run takes the route when m <= n0 / 2.
GRAM_PAYOFF = 0.25

__all__ = [
    "GramRoute",
    "LINEAR_OPTIMIZERS",
    "ROUTES",
    "gram_route_obstacles",
    "resolve_route",
    "should_use_gram_route",
    "train_full_batch",
]


# ---------------------------------------------------------------- cost model
def _optimizer_name(optimizer):
    """The optimizer's name (None is plain gradient descent), for the route's checks."""
    if optimizer is None:
        return "sgd"
    if isinstance(optimizer, Optimizer):
        return optimizer.name
    if isinstance(optimizer, str):
        return optimizer
    raise TypeError(f"optimizer must be None, a name or an Optimizer; got {type(optimizer).__name__}")


def gram_route_arithmetic(n0, m, n1, iterations=None):
    """Multiply-adds of the first layer by each route: ``(plain, gram)``.

    Per step the plain route forms ``W1 X`` and ``dZ1 X^T`` (``2 n1 n0 m``
    multiply-adds together, ``4 n1 n0 m`` flops); the Gram route forms ``C G``
    (``n1 m^2``). Once per run the Gram route forms ``G = X^T X``
    (``n0 m^2``), ``P0 = W1(0) X`` and, at the end, ``W1 = s W1(0) + C X^T``
    (``n1 n0 m`` each). With ``iterations=None`` only the per-step counts are
    returned (a long run, the setup amortised).
    """
    plain_step = 2.0 * n1 * n0 * m
    gram_step = float(n1) * m * m
    if iterations is None:
        return plain_step, gram_step
    setup = float(n0) * m * m + 2.0 * n1 * n0 * m
    return plain_step * iterations, setup + gram_step * iterations


def should_use_gram_route(n0, m, n1, optimizer="sgd", dropout_on_input=False, batch=None, *,
                          iterations=None):
    """Whether the Gram route pays for a fit: the automatic choice of ``route="auto"``.

    Parameters
    ----------
    n0, m, n1 : int >= 1
        Input features, training examples, units of the first layer.
    optimizer : None, str or Optimizer, default "sgd"
        The route needs an update linear in the gradient: plain gradient
        descent (None, "sgd", "gd") or "momentum" (either with L2). Adam
        (and any other) makes it not apply.
    dropout_on_input : bool, default False
        Whether the inputs are dropped out (then X is not fixed).
    batch : int or None, default None
        Examples per step; None (or >= m) is full batch, which the route needs.
    iterations : int or None, default None
        Steps of the run, when known: G costs ``n0 m^2`` multiply-adds once,
        which a very short run does not earn back. None: a long run.

    Returns
    -------
    bool
        True when the route applies and its first layer's arithmetic is at
        most :data:`GRAM_PAYOFF` of the plain route's (with
        ``iterations=None``: when m <= n0 / 2). The Gram matrix then takes at
        most half the memory of X itself.

    Examples
    --------
    >>> from dnnblocks.wide import should_use_gram_route
    >>> should_use_gram_route(12288, 209, 20)          # the course's cat model
    True
    >>> should_use_gram_route(784, 60000, 256)         # many more examples than features
    False
    >>> should_use_gram_route(12288, 209, 20, optimizer="adam")
    False
    """
    n0 = check_positive_int(n0, "n0")
    m = check_positive_int(m, "m")
    n1 = check_positive_int(n1, "n1")
    if iterations is not None:
        iterations = check_positive_int(iterations, "iterations", minimum=0)
    if _optimizer_name(optimizer) not in LINEAR_OPTIMIZERS or dropout_on_input:
        return False
    if batch is not None and check_positive_int(batch, "batch") < m:
        return False
    if iterations == 0:
        return False
    plain, gram = gram_route_arithmetic(n0, m, n1, iterations)
    return gram <= GRAM_PAYOFF * plain


def gram_route_obstacles(*, optimizer="sgd", dropout=0.0, batch=None, m=None, output="sigmoid",
                         backend_name="compiled"):
    """What keeps a fit off the Gram route: a list of reasons, empty when it can run.

    Parameters
    ----------
    optimizer : None, str or Optimizer
    dropout : float
        Dropout rate of the hidden layers; the route's loop has no dropout.
    batch, m : int or None
        Batch size and number of training examples; the route is full batch.
    output : str
        The output layer; the route's loop has the sigmoid output.
    backend_name : str
        The route is compiled only (the NumPy backend keeps the plain route).
    """
    reasons = []
    if backend_name != "compiled":
        reasons.append(f"it runs on the compiled backend only (got backend {backend_name!r})")
    if output != "sigmoid":
        reasons.append(f"it trains a sigmoid output layer only (got output {output!r})")
    name = _optimizer_name(optimizer)
    if name not in LINEAR_OPTIMIZERS:
        reasons.append(f"it needs an update linear in the gradient, {LINEAR_OPTIMIZERS} "
                       f"(got optimizer {name!r})")
    if dropout:
        reasons.append(f"it has no dropout (got dropout={dropout})")
    if batch is not None and (m is None or batch < m):
        reasons.append(f"it trains full batch only (got batch_size={batch})")
    return reasons


def resolve_route(route, *, n0, m, n1, optimizer="sgd", dropout=0.0, batch=None, output="sigmoid",
                  backend_name="compiled", iterations=None):
    """The route a fit takes under a ``route=`` option: ``"gram"`` or ``"plain"``.

    Parameters
    ----------
    route : {"auto", "gram", "plain"}
        ``"auto"``: the Gram route when it can run (see
        :func:`gram_route_obstacles`) and pays (:func:`should_use_gram_route`);
        ``"gram"``: the Gram route, or a ValueError saying why it cannot run;
        ``"plain"``: the plain route.
    n0, m, n1, optimizer, dropout, batch, output, backend_name, iterations
        The fit, as in :func:`should_use_gram_route` and
        :func:`gram_route_obstacles`.

    Returns
    -------
    {"gram", "plain"}
    """
    if not isinstance(route, str) or route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}; got {route!r}")
    if route == "plain":
        return "plain"
    reasons = gram_route_obstacles(optimizer=optimizer, dropout=dropout, batch=batch, m=m,
                                   output=output, backend_name=backend_name)
    if route == "gram":
        if reasons:
            raise ValueError("route='gram' cannot train this fit: " + "; ".join(reasons))
        return "gram"
    if reasons:
        return "plain"
    return "gram" if should_use_gram_route(n0, m, n1, optimizer, False, batch,
                                           iterations=iterations) else "plain"


# -------------------------------------------------------------------- route
def _momentum_beta(momentum):
    """None (plain gradient descent) or momentum's beta as a float in [0, 1)."""
    if momentum is None:
        return None
    if isinstance(momentum, Momentum):
        return momentum.beta
    if isinstance(momentum, GradientDescent):
        return None
    if isinstance(momentum, Optimizer):
        raise ValueError(f"momentum must be None, a beta in [0, 1) or a Momentum optimizer; got "
                         f"{type(momentum).__name__}: the Gram route needs an update linear in the "
                         f"gradient")
    return check_scalar(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)


def _check_activations(activations, L):
    if isinstance(activations, str) or not hasattr(activations, "__len__") or len(activations) != L:
        raise ValueError(f"activations must be a sequence of {L} names, one per layer; got "
                         f"{activations!r}")
    activations = tuple(activations)
    for l, a in enumerate(activations[:-1]):
        if not isinstance(a, str) or a not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activations[{l}] must be one of {HIDDEN_ACTIVATIONS}; got {a!r}")
    if activations[-1] != "sigmoid":
        raise ValueError(f"activations[{L - 1}] (the output layer) must be 'sigmoid' on the Gram "
                         f"route; got {activations[-1]!r}")
    return activations


class GramRoute:
    """Full-batch training of one network on one fixed input, by the Gram route.

    Validates everything once, forms ``P0 = W[0] X`` and ``G = X^T X``, and
    then trains with :meth:`run`. ``W[1:]`` and every ``b`` are the caller's
    arrays, updated in place by each step; ``W[0]`` is written only by
    :meth:`write_parameters` (and at the end of :meth:`run` unless told
    otherwise). Between runs the route owns the parameters: changing them, X
    or Y in place makes its state meaningless.

    Parameters
    ----------
    W, b : list of ndarray
        The network's parameters (``W[l]`` of shape (n[l+1], n[l]), ``b[l]`` of
        shape (n[l+1], 1)), C-contiguous, writeable, finite, all float32 or
        all float64.
    activations : sequence of str
        One per layer: hidden layers "relu", "tanh" or "sigmoid", the output
        "sigmoid" (binary cross-entropy per output unit).
    X : ndarray of shape (n[0], m)
        The whole training set, examples as columns, C- or F-ordered (an
        F-ordered X, e.g. ``data.T``, is read in place), of the parameters'
        dtype, finite.
    Y : array-like of shape (n[L], m)
        Labels 0 and 1.
    l2 : float >= 0, default 0
        L2 strength lambda: the cost gains ``(lambda / 2m) sum ||W||^2`` and
        the weights decay by ``lambda / m`` (as :meth:`dnnblocks.Network.step`).
    momentum : None, float in [0, 1) or Momentum, default None
        None: plain gradient descent. A beta (or a
        :class:`~dnnblocks.optimizers.Momentum`): the course's momentum
        ``v = beta v + (1 - beta) dW; W -= lr v``, from zero velocity.
    blas_threads : None, "auto" or int
        BLAS threads for forming G and P0, as in :meth:`run`.
    """

    def __init__(self, W, b, activations, X, Y, *, l2=0.0, momentum=None, blas_threads=None):
        if not isinstance(W, list) or not W:
            raise ValueError(f"W must be a non-empty list of arrays, one per layer; got "
                             f"{type(W).__name__}")
        L = len(W)
        W0 = W[0]
        if not isinstance(W0, np.ndarray) or W0.dtype not in FLOAT_DTYPES:
            raise TypeError("W[0] must be a float32 or float64 numpy.ndarray; got "
                            + (str(W0.dtype) if isinstance(W0, np.ndarray) else type(W0).__name__))
        dtype = W0.dtype
        X = as_float_matrix(X, "X", dtype)
        dims = [X.shape[0]]
        for l, w in enumerate(W):
            if not isinstance(w, np.ndarray) or w.ndim != 2:
                raise ValueError(f"W[{l}] must be a 2-D numpy.ndarray; got "
                                 f"{getattr(w, 'shape', type(w).__name__)}")
            dims.append(w.shape[0])
        check_parameters(W, b, dims, dtype, writeable=True)
        for name, arrays in (("W", W), ("b", b)):
            for l, a in enumerate(arrays):
                if not _all_finite(a):
                    raise ValueError(f"{name}[{l}] contains NaN or infinity; all values must be finite")
        activations = _check_activations(activations, L)
        Y = as_binary_labels(Y, "Y", dtype, (dims[-1], X.shape[1]))
        self.l2 = check_scalar(l2, "l2", low=0.0)
        self.beta = _momentum_beta(momentum)
        self.layer_dims = tuple(int(d) for d in dims)
        self.dtype = dtype
        self.W = W
        self.b = b
        self.iterations_done = 0
        self._m = X.shape[1]
        self._stale_W0 = False
        # G = X^T X is a product like a layer of m units over X, at batch m.
        threads = backend.blas_threads_policy((dims[0], X.shape[1]), X.shape[1], blas_threads)
        with backend.limit_blas_threads(threads):
            self._kernel = _KERNELS.GramTraining(
                W, b, activations, X, Y, self.l2, self.beta is not None,
                0.0 if self.beta is None else self.beta)

    @property
    def nbytes(self):
        """Bytes the route holds beside the parameters (G, P0, C, buffers, a copy of W1(0))."""
        return self._kernel.nbytes

    def run(self, iterations, learning_rate, *, write_back=True, blas_threads=None):
        """`iterations` full-batch steps at `learning_rate`.

        Parameters
        ----------
        iterations : int >= 0
        learning_rate : float > 0
        write_back : bool, default True
            Form W1 into ``W[0]`` at the end. False leaves ``W[0]`` stale (it
            costs a product with X, as much as a plain forward pass) until
            :meth:`write_parameters`.
        blas_threads : None, "auto" or int
            As in :func:`dnnblocks.training.train`: "auto" (the default,
            through the environment) uses one BLAS thread unless the route's
            products (``n1 x m x m``) are large.

        Returns
        -------
        costs : ndarray of float64, shape (iterations,)
            The cost before each step (cross-entropy plus the L2 term).

        Raises
        ------
        TrainingDivergedError
            If a cost is not finite. That step updated nothing; the
            parameters (W1 written back) are those after the last finite
            step, whose costs are in the exception's ``costs`` attribute.
        """
        iterations = check_positive_int(iterations, "iterations", minimum=0)
        if iterations > 2**31 - 1:
            raise ValueError(f"iterations must be below 2**31; got {iterations}")
        learning_rate = check_learning_rate(learning_rate, dtype=self.dtype)
        costs = np.empty(iterations, dtype=np.float64)
        m = self._m
        # The route's products are those of a network whose input has m features.
        route_dims = (m,) + self.layer_dims[1:]
        threads = backend.blas_threads_policy(route_dims, m, blas_threads)
        with backend.limit_blas_threads(threads):
            done = self._kernel.run(iterations, learning_rate, costs)
        self.iterations_done += done
        if done < iterations:
            self._stale_W0 = True
            self.write_parameters()
            error = TrainingDivergedError(
                f"the cost became {costs[done]} at iteration {done}; the parameters are those "
                f"after the last finite step. Try a smaller learning_rate (got {learning_rate}).")
            error.costs = costs[:done].copy()
            raise error
        if done:
            self._stale_W0 = True
        if write_back:
            self.write_parameters()
        return costs

    def write_parameters(self):
        """Form W1 = s W1(0) + C X^T into ``W[0]`` (a no-op when it is up to date)."""
        if self._stale_W0:
            self._kernel.first_layer(self.W[0])
            self._stale_W0 = False

    def velocities(self):
        """The momentum velocities, as ``(vW, vb)`` lists of arrays shaped like W and b.

        What :class:`~dnnblocks.optimizers.Momentum` would hold after the same
        steps (W1's velocity is formed here, from the route's coordinates):
        ``optimizer.load_state(t, {f"velocity/{i}": v ...}, W, b)`` with the
        weights' velocities first and the biases' after.
        """
        if self.beta is None:
            raise ValueError("this route trains by plain gradient descent: there is no velocity")
        vW, vb = self._kernel.velocities()
        vW[0] = self._kernel.first_layer_velocity(np.empty(self.W[0].shape, dtype=self.dtype))
        return vW, vb


def train_full_batch(W, b, activations, X, Y, learning_rate, iterations, *, l2=0.0, momentum=None,
                     blas_threads=None):
    """Train an L-layer network by the Gram route, in place: the route's one-call form.

    The arguments are those of :class:`GramRoute` and :meth:`GramRoute.run`.
    ``W`` and ``b`` end as the plain route's ``iterations`` steps would leave
    them (to rounding); the cost before every step is returned.

    Returns
    -------
    costs : ndarray of float64, shape (iterations,)

    Examples
    --------
    >>> import numpy as np
    >>> from dnnblocks.wide import train_full_batch
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((2000, 50))           # 2000 features, 50 examples
    >>> Y = (X[0] > 0).astype(float).reshape(1, -1)
    >>> W = [rng.standard_normal((16, 2000)) / 45, rng.standard_normal((1, 16)) / 4]
    >>> b = [np.zeros((16, 1)), np.zeros((1, 1))]
    >>> costs = train_full_batch(W, b, ["relu", "sigmoid"], X, Y, 0.05, 300)
    >>> bool(costs[-1] < costs[0] / 2)
    True
    """
    route = GramRoute(W, b, activations, X, Y, l2=l2, momentum=momentum, blas_threads=blas_threads)
    return route.run(iterations, learning_rate, blas_threads=blas_threads)
