"""Bad input: the documented errors, naming the argument, and nothing half-done."""

import math

import numpy as np
import pytest

from dnnblocks import Network, TrainingDivergedError, course


def make_net(backend="compiled", dtype=np.float64, **kw):
    return Network([3, 4, 1], backend=backend, dtype=dtype, seed=0, **kw)


def good_data(m=6, dtype=np.float64):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, m)).astype(dtype)
    Y = np.array([[0, 1] * (m // 2)])
    return X, Y


def snapshot(net):
    return [a.copy() for a in net.W + net.b]


def assert_unchanged(net, snap):
    for before, after in zip(snap, net.W + net.b):
        np.testing.assert_array_equal(after, before)


# --------------------------------------------------------------- constructor
@pytest.mark.parametrize("layer_dims,error", [
    ([], ValueError), ([3], ValueError), ((5,), ValueError),
    ([3, 0, 1], ValueError), ([3, 4, 0], ValueError), ([0, 4, 1], ValueError),
    ([3, -2, 1], ValueError), ([3, 2.0, 1], TypeError), ([3, 2.5, 1], TypeError),
    ([3, True, 1], TypeError), ([3, "4", 1], TypeError), ([3, None, 1], TypeError),
    ("341", TypeError), (None, TypeError), (5, TypeError),
], ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__)
def test_bad_layer_dims(layer_dims, error):
    with pytest.raises(error, match="layer_dims"):
        Network(layer_dims)


@pytest.mark.parametrize("value", ["float", "float32", "f8", None, np.dtype(np.float32), float])
def test_dtype_spellings_numpy_understands(value):
    # None and "float" mean float64 to NumPy, so they do here.
    assert Network([3, 1], dtype=value).dtype == np.dtype(value)


def test_layer_dims_accepts_numpy_integers_and_tuples():
    net = Network(np.array([3, 4, 1]))
    assert net.layer_dims == (3, 4, 1) and all(type(n) is int for n in net.layer_dims)
    assert Network((2, 1)).layer_dims == (2, 1)


@pytest.mark.parametrize("value", ["identity", "softmax", "ReLU", "", None, 1, ("relu",)])
def test_bad_hidden_activation(value):
    with pytest.raises(ValueError, match="hidden_activation"):
        Network([3, 4, 1], hidden_activation=value)


@pytest.mark.parametrize("value", ["kaiming", "He", "", None, 0.01])
def test_bad_init(value):
    with pytest.raises(ValueError, match="init"):
        Network([3, 4, 1], init=value)


@pytest.mark.parametrize("value", ["cuda", "Compiled", "", None, 1])
def test_bad_backend(value):
    with pytest.raises(ValueError, match="backend"):
        Network([3, 4, 1], backend=value)


@pytest.mark.parametrize("value", [np.float16, np.int32, int, np.complex128, object, "not-a-dtype", np.float128
                                   if hasattr(np, "float128") else "f16"])
def test_bad_dtype(value):
    with pytest.raises(TypeError, match="dtype"):
        Network([3, 4, 1], dtype=value)


# -------------------------------------------------------------------- X
BAD_X = {
    "wrong rows": (np.ones((4, 6)), ValueError),
    "transposed": (np.ones((6, 3)), ValueError),
    "1-D": (np.ones(3), ValueError),
    "3-D": (np.ones((3, 6, 1)), ValueError),
    "no examples": (np.ones((3, 0)), ValueError),
    "NaN": (np.where(np.eye(3, 6) > 0, np.nan, 1.0), ValueError),
    "inf": (np.full((3, 6), np.inf), ValueError),
    "-inf": (np.where(np.eye(3, 6) > 0, -np.inf, 1.0), ValueError),
    "float32": (np.ones((3, 6), np.float32), TypeError),
    "int": (np.ones((3, 6), np.int64), TypeError),
    "bool": (np.ones((3, 6), bool), TypeError),
    "object": (np.ones((3, 6), object), TypeError),
    "complex": (np.ones((3, 6), np.complex128), TypeError),
    "string": (np.full((3, 6), "1"), TypeError),
    "list": ([[1.0] * 6] * 3, TypeError),
}


@pytest.mark.parametrize("case", list(BAD_X), ids=list(BAD_X))
def test_bad_X_everywhere(backend, case):
    X, error = BAD_X[case]
    net = make_net(backend)
    Xg, Y = good_data()
    net.step(Xg, Y, 0.1)  # a trained, cached state to protect
    snap = snapshot(net)
    cached = net.caches[0][0][0]
    m = 6 if np.ndim(X) >= 2 and np.shape(X)[1] == 6 else np.shape(X)[-1]
    Yb = np.array([[0, 1] * 3])[:, :m] if m else np.zeros((1, 0))
    calls = {
        "forward": lambda: net.forward(X),
        "step": lambda: net.step(X, Yb, 0.1),
        "predict_proba": lambda: net.predict_proba(X),
        "predict": lambda: net.predict(X),
        "cost": lambda: net.cost(X, Yb),
    }
    for name, call in calls.items():
        with pytest.raises(error, match="X") as info:
            call()
        assert "X" in str(info.value), (name, str(info.value))
        assert_unchanged(net, snap)
        assert net.caches[0][0][0] is cached, name


def test_float64_X_to_a_float32_network(backend):
    net = make_net(backend, dtype=np.float32)
    X, Y = good_data()
    with pytest.raises(TypeError, match="X.*float64.*float32"):
        net.step(X, Y, 0.1)
    net.step(X.astype(np.float32), Y, 0.1)


def test_dtype_mismatch_message_says_how_to_convert():
    with pytest.raises(TypeError, match=r"astype"):
        make_net().forward(np.ones((3, 2), np.float32))


# -------------------------------------------------------------------- Y
BAD_Y = {
    "label 2": (np.array([[0, 1, 2, 0, 1, 0]]), ValueError),
    "label -1": (np.array([[0, 1, -1, 0, 1, 0]]), ValueError),
    "label 0.5": (np.array([[0, 1, 0.5, 0, 1, 0]]), ValueError),
    "NaN": (np.array([[0, 1, np.nan, 0, 1, 0]]), ValueError),
    "inf": (np.array([[0, 1, np.inf, 0, 1, 0]]), ValueError),
    "too few": (np.array([[0, 1, 0, 1, 0]]), ValueError),
    "too many": (np.zeros((1, 7)), ValueError),
    "two rows": (np.zeros((2, 6)), ValueError),
    "column": (np.zeros((6, 1)), ValueError),
    "1-D wrong length": (np.zeros(5), ValueError),
    "3-D": (np.zeros((1, 6, 1)), ValueError),
    "strings": (np.array([["0", "1", "0", "1", "0", "1"]]), TypeError),
    "object": (np.array([[0, 1, 0, 1, 0, 1]], dtype=object), TypeError),
}


@pytest.mark.parametrize("case", list(BAD_Y), ids=list(BAD_Y))
def test_bad_Y(backend, case):
    Y, error = BAD_Y[case]
    net = make_net(backend)
    X, _ = good_data()
    snap = snapshot(net)
    with pytest.raises(error, match="Y"):
        net.step(X, Y, 0.1)
    assert_unchanged(net, snap)
    with pytest.raises(error, match="Y"):
        net.cost(X, Y)
    net.forward(X)
    with pytest.raises(error, match="Y"):
        net.backward(Y)
    # A failed backward leaves no gradients to apply.
    with pytest.raises(RuntimeError):
        net.update(0.1)
    assert_unchanged(net, snap)


def test_label_forms_that_are_accepted(backend):
    X, Y = good_data()
    costs = []
    for form in (Y, Y.astype(float), Y.astype(bool), Y.astype(np.float32), Y.ravel(), Y.tolist(),
                 np.asfortranarray(Y), Y.astype(np.uint8)):
        net = make_net(backend)
        costs.append(net.step(X, form, 0.1))
    assert all(c == costs[0] for c in costs)


# ---------------------------------------------------------- learning rate
@pytest.mark.parametrize("lr,error", [
    (0, ValueError), (0.0, ValueError), (-0.1, ValueError), (math.nan, ValueError),
    (math.inf, ValueError), (-math.inf, ValueError), (np.float64(np.nan), ValueError),
    ("0.1", TypeError), (None, TypeError), (True, TypeError), ([0.1], TypeError), (1j, TypeError),
], ids=repr)
def test_bad_learning_rate(backend, lr, error):
    net = make_net(backend)
    X, Y = good_data()
    snap = snapshot(net)
    with pytest.raises(error, match="learning_rate"):
        net.step(X, Y, lr)
    assert_unchanged(net, snap)
    net.forward(X)
    net.backward(Y)
    with pytest.raises(error, match="learning_rate"):
        net.update(lr)
    assert_unchanged(net, snap)
    # The gradients are still there for a correct call.
    net.update(0.1)
    assert not np.array_equal(net.W[0], snap[0])


def test_numpy_scalar_learning_rates_are_fine(backend):
    X, Y = good_data()
    for lr in (np.float32(0.1), np.float64(0.1), np.int64(1), 1):
        make_net(backend).step(X, Y, lr)


# ------------------------------------------------------------- call order
def test_backward_before_forward(backend):
    net = make_net(backend)
    _, Y = good_data()
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(Y)


def test_update_before_backward(backend):
    net = make_net(backend)
    X, Y = good_data()
    snap = snapshot(net)
    with pytest.raises(RuntimeError, match="backward"):
        net.update(0.1)
    net.forward(X)
    with pytest.raises(RuntimeError, match="backward"):
        net.update(0.1)
    assert_unchanged(net, snap)


def test_gradients_are_used_once(backend):
    net = make_net(backend)
    X, Y = good_data()
    net.forward(X)
    net.backward(Y)
    net.update(0.1)
    snap = snapshot(net)
    with pytest.raises(RuntimeError):
        net.update(0.1)
    assert_unchanged(net, snap)
    # A forward pass makes old gradients stale too.
    net.backward(Y)
    net.forward(X)
    with pytest.raises(RuntimeError):
        net.update(0.1)
    with pytest.raises(RuntimeError):
        net.grads


def test_grads_and_caches_before_they_exist(backend):
    net = make_net(backend)
    with pytest.raises(RuntimeError):
        net.grads
    with pytest.raises(RuntimeError):
        net.caches
    X, Y = good_data()
    net.step(X, Y, 0.1)
    # The fused step never stores dW, so there are no gradients to show.
    with pytest.raises(RuntimeError):
        net.grads
    assert len(net.caches) == 2


# ------------------------------------------------------- non-finite values
def test_nan_weights_propagate_to_the_output(backend):
    # relu(NaN) must stay NaN (as np.maximum gives), or a diverged network
    # would hide its NaN weights behind zeros.
    net = make_net(backend)
    net.W[0][0, 0] = np.nan
    X, Y = good_data()
    with np.errstate(invalid="ignore"):
        assert np.isnan(net.forward(X)).all()
        assert math.isnan(net.cost(X, Y))


def test_nan_written_into_a_remembered_X_is_caught(backend):
    # step() does not re-scan an X it has already validated; a NaN written
    # into it afterwards must still stop training with the parameters intact.
    net = Network([3, 5, 4, 1], backend=backend, seed=0)
    X, Y = good_data()
    net.step(X, Y, 0.1)
    X[1, 2] = np.nan
    snap = snapshot(net)
    with pytest.raises(TrainingDivergedError), np.errstate(invalid="ignore"):
        net.step(X, Y, 0.1)
    assert_unchanged(net, snap)


# ----------------------------------------------------------------- course
def _course_params():
    rng = np.random.default_rng(1)
    return {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal((4, 1)),
            "W2": rng.standard_normal((1, 4)), "b2": rng.standard_normal((1, 1))}


@pytest.mark.parametrize("change", ["missing b2", "extra W3", "lower-case", "empty", "W2 only", "not a dict"])
def test_course_rejects_bad_parameter_keys(backend, change):
    p = _course_params()
    if change == "missing b2":
        del p["b2"]
    elif change == "extra W3":
        p["W3"] = np.ones((1, 1))
    elif change == "lower-case":
        p["w1"] = p.pop("W1")
    elif change == "empty":
        p = {}
    elif change == "W2 only":
        p = {"W2": p["W2"], "b2": p["b2"]}
    else:
        p = list(p.values())
    X = np.ones((3, 5))
    error = TypeError if change == "not a dict" else ValueError
    with pytest.raises(error, match="parameters"):
        course.L_model_forward(X, p, backend=backend)
    with pytest.raises(error, match="parameters"):
        course.update_parameters(p, {}, 0.1, backend=backend)


@pytest.mark.parametrize("case", ["X rows", "W2 columns", "b1 rows", "b1 row vector", "b2 (1, m)", "X 1-D"])
def test_course_forward_rejects_bad_shapes(backend, case):
    p = _course_params()
    X = np.ones((3, 5))
    name = case.split()[0]
    if case == "X rows":
        X = np.ones((2, 5))
        name = "A_prev"
    elif case == "W2 columns":
        p["W2"] = np.ones((1, 3))
        name = "A_prev"
    elif case == "b1 rows":
        p["b1"] = np.ones((3, 1))
        name = "b"
    elif case == "b1 row vector":
        p["b1"] = np.ones((1, 4))
        name = "b"
    elif case == "b2 (1, m)":
        p["b2"] = np.ones((1, 5))  # would broadcast in NumPy
        name = "b"
    else:
        X = np.ones(3)
        name = "A_prev"
    with pytest.raises(ValueError, match=name):
        course.L_model_forward(X, p, backend=backend)


def test_course_layer_functions_reject_bad_shapes(backend):
    rng = np.random.default_rng(2)
    A_prev, W, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 4)), rng.standard_normal((3, 1))
    Z = W @ A_prev + b
    with pytest.raises(ValueError, match="b"):
        course.linear_forward(A_prev, W, np.ones((1, 1)), backend=backend)
    with pytest.raises(ValueError, match="activation"):
        course.linear_activation_forward(A_prev, W, b, "softmax", backend=backend)
    with pytest.raises(ValueError, match="activation"):
        course.linear_activation_backward(np.ones_like(Z), ((A_prev, W, b), Z), "leaky", backend=backend)
    # dA of one row would broadcast against Z in NumPy.
    with pytest.raises(ValueError, match="dA"):
        course.linear_activation_backward(np.ones((1, 5)), ((A_prev, W, b), Z), "relu", backend=backend)
    with pytest.raises(ValueError, match="Z"):
        course.linear_activation_backward(np.ones((3, 4)), ((A_prev, W, b), Z[:, :4]), "relu", backend=backend)
    with pytest.raises(ValueError, match="A_prev"):
        course.linear_activation_backward(np.ones_like(Z), ((A_prev[:3], W, b), Z), "relu", backend=backend)
    with pytest.raises(ValueError, match="b"):
        course.linear_activation_backward(np.ones_like(Z), ((A_prev, W, b[:2]), Z), "sigmoid", backend=backend)
    with pytest.raises(ValueError, match="dZ"):
        course.linear_backward(np.ones((2, 5)), (A_prev, W, b), backend=backend)
    with pytest.raises(ValueError, match="dZ"):
        course.linear_backward(np.ones((3, 4)), (A_prev, W, b), backend=backend)
    with pytest.raises(ValueError, match="A_prev"):
        course.linear_backward(np.ones((3, 5)), (A_prev[:2], W, b), backend=backend)
    with pytest.raises(ValueError, match="Y"):
        course.compute_cost(np.full((1, 3), 0.5), np.ones((1, 4)), backend=backend)
    with pytest.raises(TypeError, match="AL"):
        course.compute_cost(np.full((1, 3), "a"), np.ones((1, 3)), backend=backend)


def test_course_backward_and_update_reject_bad_input(backend):
    p = _course_params()
    X = np.random.default_rng(3).standard_normal((3, 5))
    AL, caches = course.L_model_forward(X, p, backend=backend)
    with pytest.raises(ValueError, match="Y"):
        course.L_model_backward(AL, np.ones((1, 4)), caches, backend=backend)
    with pytest.raises(ValueError, match="caches"):
        course.L_model_backward(AL, np.ones((1, 5)), [], backend=backend)
    grads = course.L_model_backward(AL, np.array([[1, 0, 1, 0, 1]]), caches, backend=backend)
    originals = {k: v.copy() for k, v in p.items()}
    with pytest.raises(ValueError, match="db2"):
        course.update_parameters(p, {k: v for k, v in grads.items() if k != "db2"}, 0.1, backend=backend)
    with pytest.raises(ValueError, match="dW1"):
        course.update_parameters(p, dict(grads, dW1=grads["dW1"].T), 0.1, backend=backend)
    for lr, error in ((0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("0.1", TypeError)):
        with pytest.raises(error, match="learning_rate"):
            course.update_parameters(p, grads, lr, backend=backend)
    for k, v in originals.items():
        np.testing.assert_array_equal(p[k], v)


def test_course_model_rejects_bad_hyper_parameters(backend):
    X = np.random.default_rng(4).standard_normal((3, 6))
    Y = np.array([[0, 1, 0, 1, 1, 0]])
    with pytest.raises(ValueError, match="num_iterations"):
        course.L_layer_model(X, Y, [3, 2, 1], 0.1, -1, backend=backend)
    with pytest.raises(TypeError, match="num_iterations"):
        course.L_layer_model(X, Y, [3, 2, 1], 0.1, 2.5, backend=backend)
    with pytest.raises(ValueError, match="learning_rate"):
        course.L_layer_model(X, Y, [3, 2, 1], -0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="layer_dims"):
        course.L_layer_model(X, Y, [3], 0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="X"):
        course.L_layer_model(X, Y, [4, 2, 1], 0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="Y"):
        course.L_layer_model(X, np.full((1, 6), 2), [3, 2, 1], 0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="Y"):
        course.L_layer_model(X, Y[:, :5], [3, 2, 1], 0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="X"):
        course.L_layer_model(np.full((3, 6), np.nan), Y, [3, 2, 1], 0.1, 2, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        course.L_layer_model(X, Y, [3, 2, 1], 0.1, 2, backend="gpu")
    with pytest.raises(ValueError, match="layer_dims"):
        course.initialize_parameters_deep([5])


def test_activation_names_from_numpy_arrays_are_accepted(backend):
    # Names read from an array or a file arrive as numpy.str_, a str subclass.
    from dnnblocks import Network, course, get_backend

    rng = np.random.default_rng(0)
    A, W, b = rng.standard_normal((3, 5)), rng.standard_normal((2, 3)), rng.standard_normal((2, 1))
    for name in np.array(["relu", "tanh", "sigmoid"]):
        got, _ = course.linear_activation_forward(A, W, b, name, backend=backend)
        want, _ = course.linear_activation_forward(A, W, b, str(name), backend=backend)
        np.testing.assert_array_equal(got, want)
    net = Network([3, 2, 1], hidden_activation=np.str_("tanh"), backend=backend, seed=0)
    assert type(net.hidden_activation) is str
    ref = Network([3, 2, 1], hidden_activation="tanh", backend=backend, seed=0)
    Y = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]])
    assert net.step(A, Y, 0.1) == ref.step(A, Y, 0.1)
    Ws, bs = [w.copy() for w in ref.W], [v.copy() for v in ref.b]
    step = get_backend(backend).make_training_step(Ws, bs, np.array(["tanh", "sigmoid"]), 5)
    assert step.run(A, Y, 0.1) == pytest.approx(ref.step(A, Y, 0.1), rel=1e-12)
    with pytest.raises((TypeError, ValueError), match="activation"):
        get_backend(backend).make_training_step(Ws, bs, [3, "sigmoid"], 5)


def test_encode_labels_binary_multiclass_and_unknown():
    from dnnblocks._validation import encode_labels

    Y = encode_labels(np.array(["no", "yes", "yes"]), np.array(["no", "yes"]), np.float32)
    assert Y.dtype == np.float32 and Y.tolist() == [[0.0, 1.0, 1.0]]
    Y = encode_labels(np.array([3, 1, 2, 3]), np.array([1, 2, 3]), np.float64)
    np.testing.assert_array_equal(Y, [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]])
    with pytest.raises(ValueError, match=r"not in classes_ \[1, 2, 3\]: \[0, 7\] \(row block 2\)"):
        encode_labels(np.array([7, 1, 0]), np.array([1, 2, 3]), np.float64, " (row block 2)")
