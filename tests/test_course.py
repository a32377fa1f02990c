"""`dnnblocks.course` against the course's own test cases and published outputs.

The test cases are rebuilt here exactly as the course's testCases_v4a.py /
public_tests.py build them (same seeds, same order of ``np.random.randn``
calls); the expected arrays are the notebooks' printed outputs, compared at
their printed precision (8 decimals, so ``atol=1e-8``). The cat-vs-non-cat
cost curve is compared with the full-precision values the newest notebook
prints.
"""

import contextlib
import math
import re

import numpy as np
import pytest

from dnnblocks import course

ATOL = 1e-8  # the notebooks print 8 decimals


def assert_published(actual, expected, atol=ATOL):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# ------------------------------------------------- the course's test cases
def linear_forward_test_case():
    np.random.seed(1)
    A = np.random.randn(3, 2)
    W = np.random.randn(1, 3)
    b = np.random.randn(1, 1)
    return A, W, b


def linear_activation_forward_test_case():
    np.random.seed(2)
    A_prev = np.random.randn(3, 2)
    W = np.random.randn(1, 3)
    b = np.random.randn(1, 1)
    return A_prev, W, b


def L_model_forward_test_case_2hidden():
    np.random.seed(6)
    X = np.random.randn(5, 4)
    W1 = np.random.randn(4, 5)
    b1 = np.random.randn(4, 1)
    W2 = np.random.randn(3, 4)
    b2 = np.random.randn(3, 1)
    W3 = np.random.randn(1, 3)
    b3 = np.random.randn(1, 1)
    return X, {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}


