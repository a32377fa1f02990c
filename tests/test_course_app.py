"""`dnnblocks.course.app` against the course's recipe (dnn_app_utils_v3 + the application notebook).

Published values are the notebook's printed outputs and its public tests'
expected values; the textbook functions below are the helper file's NumPy
recipe, written out to compare every block with it on both backends.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from dnnblocks import course
from dnnblocks.course import app

_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cat_npz():
    for folder in (_SHARED_DATA, os.environ.get("DNNBLOCKS_DATA")):
        if folder and (Path(folder) / "catvnoncat.npz").is_file():
            return Path(folder) / "catvnoncat.npz"
    pytest.skip("catvnoncat.npz not found in ../shared/data nor in $DNNBLOCKS_DATA")


# ------------------------------------------------ the course's recipe
def tb_forward(X, p):
    caches, A, L = [], X, len(p) // 2
    for l in range(1, L + 1):
        W, b = p["W" + str(l)], p["b" + str(l)]
        Z = W.dot(A) + b
        caches.append(((A, W, b), Z))
        A = 1 / (1 + np.exp(-Z)) if l == L else np.maximum(0, Z)
    return A, caches


def tb_cost(AL, Y):
    m = Y.shape[1]
    return np.squeeze((1. / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T)))


def tb_backward(AL, Y, caches):
    grads, L = {}, len(caches)
    Y = Y.reshape(AL.shape)
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(L)):
        (A_prev, W, b), Z = caches[l]
        if l == L - 1:
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:
            dZ = np.array(dA, copy=True)
            dZ[Z <= 0] = 0
        m = A_prev.shape[1]
        grads["dW" + str(l + 1)] = 1. / m * np.dot(dZ, A_prev.T)
        grads["db" + str(l + 1)] = 1. / m * np.sum(dZ, axis=1, keepdims=True)
        grads["dA" + str(l)] = dA = np.dot(W.T, dZ)
    return grads


def _printed(text):
    return {int(i): float(c) for i, c in re.findall(r"Cost after iteration (\d+): (\S+)", text)}


# ------------------------------------------------------ initialisations
def test_initialize_parameters_published(backend):
    p = app.initialize_parameters(3, 2, 1, backend=backend)
    np.testing.assert_allclose(p["W1"], [[0.01624345, -0.00611756, -0.00528172],
                                         [-0.01072969, 0.00865408, -0.02301539]], atol=1e-8)
    np.testing.assert_allclose(p["W2"], [[0.01744812, -0.00761207]], atol=1e-8)
    np.testing.assert_array_equal(p["b1"], np.zeros((2, 1)))


def test_initialize_parameters_deep_is_the_helper_files(backend):
    p = app.initialize_parameters_deep([5, 4, 3], backend=backend)
    np.random.seed(1)
    np.testing.assert_array_equal(p["W1"], np.random.randn(4, 5) / np.sqrt(5))
    np.testing.assert_array_equal(p["W2"], np.random.randn(3, 4) / np.sqrt(4))
    # Not the step-by-step assignment's (seed 3, x0.01).
    assert not np.allclose(p["W1"], course.initialize_parameters_deep([5, 4, 3])["W1"])


# --------------------------------------------------------------- blocks
def problem(seed=2, m=12, dims=(6, 5, 3, 1)):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((dims[0], m))
    Y = (rng.random((1, m)) < 0.5).astype(np.int64)
    np.random.seed(seed)
    p = {}
    for l in range(1, len(dims)):
        p["W" + str(l)] = np.random.randn(dims[l], dims[l - 1])
        p["b" + str(l)] = np.random.randn(dims[l], 1)
    return X, Y, p


def test_blocks_match_the_recipe(backend):
    X, Y, p = problem()
    AL, caches = app.L_model_forward(X, p, backend=backend)
    AL_tb, caches_tb = tb_forward(X, p)
    np.testing.assert_allclose(AL, AL_tb, rtol=1e-14)
    cost = app.compute_cost(AL, Y, backend=backend)
    assert isinstance(cost, np.ndarray) and cost.ndim == 0
    assert float(cost) == pytest.approx(float(tb_cost(AL_tb, Y)), rel=1e-14)
    grads = app.L_model_backward(AL, Y.ravel(), caches, backend=backend)  # Y of shape (m,) is reshaped
    want = tb_backward(AL_tb, Y, caches_tb)
    assert set(grads) == set(want)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-12, atol=1e-15, err_msg=k)
    held = dict(p)
    out = app.update_parameters(p, grads, 0.1, backend=backend)
    assert out is p and all(out[k] is not held[k] for k in held)
    for k in held:
        np.testing.assert_allclose(out[k], held[k] - 0.1 * want["d" + k], rtol=1e-15, atol=1e-16)


def test_activation_helpers(backend):
    Z = np.array([[-1.0, 0.0, 2.0]])
    A, cache = app.sigmoid(Z, backend=backend)
    assert cache is Z
    np.testing.assert_allclose(A, 1 / (1 + np.exp(-Z)), rtol=1e-15)
    A, cache = app.relu(Z, backend=backend)
    np.testing.assert_array_equal(A, [[0.0, 0.0, 2.0]])
    dA = np.array([[0.5, -1.0, 3.0]])
    np.testing.assert_array_equal(app.relu_backward(dA, Z, backend=backend), [[0.0, 0.0, 3.0]])
    s = 1 / (1 + np.exp(-Z))
    np.testing.assert_allclose(app.sigmoid_backward(dA, Z, backend=backend), dA * s * (1 - s), rtol=1e-15)


def test_compute_cost_takes_any_real_labels(backend):
    np.random.seed(1)
    AL = np.random.rand(1, 10) * 0.9 + 0.05
    Y = np.random.randn(1, 10)
    cost = app.compute_cost(AL, Y, backend=backend)
    assert cost.shape == () and float(cost) == pytest.approx(float(tb_cost(AL, Y)), rel=1e-13)
    with pytest.raises(ValueError, match="Y must have the shape of AL"):
        app.compute_cost(AL, Y[:, :4], backend=backend)


def test_predict_broadcasts_y_as_the_course(backend, capsys):
    X, Y, p = problem()
    pred = app.predict(X[:, :1], [1], p, backend=backend)  # the "your own image" cell
    AL, _ = tb_forward(X[:, :1], p)
    assert pred.shape == (1, 1) and pred[0, 0] == float(AL[0, 0] > 0.5)
    assert capsys.readouterr().out == "Accuracy: " + str(np.sum((pred == [1]) / 1)) + "\n"
    pred = app.predict(X, Y, p, backend=backend)
    assert capsys.readouterr().out == "Accuracy: " + str(np.sum((pred == Y) / X.shape[1])) + "\n"


# ------------------------------------------------ the notebook's public tests
def test_two_layer_model_public_test(backend, capsys):
    np.random.seed(1)
    X = np.random.randn(10, 10)
    Y = np.random.randn(1, 10)  # not 0/1: the course's test trains on real labels
    parameters, costs = app.two_layer_model(X, Y, (10, 4, 1), 0.0075, 2, print_cost=False, backend=backend)
    assert len(costs) == 1 and isinstance(costs[0], np.ndarray) and costs[0].shape == ()
    assert float(costs[0]) == pytest.approx(0.69315968, abs=1e-8)
    np.testing.assert_allclose(parameters["W1"][0, :5],
                               [0.01624965, -0.00610741, -0.00528734, -0.01072836, 0.008664], atol=1e-8)
    np.testing.assert_allclose(parameters["W2"], [[-0.00200283, -0.00888593, -0.00751122, 0.01688162]],
                               atol=1e-8)
    np.testing.assert_allclose(parameters["b2"], [[-0.00689018]], atol=1e-8)
    # print_cost=False still prints the last iteration (the course's precedence).
    assert sorted(_printed(capsys.readouterr().out)) == [1]
    # The recipe, step by step, on the same data.
    p = app.initialize_parameters(10, 4, 1)
    for _ in range(2):
        AL, caches = tb_forward(X, p)
        g = tb_backward(AL, Y, caches)
        p = {k: v - 0.0075 * g["d" + k] for k, v in p.items()}
    for k in p:
        np.testing.assert_allclose(parameters[k], p[k], rtol=1e-12, atol=1e-16)
    # The public test's second case: learning rate 0.1, 3 iterations.
    parameters, costs = app.two_layer_model(X, Y, (10, 4, 1), 0.1, 3, backend=backend)
    np.testing.assert_allclose(parameters["W2"], [[-0.00358725, -0.00911995, -0.00831979, 0.01615845]],
                               atol=1e-8)
    np.testing.assert_allclose(parameters["b2"], [[-0.13451354]], atol=1e-8)
    assert float(costs[0]) == pytest.approx(0.69315968, abs=1e-8)


def test_L_layer_model_public_test(backend, capsys):
    np.random.seed(1)
    X = np.random.randn(10, 10)
    Y = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 0]).reshape(1, 10)
    parameters, costs = app.L_layer_model(X, Y, (10, 5, 6, 1), 0.0075, 2, print_cost=False, backend=backend)
    assert len(costs) == 1 and type(costs[0]) is np.ndarray and costs[0].ndim == 0
    assert float(costs[0]) == pytest.approx(0.70723944, abs=1e-8)
    np.testing.assert_allclose(parameters["b3"], [[0.0013201]], atol=1e-8)
    np.testing.assert_allclose(parameters["W3"], [[-0.09079199, -0.08117381, 0.07667568, 0.16665535,
                                                   0.08029575, 0.04805811]], atol=1e-8)
    assert _printed(capsys.readouterr().out) == {1: pytest.approx(0.7070709008912569, rel=1e-12)}
    app.L_layer_model(X, Y, (10, 5, 6, 1), 0.0075, 201, print_cost=True, backend=backend)
    assert sorted(_printed(capsys.readouterr().out)) == [0, 100, 200]


# ------------------------------------------------------------- cat data
@pytest.fixture(scope="module")
def cat():
    train_x_orig, train_y, test_x_orig, test_y, classes = app.load_data(cat_npz())
    assert train_x_orig.shape == (209, 64, 64, 3) and train_y.shape == (1, 209)
    assert test_x_orig.shape == (50, 64, 64, 3) and test_y.shape == (1, 50)
    assert list(classes) == [b"non-cat", b"cat"]
    train_x = train_x_orig.reshape(train_x_orig.shape[0], -1).T / 255.
    test_x = test_x_orig.reshape(test_x_orig.shape[0], -1).T / 255.
    return train_x, train_y, test_x, test_y


def test_load_data_finds_the_file_and_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("DNNBLOCKS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="datasets/train_catvnoncat.h5"):
        app.load_data()
    monkeypatch.setenv("DNNBLOCKS_DATA", str(cat_npz().parent))
    assert app.load_data()[0].shape == (209, 64, 64, 3)


# The notebook's printed two-layer costs (iterations 0 and 100) and L-layer costs.
PUBLISHED_TWO_LAYER = {0: 0.6930497356599888, 100: 0.6464320953428849}
PUBLISHED_L_LAYER = {0: 0.7717493284237686, 100: 0.6720534400822914}


def _one_blas_thread():
    # On a busy 2-core machine OpenBLAS's spinning threads slow these runs
    # down by 10x or more; one thread is steady.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def test_cat_two_layer_start(cat, backend, capsys):
    train_x, train_y, _, _ = cat
    n = 101 if backend == "compiled" else 1  # the NumPy backend: the first cost only (time)
    with _one_blas_thread():
        _, costs = app.two_layer_model(train_x, train_y, (12288, 7, 1), num_iterations=n, print_cost=True,
                                       backend=backend)
    printed = _printed(capsys.readouterr().out)
    assert sorted(printed) == sorted({0, n - 1})
    for i in printed:
        if i in PUBLISHED_TWO_LAYER:
            assert printed[i] == pytest.approx(PUBLISHED_TWO_LAYER[i], rel=1e-10)
    assert [float(c) for c in costs] == [printed[i] for i in range(0, n, 100)]


def test_cat_L_layer_start(cat, backend, capsys):
    train_x, train_y, _, _ = cat
    n = 101 if backend == "compiled" else 1
    with _one_blas_thread():
        _, costs = app.L_layer_model(train_x, train_y, [12288, 20, 7, 5, 1], num_iterations=n,
                                     print_cost=True, backend=backend)
    printed = _printed(capsys.readouterr().out)
    for i in range(0, n, 100):
        assert printed[i] == pytest.approx(PUBLISHED_L_LAYER[i], rel=1e-10)
    assert all(type(c) is np.ndarray and c.ndim == 0 for c in costs)


@pytest.fixture
def only_when_selected(request):
    """The marker says "kept out of the default run": these run only with ``-m slow``."""
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("a long run (the notebook's 2500 iterations): select it with -m slow")


@pytest.mark.slow
def test_cat_L_layer_full_run(cat, capsys, only_when_selected):
    train_x, train_y, test_x, test_y = cat
    with _one_blas_thread():
        parameters, costs = app.L_layer_model(train_x, train_y, [12288, 20, 7, 5, 1], num_iterations=2500,
                                              print_cost=True)
    assert len(costs) == 25
    assert _printed(capsys.readouterr().out)[2499] == pytest.approx(0.08843994344170202, rel=1e-9)
    app.predict(train_x, train_y, parameters)
    app.predict(test_x, test_y, parameters)
    out = capsys.readouterr().out.split()
    assert float(out[1]) == pytest.approx(0.9856459330143539, abs=1e-12)
    assert float(out[3]) == pytest.approx(0.8, abs=1e-12)


@pytest.mark.slow
def test_cat_two_layer_full_run(cat, capsys, only_when_selected):
    train_x, train_y, test_x, test_y = cat
    with _one_blas_thread():
        parameters, costs = app.two_layer_model(train_x, train_y, (12288, 7, 1), num_iterations=2500,
                                                print_cost=True)
    assert _printed(capsys.readouterr().out)[2499] == pytest.approx(0.04421498215868956, rel=1e-8)
    app.predict(train_x, train_y, parameters)
    app.predict(test_x, test_y, parameters)
    out = capsys.readouterr().out.split()
    assert float(out[1]) == pytest.approx(1.0, abs=1e-12)
    assert float(out[3]) == pytest.approx(0.72, abs=1e-12)


def test_submodules_reachable_after_a_plain_import():
    import subprocess
    import sys

    code = ("import dnnblocks\n"
            "mods = [dnnblocks.course.app, dnnblocks.course.initialization, dnnblocks.course.regularization,"
            " dnnblocks.course.gradient_checking, dnnblocks.course.optimization]\n"
            "import sys\nprint([m.__name__ for m in mods], 'sklearn' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "dnnblocks.course.optimization" in out.stdout and out.stdout.strip().endswith("False")
    assert "app" in dir(course)


def test_dA0_is_formed_only_when_read(backend):
    X, Y, p = problem()
    AL, caches = app.L_model_forward(X, p, backend=backend)
    grads = app.L_model_backward(AL, Y, caches, backend=backend)
    assert isinstance(grads, dict) and grads.deferred == ("dA0",)
    app.update_parameters(p, grads, 0.1, backend=backend)  # the loop never reads dA0
    assert grads.deferred == ("dA0",)
    caches[0][0][1][...] = 0.0  # W1 changed in place afterwards: dA0 is still the one of the call
    AL_tb, caches_tb = tb_forward(X, problem()[2])
    want = tb_backward(AL_tb, Y, caches_tb)
    assert "dA0" in grads and grads.deferred == ("dA0",)
    np.testing.assert_allclose(grads["dA0"], want["dA0"], rtol=1e-12, atol=1e-15)
    assert grads.deferred == ()
    order = ["dA2", "dW3", "db3", "dA1", "dW2", "db2", "dA0", "dW1", "db1"]  # the course's
    assert list(grads) == order
    fresh = app.L_model_backward(AL, Y, caches, backend=backend)
    assert len(fresh) == 9 and fresh.deferred == ()
    import pickle

    again = pickle.loads(pickle.dumps(app.L_model_backward(AL_tb, Y, caches_tb, backend=backend)))
    assert type(again) is dict and list(again) == order


def test_course_package_imports_only_go_down():
    # DESIGN.md "Layers": the course's modules are layer 4 and import only from
    # layers 0-4 (tests/test_layers.py scans the package's top-level files).
    import ast

    import dnnblocks

    allowed_below = {"_validation", "backend", "exceptions", "initializers", "optimizers", "datasets",
                     "training", "_safeguards", "profiling", "network", "gradcheck",
                     "_numpy_kernels", "_numpy_step", "propagation", "wide", "epoch"}
    folder = Path(dnnblocks.__file__).parent / "course"
    files = sorted(folder.glob("*.py"))
    assert {f.stem for f in files} >= {"__init__", "_common", "app", "initialization", "regularization",
                                       "gradient_checking", "optimization"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module.split(".")[0] in allowed_below, (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "dnnblocks", (path.name, node.module)
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "dnnblocks" for a in node.names), path.name
