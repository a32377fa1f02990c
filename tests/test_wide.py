"""The Gram-matrix route (:mod:`dnnblocks.wide`) against the plain route.

The route trains the same model as :meth:`dnnblocks.Network.step` with
another order of the floating-point operations, so cost curves and final
weights are compared with the plain route's (compiled backend, and the NumPy
backend, the reference) at tolerances set from the measured drift:

- float64, 300 steps of wide random problems (gradient descent and momentum,
  with and without L2, C- and F-ordered X): the cost curves agree to
  6e-16 relative and the weights to 3e-15 (measured); tested at 1e-12;
- float32, the same: costs to 8e-7 relative, weights to 7e-5 (measured);
  tested at 1e-5 and 1e-3;
- the cat model, 2500 iterations of the course's recipe: the published cost
  curve to 1e-9 relative at every hundredth iteration and the published
  accuracies.
"""

import numpy as np
import pytest

import dnnblocks
from dnnblocks import course, wide
from dnnblocks.exceptions import TrainingDivergedError
from dnnblocks.optimizers import Adam, Momentum

from test_course import PUBLISHED_CURVE, PUBLISHED_FINAL, _one_blas_thread

# Tolerances (relative to the largest magnitude of each compared array), from
# the measured drift stated in the module docstring.
TOL = {np.float64: {"cost": 1e-12, "weights": 1e-12}, np.float32: {"cost": 1e-5, "weights": 1e-3}}


def wide_problem(dims, m, dtype, seed=0, order="C", n_out=None):
    rng = np.random.default_rng(seed)
    n0 = dims[0]
    X = rng.standard_normal((n0, m)).astype(dtype)
    if order == "F":
        X = np.asfortranarray(X)
    # Labels from a few features, so that the network has something to learn.
    score = X[:5].sum(axis=0)
    Y = np.vstack([(score > 0), (X[5] > 0)][:dims[-1]]).astype(dtype)
    W = [(rng.standard_normal((n, k)) / np.sqrt(k)).astype(dtype)
         for k, n in zip(dims[:-1], dims[1:])]
    b = [(0.1 * rng.standard_normal((n, 1))).astype(dtype) for n in dims[1:]]
    return X, Y, W, b


def copies(arrays):
    return [a.copy() for a in arrays]


def plain_run(dims, activation, W, b, X, Y, lr, iterations, l2=0.0, beta=None, backend="compiled"):
    """The plain route: Network.step, the fused step for gradient descent."""
    net = dnnblocks.Network(dims, hidden_activation=activation, dtype=X.dtype, backend=backend)
    for dst, src in zip(net.W + net.b, W + b):
        dst[...] = src
    opt = None if beta is None else Momentum(beta)
    with _one_blas_thread():
        costs = [net.step(X, Y, lr, optimizer=opt, l2=l2) for _ in range(iterations)]
    return np.array(costs), net, opt