def L_model_forward_test_case():
    np.random.seed(1)
    X = np.random.randn(4, 2)
    W1 = np.random.randn(3, 4)
    b1 = np.random.randn(3, 1)
    W2 = np.random.randn(1, 3)
    b2 = np.random.randn(1, 1)
    return X, {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


def linear_backward_test_case():
    np.random.seed(1)
    dZ = np.random.randn(3, 4)
    A = np.random.randn(5, 4)
    W = np.random.randn(3, 5)
    b = np.random.randn(3, 1)
    return dZ, (A, W, b)


def linear_backward_test_case_v3():
    np.random.seed(1)
    dZ = np.random.randn(1, 2)
    A = np.random.randn(3, 2)
    W = np.random.randn(1, 3)
    b = np.random.randn(1, 1)
    return dZ, (A, W, b)


def linear_activation_backward_test_case():
    np.random.seed(2)
    dA = np.random.randn(1, 2)
    A = np.random.randn(3, 2)
    W = np.random.randn(1, 3)
    b = np.random.randn(1, 1)
    Z = np.random.randn(1, 2)
    return dA, ((A, W, b), Z)


def L_model_backward_test_case():
    np.random.seed(3)
    AL = np.random.randn(1, 2)
    Y = np.array([[1, 0]])
    A1 = np.random.randn(4, 2)
    W1 = np.random.randn(3, 4)
    b1 = np.random.randn(3, 1)
    Z1 = np.random.randn(3, 2)
    A2 = np.random.randn(3, 2)
    W2 = np.random.randn(1, 3)
    b2 = np.random.randn(1, 1)
    Z2 = np.random.randn(1, 2)
    caches = (((A1, W1, b1), Z1), ((A2, W2, b2), Z2))
    return AL, Y, caches


def update_parameters_test_case():
    np.random.seed(2)
    W1 = np.random.randn(3, 4)
    b1 = np.random.randn(3, 1)
    W2 = np.random.randn(1, 3)
    b2 = np.random.randn(1, 1)
    parameters = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    np.random.seed(3)
    dW1 = np.random.randn(3, 4)
    db1 = np.random.randn(3, 1)
    dW2 = np.random.randn(1, 3)
    db2 = np.random.randn(1, 1)
    grads = {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2}
    return parameters, grads


# ---------------------------------------------------------- initialisation
def test_initialize_parameters_deep_5_4_3():
    np.random.seed(0)  # the function seeds the global generator itself (seed 3)
    p = course.initialize_parameters_deep([5, 4, 3])
    assert sorted(p) == ["W1", "W2", "b1", "b2"]
    assert_published(p["W1"], [
        [0.01788628, 0.0043651, 0.00096497, -0.01863493, -0.00277388],
        [-0.00354759, -0.00082741, -0.00627001, -0.00043818, -0.00477218],
        [-0.01313865, 0.00884622, 0.00881318, 0.01709573, 0.00050034],
        [-0.00404677, -0.0054536, -0.01546477, 0.00982367, -0.01101068]])
    assert_published(p["W2"], [
        [-0.01185047, -0.0020565, 0.01486148, 0.00236716],
        [-0.01023785, -0.00712993, 0.00625245, -0.00160513],
        [-0.00768836, -0.00230031, 0.00745056, 0.01976111]])
    np.testing.assert_array_equal(p["b1"], np.zeros((4, 1)))
    np.testing.assert_array_equal(p["b2"], np.zeros((3, 1)))
    assert all(v.dtype == np.float64 for v in p.values())


def test_initialize_parameters_deep_4_3_2():
    p = course.initialize_parameters_deep([4, 3, 2])
    assert_published(p["W1"], [
        [0.01788628, 0.0043651, 0.00096497, -0.01863493],
        [-0.00277388, -0.00354759, -0.00082741, -0.00627001],
        [-0.00043818, -0.00477218, -0.01313865, 0.00884622]])
    assert_published(p["W2"], [[0.00881318, 0.01709573, 0.00050034],
                               [-0.00404677, -0.0054536, -0.01546477]])
    assert p["b1"].shape == (3, 1) and p["b2"].shape == (2, 1)


# ------------------------------------------------------------------ forward
def test_linear_forward(backend):
    A, W, b = linear_forward_test_case()
    Z, cache = course.linear_forward(A, W, b, backend=backend)
    assert_published(Z, [[3.26295337, -1.23429987]])
    assert isinstance(cache, tuple) and len(cache) == 3
    assert cache[0] is A and cache[1] is W and cache[2] is b


def test_linear_activation_forward(backend):
    A_prev, W, b = linear_activation_forward_test_case()
    A, cache = course.linear_activation_forward(A_prev, W, b, activation="sigmoid", backend=backend)
    assert_published(A, [[0.96890023, 0.11013289]])
    A, cache = course.linear_activation_forward(A_prev, W, b, activation="relu", backend=backend)
    assert_published(A, [[3.43896131, 0.0]])
    (linear_cache, Z) = cache
    assert_published(Z, [[3.43896131, -2.08938436]])
    assert linear_cache[0] is A_prev and linear_cache[1] is W and linear_cache[2] is b


def test_L_model_forward_2hidden(backend):
    X, parameters = L_model_forward_test_case_2hidden()
    AL, caches = course.L_model_forward(X, parameters, backend=backend)
    assert_published(AL, [[0.03921668, 0.70498921, 0.19734387, 0.04728177]])
    assert len(caches) == 3
    (A_prev, W3, b3), Z3 = caches[2]
    assert_published(Z3, [[-3.19864676, 0.87117055, -1.40297864, -3.00319435]])
    assert_published(W3, [[0.9398248, 0.42628539, -0.75815703]])
    assert_published(b3, [[-0.16236698]])
    # The layout is ((A_prev, W, b), Z) per layer and chains: A_prev of a
    # layer is the relu of the previous layer's Z.
    assert caches[0][0][0] is X
    for l in range(1, 3):
        np.testing.assert_allclose(caches[l][0][0], np.maximum(caches[l - 1][1], 0), rtol=1e-15)
        assert caches[l][0][1] is parameters[f"W{l + 1}"]


def test_L_model_forward_2layer(backend):
    X, parameters = L_model_forward_test_case()
    AL, caches = course.L_model_forward(X, parameters, backend=backend)
    assert_published(AL, [[0.17007265, 0.2524272]])
    assert len(caches) == 2


def test_compute_cost(backend):
    cost = course.compute_cost(np.array([[0.8, 0.9, 0.4]]), np.asarray([[1, 1, 0]]), backend=backend)
    assert np.ndim(cost) == 0
    assert float(cost) == pytest.approx(0.2797765635793422, rel=1e-14)
    # The older test case (all labels 1).
    cost = course.compute_cost(np.array([[0.8, 0.9, 0.4]]), np.asarray([[1, 1, 1]]), backend=backend)
    assert float(cost) == pytest.approx(0.41493159961539694, rel=1e-14)


# ----------------------------------------------------------------- backward
def test_linear_backward(backend):
    dZ, linear_cache = linear_backward_test_case()
    dA_prev, dW, db = course.linear_backward(dZ, linear_cache, backend=backend)
    assert_published(dA_prev, [
        [-1.15171336, 0.06718465, -0.3204696, 2.09812712],
        [0.60345879, -3.72508701, 5.81700741, -3.84326836],
        [-0.4319552, -1.30987417, 1.72354705, 0.05070578],
        [-0.38981415, 0.60811244, -1.25938424, 1.47191593],
        [-2.52214926, 2.67882552, -0.67947465, 1.48119548]])
    assert_published(dW, [
        [0.07313866, -0.0976715, -0.87585828, 0.73763362, 0.00785716],
        [0.85508818, 0.37530413, -0.59912655, 0.71278189, -0.58931808],
        [0.97913304, -0.24376494, -0.08839671, 0.55151192, -0.10290907]])
    assert_published(db, [[-0.14713786], [-0.11313155], [-0.13209101]])


def test_linear_backward_old_test_case(backend):
    dZ, linear_cache = linear_backward_test_case_v3()
    dA_prev, dW, db = course.linear_backward(dZ, linear_cache, backend=backend)
    assert_published(dA_prev, [[0.51822968, -0.19517421], [-0.40506361, 0.15255393], [2.37496825, -0.89445391]])
    assert_published(dW, [[-0.10076895, 1.40685096, 1.64992505]])
    assert_published(db, [[0.50629448]])


def test_linear_activation_backward(backend):
    dA, cache = linear_activation_backward_test_case()
    dA_prev, dW, db = course.linear_activation_backward(dA, cache, activation="sigmoid", backend=backend)
    assert_published(dA_prev, [[0.11017994, 0.01105339], [0.09466817, 0.00949723], [-0.05743092, -0.00576154]])
    assert_published(dW, [[0.10266786, 0.09778551, -0.01968084]])
    assert_published(db, [[-0.05729622]])
    dA_prev, dW, db = course.linear_activation_backward(dA, cache, activation="relu", backend=backend)
    assert_published(dA_prev, [[0.44090989, 0.0], [0.37883606, 0.0], [-0.2298228, 0.0]])
    assert_published(dW, [[0.44513824, 0.37371418, -0.10478989]])
    assert_published(db, [[-0.20837892]])


def test_L_model_backward(backend):
    AL, Y, caches = L_model_backward_test_case()
    grads = course.L_model_backward(AL, Y, caches, backend=backend)
    assert set(grads) == {"dA0", "dA1", "dW1", "dW2", "db1", "db2"}
    assert_published(grads["dW1"], [
        [0.41010002, 0.07807203, 0.13798444, 0.10502167],
        [0.0, 0.0, 0.0, 0.0],
        [0.05283652, 0.01005865, 0.01777766, 0.0135308]])
    assert_published(grads["db1"], [[-0.22007063], [0.0], [-0.02835349]])
    assert_published(grads["dA1"], [[0.12913162, -0.44014127], [-0.14175655, 0.48317296], [0.01663708, -0.05670698]])
    assert_published(grads["dA0"], [[0.0, 0.52257901], [0.0, -0.3269206], [0.0, -0.32070404], [0.0, -0.74079187]])
    assert_published(grads["dW2"], [[-0.39202432, -0.13325855, -0.04601089]])
    assert_published(grads["db2"], [[0.15187861]])


def test_L_model_backward_keys_for_deeper_models(backend):
    X, parameters = L_model_forward_test_case_2hidden()
    AL, caches = course.L_model_forward(X, parameters, backend=backend)
    grads = course.L_model_backward(AL, np.array([[1, 0, 1, 0]]), caches, backend=backend)
    assert set(grads) == {"dA0", "dA1", "dA2", "dW1", "dW2", "dW3", "db1", "db2", "db3"}
    for l in range(3):
        assert grads[f"dA{l}"].shape == caches[l][0][0].shape
        assert grads[f"dW{l + 1}"].shape == parameters[f"W{l + 1}"].shape
        assert grads[f"db{l + 1}"].shape == parameters[f"b{l + 1}"].shape


def test_update_parameters(backend):
    parameters, grads = update_parameters_test_case()
    originals = {k: v.copy() for k, v in parameters.items()}
    new = course.update_parameters(parameters, grads, 0.1, backend=backend)
    assert sorted(new) == ["W1", "W2", "b1", "b2"]
    assert_published(new["W1"], [
        [-0.59562069, -0.09991781, -2.14584584, 1.82662008],
        [-1.76569676, -0.80627147, 0.51115557, -1.18258802],
        [-1.0535704, -0.86128581, 0.68284052, 2.20374577]])
    assert_published(new["b1"], [[-0.04659241], [-1.28888275], [0.53405496]])
    assert_published(new["W2"], [[-0.55569196, 0.0354055, 1.32964895]])
    assert_published(new["b2"], [[-0.84610769]])
    # The newest template deep-copies: the caller's dict is left alone.
    for k, v in originals.items():
        np.testing.assert_array_equal(parameters[k], v)
    # Exactly W - 0.1 dW.
    for k in new:
        np.testing.assert_allclose(new[k], originals[k] - 0.1 * grads["d" + k], rtol=1e-15, atol=1e-16)


def test_backends_agree_on_the_course_api():
    X, parameters = L_model_forward_test_case_2hidden()
    Y = np.array([[1, 0, 0, 1]])
    out = {}
    for backend in ("compiled", "numpy"):
        AL, caches = course.L_model_forward(X, parameters, backend=backend)
        grads = course.L_model_backward(AL, Y, caches, backend=backend)
        out[backend] = (AL, course.compute_cost(AL, Y, backend=backend), grads)
    np.testing.assert_allclose(out["compiled"][0], out["numpy"][0], rtol=1e-14)
    assert out["compiled"][1] == pytest.approx(out["numpy"][1], rel=1e-14)
    for key, g in out["compiled"][2].items():
        np.testing.assert_allclose(g, out["numpy"][2][key], rtol=1e-12, atol=1e-15, err_msg=key)


# ------------------------------------------------------------- whole model
def _L_layer_model_test_data():
    np.random.seed(1)
    X = np.random.randn(10, 10)
    Y = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 0]).reshape(1, 10)
    return X, Y


