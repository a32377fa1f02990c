"""The catalogue of bad inputs, on every public entry point.

Entry points: :class:`dnnblocks.Network` (``step``, ``fit``, ``forward``,
``predict_proba``, ``cost``), :mod:`dnnblocks.course`,
:class:`dnnblocks.DNNClassifier` (``fit``, ``partial_fit``, ``predict``),
:func:`dnnblocks.load` and the ``dnnblocks`` command (as a subprocess).

Every case either raises ``ValueError``/``TypeError`` (or a documented
subclass: ``ModelFileError`` is a ValueError, ``TrainingDivergedError`` a
FloatingPointError) whose message names the argument, and leaves the model
exactly as it was (parameters compared bit for bit with copies), or is
documented to work (``works``) and is then checked to give the right answer.

Documented behaviour the tests pin down:

* non-contiguous and negatively strided X, and read-only X and Y, work
  everywhere (``Network`` copies a strided view once; C- and F-ordered arrays
  are read in place);
* ``Network`` takes float32/float64 X of its own dtype only (TypeError
  otherwise, no silent conversion); ``course`` and ``DNNClassifier`` convert
  integer and boolean X, as the textbook's NumPy and scikit-learn do;
* integer and boolean labels 0/1 are accepted wherever labels are;
* NaN in a ``Network``'s own weights is not scanned for at prediction (it
  propagates to NaN outputs); a training step refuses to update on the
  resulting NaN cost (TrainingDivergedError). ``course.L_model_forward`` and
  ``course.predict`` refuse non-finite X and parameters; the course's
  building blocks (linear_forward, ..., update_parameters) propagate NaN and
  inf as the textbook's NumPy does.
"""

import json
import math
import os
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import dnnblocks
from dnnblocks import ModelFileError, Network, TrainingDivergedError, course
from dnnblocks.optimizers import Adam

BACKENDS = ("compiled", "numpy")
DTYPES = (np.float32, np.float64)
N0, M = 3, 8
BIG = 2**31  # one more than BLAS's 32-bit dimension limit