def assert_close(actual, expected, rtol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.max(np.abs(expected))
    drift = np.max(np.abs(actual - expected)) / scale
    assert drift <= rtol, f"{what}: relative drift {drift:.3g} > {rtol:g}"
    return drift


CASES = [
    # dims, hidden activation, l2, momentum beta
    ([1500, 16, 8, 1], "relu", 0.0, None),
    ([1500, 16, 8, 1], "relu", 0.7, None),
    ([1500, 16, 8, 1], "tanh", 0.0, 0.9),
    ([1500, 16, 8, 1], "sigmoid", 0.5, 0.8),
    ([1200, 12, 2], "relu", 0.3, None),       # two independent sigmoid outputs
    ([1200, 1], "relu", 0.2, 0.9),            # logistic regression: the first layer is the output
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dims, activation, l2, beta", CASES)
def test_gram_route_equals_plain_route(dims, activation, l2, beta, order, dtype):
    m, lr, iterations = 80, 0.05, 300
    X, Y, W, b = wide_problem(dims, m, dtype, order=order)
    acts = [activation] * (len(dims) - 2) + ["sigmoid"]
    expected, net, opt = plain_run(dims, activation, W, b, X, Y, lr, iterations, l2, beta)
    gW, gb = copies(W), copies(b)
    costs = wide.train_full_batch(gW, gb, acts, X, Y, lr, iterations, l2=l2, momentum=beta,
                                  blas_threads=1)
    assert costs.shape == (iterations,) and costs.dtype == np.float64
    assert expected[-1] < 0.9 * expected[0]  # it learned: the comparison is not of a flat line
    assert_close(costs, expected, TOL[dtype]["cost"], "costs")
    for l in range(len(W)):
        assert gW[l].dtype == dtype and gb[l].dtype == dtype
        assert_close(gW[l], net.W[l], TOL[dtype]["weights"], f"W[{l}]")
        assert_close(gb[l], net.b[l], TOL[dtype]["weights"], f"b[{l}]")
    if beta is not None:
        # The velocities are the Momentum optimizer's after the same steps.
        vW, vb = wide.GramRoute(copies(W), copies(b), acts, X, Y, l2=l2, momentum=beta).velocities()
        assert all(np.all(v == 0) for v in vW + vb)  # zero before any step
        route = wide.GramRoute(gW2 := copies(W), copies(b), acts, X, Y, l2=l2, momentum=beta)
        route.run(iterations, lr)
        vW, vb = route.velocities()
        _, arrays = opt.state_dict()
        L = len(W)
        for l in range(L):
            assert_close(vW[l], arrays[f"velocity/{l}"], 10 * TOL[dtype]["weights"], f"vW[{l}]")
            assert_close(vb[l], arrays[f"velocity/{L + l}"], 10 * TOL[dtype]["weights"], f"vb[{l}]")
        np.testing.assert_array_equal(gW2[0], gW[0])  # the route is deterministic


def test_gram_route_equals_the_numpy_backend():
    dims, m = [4000, 10, 5, 1], 90
    X, Y, W, b = wide_problem(dims, m, np.float64, seed=3)
    expected, net, _ = plain_run(dims, "relu", W, b, X, Y, 0.1, 200, l2=0.4, backend="numpy")
    gW, gb = copies(W), copies(b)
    costs = wide.train_full_batch(gW, gb, ["relu", "relu", "sigmoid"], X, Y, 0.1, 200, l2=0.4)
    assert_close(costs, expected, 1e-11, "costs")
    for l in range(3):
        assert_close(gW[l], net.W[l], 1e-9, f"W[{l}]")


def test_route_in_pieces_equals_one_run():
    dims, m = [2000, 8, 1], 60
    X, Y, W, b = wide_problem(dims, m, np.float64, seed=5)
    acts = ["relu", "sigmoid"]
    oneW, oneb = copies(W), copies(b)
    one = wide.train_full_batch(oneW, oneb, acts, X, Y, 0.1, 150, momentum=0.9, l2=0.1)
    pW, pb = copies(W), copies(b)
    route = wide.GramRoute(pW, pb, acts, X, Y, momentum=0.9, l2=0.1)
    parts = [route.run(50, 0.1, write_back=False) for _ in range(3)]
    # W[0] is not formed until asked for; the other layers are current.
    np.testing.assert_array_equal(pW[0], W[0])
    np.testing.assert_array_equal(pW[1], oneW[1])
    route.write_parameters()
    assert route.iterations_done == 150
    np.testing.assert_array_equal(np.concatenate(parts), one)
    for a, e in zip(pW + pb, oneW + oneb):
        np.testing.assert_array_equal(a, e)


def test_learning_rate_may_change_between_runs():
    dims, m = [1500, 6, 1], 40
    X, Y, W, b = wide_problem(dims, m, np.float64, seed=6)
    net = dnnblocks.Network(dims, dtype=np.float64)
    for dst, src in zip(net.W + net.b, W + b):
        dst[...] = src
    expected = [net.step(X, Y, lr) for lr in (0.2,) * 20 + (0.05,) * 20]
    route = wide.GramRoute(W, b, ["relu", "sigmoid"], X, Y)
    costs = np.concatenate([route.run(20, 0.2), route.run(20, 0.05)])
    assert_close(costs, expected, 1e-11, "costs")
    assert_close(W[0], net.W[0], 1e-9, "W[0]")


# ------------------------------------------------------------- the cat model
def _cat_start():
    dims = [12288, 20, 7, 5, 1]
    initial = course.initialize_parameters_deep(dims, seed=1, scale="sqrt")
    W = [initial[f"W{l}"].copy() for l in range(1, 5)]
    b = [initial[f"b{l}"].copy() for l in range(1, 5)]
    return dims, W, b


def test_cat_model_by_the_gram_route(cat_data):
    """The course's L_layer_model recipe, 2500 iterations, by the route: the published numbers."""
    X, Y = cat_data["train_x"], cat_data["train_y"].astype(np.float64)
    dims, W, b = _cat_start()
    with _one_blas_thread():
        costs = wide.train_full_batch(W, b, ["relu"] * 3 + ["sigmoid"], X, Y, 0.0075, 2500)
    np.testing.assert_allclose(costs[::100], PUBLISHED_CURVE, rtol=1e-9, atol=0)
    assert costs[2499] == pytest.approx(PUBLISHED_FINAL, rel=1e-9)
    parameters = {f"{p}{l + 1}": a for l in range(4) for p, a in (("W", W[l]), ("b", b[l]))}
    for part, accuracy in (("train", 0.9856459330143539), ("test", 0.8)):
        AL, _ = course.L_model_forward(cat_data[part + "_x"], parameters)
        assert np.mean((AL > 0.5) == cat_data[part + "_y"]) == pytest.approx(accuracy, abs=1e-12)


def test_cat_model_gram_route_equals_plain_route(cat_data):
    """Every cost and the final weights of 300 iterations equal the plain route's L_layer_model."""
    X, Y = cat_data["train_x"], cat_data["train_y"].astype(np.float64)
    dims, W, b = _cat_start()
    with _one_blas_thread():
        costs = wide.train_full_batch(W, b, ["relu"] * 3 + ["sigmoid"], X, Y, 0.0075, 300)
        parameters, _ = course.L_layer_model(X, Y, dims, 0.0075, 300)
        net = dnnblocks.Network(dims)
        start = _cat_start()
        for dst, src in zip(net.W + net.b, start[1] + start[2]):
            dst[...] = src
        plain = [net.step(X, Y, 0.0075) for _ in range(300)]
    assert_close(costs, plain, 1e-12, "costs")
    for l in range(4):
        assert_close(W[l], parameters[f"W{l + 1}"], 1e-10, f"W{l + 1}")
        assert_close(b[l], parameters[f"b{l + 1}"], 1e-10, f"b{l + 1}")


# --------------------------------------------------------------- divergence
def test_divergence_keeps_the_last_finite_parameters():
    dims, m = [1000, 6, 1], 30
    X, Y, W, b = wide_problem(dims, m, np.float64, seed=7)
    X *= 30
    acts = ["relu", "sigmoid"]
    # The plain route's record of the same run: where it diverges, and the weights before.
    net = dnnblocks.Network(dims, dtype=np.float64)
    for dst, src in zip(net.W + net.b, W + b):
        dst[...] = src
    steps = 0
    with pytest.raises(TrainingDivergedError):
        for _ in range(100):
            net.step(X, Y, 1e6)
            steps += 1
    gW, gb = copies(W), copies(b)
    with pytest.raises(TrainingDivergedError, match="last finite step") as info:
        wide.train_full_batch(gW, gb, acts, X, Y, 1e6, 100)
    assert len(info.value.costs) == steps
    assert all(np.isfinite(gW[l]).all() and np.isfinite(gb[l]).all() for l in range(2))
    for l in range(2):
        assert_close(gW[l], net.W[l], 1e-6, f"W[{l}]")


# -------------------------------------------------------------- bad input
def _good(dtype=np.float64):
    X, Y, W, b = wide_problem([800, 5, 1], 20, dtype, seed=8)
    return W, b, ["relu", "sigmoid"], X, Y


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.update(X=a["X"].astype(np.float32)), TypeError, "X has dtype float32"),
    (lambda a: a["X"].__setitem__((0, 0), np.nan), ValueError, "X contains NaN"),
    (lambda a: a.update(X=a["X"][:-1]), ValueError, "W\\[0\\] must have shape"),
    (lambda a: a["W"][1].__setitem__((0, 0), np.inf), ValueError, "W\\[1\\] contains NaN"),
    (lambda a: a["b"].__setitem__(0, a["b"][0].ravel()), ValueError, "b\\[0\\] must have shape"),
    (lambda a: setattr(a["W"][1].flags, "writeable", False), ValueError, "W\\[1\\] is read-only"),
    (lambda a: a.update(activations=["relu", "softmax"]), ValueError, "must be 'sigmoid'"),
    (lambda a: a.update(activations=["swish", "sigmoid"]), ValueError, "activations\\[0\\]"),
    (lambda a: a.update(activations=["relu"]), ValueError, "sequence of 2 names"),
    (lambda a: a.update(Y=a["Y"] * 2), ValueError, "only the labels 0 and 1"),
    (lambda a: a.update(Y=a["Y"][:, :-1]), ValueError, "Y must have shape"),
    (lambda a: a.update(l2=-1.0), ValueError, "l2 must be >= 0"),
    (lambda a: a.update(momentum=1.0), ValueError, "momentum must be < 1"),
    (lambda a: a.update(momentum=Adam()), ValueError, "linear in the gradient"),
    (lambda a: a.update(learning_rate=0.0), ValueError, "learning_rate must be > 0"),
    (lambda a: a.update(iterations=-1), ValueError, "iterations must be an integer >= 0"),
    (lambda a: a.update(iterations=2.5), TypeError, "iterations must be an integer"),
    (lambda a: a.update(W=tuple(a["W"])), ValueError, "W must be a non-empty list"),
])
def test_bad_input_is_refused_and_nothing_changes(change, error, match):
    W, b, acts, X, Y = _good()
    args = dict(W=W, b=b, activations=acts, X=X, Y=Y, learning_rate=0.1, iterations=5, l2=0.0,
                momentum=None)
    change(args)
    before = [a.copy() for a in W + b]
    with pytest.raises(error, match=match):
        wide.train_full_batch(args.pop("W"), args.pop("b"), args.pop("activations"), args.pop("X"),
                              args.pop("Y"), args.pop("learning_rate"), args.pop("iterations"), **args)
    for a, e in zip(W + b, before):
        np.testing.assert_array_equal(a, e)