def test_L_layer_model_public_test(backend, capsys):
    X, Y = _L_layer_model_test_data()
    parameters, costs = course.L_layer_model(X, Y, (10, 5, 6, 1), 0.0075, 2, print_cost=True, backend=backend)
    assert isinstance(parameters, dict) and sorted(parameters) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert len(costs) == 1
    assert float(costs[0]) == pytest.approx(0.70723944, abs=1e-8)
    assert_published(parameters["b3"], [[0.0013201]])
    assert_published(parameters["W3"], [[-0.09079199, -0.08117381, 0.07667568, 0.16665535, 0.08029575, 0.04805811]])
    printed = capsys.readouterr().out
    last = re.findall(r"Cost after iteration 1: ([0-9.]+)", printed)
    assert len(last) == 1 and float(last[0]) == pytest.approx(0.7070709008912569, rel=1e-12)

    parameters, costs = course.L_layer_model(X, Y, (10, 5, 6, 1), 0.02, 3, backend=backend)
    assert len(costs) == 1 and float(costs[0]) == pytest.approx(0.70723944, abs=1e-8)
    assert_published(parameters["b3"], [[0.00525865]])


# Newest notebook (v1.1), full precision, iterations 0, 100, ..., 2400 and then 2499.
PUBLISHED_CURVE = [
    0.7717493284237686, 0.6720534400822914, 0.6482632048575212, 0.6115068816101356,
    0.5670473268366111, 0.5401376634547801, 0.5279299569455267, 0.4654773771766851,
    0.369125852495928, 0.39174697434805344, 0.31518698886006163, 0.2726998441789385,
    0.23741853400268137, 0.19960120532208644, 0.18926300388463307, 0.16118854665827753,
    0.14821389662363316, 0.13777487812972944, 0.1297401754919012, 0.12122535068005211,
    0.11382060668633713, 0.10783928526254133, 0.10285466069352679, 0.10089745445261786,
    0.09287821526472398,
]
PUBLISHED_FINAL = 0.08843994344170202  # iteration 2499


