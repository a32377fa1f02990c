"""DNNClassifier as scikit-learn users call it."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import dnnblocks

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from dnnblocks import DNNClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::dnnblocks.exceptions.ConvergenceWarning")


def _blobs(n_classes=3, m=150, n=4, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((n_classes, n))
    idx = rng.integers(0, n_classes, m)
    X = centers[idx] + rng.standard_normal((m, n))
    labels = np.arange(n_classes) if labels is None else np.asarray(labels)
    return X, labels[idx]


def _params(clf):
    return [a.copy() for a in clf.coefs_ + clf.intercepts_]


# ----------------------------------------------------------------- basics
@pytest.mark.parametrize("labels", [["no", "yes"], ["setosa", "versicolor", "virginica"],
                                    [-1, 1], [10, 20, 30, 40]])
def test_any_labels_round_trip(labels):
    X, y = _blobs(len(labels), labels=labels)
    clf = DNNClassifier((10,), max_iter=300, random_state=0, learning_rate_init=0.01).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    pred = clf.predict(X)
    assert pred.dtype == np.asarray(y).dtype and set(pred) <= set(labels)
    assert clf.score(X, y) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(pred, clf.classes_[np.argmax(proba, axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-6, atol=1e-9)


def test_binary_uses_one_sigmoid_unit_and_multiclass_softmax():
    X, y = _blobs(2)
    clf = DNNClassifier((5, 3), max_iter=300, random_state=0).fit(X, y)
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic" and clf.n_layers_ == 4
    d = clf.decision_function(X)
    assert d.shape == (len(X),)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(d > 0).astype(int)])
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], 1 / (1 + np.exp(-d)), rtol=1e-12)
    X3, y3 = _blobs(4)
    clf3 = DNNClassifier((5,), max_iter=300, random_state=0).fit(X3, y3)
    assert clf3.n_outputs_ == 4 and clf3.out_activation_ == "softmax"
    d3 = clf3.decision_function(X3)
    assert d3.shape == (len(X3), 4)
    np.testing.assert_array_equal(clf3.predict(X3), clf3.classes_[np.argmax(d3, axis=1)])


def test_sklearn_layout_of_coefs_and_intercepts_are_views():
    X, y = _blobs(3, n=6)
    clf = DNNClassifier((7, 5), max_iter=300, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(6, 7), (7, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (5,), (3,)]
    net = clf.network_
    for c, w, i, b in zip(clf.coefs_, net.W, clf.intercepts_, net.b):
        assert np.shares_memory(c, w) and np.array_equal(c, w.T)
        assert np.shares_memory(i, b)
    # The forward pass in scikit-learn's layout reproduces the probabilities.
    h = np.maximum(X @ clf.coefs_[0] + clf.intercepts_[0], 0)
    h = np.maximum(h @ clf.coefs_[1] + clf.intercepts_[1], 0)
    z = h @ clf.coefs_[2] + clf.intercepts_[2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X), p / p.sum(axis=1, keepdims=True), rtol=1e-10)


def test_rows_reach_the_core_without_a_copy(monkeypatch):
    import dnnblocks._estimator_base as est_module  # where the estimators call train

    seen = []
    real_train = est_module.train

    def spy(net, X, Y, **kw):
        seen.append(X)
        return real_train(net, X, Y, **kw)

    monkeypatch.setattr(est_module, "train", spy)
    X, y = _blobs(2)
    X = np.ascontiguousarray(X)
    DNNClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert seen[-1].base is X or np.shares_memory(seen[-1], X)
    assert seen[-1].shape == X.shape[::-1] and seen[-1].flags.f_contiguous
    # float32 model, float64 data: converted once (as scikit-learn does).
    DNNClassifier((4,), max_iter=2, random_state=0, dtype=np.float32).fit(X, y)
    assert seen[-1].dtype == np.float32 and not np.shares_memory(seen[-1], X)


def test_float32_end_to_end():
    X, y = _blobs(3)
    clf = DNNClassifier((8,), max_iter=200, random_state=0, dtype=np.float32,
                        learning_rate_init=0.01).fit(X, y)
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.score(X, y) > 0.9


def test_backends_agree():
    X, y = _blobs(3)
    a = DNNClassifier((8, 4), max_iter=20, random_state=0, dropout=0.2, alpha=0.1, batch_size=32,
                      backend="compiled").fit(X, y)
    b = DNNClassifier((8, 4), max_iter=20, random_state=0, dropout=0.2, alpha=0.1, batch_size=32,
                      backend="numpy").fit(X, y)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver,lr", [("sgd", 0.1), ("momentum", 0.1), ("adam", 0.01)])
@pytest.mark.parametrize("extra", [{}, {"alpha": 1.0}, {"dropout": 0.3}],
                         ids=["plain", "l2", "dropout"])
def test_each_solver_and_regulariser_learns(solver, lr, extra):
    X, y = _blobs(3, m=300, seed=2)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    clf = DNNClassifier((16,), solver=solver, learning_rate_init=lr, max_iter=100,
                        random_state=0, **extra).fit(Xtr, ytr)
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.score(Xte, yte) > 0.9


def test_l2_alpha_shrinks_the_weights():
    X, y = _blobs(2, m=200)
    norms = [sum(np.sum(c**2) for c in DNNClassifier((16,), alpha=a, max_iter=300, random_state=0,
                                                     learning_rate_init=0.05).fit(X, y).coefs_)
             for a in (0.0, 20.0)]
    assert norms[1] < 0.5 * norms[0]


# ------------------------------------------------------------ partial_fit
def test_partial_fit_is_one_epoch():
    X, y = _blobs(3, labels=["a", "b", "c"])
    clf = DNNClassifier((6,), random_state=0, batch_size=40)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=["c", "b", "a"])
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 1 and clf.t_ == 50
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c"])
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 2 and clf.t_ == 50 + len(X)
    # The same as fit with max_iter=1 from the same seed.
    a = DNNClassifier((6,), random_state=3).partial_fit(X, y, classes=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = DNNClassifier((6,), random_state=3, max_iter=1).fit(X, y)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(p, q)
    assert a.loss_curve_ == b.loss_curve_


def test_partial_fit_label_errors_leave_model_unchanged():
    X, y = _blobs(3)
    clf = DNNClassifier((6,), random_state=0).partial_fit(X, y, classes=[0, 1, 2, 3])
    before = _params(clf)
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.partial_fit(X, np.where(y == 0, 7, y))
    with pytest.raises(ValueError, match="differs from the classes"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    for p, q in zip(before, _params(clf)):
        np.testing.assert_array_equal(p, q)
    assert clf.n_iter_ == 1


def test_warm_start_continues():
    X, y = _blobs(2)
    clf = DNNClassifier((6,), max_iter=5, random_state=0, warm_start=True, n_iter_no_change=100)
    clf.fit(X, y)
    first = _params(clf)
    clf.fit(X, y)
    assert clf.n_iter_ == 10 and len(clf.loss_curve_) == 10
    assert not np.array_equal(first[0], clf.coefs_[0])
    cold = DNNClassifier((6,), max_iter=5, random_state=0, n_iter_no_change=100)
    cold.fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 5
    for p, q in zip(first, _params(cold)):
        np.testing.assert_array_equal(p, q)


# --------------------------------------------------- stopping and warnings
def test_early_stopping_attributes():
    X, y = _blobs(3, m=300)
    clf = DNNClassifier((16,), early_stopping=True, validation_fraction=0.2, random_state=0,
                        max_iter=500, n_iter_no_change=5).fit(X, y)
    assert clf.n_iter_ < 500
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    n_train = clf.t_ // clf.n_iter_  # examples per epoch once 20 % (stratified) are held out
    assert clf.t_ == clf.n_iter_ * n_train and 235 <= n_train <= 245


def test_convergence_warning_is_sklearns_and_ours():
    X, y = _blobs(2)
    clf = DNNClassifier((4,), max_iter=3, random_state=0)
    with pytest.warns(SkConvergenceWarning, match="Maximum iterations \\(3\\)") as rec:
        clf.fit(X, y)
    assert isinstance(rec[0].message, dnnblocks.ConvergenceWarning)


def test_tol_stops_on_the_training_loss():
    X, y = _blobs(2)
    clf = DNNClassifier((8,), max_iter=5000, tol=1e-2, n_iter_no_change=2, random_state=0,
                        learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ < 5000 and clf.best_loss_ == min(clf.loss_curve_)


# ------------------------------------------------------ parameters checked
@pytest.mark.parametrize("param,value,match", [
    ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes\\[1\\]"),
    ("hidden_layer_sizes", "big", "hidden_layer_sizes"),
    ("activation", "softplus", "activation"),
    ("solver", "lbfgs", "solver"),
    ("learning_rate", "adaptive", "learning_rate must be one of"),
    ("learning_rate_init", 0.0, "learning_rate_init"),
    ("alpha", -1.0, "alpha"),
    ("batch_size", 0, "batch_size"),
    ("max_iter", 0, "max_iter"),
    ("dropout", 1.0, "dropout"),
    ("momentum", 1.5, "momentum"),
    ("validation_fraction", 0.0, "validation_fraction"),
    ("dtype", np.int64, "dtype"),
    ("backend", "gpu", "backend"),
    ("init", "orthogonal", "init"),
    ("random_state", "seed", "random_state"),
])
def test_bad_parameters_are_reported_at_fit(param, value, match):
    X, y = _blobs(2)
    clf = DNNClassifier(**{param: value})  # accepted at construction, as in scikit-learn
    with pytest.raises((ValueError, TypeError), match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "classes_")


def test_parameter_spellings():
    X, y = _blobs(2)
    assert DNNClassifier(5, activation="logistic", max_iter=50).fit(X, y).network_.hidden_activation == "sigmoid"
    lr = DNNClassifier((), max_iter=300, random_state=0, learning_rate_init=0.1).fit(X, y)  # logistic regression
    assert lr.n_layers_ == 2 and lr.score(X, y) > 0.9
    full = DNNClassifier((4,), batch_size=None, max_iter=3, random_state=0,
                         learning_rate="inverse_time").fit(X, y)
    assert full.n_iter_ == 3


def test_unfitted_and_feature_checks():
    X, y = _blobs(2)
    clf = DNNClassifier((3,))
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(AttributeError):
        clf.coefs_
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but DNNClassifier is expecting 4"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="at least 2 classes"):
        DNNClassifier().fit(X, np.zeros(len(X)))


def test_verbose_reports_progress(capsys):
    X, y = _blobs(2)
    DNNClassifier((3,), max_iter=4, verbose=2, random_state=0, n_iter_no_change=50).fit(X, y)
    err = capsys.readouterr().err
    assert err.count("cost") == 4 and "epoch 4/4" in err


def test_pipeline_grid_search_clone_pickle():
    import pickle

    X, y = _blobs(3, m=120)
    pipe = make_pipeline(StandardScaler(), DNNClassifier(max_iter=100, random_state=0,
                                                         learning_rate_init=0.01))
    grid = GridSearchCV(pipe, {"dnnclassifier__hidden_layer_sizes": [(4,), (8,)]}, cv=2).fit(X, y)
    assert grid.best_score_ > 0.8
    c = clone(DNNClassifier(hidden_layer_sizes=(3, 2), dtype=np.float32))
    assert c.get_params()["hidden_layer_sizes"] == (3, 2) and c.dtype is np.float32
    fitted = DNNClassifier((4,), max_iter=20, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.predict_proba(X), fitted.predict_proba(X))


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = _blobs(2)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = DNNClassifier((3,), max_iter=20, random_state=0).fit(df, pd.Series(y))
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)


# ----------------------------------------------------- without scikit-learn
def test_works_without_scikit_learn():
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "sklearn" or name.startswith("sklearn."):
                    raise ImportError("scikit-learn is hidden for this test")
        sys.meta_path.insert(0, Block())
        import numpy as np, dnnblocks
        assert "sklearn" not in sys.modules
        from dnnblocks import DNNClassifier
        from dnnblocks.estimator import HAVE_SKLEARN, NotFittedError
        assert not HAVE_SKLEARN
        rng = np.random.default_rng(0)
        X = rng.standard_normal((120, 3)); y = np.where(X[:, 0] + X[:, 1] > 0, "rain", "dry")
        clf = DNNClassifier((8,), max_iter=200, random_state=0, learning_rate_init=0.01)
        try:
            clf.predict(X)
        except NotFittedError:
            pass
        else:
            raise AssertionError("predict before fit must raise")
        clf.fit(X, y)
        assert clf.score(X, y) > 0.9, clf.score(X, y)
        assert clf.predict_proba(X).shape == (120, 2)
        assert clf.get_params()["hidden_layer_sizes"] == (8,)
        assert "hidden_layer_sizes=(8,)" in repr(clf)
        clf.set_params(max_iter=5).partial_fit(X, y)
        try:
            clf.predict(X[:, :2])
        except ValueError as e:
            assert "features" in str(e)
        import tempfile, os
        with tempfile.TemporaryDirectory() as d:
            clf.save(os.path.join(d, "m.npz"), extra={"mean": X.mean(0)})
            back, extra = dnnblocks.load(os.path.join(d, "m.npz"), with_extra=True)
        assert (back.predict(X) == clf.predict(X)).all()
        assert "sklearn" not in sys.modules
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"


def test_import_dnnblocks_does_not_import_sklearn():
    code = "import sys, dnnblocks; print('sklearn' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.stdout.strip() == "False", proc.stderr


# ------------------------------------------- accuracy against MLPClassifier
def _load(name):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


@pytest.mark.parametrize("dataset", ["breast_cancer", "iris", "wine", "digits"])
def test_accuracy_at_least_mlpclassifier(dataset):
    """Same hidden layers (scikit-learn's default (100,)), same max_iter (200),
    defaults otherwise, same splits, ten seeds each: the mean test accuracy
    of DNNClassifier is at least MLPClassifier's, up to one test example
    (both fit the same model family with Adam; what remains is seed noise)."""
    from threadpoolctl import threadpool_limits

    X, y = _load(dataset)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    ours, theirs = [], []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(10):
            mlp = make_pipeline(StandardScaler(), MLPClassifier((100,), max_iter=200, random_state=seed))
            dnn = make_pipeline(StandardScaler(), DNNClassifier((100,), max_iter=200, random_state=seed))
            theirs.append(mlp.fit(Xtr, ytr).score(Xte, yte))
            ours.append(dnn.fit(Xtr, ytr).score(Xte, yte))
    print(dataset, "MLPClassifier", np.mean(theirs), "DNNClassifier", np.mean(ours))
    assert np.mean(ours) >= np.mean(theirs) - 1 / len(yte)
    assert min(ours) > 0.9
