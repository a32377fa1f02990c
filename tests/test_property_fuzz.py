"""Property tests and fuzzing: random shapes, dtypes, strides and values.

Three levels:

* every kernel of the compiled backend, called directly with random shapes
  (including 0 and 1), float32/float64, C/F/strided/negatively strided/
  broadcast/read-only/unaligned arrays, missing arguments and mismatched
  shapes or dtypes. A call either computes what the NumPy backend computes on
  the same values, writing nothing outside its outputs (guard cells around
  every output are checked), or raises ValueError/TypeError; when a shape or
  dtype was made inconsistent it must raise. These run in a subprocess, so a
  segfault fails the test instead of killing the test run;
* :class:`dnnblocks.Network` (prediction, cost, a training step) on random
  architectures and inputs: both backends agree, or both refuse alike;
* the course functions the same way.

``DNNBLOCKS_FUZZ_EXAMPLES=5000 python -m pytest tests/test_property_fuzz.py``
runs a longer, randomised fuzz (the default run is derandomised, so repeatable).
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnblocks import Network, TrainingDivergedError, course, get_backend

EXAMPLES = int(os.environ.get("DNNBLOCKS_FUZZ_EXAMPLES", "0"))
HYPOTHESIS = dict(
    deadline=None,
    database=None,
    derandomize=EXAMPLES == 0,
    suppress_health_check=list(HealthCheck),
)
CLEAN_ERRORS = (ValueError, TypeError)

# ------------------------------------------------------------ raw kernels
# Argument kinds: "C" input that must be C-contiguous, "CF" input that may be
# C- or F-ordered, "out" output, "io" updated in place, "opt" input or None,
# "optout" output or None. Shapes use the symbols n, k, m.
SPECS = {
    "linear_activation_forward": [("W", "C", "nk"), ("b", "C", "n1"), ("A_prev", "CF", "km"), ("act", "act", None),
                                  ("Z", "out", "nm"), ("A", "out", "nm")],
    "activation_backward": [("dA", "C", "nm"), ("Z", "C", "nm"), ("A", "opt", "nm"), ("act", "act", None),
                            ("dZ", "out", "nm"), ("db", "out", "n1"), ("scale", "scale", None)],
    "linear_backward": [("dZ", "C", "nm"), ("A_prev", "CF", "km"), ("W", "C", "nk"), ("dW", "out", "nk"),
                        ("dA_prev", "optout", "km"), ("scale", "scale", None)],
    "linear_backward_update": [("dZ", "C", "nm"), ("A_prev", "CF", "km"), ("W", "io", "nk"),
                               ("dA_prev", "optout", "km"), ("scale", "scale", None), ("lr", "scale", None),
                               ("wd", "scale", None)],
    "sigmoid_cross_entropy": [("Z", "C", "nm"), ("A", "C", "nm"), ("Y", "labels", "nm"), ("dZ", "out", "nm"),
                              ("db", "out", "n1"), ("scale", "scale", None)],
    "cross_entropy_cost": [("AL", "proba", "nm"), ("Y", "labels", "nm")],
    "gradient_descent_update": [("param", "io", "nm"), ("grad", "C", "nm"), ("lr", "scale", None)],
    "momentum_update": [("param", "io", "nm"), ("grad", "C", "nm"), ("velocity", "io", "nm"), ("lr", "scale", None),
                        ("beta", "beta", None), ("wd", "scale", None)],
    "adam_update": [("param", "io", "nm"), ("grad", "C", "nm"), ("m", "io", "nm"), ("v", "iopos", "nm"),
                    ("lr", "scale", None), ("beta1", "beta", None), ("beta2", "beta", None), ("eps", "eps", None),
                    ("t", "t", None), ("wd", "scale", None)],
    "softmax_forward": [("Z", "C", "nm"), ("A", "out", "nm")],
    "softmax_cross_entropy": [("Z", "C", "nm"), ("A", "softmax", "nm"), ("Y", "onehot", "nm"), ("dZ", "out", "nm"),
                              ("db", "out", "n1"), ("scale", "scale", None)],
    "dropout_forward": [("A", "io", "nm"), ("mask", "iodraws", "nm"), ("keep_prob", "keep", None)],
    "dropout_backward": [("dA", "io", "nm"), ("mask", "C", "nm")],
}
ARRAY_KINDS = {"C", "CF", "out", "io", "iopos", "iodraws", "opt", "optout", "labels", "proba", "onehot", "softmax"}
INPUT_KINDS = {"C", "CF", "opt", "labels", "proba", "onehot"}
GUARD = 7  # guard cells on each side of every output
SENTINEL = -12345.0


def _values(rng, kind, shape):
    if kind in ("labels",):
        return (rng.random(shape) < 0.5).astype(np.float64)
    if kind == "onehot":
        Y = np.zeros(shape)
        if shape[0] > 0:
            Y[rng.integers(0, shape[0], shape[1]), np.arange(shape[1])] = 1
        return Y
    if kind in ("proba", "iodraws"):
        return rng.uniform(0.01, 0.99, shape)
    if kind == "iopos":
        return rng.random(shape)
    return rng.standard_normal(shape) * rng.choice([1.0, 1.0, 30.0])


def _layout(x, layout, dtype, rng):
    """`x` (float64 values) as an array of `dtype` with the given memory layout."""
    x = x.astype(dtype)
    if layout == "C":
        return np.ascontiguousarray(x)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.zeros((x.shape[0], 2 * x.shape[1]), dtype)
        big[:, ::2] = x
        return big[:, ::2]
    if layout == "negative":
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    if layout == "readonly":
        y = np.ascontiguousarray(x)
        y.flags.writeable = False
        return y
    if layout == "unaligned":
        raw = np.zeros(x.size * x.itemsize + 1, np.uint8)
        y = np.ndarray(x.shape, dtype, buffer=raw, offset=1)
        y[...] = x
        return y
    if layout == "broadcast":
        row = x[:1] if x.shape[0] else x
        return np.broadcast_to(row, x.shape)
    raise AssertionError(layout)


def _guarded_output(shape, dtype, layout):
    """An output array inside a buffer whose cells around it hold a sentinel."""
    size = int(np.prod(shape))
    buf = np.full(size + 2 * GUARD, SENTINEL, dtype)
    out = buf[GUARD:GUARD + size].reshape(shape)
    if layout == "F":
        out = buf[GUARD:GUARD + size].reshape(shape[::-1]).T
    elif layout == "strided":
        buf = np.full(2 * size + 2 * GUARD, SENTINEL, dtype)
        out = buf[GUARD:GUARD + 2 * size].reshape(shape[0], 2 * shape[1])[:, ::2]
    elif layout == "readonly":
        out.flags.writeable = False
    return out, buf


def _check_guards(buf, out):
    assert (buf[:GUARD] == SENTINEL).all() and (buf[-GUARD:] == SENTINEL).all(), "wrote outside its output"


def _draw_call(data, name):
    """Draw the arguments of one call: (args for the compiled kernel, reference args, outputs, how it was broken)."""
    spec = SPECS[name]
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    low = 1 if name in ("softmax_cross_entropy",) else 0
    dims = {"n": data.draw(st.integers(low, 6), label="n"), "k": data.draw(st.integers(0, 6), label="k"),
            "m": data.draw(st.integers(0, 7), label="m"), "1": 1}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    broken = []  # what was made inconsistent: the call must then raise
    drawn = {}
    args, ref_args, outputs = [], [], []
    for arg, kind, shape_spec in spec:
        if kind in ARRAY_KINDS:
            shape = tuple(dims[c] for c in shape_spec)
            # At most one inconsistency per call, so that two cannot cancel out.
            choices = ["none"] * 8 + ["layout"] + (["shape", "dtype", "rank", "None", "int", "list"] if not broken else [])
            change = data.draw(st.sampled_from(choices), label=f"{arg} change")
            if kind in ("opt", "optout") and data.draw(st.booleans(), label=f"{arg} is None"):
                args.append(None)
                ref_args.append(None)
                continue
            values = _values(rng, kind, shape)
            if kind == "softmax" and drawn["Z"].shape == shape:
                # the kernel's contract: A is softmax(Z) of the forward pass
                z = drawn["Z"] - drawn["Z"].max(axis=0, initial=0)
                values = np.exp(z) / np.exp(z).sum(axis=0)
            drawn[arg] = values
            layout = "C"
            if change == "layout" and kind not in ("out", "optout"):
                layout = data.draw(st.sampled_from(
                    ["F", "strided", "negative", "readonly", "unaligned", "broadcast"]), label=f"{arg} layout")
                if layout == "broadcast" and shape[0]:
                    values = np.broadcast_to(values[:1], shape).copy()  # the values the view will show
            ref = np.array(values, dtype=dtype)  # the reference sees the same (rounded) values
            if change == "shape":
                axis = data.draw(st.integers(0, 1), label=f"{arg} axis")
                bad = list(shape)
                bad[axis] += 1
                shape, values = tuple(bad), _values(rng, kind, tuple(bad))
                broken.append(f"{arg} shape")
            arg_dtype = dtype
            if change == "dtype":
                arg_dtype = np.float64 if dtype == np.float32 else np.float32
                broken.append(f"{arg} dtype")
            if kind in ("out", "optout"):
                layout = data.draw(st.sampled_from(["C"] * 6 + ["F", "strided", "readonly"]), label=f"{arg} layout")
                value, buf = _guarded_output(shape, arg_dtype, layout if change == "layout" else "C")
                outputs.append((arg, value, buf, ref.shape))
                ref_value = np.zeros(ref.shape, dtype)
            else:
                value = _layout(values, layout, arg_dtype, rng)
                if kind.startswith("io"):
                    outputs.append((arg, value, None, ref.shape))
                ref_value = ref
            if change == "rank":
                value = value.reshape(-1)
                broken.append(f"{arg} rank")
            elif change == "None" and kind not in ("opt", "optout"):
                value = None
                broken.append(f"{arg} None")
            elif change == "int":
                value = np.asarray(value).astype(np.int64)
                broken.append(f"{arg} int")
            elif change == "list":
                value = np.asarray(value).tolist()
                broken.append(f"{arg} list")
            args.append(value)
            ref_args.append(ref_value)
        elif kind == "act":
            act = data.draw(st.sampled_from(["relu", "tanh", "sigmoid", "identity", "identity", "softmax", ""]),
                            label="activation")
            if act in ("softmax", ""):
                broken.append("activation")
            args.append(act)
            ref_args.append(act)
        else:
            value = {
                "scale": lambda: data.draw(st.sampled_from([0.0, 0.25, 1.0, 3.0]), label=arg),
                "beta": lambda: data.draw(st.sampled_from([0.0, 0.5, 0.9, 0.999, 1.0, -0.1]), label=arg),
                "eps": lambda: data.draw(st.sampled_from([1e-8, 1e-3]), label=arg),
                "t": lambda: data.draw(st.sampled_from([1, 2, 10, 0, -3]), label=arg),
                "keep": lambda: data.draw(st.sampled_from([0.5, 0.9, 1.0, 0.0, 1.5]), label=arg),
            }[kind]()
            if (kind == "beta" and name == "adam_update" and not 0 <= value < 1) or (kind == "t" and value < 1) \
                    or (kind == "keep" and not 0 < value <= 1):
                broken.append(arg)
            args.append(value)
            ref_args.append(value)
    return args, ref_args, outputs, broken, dtype


def _run_one(name, args, ref_args, outputs, broken, dtype):
    compiled, numpy_backend = get_backend("compiled"), get_backend("numpy")
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else None for a in args]
    try:
        result = getattr(compiled, name)(*args)
    except CLEAN_ERRORS:
        for _, value, buf, _ in outputs:
            if buf is not None:
                _check_guards(buf, value)
        return "refused"
    assert not broken, f"{name} accepted an inconsistent call: {broken}"
    # Inputs are untouched, outputs stayed inside their buffers.
    out_names = {o[0] for o in outputs}
    for (arg, kind, _), a, b in zip(SPECS[name], args, before):
        if isinstance(a, np.ndarray) and arg not in out_names:
            np.testing.assert_array_equal(a, b, err_msg=f"{name} modified its input {arg}")
    for _, value, buf, _ in outputs:
        if buf is not None:
            _check_guards(buf, value)
    ref_result = getattr(numpy_backend, name)(*ref_args)
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    if result is not None or ref_result is not None:
        assert (isinstance(result, float) and isinstance(ref_result, float)
                and (result == pytest.approx(ref_result, rel=tol["rtol"], abs=tol["atol"])
                     or (math.isnan(result) and math.isnan(ref_result)))), \
            (name, result, ref_result)
    ref_by_name = dict(zip([s[0] for s in SPECS[name]], ref_args))
    for arg, value, _, _ in outputs:
        ref = ref_by_name[arg]
        scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
        np.testing.assert_allclose(value, ref, rtol=tol["rtol"], atol=tol["atol"] * scale,
                                   err_msg=f"{name}: output {arg}")
    return "computed"


def fuzz_raw_kernels(max_examples):
    """Fuzz every compiled kernel (run in a subprocess by the test below)."""
    outcomes = {}
    for name in SPECS:
        @settings(max_examples=max_examples, **HYPOTHESIS)
        @given(st.data())
        def check(data):
            call = _draw_call(data, name)
            with np.errstate(all="ignore"):
                outcome = _run_one(name, *call)
            outcomes.setdefault(name, set()).add(outcome)
        check()
    print(outcomes)
    # Each kernel both computed and refused at least once: the fuzz reached both sides.
    for name in SPECS:
        assert outcomes.get(name) == {"computed", "refused"}, (name, outcomes.get(name))


def fuzz_training_step(max_examples):
    """The whole-step kernel: random architectures and layouts, against the NumPy step."""
    @settings(max_examples=max_examples, **HYPOTHESIS)
    @given(st.data())
    def check(data):
        dtype = data.draw(st.sampled_from([np.float32, np.float64]))
        dims = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
        dims[-1] = 1
        m = data.draw(st.integers(1, 9))
        acts = [data.draw(st.sampled_from(["relu", "tanh", "sigmoid", "identity"])) for _ in dims[2:]] + ["sigmoid"]
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        Ws = [rng.standard_normal((dims[i + 1], dims[i])).astype(dtype) for i in range(len(dims) - 1)]
        bs = [rng.standard_normal((dims[i + 1], 1)).astype(dtype) for i in range(len(dims) - 1)]
        X = rng.standard_normal((dims[0], m)).astype(dtype)
        layout = data.draw(st.sampled_from(["C", "F", "strided", "negative", "readonly", "unaligned"]))
        Xl = _layout(X, layout, dtype, rng)
        Y = (rng.random((1, m)) < 0.5).astype(dtype)
        l2 = data.draw(st.sampled_from([0.0, 0.1]))
        results = []
        for backend in ("compiled", "numpy"):
            W = [w.copy() for w in Ws]
            b = [x.copy() for x in bs]
            step = get_backend(backend).make_training_step(W, b, acts, m)
            try:
                cost = step.run(Xl if backend == "compiled" else X, Y, 0.1, l2)
            except CLEAN_ERRORS:
                assert backend == "compiled" and layout in ("strided", "negative")
                return
            results.append((cost, W, b))
        (c1, W1, b1), (c2, W2, b2) = results
        tol = 2e-3 if dtype == np.float32 else 1e-9
        assert c1 == pytest.approx(c2, rel=tol, abs=tol)
        for a, e in zip(W1 + b1, W2 + b2):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    check()


def _in_subprocess(function, examples):
    code = (f"import runpy, sys; ns = runpy.run_path(sys.argv[1], run_name='fuzz'); "
            f"ns[{function!r}](int(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, __file__, str(examples)], capture_output=True, text=True,
                          timeout=3600)
    crashed = proc.returncode < 0
    assert proc.returncode == 0, (
        f"{'CRASHED with signal ' + str(-proc.returncode) if crashed else 'failed'}\n"
        f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    )


def test_fuzz_every_compiled_kernel_in_a_subprocess():
    _in_subprocess("fuzz_raw_kernels", EXAMPLES or 120)


def test_fuzz_the_whole_training_step_in_a_subprocess():
    _in_subprocess("fuzz_training_step", EXAMPLES or 120)


def test_the_fuzz_harness_reports_a_crash_as_a_failure(tmp_path):
    # The subprocess wrapper itself: a segfault is a failed test with its signal.
    victim = tmp_path / "crash.py"
    victim.write_text("import ctypes\ndef boom(n):\n    ctypes.string_at(0)\n")
    code = "import runpy, sys; ns = runpy.run_path(sys.argv[1]); ns['boom'](0)"
    proc = subprocess.run([sys.executable, "-c", code, str(victim)], capture_output=True)
    assert proc.returncode < 0  # killed by a signal, reported, not propagated


# ------------------------------------------------------------ Network level
LAYOUTS = ["C", "F", "strided", "negative", "readonly", "unaligned"]


@settings(max_examples=EXAMPLES or 60, **HYPOTHESIS)
@given(st.data())
def test_network_backends_agree_on_random_architectures(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    output = data.draw(st.sampled_from(["sigmoid", "softmax"]))
    dims = data.draw(st.lists(st.integers(1, 7), min_size=2, max_size=4))
    if output == "softmax":
        dims[-1] = max(2, dims[-1])
    act = data.draw(st.sampled_from(["relu", "tanh", "sigmoid"]))
    m = data.draw(st.integers(1, 12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((dims[0], m)) * data.draw(st.sampled_from([1.0, 100.0]))
    X = _layout(X, data.draw(st.sampled_from(LAYOUTS)), dtype, rng)
    if output == "sigmoid":
        Y = (rng.random((dims[-1], m)) < 0.5).astype(np.int64)
    else:
        Y = np.eye(dims[-1], dtype=np.int64)[:, rng.integers(0, dims[-1], m)]
    # Not Adam here: its step is about sign(gradient), and float rounding can
    # flip the sign of a near-zero gradient between two correct backends.
    optimizer = data.draw(st.sampled_from([None, "momentum"]))
    dropout = data.draw(st.sampled_from([0.0, 0.0, 0.3]))
    results = {}
    for backend in ("compiled", "numpy"):
        net = Network(dims, hidden_activation=act, dtype=dtype, backend=backend, seed=1, output=output)
        from dnnblocks.optimizers import get_optimizer

        opt = get_optimizer(optimizer) if optimizer else None
        with np.errstate(all="ignore"):
            proba = net.predict_proba(X)
            cost = net.cost(X, Y)
            step_cost = net.step(X, Y, 0.05, optimizer=opt, dropout=dropout, rng=np.random.default_rng(5))
        results[backend] = (proba, cost, step_cost, [p.copy() for p in net.W + net.b])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    (p1, c1, s1, w1), (p2, c2, s2, w2) = results["compiled"], results["numpy"]
    np.testing.assert_allclose(p1, p2, rtol=tol, atol=tol)
    assert c1 == pytest.approx(c2, rel=tol, abs=tol) and s1 == pytest.approx(s2, rel=tol, abs=tol)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)


BAD_X = ["nan", "inf", "int", "other float", "rank", "rows", "empty", "object", "complex", "list", "huge"]


@settings(max_examples=EXAMPLES or 60, **HYPOTHESIS)
@given(st.sampled_from(BAD_X), st.sampled_from(["compiled", "numpy"]), st.sampled_from([np.float32, np.float64]),
       st.sampled_from(["step", "predict_proba", "cost", "fit"]))
def test_network_refuses_bad_X_alike_and_stays_unchanged(bad, backend, dtype, method):
    net = Network([4, 5, 1], dtype=dtype, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 6)).astype(dtype)
    Y = np.array([[0, 1, 0, 1, 1, 0]])
    X = {
        "nan": np.where(X > 0.5, np.nan, X).astype(dtype), "inf": np.where(X > 0.5, -np.inf, X).astype(dtype),
        "int": X.astype(np.int32), "other float": X.astype(np.float64 if dtype == np.float32 else np.float32),
        "rank": X[None], "rows": X[:3], "empty": X[:, :0], "object": X.astype(object),
        "complex": X.astype(np.complex64), "list": X.tolist(),
        "huge": np.lib.stride_tricks.as_strided(X, shape=(4, 2**31), strides=(X.strides[0], 0)),
    }[bad]
    before = [p.copy() for p in net.W + net.b]
    call = {"step": lambda: net.step(X, Y, 0.1), "predict_proba": lambda: net.predict_proba(X),
            "cost": lambda: net.cost(X, Y), "fit": lambda: net.fit(X, Y, epochs=1)}[method]
    with pytest.raises(CLEAN_ERRORS, match="X"):
        call()
    for a, b in zip(before, net.W + net.b):
        np.testing.assert_array_equal(b, a)


# ------------------------------------------------------------- course level
@settings(max_examples=EXAMPLES or 40, **HYPOTHESIS)
@given(st.data())
def test_course_backends_agree_on_random_models(data):
    dims = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    dims[-1] = 1
    m = data.draw(st.integers(1, 10))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    P = {}
    for l in range(1, len(dims)):
        P[f"W{l}"] = rng.standard_normal((dims[l], dims[l - 1]))
        P[f"b{l}"] = rng.standard_normal((dims[l], 1))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    P = {k: v.astype(dtype) for k, v in P.items()}
    X = _layout(rng.standard_normal((dims[0], m)), data.draw(st.sampled_from(LAYOUTS)), dtype, rng)
    Y = (rng.random((1, m)) < 0.5).astype(np.int64)
    act = data.draw(st.sampled_from(["relu", "tanh", "sigmoid"]))
    out = {}
    for backend in ("compiled", "numpy"):
        with np.errstate(all="ignore"):
            AL, caches = course.L_model_forward(X, P, backend=backend, hidden_activation=act)
            cost = course.compute_cost(AL, Y, backend=backend)
            grads = course.L_model_backward(AL, Y, caches, backend=backend, hidden_activation=act)
            new = course.update_parameters(P, grads, 0.1, backend=backend)
        out[backend] = (AL, cost, grads, new)
    tol = 2e-3 if dtype == np.float32 else 1e-8
    (a1, c1, g1, n1), (a2, c2, g2, n2) = out["compiled"], out["numpy"]
    np.testing.assert_allclose(a1, a2, rtol=tol, atol=tol)
    assert c1 == pytest.approx(c2, rel=tol, abs=tol) or (math.isinf(c1) and c1 == c2)
    for key in n1:
        np.testing.assert_allclose(n1[key], n2[key], rtol=tol, atol=tol)