def _one_blas_thread():
    """Single-threaded BLAS for the long runs.

    On a busy 2-core machine OpenBLAS's worker threads spin against other
    processes and the 2500-iteration run slows down by more than 10x; one
    thread is steady. (threadpoolctl is in the test extra; without it the run
    just uses the default threads.)
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _printed_costs(text):
    return {int(i): float(c) for i, c in re.findall(r"Cost after iteration (\d+): ([0-9.eE+-]+)", text)}


def test_cat_vs_noncat_full_run_compiled(cat_data, capsys):
    """The application notebook's L-layer run: 2500 iterations, the published curve and accuracies."""
    X, Y = cat_data["train_x"], cat_data["train_y"]
    assert X.shape == (12288, 209) and Y.shape == (1, 209)
    with _one_blas_thread():
        parameters, costs = course.L_layer_model(X, Y, [12288, 20, 7, 5, 1], 0.0075, 2500,
                                                 print_cost=True, backend="compiled")
    assert len(costs) == 25
    np.testing.assert_allclose(np.array(costs, dtype=float), PUBLISHED_CURVE, rtol=1e-9, atol=0)
    printed = _printed_costs(capsys.readouterr().out)
    assert sorted(printed) == list(range(0, 2500, 100)) + [2499]
    assert printed[2499] == pytest.approx(PUBLISHED_FINAL, rel=1e-9)
    for i, c in zip(range(0, 2500, 100), costs):
        assert printed[i] == pytest.approx(float(c), rel=1e-15)

    p_train = course.predict(X, Y, parameters)
    out = capsys.readouterr().out
    assert p_train.shape == (1, 209)
    assert set(np.unique(p_train)) <= {0.0, 1.0}
    assert np.mean(p_train == Y) == pytest.approx(0.9856459330143539, abs=1e-12)
    assert re.search(r"Accuracy: ([0-9.]+)", out).group(1).startswith("0.98564593301435")
    p_test = course.predict(cat_data["test_x"], cat_data["test_y"], parameters)
    out = capsys.readouterr().out
    assert np.mean(p_test == cat_data["test_y"]) == pytest.approx(0.8, abs=1e-12)
    assert float(re.search(r"Accuracy: ([0-9.]+)", out).group(1)) == pytest.approx(0.8, abs=1e-12)