def huge_view(shape, dtype=np.float64):
    """A read-only zero-stride view of `shape`: nothing big is allocated."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * len(shape),
                                           writeable=False)


def data(dtype=np.float64, m=M, n=N0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(dtype)
    Y = (np.arange(m) % 2).astype(dtype).reshape(1, m)
    return X, Y


def params_of(model):
    if isinstance(model, Network):
        return [a.copy() for a in model.W + model.b]
    if isinstance(model, dict):
        return {k: np.array(v, copy=True) for k, v in model.items()}
    return [a.copy() for a in model.coefs_ + model.intercepts_]


def assert_same_params(before, model):
    after = params_of(model)
    if isinstance(before, dict):
        assert before.keys() == after.keys()
        before, after = list(before.values()), list(after.values())
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(b, a)
        assert a.dtype == b.dtype


# =========================================================== Network (step)
def _network_cases():
    """(id, kind, mutate) with kind the expected (exception, regex) or "works".

    ``mutate(net, X, Y)`` returns the (X, Y, learning_rate, options) of a
    step, possibly after damaging the network's own parameters.
    """
    lr = 0.1

    def xy(fx=None, fy=None, lr=lr, **opts):
        def mutate(net, X, Y):
            return (fx(X) if fx else X), (fy(Y) if fy else Y), lr, opts
        return mutate

    def param(change):
        def mutate(net, X, Y):
            change(net)
            return X, Y, lr, {}
        return mutate

    def other_float(X):
        return X.astype(np.float32 if X.dtype == np.float64 else np.float64)

    return [
        # ranks
        ("X 1-D", (ValueError, "X must be 2-D"), xy(lambda X: X[0])),
        ("X 3-D", (ValueError, "X must be 2-D"), xy(lambda X: X[None])),
        ("Y 3-D", (ValueError, "Y must have shape"), xy(fy=lambda Y: Y[None])),
        ("Y 1-D", "works", xy(fy=lambda Y: Y[0])),  # one output unit: a flat label vector is accepted
        # mismatched shapes between X, Y and the parameters
        ("X rows != n0", (ValueError, "X must have 3 rows"), xy(lambda X: X[:2])),
        ("Y columns != m", (ValueError, "Y must have shape"), xy(fy=lambda Y: Y[:, :-1])),
        ("Y rows != nL", (ValueError, "Y must have shape"), xy(fy=lambda Y: np.vstack([Y, Y]))),
        ("W[0] shape", (ValueError, r"W\[0\] must have shape"),
         param(lambda net: net.W.__setitem__(0, np.zeros((net.W[0].shape[0], 2), net.dtype)))),
        ("b[1] shape", (ValueError, r"b\[1\] must have shape"),
         param(lambda net: net.b.__setitem__(1, np.zeros(1, net.dtype)))),
        ("W missing a layer", (ValueError, "W must be a list of 2 arrays"), param(lambda net: net.W.pop())),
        ("W extra layer", (ValueError, "W must be a list of 2 arrays"),
         param(lambda net: net.W.append(net.W[-1].copy()))),
        # empty arrays
        ("m = 0", (ValueError, "X must have at least one example"),
         xy(lambda X: X[:, :0], lambda Y: Y[:, :0])),
        ("no features", (ValueError, "X must have 3 rows"), xy(lambda X: X[:0])),
        # non-finite values
        ("NaN in X", (ValueError, "X contains NaN"), xy(lambda X: np.where(X > 1, np.nan, X))),
        ("+inf in X", (ValueError, "X contains NaN or infinity"), xy(lambda X: np.where(X > 1, np.inf, X))),
        ("-inf in X", (ValueError, "X contains NaN or infinity"), xy(lambda X: np.where(X > 1, -np.inf, X))),
        ("NaN in W[0]", (TrainingDivergedError, "cost became nan.*learning_rate"),
         param(lambda net: net.W[0].__setitem__((0, 0), np.nan))),
        ("inf in b[1]", (TrainingDivergedError, "cost became"),
         param(lambda net: net.b[1].__setitem__((0, 0), np.inf))),
        # labels outside the classes
        ("label 2", (ValueError, r"Y must contain only the labels 0 and 1; got \[2"), xy(fy=lambda Y: Y * 2)),
        ("label -1", (ValueError, "Y must contain only the labels 0 and 1"), xy(fy=lambda Y: Y - 1)),
        ("label 0.5", (ValueError, "Y must contain only the labels 0 and 1"), xy(fy=lambda Y: Y * 0.5)),
        ("label NaN", (ValueError, "Y must contain only the labels 0 and 1"), xy(fy=lambda Y: Y * np.nan)),
        # dtypes
        ("X object", (TypeError, "X must be a float"), xy(lambda X: X.astype(object))),
        ("X str", (TypeError, "X must be a float"), xy(lambda X: X.astype(str))),
        ("X complex", (TypeError, "X must be a float"), xy(lambda X: X.astype(complex))),
        ("X int", (TypeError, "X must be a float"), xy(lambda X: (X * 10).astype(np.int64))),
        ("X bool", (TypeError, "X must be a float"), xy(lambda X: X > 0)),
        ("X float16", (TypeError, "X has dtype float16"), xy(lambda X: X.astype(np.float16))),
        ("X other float", (TypeError, "convert with X.astype"), xy(other_float)),
        ("X list", (TypeError, "X must be a numpy.ndarray"), xy(lambda X: X.tolist())),
        ("Y object", (TypeError, "Y must hold numbers"), xy(fy=lambda Y: Y.astype(object))),
        ("Y str", (TypeError, "Y must hold numbers"), xy(fy=lambda Y: Y.astype(str))),
        ("Y complex", (TypeError, "Y must hold numbers"), xy(fy=lambda Y: Y.astype(complex))),
        ("Y int", "works", xy(fy=lambda Y: Y.astype(np.int64))),
        ("Y bool", "works", xy(fy=lambda Y: Y > 0)),
        ("W[0] other float", (TypeError, r"W\[0\] must have the network's dtype"),
         param(lambda net: net.W.__setitem__(0, other_float(net.W[0])))),
        ("W[0] list", (TypeError, r"W\[0\] must be a numpy.ndarray"),
         param(lambda net: net.W.__setitem__(0, net.W[0].tolist()))),
        ("W[0] int", (TypeError, r"W\[0\] must have the network's dtype"),
         param(lambda net: net.W.__setitem__(0, net.W[0].astype(np.int64)))),
        # layouts: these work
        ("X F-ordered", "works", xy(np.asfortranarray)),
        ("X strided columns", "works", xy(lambda X: np.repeat(X, 2, axis=1)[:, ::2])),
        ("X negative column stride", "works", xy(lambda X: X[:, ::-1], lambda Y: Y[:, ::-1])),
        ("X negative row stride", "works", xy(lambda X: np.ascontiguousarray(X[::-1])[::-1])),
        ("Y negative stride", "works", xy(lambda X: np.ascontiguousarray(X[:, ::-1]), lambda Y: Y[:, ::-1])),
        ("X read-only", "works", xy(lambda X: _readonly(X))),
        ("Y read-only", "works", xy(fy=lambda Y: _readonly(Y))),
        ("W[0] F-ordered", (ValueError, r"W\[0\] must be C-contiguous"),
         param(lambda net: net.W.__setitem__(0, np.asfortranarray(net.W[0])))),
        ("W[0] read-only", (ValueError, r"W\[0\] is read-only"),
         param(lambda net: setattr(net.W[0].flags, "writeable", False))),
        # too large for BLAS's 32-bit dimensions (a zero-stride view: nothing allocated)
        ("X 2**31 columns", (ValueError, "X has shape .* BLAS's 32-bit limit"),
         xy(lambda X: huge_view((N0, BIG), X.dtype), lambda Y: huge_view((1, BIG), Y.dtype))),
        # hyper-parameters
        ("learning_rate 0", (ValueError, "learning_rate must be > 0"), xy(lr=0.0)),
        ("learning_rate -1", (ValueError, "learning_rate must be > 0"), xy(lr=-1.0)),
        ("learning_rate NaN", (ValueError, "learning_rate must be finite"), xy(lr=math.nan)),
        ("learning_rate inf", (ValueError, "learning_rate must be finite"), xy(lr=math.inf)),
        ("learning_rate 10**400", (ValueError, "learning_rate must be finite"), xy(lr=10**400)),
        ("learning_rate 1e300", "huge", xy(lr=1e300)),
        ("learning_rate str", (TypeError, "learning_rate must be a real number"), xy(lr="0.1")),
        ("dropout -0.1", (ValueError, "dropout must be >= 0"), xy(dropout=-0.1)),
        ("dropout 1", (ValueError, "dropout must be < 1"), xy(dropout=1.0)),
        ("dropout NaN", (ValueError, "dropout must be finite"), xy(dropout=math.nan)),
        ("l2 -1", (ValueError, "l2 must be >= 0"), xy(l2=-1.0)),
        ("optimizer name", (ValueError, "Optimizer object"), xy(optimizer="adam")),
    ]


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


NETWORK_CASES = _network_cases()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=("float32", "float64"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", NETWORK_CASES, ids=[c[0] for c in NETWORK_CASES])
def test_network_step_catalogue(case, backend, dtype, optimizer):
    name, kind, mutate = case
    net = Network([N0, 4, 1], backend=backend, dtype=dtype, seed=0)
    X, Y = data(dtype)
    opt = Adam() if optimizer == "adam" else None
    net.step(X, Y, 0.1, optimizer=opt)  # a trained state (optimizer state included)
    Xb, Yb, lr, options = mutate(net, X, Y)
    options = {"optimizer": opt, **options}
    before = [a.copy() for a in net.W + net.b]
    t_before = opt.t if opt is not None else None
    if kind == "huge":
        # Finite but absurd: refused where it overflows the network's
        # precision; in float64 it trains until the cost is not finite.
        if dtype == np.float32:
            with pytest.raises(ValueError, match="learning_rate = 1e\\+300 overflows float32"):
                net.step(Xb, Yb, lr, **options)
        else:
            with np.errstate(all="ignore"):
                for _ in range(5):
                    try:
                        net.step(Xb, Yb, lr, **options)
                    except TrainingDivergedError as exc:
                        assert "smaller learning_rate" in str(exc)
                        break
        return
    if kind == "works":
        cost = net.step(Xb, Yb, lr, **options)
        twin = Network([N0, 4, 1], backend=backend, dtype=dtype, seed=0)
        twin_opt = Adam() if optimizer == "adam" else None
        twin.step(X, Y, 0.1, optimizer=twin_opt)
        Xc = np.ascontiguousarray(np.asarray(Xb, dtype=dtype))
        Yc = np.ascontiguousarray(np.asarray(Yb, dtype=dtype).reshape(1, -1))
        assert cost == twin.step(Xc, Yc, lr, optimizer=twin_opt)
        for a, b in zip(net.W + net.b, twin.W + twin.b):
            np.testing.assert_array_equal(a, b)
        return
    error, pattern = kind
    with pytest.raises(error, match=pattern), np.errstate(invalid="ignore", over="ignore"):
        net.step(Xb, Yb, lr, **options)
    # Nothing half-done: the parameters that are still the network's own are
    # unchanged bit for bit, and so is the optimizer's step count.
    for a, b in zip(before, net.W + net.b):
        if isinstance(b, np.ndarray) and b.shape == a.shape and b.dtype == a.dtype:
            np.testing.assert_array_equal(b, a)
    if opt is not None:
        assert opt.t == t_before


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in NETWORK_CASES if c[0] in {
    "X 1-D", "X rows != n0", "m = 0", "NaN in X", "X str", "X int", "X other float",
    "X 2**31 columns", "W[0] shape", "W[0] other float", "W missing a layer", "Y str", "label 2",
    "X negative column stride", "X read-only", "W[0] read-only"}], ids=lambda c: c[0])
def test_network_predict_forward_cost_fit_catalogue(case, backend):
    """The same cases through forward, predict_proba, decision_function, cost and fit."""
    name, kind, mutate = case
    net = Network([N0, 4, 1], backend=backend, seed=0)
    X, Y = data()
    Xb, Yb, _, _ = mutate(net, X, Y)
    before = [a.copy() for a in net.W + net.b]
    calls = {
        "forward": lambda: net.forward(Xb),
        "predict_proba": lambda: net.predict_proba(Xb),
        "decision_function": lambda: net.decision_function(Xb),
        "cost": lambda: net.cost(Xb, Yb),
        "fit": lambda: net.fit(Xb, Yb, epochs=2, batch_size=3, learning_rate=0.1, optimizer="momentum"),
    }
    reads_y_only = name in {"Y str", "label 2"}
    for call_name, call in calls.items():
        if name == "W[0] read-only" and call_name != "fit":
            call()  # prediction does not need writeable parameters
            continue
        if kind == "works" or (reads_y_only and call_name not in ("cost", "fit")):
            call()
            continue
        error, pattern = kind
        with pytest.raises(error, match=pattern):
            call()
        for a, b in zip(before, net.W + net.b):
            if isinstance(b, np.ndarray) and b.shape == a.shape and b.dtype == a.dtype:
                np.testing.assert_array_equal(b, a)
    if kind == "works":
        np.testing.assert_array_equal(net.predict_proba(Xb), net.predict_proba(np.ascontiguousarray(Xb)))


@pytest.mark.parametrize("layer_dims,error,pattern", [
    ([3, 0, 1], ValueError, r"layer_dims\[1\] must be an integer >= 1"),
    ([3, -4, 1], ValueError, r"layer_dims\[1\] must be an integer >= 1"),
    ([0, 1], ValueError, r"layer_dims\[0\] must be an integer >= 1"),
    ([3, BIG, 1], ValueError, r"layer_dims\[1\] = 2147483648 exceeds BLAS's 32-bit limit"),
    ([3, 2.0, 1], TypeError, r"layer_dims\[1\] must be an integer"),
    ([3], ValueError, "layer_dims must have at least 2 entries"),
])
def test_network_layer_sizes(layer_dims, error, pattern):
    with pytest.raises(error, match=pattern):
        Network(layer_dims)


# ===================================================================== course
def _course_params(dtype=np.float64):
    rng = np.random.default_rng(1)
    return {"W1": rng.standard_normal((4, N0)).astype(dtype), "b1": rng.standard_normal((4, 1)).astype(dtype),
            "W2": rng.standard_normal((1, 4)).astype(dtype), "b2": rng.standard_normal((1, 1)).astype(dtype)}


def _course_cases():
    """(id, kind, call(X, Y, P, backend)) over the course's functions."""
    fwd = course.L_model_forward
    model = course.L_layer_model

    def train(X, Y, dims=(N0, 4, 1), **kw):
        return lambda backend: model(X, Y, list(dims), num_iterations=2, backend=backend, **kw)

    def forward(X, P):
        return lambda backend: fwd(X, P, backend=backend)

    def cases_with(X, Y, P):
        AL, caches = fwd(X, P)
        grads = course.L_model_backward(AL, Y, caches)
        upd = lambda P2, g2, lr=0.1: (lambda backend: course.update_parameters(P2, g2, lr, backend=backend))
        return [
            # ranks and shapes
            ("forward X 1-D", (ValueError, r"A_prev \(X\) must be a 2-D array"), forward(X[0], P)),
            ("forward X 3-D", (ValueError, r"A_prev \(X\) must be a 2-D array"), forward(X[None], P)),
            ("forward X rows", (ValueError, "A_prev must have W.shape.1. = 3 rows"), forward(X[:2], P)),
            ("forward b1 shape", (ValueError, "b must have shape"), forward(X, {**P, "b1": P["b1"][:2]})),
            ("forward W2 shape", (ValueError, "A_prev must have"), forward(X, {**P, "W2": P["W2"][:, :2]})),
            ("forward m = 0", "works", forward(X[:, :0], P)),  # the textbook's NumPy gives an empty AL
            ("forward X 2**31 columns", (ValueError, "A_prev .X. has shape .* BLAS's 32-bit"),
             forward(huge_view((N0, BIG)), P)),
            ("forward NaN in X", (ValueError, "X contains NaN"), forward(np.where(X > 1, np.nan, X), P)),
            ("forward inf in X", (ValueError, "X contains NaN or infinity"), forward(np.where(X > 1, np.inf, X), P)),
            ("forward NaN in W1", (ValueError, "W1 contains NaN"), forward(X, {**P, "W1": P["W1"] * np.nan})),
            ("forward inf in b2", (ValueError, "b2 contains NaN"), forward(X, {**P, "b2": P["b2"] + np.inf})),
            ("forward X str", (TypeError, r"A_prev \(X\) must be a numeric array"), forward(X.astype(str), P)),
            ("forward X object", (TypeError, "must be a numeric array"), forward(X.astype(object), P)),
            ("forward X complex", (TypeError, "must be a numeric array"), forward(X.astype(complex), P)),
            ("forward X int", "works", forward((X * 10).astype(np.int64), P)),
            ("forward X bool", "works", forward(X > 0, P)),
            ("forward X negative strides", "works", forward(np.ascontiguousarray(X[::-1, ::-1])[::-1, ::-1], P)),
            ("forward X strided", "works", forward(np.repeat(X, 2, axis=1)[:, ::2], P)),
            ("forward X read-only", "works", forward(_readonly(X), P)),
            ("forward params missing b2", (ValueError, "parameters must have exactly the keys"),
             forward(X, {k: v for k, v in P.items() if k != "b2"})),
            ("forward params extra W3", (ValueError, "parameters must have exactly the keys"),
             forward(X, {**P, "W3": P["W2"]})),
            ("forward params not a dict", (TypeError, "parameters must be a dict"), forward(X, list(P.values()))),
            ("forward W1 str", (TypeError, "W1 must be a numeric array"), forward(X, {**P, "W1": P["W1"].astype(str)})),
            # cost and backward
            ("cost Y shape", (ValueError, "Y must have shape"), lambda b: course.compute_cost(AL, Y[:, :-1], backend=b)),
            ("cost label 2", (ValueError, "Y must contain only the labels 0 and 1"),
             lambda b: course.compute_cost(AL, Y * 2, backend=b)),
            ("cost Y str", (TypeError, "Y must be a numeric array"),
             lambda b: course.compute_cost(AL, Y.astype(str), backend=b)),
            ("cost AL complex", (TypeError, "AL must be a numeric array"),
             lambda b: course.compute_cost(AL.astype(complex), Y, backend=b)),
            ("backward label -1", (ValueError, "Y must contain only the labels 0 and 1"),
             lambda b: course.L_model_backward(AL, Y - 1, caches, backend=b)),
            ("backward caches junk", (TypeError, r"cache must be a tuple \(\(A_prev, W, b\), Z\)"),
             lambda b: course.L_model_backward(AL, Y, [1, 2], backend=b)),
            ("backward caches empty", (ValueError, "caches must hold one cache per layer"),
             lambda b: course.L_model_backward(AL, Y, [], backend=b)),
            ("linear_backward cache short", (TypeError, r"cache must be a tuple \(A_prev, W, b\)"),
             lambda b: course.linear_backward(np.ones((4, M)), caches[0][0][:2], backend=b)),
            ("linear_backward dZ shape", (ValueError, "dZ must have shape"),
             lambda b: course.linear_backward(np.ones((4, M - 1)), caches[0][0], backend=b)),
            # update_parameters
            ("update lr NaN", (ValueError, "learning_rate must be finite"), upd(P, grads, math.nan)),
            ("update lr -1", (ValueError, "learning_rate must be > 0"), upd(P, grads, -1.0)),
            ("update lr 10**400", (ValueError, "learning_rate must be finite"), upd(P, grads, 10**400)),
            ("update grads missing dW1", (ValueError, "grads is missing 'dW1'"),
             upd(P, {k: v for k, v in grads.items() if k != "dW1"})),
            ("update grad shape", (ValueError, r"grads\['dW1'\] must have shape"),
             upd(P, {**grads, "dW1": grads["dW1"][:2]})),
            ("update params str", (TypeError, "W1 must be a numeric array"), upd({**P, "W1": P["W1"].astype(str)}, grads)),
            ("update params extra key", (ValueError, "parameters must have exactly the keys"),
             upd({**P, "foo": P["W1"]}, grads)),
            ("update NaN grad (propagates)", "works", upd(P, {**grads, "dW1": grads["dW1"] * np.nan})),
            # the whole model
            ("model label 2", (ValueError, "Y must contain only the labels 0 and 1"), train(X, Y * 2)),
            ("model NaN in X", (ValueError, "X contains NaN"), train(np.where(X > 1, np.nan, X), Y)),
            ("model X rows", (ValueError, "X must have 4 rows"), train(X, Y, dims=(4, 4, 1))),
            ("model m = 0", (ValueError, "X must have at least one example"), train(X[:, :0], Y[:, :0])),
            ("model layer size 0", (ValueError, r"layer_dims\[1\] must be an integer >= 1"), train(X, Y, dims=(N0, 0, 1))),
            ("model layer size -1", (ValueError, r"layer_dims\[1\] must be an integer >= 1"), train(X, Y, dims=(N0, -1, 1))),
            ("model lr NaN", (ValueError, "learning_rate must be finite"), train(X, Y, learning_rate=math.nan)),
            ("model X complex", (TypeError, "X must be a numeric array"), train(X.astype(complex), Y)),
            ("model X 2**31 columns", (ValueError, "X has shape .* BLAS's 32-bit"),
             train(huge_view((N0, BIG)), huge_view((1, BIG)))),
            ("model X negative strides", "works", train(np.ascontiguousarray(X[:, ::-1])[:, ::-1], Y)),
            ("predict X 1-D", (ValueError, r"A_prev \(X\) must be a 2-D array"),
             lambda b: course.predict(X[0], Y, P, backend=b)),
            ("predict NaN in X", (ValueError, "X contains NaN"),
             lambda b: course.predict(np.where(X > 1, np.nan, X), Y, P, backend=b)),
            ("predict y shape", (ValueError, "y must have shape"), lambda b: course.predict(X, Y[:, :-1], P, backend=b)),
        ]
    X, Y = data()
    return cases_with(X, Y, _course_params())