def test_mixed_dtypes_are_refused():
    W, b, acts, X, Y = _good()
    W[1] = W[1].astype(np.float32)
    with pytest.raises(TypeError, match="W\\[1\\] must have the network's dtype float64"):
        wide.train_full_batch(W, b, acts, X, Y, 0.1, 3)


def test_parameters_changed_under_a_route_are_refused():
    W, b, acts, X, Y = _good()
    route = wide.GramRoute(W, b, acts, X, Y)
    route.run(2, 0.1)
    b[1].flags.writeable = False
    with pytest.raises(ValueError, match="b\\[1\\] was made read-only"):
        route.run(2, 0.1)
    assert route.iterations_done == 2


def test_zero_iterations_change_nothing():
    W, b, acts, X, Y = _good()
    before = [a.copy() for a in W + b]
    costs = wide.train_full_batch(W, b, acts, X, Y, 0.1, 0)
    assert costs.shape == (0,)
    for a, e in zip(W + b, before):
        np.testing.assert_array_equal(a, e)


def test_velocities_need_momentum():
    W, b, acts, X, Y = _good()
    with pytest.raises(ValueError, match="no velocity"):
        wide.GramRoute(W, b, acts, X, Y).velocities()


# -------------------------------------------------------------- cost model
@pytest.mark.parametrize("n0, m, n1, kwargs, expected", [
    (12288, 209, 20, {}, True),                                  # the cat model
    (20000, 200, 32, {}, True),                                  # the benchmark's wide table
    (12288, 209, 20, {"optimizer": "momentum"}, True),
    (12288, 209, 20, {"optimizer": Momentum(0.5)}, True),
    (12288, 209, 20, {"optimizer": None, "batch": 209}, True),
    (12288, 209, 20, {"optimizer": "adam"}, False),
    (12288, 209, 20, {"optimizer": Adam()}, False),
    (12288, 209, 20, {"batch": 64}, False),
    (12288, 209, 20, {"dropout_on_input": True}, False),
    (784, 60000, 256, {}, False),                                # more examples than features
    (1000, 600, 20, {}, False),                                  # m > n0 / 2: too little saved
    (1000, 400, 20, {}, True),
    (12288, 209, 20, {"iterations": 2}, False),                  # G is not earned back
    (12288, 209, 20, {"iterations": 2500}, True),
    (12288, 209, 20, {"iterations": 0}, False),
])
def test_should_use_gram_route(n0, m, n1, kwargs, expected):
    assert wide.should_use_gram_route(n0, m, n1, **kwargs) is expected