def test_cat_vs_noncat_start_numpy(cat_data):
    """The same run on the NumPy backend, long enough for the first published costs."""
    X, Y = cat_data["train_x"], cat_data["train_y"]
    with _one_blas_thread():
        _, costs = course.L_layer_model(X, Y, [12288, 20, 7, 5, 1], 0.0075, 501, backend="numpy")
    assert len(costs) == 6
    np.testing.assert_allclose(np.array(costs, dtype=float), PUBLISHED_CURVE[:6], rtol=1e-9, atol=0)


def test_L_layer_model_records_every_hundredth_cost(backend):
    X, Y = _L_layer_model_test_data()
    for n, expected in ((1, 1), (100, 1), (101, 2), (250, 3)):
        _, costs = course.L_layer_model(X, Y, [10, 3, 1], 0.01, n, backend=backend)
        assert len(costs) == expected == math.ceil(n / 100)
        assert all(isinstance(float(c), float) and np.isfinite(c) for c in costs)
    _, costs = course.L_layer_model(X, Y, [10, 3, 1], 0.01, 0, backend=backend)
    assert costs == []


def test_L_layer_model_initialises_as_the_application_notebook(backend):
    # Zero iterations return the initial parameters: seed 1, randn / sqrt(n[l-1]).
    X, Y = _L_layer_model_test_data()
    parameters, _ = course.L_layer_model(X, Y, [10, 4, 3, 1], 0.01, 0, backend=backend)
    np.random.seed(1)
    for l, (n_prev, n) in enumerate(((10, 4), (4, 3), (3, 1)), start=1):
        np.testing.assert_array_equal(parameters[f"W{l}"], np.random.randn(n, n_prev) / np.sqrt(n_prev))
        np.testing.assert_array_equal(parameters[f"b{l}"], np.zeros((n, 1)))