COURSE_CASES = _course_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", COURSE_CASES, ids=[c[0] for c in COURSE_CASES])
def test_course_catalogue(case, backend, capsys):
    name, kind, call = case
    # The course API is functional: the caller's dicts must come out untouched.
    P = _course_params()
    before = params_of(P)
    if kind == "works":
        with np.errstate(invalid="ignore"):
            call(backend)
    else:
        error, pattern = kind
        with pytest.raises(error, match=pattern):
            call(backend)
    assert_same_params(before, P)


def test_course_huge_views_are_never_copied():
    # Refused in O(1) from the shape: no 48 GiB conversion is attempted.
    W = np.ones((2, N0))
    with pytest.raises(ValueError, match="BLAS"):
        course.linear_forward(huge_view((N0, BIG), np.float32), W, np.zeros((2, 1)))


# ============================================================= DNNClassifier
@pytest.fixture(scope="module")
def fitted_clf():
    from dnnblocks import DNNClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, N0))
    y = np.where(X[:, 0] > 0, "yes", "no")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = DNNClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, warm_start=True).fit(X, y)
    return clf, X, y


def _clf_cases():
    def d(fx=None, fy=None):
        return lambda X, y: ((fx(X) if fx else X), (fy(y) if fy else y))
    return [
        ("X 1-D", (ValueError, "Expected 2D array"), d(lambda X: X[:, 0])),
        ("X 3-D", (ValueError, "dim 3"), d(lambda X: X[None])),
        ("y length", (ValueError, "inconsistent numbers of samples"), d(fy=lambda y: y[:-1])),
        ("y 2-D", (ValueError, "y should be a 1d array"), d(fy=lambda y: np.c_[y, y])),
        ("X wrong features", (ValueError, "X has 2 features, but DNNClassifier is expecting 3"),
         d(lambda X: X[:, :2])),
        ("m = 0", (ValueError, "0 sample"), d(lambda X: X[:0], lambda y: y[:0])),
        ("no features", (ValueError, "0 feature"), d(lambda X: X[:, :0])),
        ("NaN in X", (ValueError, "X contains NaN"), d(lambda X: np.where(X > 1, np.nan, X))),
        ("inf in X", (ValueError, "X contains infinity"), d(lambda X: np.where(X > 1, np.inf, X))),
        ("label not in classes_", (ValueError, r"y contains labels not in classes_ \['no', 'yes'\]: \['maybe'\]"),
         d(fy=lambda y: np.where(y == "yes", "maybe", y))),
        ("X complex", (ValueError, "Complex data not supported"), d(lambda X: X.astype(complex))),
        ("X non-numeric str", (ValueError, "could not convert"), d(lambda X: np.where(X > 0, "a", "b"))),
        ("X object numbers", "works", d(lambda X: X.astype(object))),
        ("X int", "works", d(lambda X: (X * 10).astype(np.int64))),
        ("X bool", "works", d(lambda X: X > 0)),
        ("X float32", "works", d(lambda X: X.astype(np.float32))),
        ("X F-ordered", "works", d(np.asfortranarray)),
        ("X negative strides", "works", d(lambda X: X[::-1, ::-1][::-1, ::-1])),
        ("X strided rows", "works", d(lambda X: np.repeat(X, 2, axis=0)[::2])),
        ("X read-only", "works", d(_readonly)),
        ("X 2**31 rows", (ValueError, "X has shape .* BLAS's 32-bit limit"),
         d(lambda X: huge_view((BIG, N0)), lambda y: np.lib.stride_tricks.as_strided(
             np.array(["no"]), shape=(BIG,), strides=(0,)))),
    ]