def test_should_use_gram_route_refuses_bad_arguments():
    with pytest.raises(ValueError, match="n0 must be an integer >= 1"):
        wide.should_use_gram_route(0, 10, 3)
    with pytest.raises(TypeError, match="m must be an integer"):
        wide.should_use_gram_route(100, 1.5, 3)
    with pytest.raises(TypeError, match="optimizer must be"):
        wide.should_use_gram_route(100, 10, 3, optimizer=3)


def test_the_cost_model_counts_the_first_layer():
    plain, gram = wide.gram_route_arithmetic(12288, 209, 20)
    assert plain / gram == pytest.approx(2 * 12288 / 209)  # 118 times less arithmetic per step
    plain, gram = wide.gram_route_arithmetic(12288, 209, 20, iterations=10)
    assert gram == 12288 * 209 * 209 + 2 * 20 * 12288 * 209 + 10 * 20 * 209 * 209


@pytest.mark.parametrize("route, kwargs, expected", [
    ("auto", {}, "gram"),
    ("plain", {}, "plain"),
    ("gram", {}, "gram"),
    ("auto", {"optimizer": "adam"}, "plain"),
    ("auto", {"dropout": 0.2}, "plain"),
    ("auto", {"batch": 32}, "plain"),
    ("auto", {"output": "softmax"}, "plain"),
    ("auto", {"backend_name": "numpy"}, "plain"),
    ("auto", {"n0": 100}, "plain"),          # pays only when n0 >> m
    ("gram", {"n0": 100}, "gram"),           # forced: it can run, so it runs
])
def test_resolve_route(route, kwargs, expected):
    args = dict(n0=12288, m=209, n1=20)
    args.update(kwargs)
    assert wide.resolve_route(route, **args) == expected


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "adam"}, "linear in the gradient"),
    ({"dropout": 0.2}, "no dropout"),
    ({"batch": 32}, "full batch only"),
    ({"output": "softmax"}, "sigmoid output layer only"),
    ({"backend_name": "numpy"}, "compiled backend only"),
])
def test_forced_gram_route_says_why_it_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match="route='gram' cannot train this fit: .*" + match):
        wide.resolve_route("gram", n0=12288, m=209, n1=20, **kwargs)


def test_unknown_route_is_refused():
    with pytest.raises(ValueError, match="route must be one of"):
        wide.resolve_route("fast", n0=10, m=5, n1=2)