def test_predict_returns_course_style_predictions(backend, capsys):
    X, parameters = L_model_forward_test_case_2hidden()
    y = np.array([[0, 1, 0, 0]])
    p = course.predict(X, y, parameters, backend=backend)
    assert p.shape == (1, 4) and p.dtype == np.float64
    # AL = [0.039, 0.705, 0.197, 0.047] -> strictly above 0.5 only the second.
    np.testing.assert_array_equal(p, [[0.0, 1.0, 0.0, 0.0]])
    assert capsys.readouterr().out.strip() == "Accuracy: 1.0"


def test_course_dtype_follows_the_inputs(backend):
    A, W, b = (a.astype(np.float32) for a in linear_forward_test_case())
    Z, _ = course.linear_forward(A, W, b, backend=backend)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, [[3.26295337, -1.23429987]], atol=1e-5)
    # Mixed precisions compute in float64, as NumPy would.
    Z, _ = course.linear_forward(A, W.astype(np.float64), b, backend=backend)
    assert Z.dtype == np.float64


def test_course_reads_f_ordered_input_in_place(backend):
    X, parameters = L_model_forward_test_case_2hidden()
    X_f = np.asfortranarray(X)
    AL, caches = course.L_model_forward(X_f, parameters, backend=backend)
    assert caches[0][0][0] is X_f
    assert_published(AL, [[0.03921668, 0.70498921, 0.19734387, 0.04728177]])


def test_the_same_X_and_Y_are_scanned_once_across_iterations(monkeypatch):
    # A training loop passes the same X and Y every iteration: their
    # full-array checks run once; every new array (and every W) is checked.
    from dnnblocks import _validation

    scanned = []
    real = course._all_finite
    monkeypatch.setattr(course, "_all_finite", lambda a: scanned.append(a.shape) or real(a))
    # Arrays checked before (as earlier calls leave them): the oldest make room.
    others = [np.zeros((2, 2)) for _ in range(course._MAX_REMEMBERED)]
    monkeypatch.setattr(course, "_remembered", {})
    for a in others:
        course._scan_once(course._check_finite, a, a, "other")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 40))
    Y = (rng.random((1, 40)) < 0.5).astype(float)
    params = course.initialize_parameters_deep([6, 4, 1])
    for _ in range(3):
        AL, caches = course.L_model_forward(X, params)
        course.compute_cost(AL, Y)
        params = course.update_parameters(params, course.L_model_backward(AL, Y, caches), 0.1)
    assert scanned.count((6, 40)) == 1  # X once
    assert scanned.count((4, 6)) == 3  # W1: a new array at every iteration
    # A different array with the same shape is checked, and its NaN reported.
    X_bad = X.copy()
    X_bad[2, 7] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        course.L_model_forward(X_bad, params)
    Y_bad = Y.copy()
    Y_bad[0, 3] = 2.0
    with pytest.raises(ValueError, match="only the labels 0 and 1"):
        course.compute_cost(AL, Y_bad)
    assert _validation._all_finite(X) and not _validation._all_finite(X_bad)
    big = np.full((300, 300), 1e300)  # beyond the small-array path; its sum overflows
    assert _validation._all_finite(big)
    big[299, 0] = -np.inf
    assert not _validation._all_finite(big)