CLF_CASES = _clf_cases()


@pytest.mark.parametrize("method", ["partial_fit", "fit (warm start)", "predict", "predict_proba"])
@pytest.mark.parametrize("case", CLF_CASES, ids=[c[0] for c in CLF_CASES])
def test_classifier_catalogue(case, method, fitted_clf):
    import copy

    name, kind, make = case
    clf0, X, y = fitted_clf
    clf = copy.deepcopy(clf0)
    Xb, yb = make(X, y)
    if method in ("predict", "predict_proba") and name in {"y length", "y 2-D", "label not in classes_"}:
        pytest.skip("y is not an argument of prediction")
    before = params_of(clf)
    n_iter = clf.n_iter_
    call = {
        "partial_fit": lambda: clf.partial_fit(Xb, yb),
        "fit (warm start)": lambda: clf.fit(Xb, yb),
        "predict": lambda: clf.predict(Xb),
        "predict_proba": lambda: clf.predict_proba(Xb),
    }[method]
    if kind == "works":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
        if method == "predict":
            np.testing.assert_array_equal(out, clf0.predict(np.asarray(Xb, dtype=np.float64)))
        return
    error, pattern = kind
    with pytest.raises(error, match=pattern):
        call()
    assert_same_params(before, clf)
    assert clf.n_iter_ == n_iter


