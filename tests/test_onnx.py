"""ONNX export (dnnblocks.onnx_export): onnxruntime computes what predict_proba computes.

Skipped when onnx or onnxruntime is not installed (``pip install ".[onnx]"``).
Tolerances: 1e-6 for float32 graphs, 1e-12 for float64 (absolute, on
probabilities in [0, 1]).
"""

import numpy as np
import pytest

from dnnblocks import DNNClassifier, Network, cli, load
from dnnblocks.model_io import export_model_file
from dnnblocks.onnx_export import OPSET, to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::dnnblocks.ConvergenceWarning")

TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def run_onnx(path_or_model, X):
    data = path_or_model if isinstance(path_or_model, (str, bytes)) else str(path_or_model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": X})))


def blobs(n_classes, n=300, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n)
    X = centres[y] + rng.normal(size=(n, n_features))
    return X, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_classifier_probabilities_match(tmp_path, dtype, activation, n_classes):
    X, y = blobs(n_classes)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]  # string classes travel as ONNX strings
    clf = DNNClassifier(hidden_layer_sizes=(8, 5), activation=activation, max_iter=15,
                        random_state=0, dtype=dtype).fit(X, labels)
    path = tmp_path / "model.onnx"
    model = to_onnx(clf, path)
    assert isinstance(model, onnx.ModelProto) and path.stat().st_size > 0
    assert model.opset_import[0].version == OPSET
    Xq = X[:50].astype(dtype)
    out = run_onnx(path, Xq)
    expected = clf.predict_proba(Xq)
    assert out["probabilities"].dtype == np.dtype(dtype)
    assert out["probabilities"].shape == (50, n_classes)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=0, atol=TOLERANCE[np.dtype(dtype)])
    assert list(out["label"].astype(str)) == list(clf.predict(Xq))


def test_integer_classes_and_a_dtype_change(tmp_path):
    X, y = blobs(3)
    clf = DNNClassifier(hidden_layer_sizes=(7,), max_iter=10, random_state=1).fit(X, y + 10)
    out = run_onnx(to_onnx(clf, None, dtype=np.float32).SerializeToString(), X.astype(np.float32))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), rtol=0, atol=1e-6)
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], clf.predict(X))


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid"])
def test_network_rows_in_rows_out(hidden):
    net = Network([4, 6, 3, 2], hidden_activation=hidden, seed=0)  # two independent sigmoid outputs
    X = np.random.default_rng(2).normal(size=(20, 4))
    out = run_onnx(to_onnx(net).SerializeToString(), X)
    assert set(out) == {"probabilities"}
    np.testing.assert_allclose(out["probabilities"], net.predict_proba(X.T).T, rtol=0, atol=1e-12)


def test_softmax_network():
    net = Network([3, 5, 4], seed=3, output="softmax", dtype=np.float32)
    X = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    out = run_onnx(to_onnx(net).SerializeToString(), X)
    np.testing.assert_allclose(out["probabilities"], net.predict_proba(X.T).T, rtol=0, atol=1e-6)


def test_standardisation_from_a_cli_model_file(tmp_path, monkeypatch):
    # A model trained by `dnnblocks train` stores the features' mean and scale;
    # the exported graph reads raw values, as `dnnblocks predict` does.
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    raw = np.column_stack([rng.normal(100, 20, 400), rng.normal(-3, 0.1, 400), rng.normal(0, 5, 400)])
    target = np.where((raw[:, 0] - 100) / 20 + (raw[:, 1] + 3) / 0.1 > 0, "yes", "no")
    with open("data.csv", "w") as f:
        f.write("a,b,c,target\n")
        for row, t in zip(raw, target):
            f.write(",".join(repr(float(v)) for v in row) + f",{t}\n")
    assert cli.main(["train", "data.csv", "--target", "target", "--epochs", "5", "--out", "m.npz",
                     "--quiet"]) == 0
    model, extra = load("m.npz", with_extra=True)
    onnx_model = export_model_file("m.npz", "m.onnx")
    props = {p.key: p.value for p in onnx_model.metadata_props}
    assert props["feature_names"] == "a,b,c"
    out = run_onnx("m.onnx", raw)
    standardised = (raw - np.asarray(extra["feature_mean"])) / np.asarray(extra["feature_scale"])
    expected = model.predict_proba(standardised)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=0, atol=1e-12)
    # Without the standardisation the numbers would be far off: the test can fail.
    assert np.abs(model.predict_proba(raw) - expected).max() > 1e-3


def test_bad_arguments():
    net = Network([3, 2, 1], seed=0)
    with pytest.raises(ValueError, match="feature_mean and feature_scale"):
        to_onnx(net, feature_mean=[0, 0, 0])
    with pytest.raises(ValueError, match="feature_scale must be 3 numbers"):
        to_onnx(net, feature_mean=[0, 0, 0], feature_scale=[1, 1])
    with pytest.raises(ValueError, match="must not contain 0"):
        to_onnx(net, feature_mean=[0, 0, 0], feature_scale=[1, 0, 1])
    with pytest.raises(TypeError, match="dtype must be float32, float64"):
        to_onnx(net, dtype=np.int32)
    with pytest.raises(ValueError, match="fitted"):
        to_onnx(DNNClassifier())
    with pytest.raises(TypeError, match="DNNClassifier or a Network"):
        to_onnx(object())


def test_cli_export_matches_predict(tmp_path, monkeypatch, capsys):
    # `dnnblocks export` writes the graph `dnnblocks predict --proba` computes.
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(8)
    raw = np.column_stack([rng.normal(50, 10, 300), rng.normal(1, 0.01, 300)])
    label = np.where(raw[:, 0] - 50 + 800 * (raw[:, 1] - 1) > 0, "hi", "lo")
    with open("d.csv", "w") as f:
        f.write("u,v,y\n")
        for row, t in zip(raw, label):
            f.write(f"{float(row[0])!r},{float(row[1])!r},{t}\n")
    assert cli.main(["train", "d.csv", "--target", "y", "--epochs", "3", "--out", "m.npz", "-q"]) == 0
    assert cli.main(["export", "m.npz", "m.onnx"]) == 0
    assert cli.main(["predict", "m.npz", "d.csv", "--proba", "--out", "p.csv"]) == 0
    predicted = np.genfromtxt("p.csv", delimiter=",", skip_header=1, usecols=(1, 2))
    out = run_onnx("m.onnx", raw)
    # predict writes repr(float) text, exact for float64.
    np.testing.assert_allclose(out["probabilities"], predicted, rtol=0, atol=1e-12)
    assert list(out["label"]) == list(np.genfromtxt("p.csv", delimiter=",", skip_header=1,
                                                    usecols=0, dtype=str))
    capsys.readouterr()
    # The output may not be the model itself; a missing model is one line, status 1.
    assert cli.main(["export", "m.npz", "m.npz"]) == 1
    assert cli.main(["export", "missing.npz", "x.onnx"]) == 1
    err = capsys.readouterr().err
    assert "missing.npz" in err and "Traceback" not in err


def test_estimator_to_onnx(tmp_path):
    X, y = blobs(3, n=200, n_features=4, seed=2)
    clf = DNNClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)
    model = clf.to_onnx(tmp_path / "c.onnx")
    assert isinstance(model, onnx.ModelProto)
    out = run_onnx(tmp_path / "c.onnx", X)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out["label"], clf.predict(X))