@pytest.mark.parametrize("params,error,pattern", [
    ({"hidden_layer_sizes": (0,)}, ValueError, r"hidden_layer_sizes\[0\] must be an integer >= 1"),
    ({"hidden_layer_sizes": (-3,)}, ValueError, r"hidden_layer_sizes\[0\] must be an integer >= 1"),
    ({"hidden_layer_sizes": (BIG,)}, ValueError, "hidden_layer_sizes exceeds BLAS's 32-bit limit"),
    ({"hidden_layer_sizes": (2.5,)}, TypeError, r"hidden_layer_sizes\[0\] must be an integer"),
    ({"learning_rate_init": -1.0}, ValueError, "learning_rate_init must be > 0"),
    ({"learning_rate_init": math.nan}, ValueError, "learning_rate_init must be finite"),
    ({"learning_rate_init": math.inf}, ValueError, "learning_rate_init must be finite"),
    ({"learning_rate_init": 10**400}, ValueError, "learning_rate_init must be finite"),
    ({"learning_rate_init": 1e300, "dtype": np.float32}, ValueError, "learning_rate = 1e\\+300 overflows float32"),
    ({"dropout": 1.0}, ValueError, "dropout must be < 1"),
    ({"dropout": -0.5}, ValueError, "dropout must be >= 0"),
    ({"dropout": math.nan}, ValueError, "dropout must be finite"),
    ({"alpha": -1.0}, ValueError, "alpha must be >= 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"solver": "lbfgs"}, ValueError, "solver must be one of"),
])
def test_classifier_hyper_parameters(params, error, pattern, fitted_clf):
    import copy

    clf0, X, y = fitted_clf
    # warm_start=True: a bad value must not touch the fitted model (a new
    # dtype is a new model, so that case starts from an unfitted one).
    clf = copy.deepcopy(clf0) if "dtype" not in params else type(clf0)(hidden_layer_sizes=(5,), max_iter=3)
    before = params_of(clf) if "dtype" not in params else None
    clf.set_params(**params)
    with pytest.raises(error, match=pattern), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    if before is not None:
        assert_same_params(before, clf)


# ====================================================================== load
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    net = Network([N0, 4, 1], seed=0)
    good = folder / "good.npz"
    net.save(good)
    with np.load(good, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("__dnnblocks__")[()]))

    def write(name, meta=meta, **changes):
        out = {**arrays, **changes}
        out = {k: v for k, v in out.items() if v is not None}
        path = folder / name
        np.savez(path, __dnnblocks__=np.array(json.dumps(meta)), **out)
        return path

    def meta_with(**network):
        m = json.loads(json.dumps(meta))
        m["network"].update(network)
        return m

    raw = good.read_bytes()
    (folder / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.npz").write_bytes(b"")
    (folder / "text.npz").write_text("a,b\n1,2\n")
    np.savez(folder / "other.npz", a=np.zeros(3))
    files = {
        "good": good,
        "truncated": folder / "truncated.npz",
        "empty": folder / "empty.npz",
        "not an npz": folder / "text.npz",
        "other npz": folder / "other.npz",
        "newer format": write("newer.npz", meta={**meta, "format_version": 99}),
        "missing W0": write("missing.npz", W0=None),
        "extra array": write("extra.npz", W9=np.zeros(2)),
        "W0 wrong shape": write("shape.npz", W0=np.zeros((2, 2))),
        "W0 float32": write("f32.npz", W0=arrays["W0"].astype(np.float32)),
        "W0 str": write("str.npz", W0=arrays["W0"].astype(str)),
        "NaN in W0": write("nan.npz", W0=arrays["W0"] * np.nan),
        "inf in b1": write("inf.npz", b1=arrays["b1"] + np.inf),
        "layer size 0": write("zero.npz", meta=meta_with(layer_dims=[N0, 0, 1])),
        "layer size -4": write("neg.npz", meta=meta_with(layer_dims=[N0, -4, 1])),
        "huge layer sizes": write("hugedims.npz", meta=meta_with(layer_dims=[60000, 60000, 1])),
        "bad dtype": write("dtype.npz", meta=meta_with(dtype="int8")),
    }
    # An array header that declares 8 TB: refused, not allocated.
    with zipfile.ZipFile(folder / "hugeheader.npz", "w") as z:
        for k, v in {**arrays, "__dnnblocks__": np.array(json.dumps(meta))}.items():
            with z.open(k + ".npy", "w") as fh:
                if k == "W0":
                    np.lib.format.write_array_header_1_0(
                        fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
                    fh.write(b"\0" * 64)
                else:
                    np.lib.format.write_array(fh, v)
    files["array header of 8 TB"] = folder / "hugeheader.npz"
    # An object array (loading it would unpickle): refused, never unpickled.
    with zipfile.ZipFile(folder / "pickled.npz", "w") as z:
        for k, v in {**arrays, "__dnnblocks__": np.array(json.dumps(meta))}.items():
            with z.open(k + ".npy", "w") as fh:
                np.lib.format.write_array(fh, np.array([{"x": 1}], dtype=object) if k == "W0" else v,
                                          allow_pickle=True)
    files["pickled object array"] = folder / "pickled.npz"
    return net, files


LOAD_CASES = [
    ("truncated", "truncated or corrupted"), ("empty", "the file is empty"),
    ("not an npz", "not a NumPy .npz archive"), ("other npz", "no '__dnnblocks__' entry"),
    ("newer format", "format 99"), ("missing W0", "'W0' is missing"),
    ("W0 wrong shape", r"W0 has shape \(2, 2\)"), ("W0 float32", "dtype float32"),
    ("W0 str", r"W0 has dtype <U\d+; the architecture says float64"), ("NaN in W0", "not finite numbers"), ("inf in b1", "not finite numbers"),
    ("layer size 0", r"layer_dims\[1\] must be an integer >= 1"),
    ("layer size -4", r"layer_dims\[1\] must be an integer >= 1"),
    ("huge layer sizes", r"W0 has shape \(4, 3\); the architecture"),
    ("bad dtype", "dtype must be float32 or float64"),
    ("array header of 8 TB", "truncated or corrupted"),
    ("pickled object array", "truncated or corrupted.*allow_pickle"),
]


@pytest.mark.parametrize("name,pattern", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_catalogue(name, pattern, model_files):
    _, files = model_files
    with pytest.raises(ModelFileError, match=pattern) as info:
        dnnblocks.load(files[name])
    assert isinstance(info.value, ValueError)


def test_load_accepts_unknown_extra_arrays_and_rejects_non_paths(model_files):
    net, files = model_files
    loaded = dnnblocks.load(files["extra array"])
    for a, b in zip(loaded.W + loaded.b, net.W + net.b):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        dnnblocks.load(None)
    with pytest.raises(FileNotFoundError):
        dnnblocks.load(files["good"].with_name("no-such-file.npz"))


# ======================================================================= CLI
def _cli_env():
    env = dict(os.environ)
    env.pop("DNNBLOCKS_DEBUG", None)
    return env


CLI_CASES = {
    # name: (argv after "dnnblocks", csv rows to write as data.csv, stderr pattern, exit status);
    # option errors too exit with status 1 (the README), not argparse's 2
    "NaN feature": (["train", "data.csv", "--target", "t"], "nan", r"column 'a' holds 'nan'", 1),
    "inf feature": (["train", "data.csv", "--target", "t"], "inf", r"column 'a' holds 'inf'", 1),
    "string feature": (["train", "data.csv", "--target", "t"], "abc", r"column 'a' holds 'abc', not a number", 1),
    "complex feature": (["train", "data.csv", "--target", "t"], "1+2j", r"not a number", 1),
    "one class": (["train", "one.csv", "--target", "t"], None, "single class", 1),
    "no rows": (["train", "empty.csv", "--target", "t"], None, "no data rows", 1),
    "layer size 0": (["train", "good.csv", "--target", "t", "--layers", "0,3"], None, "--layers", 1),
    "layer size beyond BLAS": (["train", "good.csv", "--target", "t", "--layers", "3000000000"], None,
                               "BLAS's 32-bit limit", 1),
    "learning rate NaN": (["train", "good.csv", "--target", "t", "--learning-rate", "nan"], None,
                          "--learning-rate", 1),
    "learning rate -1": (["train", "good.csv", "--target", "t", "--learning-rate", "-1"], None,
                         "--learning-rate", 1),
    "dropout 1": (["train", "good.csv", "--target", "t", "--dropout", "1"], None, "--dropout", 1),
    "label not in model": (["evaluate", "model.npz", "newlabel.csv"], None, "the model never saw", 1),
    "features missing": (["predict", "model.npz", "fewer.csv"], None, "lacks the model's feature column", 1),
    "model file corrupt": (["predict", "good.csv", "good.csv"], None, "not a dnnblocks model file", 1),
    "learning rate 1e300 (diverges)": (["train", "good.csv", "--target", "t", "--learning-rate", "1e300"], None,
                                       "cost became .*smaller learning_rate", 1),
    "learning rate 1e300, numpy backend": (["train", "good.csv", "--target", "t", "--learning-rate", "1e300",
                                            "--backend", "numpy"], None, "cost became .*smaller learning_rate", 1),
    "feature too large to standardise": (["train", "data.csv", "--target", "t"], "1e300",
                                         "column 'a' holds values too large to standardise", 1),
}

@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Run every CLI case at once, each in its own process (they run in parallel)."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")

    def write(name, rows, header="a,b,c,t"):
        (folder / name).write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))

    rows = [(*x, t) for x, t in zip(X, y)]
    write("good.csv", rows)
    write("one.csv", [(*x, "yes") for x in X])
    write("empty.csv", [])
    write("newlabel.csv", [(*x, "maybe") for x in X[:4]])
    write("fewer.csv", [(x[0], x[1], t) for x, t in zip(X, y)], header="a,b,t")
    from dnnblocks.cli import main

    assert main(["train", str(folder / "good.csv"), "--target", "t", "--epochs", "2", "-q",
                 "--out", str(folder / "model.npz")]) == 0
    procs = {}
    for name, (argv, bad_value, _, _) in CLI_CASES.items():
        case_dir = folder / name.replace(" ", "_")
        case_dir.mkdir()
        for f in folder.glob("*.*"):
            (case_dir / f.name).write_bytes(f.read_bytes())
        if bad_value is not None:
            bad_rows = list(rows)
            bad_rows[5] = (bad_value, *rows[5][1:])
            (case_dir / "data.csv").write_text(
                "a,b,c,t\n" + "".join(",".join(map(str, r)) + "\n" for r in bad_rows))
        extra = ["-q", "--epochs", "2"] if argv[0] == "train" else []
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "dnnblocks", *argv, *extra], cwd=case_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env())
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[name] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_catalogue(name, cli_results):
    status, out, err = cli_results[name]
    _, _, pattern, expected_status = CLI_CASES[name]
    assert status == expected_status, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


# ============================================ parameters changed in place
_IN_PLACE_SCRIPT = """
import numpy as np
from dnnblocks import Network, get_backend
rng = np.random.default_rng(0)
X = rng.standard_normal((3, 8)); Y = (X[:1] > 0) * 1.0
for backend in ("compiled", "numpy"):
    for change in ("resize", "reshape", "read-only"):
        net = Network([3, 4, 1], seed=0, backend=backend)
        net.step(X, Y, 0.1)  # the whole-step kernel now holds the arrays
        if change == "resize":
            net.W[0].resize((4, 30000), refcheck=False)  # moves the data: old pointer dangles
        elif change == "reshape":
            net.W[0].shape = (3, 4)
        else:
            net.W[0].flags.writeable = False
        try:
            net.step(X, Y, 0.1)
        except ValueError as exc:
            print(backend, change, "refused:", exc)
        else:
            print(backend, change, "ACCEPTED")
k = get_backend("compiled")
W = [np.ones((4, 3)), np.ones((1, 4))]
b = [np.zeros((4, 1)), np.zeros((1, 1))]
step = k.make_training_step(W, b, ["relu", "sigmoid"], 8)
step.run(X, Y, 0.1)
W[0].resize((4, 30000), refcheck=False)
try:
    step.run(X, Y, 0.1)
except ValueError as exc:
    print("TrainingStep.run refused:", exc)
"""


def test_parameters_resized_or_reshaped_in_place_are_refused_not_used():
    # Crash-prone (the whole-step kernel keeps raw pointers), so in a subprocess.
    proc = subprocess.run([sys.executable, "-c", _IN_PLACE_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    assert len(lines) == 7 and "ACCEPTED" not in proc.stdout, proc.stdout
    for line in lines[:6]:
        assert re.search(r"refused: W\[0\] (must have shape|is read-only)", line), line
    assert "TrainingStep.run refused: W and b were made read-only, reshaped or resized" in lines[6]
