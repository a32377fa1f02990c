"""Model files: save -> load -> identical predictions, continued training, clear errors."""

import json
import os
import zipfile

import numpy as np
import pytest

import dnnblocks
from dnnblocks import ModelFileError, Network, load
from dnnblocks.model_io import FORMAT_VERSION
from dnnblocks.optimizers import Adam

pytest.importorskip("sklearn")
from dnnblocks import DNNClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::dnnblocks.exceptions.ConvergenceWarning")


def _data(n_classes=3, m=120, n=5, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    y_idx = np.argmax(X[:, :n_classes] + 0.3 * rng.standard_normal((m, n_classes)), axis=1)
    if labels is None:
        labels = np.arange(n_classes)
    return X, np.asarray(labels)[y_idx]


@pytest.mark.parametrize("solver", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("labels", [["cat", "dog", "emu"], [3, 7], [-1.0, 0.0, 2.0, 9.0]],
                         ids=["str3", "int2", "float4"])
def test_save_load_predicts_bit_for_bit(tmp_path, backend, dtype, solver, labels):
    X, y = _data(len(labels), labels=labels)
    clf = DNNClassifier((6, 4), solver=solver, max_iter=15, random_state=0, dtype=dtype,
                        backend=backend, learning_rate_init=0.01, dropout=0.1, alpha=0.1,
                        n_iter_no_change=50)
    with pytest.warns(dnnblocks.ConvergenceWarning):
        clf.fit(X, y)
    path = tmp_path / "model.npz"
    assert clf.save(path) == os.fspath(path)
    loaded = load(path)
    assert isinstance(loaded, DNNClassifier)
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.classes_.dtype == clf.classes_.dtype
    for a, b in zip(loaded.coefs_ + loaded.intercepts_, clf.coefs_ + clf.intercepts_):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    X_new = np.random.default_rng(9).standard_normal((40, X.shape[1]))
    np.testing.assert_array_equal(loaded.predict(X_new), clf.predict(X_new))
    p0, p1 = clf.predict_proba(X_new), loaded.predict_proba(X_new)
    assert p1.dtype == p0.dtype and np.array_equal(p0, p1)  # bit for bit
    assert np.array_equal(loaded.decision_function(X_new), clf.decision_function(X_new))
    assert loaded.n_iter_ == clf.n_iter_ and loaded.loss_curve_ == clf.loss_curve_
    assert loaded.n_features_in_ == clf.n_features_in_ and loaded.t_ == clf.t_


@pytest.mark.parametrize("solver", ["sgd", "momentum", "adam"])
def test_loaded_model_continues_training_exactly(tmp_path, solver):
    X, y = _data(3)
    clf = DNNClassifier((8,), solver=solver, max_iter=5, random_state=1, dropout=0.2,
                        learning_rate_init=0.01, batch_size=32, n_iter_no_change=50)
    with pytest.warns(dnnblocks.ConvergenceWarning):
        clf.fit(X, y)
    clf.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    # Same optimizer state, same generator: the next epochs are identical.
    for _ in range(3):
        clf.partial_fit(X, y)
        loaded.partial_fit(X, y)
    for a, b in zip(loaded.coefs_ + loaded.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert loaded.loss_curve_ == clf.loss_curve_
    assert loaded.n_iter_ == clf.n_iter_ == 8


def test_warm_start_fit_after_load(tmp_path):
    X, y = _data(2)
    clf = DNNClassifier((5,), max_iter=3, random_state=0, warm_start=True, n_iter_no_change=50)
    with pytest.warns(dnnblocks.ConvergenceWarning):
        clf.fit(X, y)
    clf.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    with pytest.warns(dnnblocks.ConvergenceWarning):
        loaded.fit(X, y)
    assert loaded.n_iter_ == 6 and len(loaded.loss_curve_) == 6
    assert loaded.loss_curve_[-1] < loaded.loss_curve_[0]


def test_extra_round_trip(tmp_path):
    X, y = _data(2)
    clf = DNNClassifier((4,), max_iter=300, random_state=0).fit(X, y)
    extra = {
        "mean": X.mean(axis=0),
        "scale": X.std(axis=0).astype(np.float32),
        "feature_names": ["a", "b", "c", "d", "e"],
        "target": "rain",
        "n": 3,
        "nested": {"k": [1, 2.5, None]},
        "names_array": np.array(["x", "yy"]),
        "count": np.int64(7),
    }
    path = tmp_path / "with_extra.npz"
    clf.save(path, extra=extra)
    model, got = load(path, with_extra=True)
    assert isinstance(model, DNNClassifier)
    assert set(got) == set(extra)
    for key in ("mean", "scale", "names_array"):
        assert got[key].dtype == extra[key].dtype and np.array_equal(got[key], extra[key])
    for key in ("feature_names", "target", "n", "nested"):
        assert got[key] == extra[key]
    assert got["count"] == 7 and isinstance(got["count"], int)  # NumPy scalars come back as Python
    # Without with_extra only the model comes back.
    assert isinstance(load(path), DNNClassifier)


def test_extra_rejects_what_needs_pickle(tmp_path):
    X, y = _data(2)
    clf = DNNClassifier((3,), max_iter=300, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="extra\\['bad'\\]"):
        clf.save(tmp_path / "m.npz", extra={"bad": object()})
    with pytest.raises(TypeError, match="object array"):
        clf.save(tmp_path / "m.npz", extra={"bad": np.array([None, 1], dtype=object)})
    with pytest.raises(TypeError, match="extra must be a dict"):
        clf.save(tmp_path / "m.npz", extra=[1, 2])
    assert not (tmp_path / "m.npz").exists()


def test_file_is_plain_npz_with_json_metadata(tmp_path):
    X, y = _data(3, labels=["a", "b", "c"])
    clf = DNNClassifier((4,), max_iter=300, random_state=0).fit(X, y)
    path = tmp_path / "m.npz"
    clf.save(path)
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["__dnnblocks__"][()]))
        assert meta["format"] == "dnnblocks-model"
        assert meta["format_version"] == FORMAT_VERSION
        assert meta["kind"] == "DNNClassifier"
        assert meta["network"]["layer_dims"] == [5, 4, 3]
        assert meta["network"]["dtype"] == "float64"
        assert meta["optimizer"]["scalars"]["name"] == "adam"
        assert meta["estimator"]["fitted"]["classes"]["values"] == ["a", "b", "c"]
        np.testing.assert_array_equal(f["W0"], clf.coefs_[0].T)
        assert all(f[k].dtype != object for k in f.files)


def test_network_save_load(tmp_path, backend, dtype):
    net = Network([3, 5, 2], hidden_activation="tanh", dtype=dtype, backend=backend, seed=4,
                  output="softmax")
    X = np.random.default_rng(0).standard_normal((3, 30)).astype(dtype)
    Y = np.eye(2, dtype=dtype)[:, np.arange(30) % 2]
    net.fit(X, Y, epochs=5, learning_rate=0.1)
    path = net.save(tmp_path / "net.npz")
    back = load(path)
    assert isinstance(back, Network)
    assert back.layer_dims == net.layer_dims and back.output == "softmax"
    assert back.hidden_activation == "tanh" and back.dtype == net.dtype and back.backend == backend
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))


def test_network_save_with_optimizer_state(tmp_path):
    from dnnblocks.model_io import read_model, network_from_payload, save_network

    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 50))
    Y = (X[:1] > 0).astype(float)
    net = Network([4, 6, 1], seed=0)
    opt = Adam()
    for _ in range(5):
        net.step(X, Y, 0.01, optimizer=opt)
    save_network(net, tmp_path / "n.npz", optimizer=opt)
    meta, arrays, _ = read_model(tmp_path / "n.npz")
    net2, opt2 = network_from_payload(meta, arrays)
    assert opt2.t == 5
    for _ in range(3):
        c1 = net.step(X, Y, 0.01, optimizer=opt)
        c2 = net2.step(X, Y, 0.01, optimizer=opt2)
        assert c1 == c2
    for a, b in zip(net.W, net2.W):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ errors
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    X, y = _data(2)
    clf = DNNClassifier((4,), max_iter=300, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("models") / "good.npz"
    clf.save(path)
    return path


def test_error_class_is_a_documented_value_error():
    assert issubclass(ModelFileError, ValueError)
    assert ModelFileError.__doc__


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


def test_other_npz_is_not_a_model(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(ModelFileError, match="not a dnnblocks model.*__dnnblocks__"):
        load(path)


def test_npz_with_foreign_metadata(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, __dnnblocks__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ModelFileError, match="not a dnnblocks model"):
        load(path)


@pytest.mark.parametrize("content", [b"a,b,c\n1,2,3\n", b"\x00\x01garbage", b""],
                         ids=["csv", "binary", "empty"])
def test_non_npz_files(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a dnnblocks model"):
        load(path)


def test_npy_file(tmp_path):
    path = tmp_path / "arr.npy"
    np.save(path, np.arange(4))
    with pytest.raises(ModelFileError, match="single NumPy array"):
        load(path)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tmp_path, saved_model, keep):
    data = saved_model.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load(path)


def test_corrupted_member(tmp_path, saved_model):
    data = bytearray(saved_model.read_bytes())
    # Flip bytes inside the first weight array's data (past its .npy header).
    with zipfile.ZipFile(saved_model) as z:
        info = z.getinfo("W0.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load(path)


def test_newer_format_is_refused(tmp_path, saved_model):
    with np.load(saved_model, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__dnnblocks__"][()]))
    meta["format_version"] = FORMAT_VERSION + 1
    arrays["__dnnblocks__"] = np.array(json.dumps(meta))
    path = tmp_path / "future.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=f"format {FORMAT_VERSION + 1}.*Upgrade dnnblocks"):
        load(path)


# --------------------------------------------------------------- atomicity
def test_failed_save_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch, saved_model):
    path = tmp_path / "model.npz"
    path.write_bytes(saved_model.read_bytes())
    before = path.read_bytes()
    X, y = _data(3)
    clf = DNNClassifier((3,), max_iter=300, random_state=0).fit(X, y)

    def broken_write_array(fp, array, *args, **kwargs):
        fp.write(b"\x93NUMPY half an array")
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken_write_array)
    with pytest.raises(OSError, match="disk full"):
        clf.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    monkeypatch.undo()
    clf.save(path)
    assert isinstance(load(path), DNNClassifier)
    assert load(path).classes_.tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_save_unfitted_raises(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DNNClassifier().save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_feature_names_are_kept(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = _data(2)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = DNNClassifier((3,), max_iter=300, random_state=0).fit(df, y)
    clf.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.feature_names_in_, clf.feature_names_in_)
    np.testing.assert_array_equal(back.predict(df), clf.predict(df))


# ------------------------------------------------------ format 1, byte for byte
def _fixed_network():
    """A Network whose every saved value is fixed (no training, no BLAS rounding)."""
    net = Network([3, 4, 2], hidden_activation="tanh", seed=0)
    for l, (W, b) in enumerate(zip(net.W, net.b)):
        np.copyto(W, (np.arange(W.size).reshape(W.shape) - 2.5) / (l + 3))
        np.copyto(b, np.linspace(-1, 1, b.size).reshape(b.shape))
    return net


def _fixed_classifier():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 3)
    y = np.array(["a", "b", "a", "b"] * 3)
    clf = DNNClassifier((3,), solver="sgd", max_iter=1, random_state=0, n_iter_no_change=50)
    with pytest.warns(dnnblocks.ConvergenceWarning):
        clf.fit(X, y)
    for W, b in zip(clf.coefs_, clf.intercepts_):
        np.copyto(W, (np.arange(W.size).reshape(W.shape) + 1.0) / 7)
        np.copyto(b, -np.arange(b.size, dtype=float).reshape(b.shape) / 3)
    clf.loss_curve_ = [0.75]
    clf.best_loss_ = 0.75
    return clf


#: SHA-256 of the files dnnblocks 0.1.0 wrote for the fixed models above,
#: computed with the writer before the format moved to model_file (np.savez,
#: with the clock frozen at the zip epoch, which is the timestamp the writer
#: now always uses). The dnnblocks version is part of the metadata: a new
#: version number changes these hashes, nothing else may.
GOLDEN_SHA256 = {
    "net": "f81e4fcefe49c026468013120d70bbee43339d5dbd356610dab95595b057475d",
    "net_adam": "50f7d0afc091c55673931c7d471eff893b3c6e07637389260ddb19ae015f95d7",
}


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_format_1_bytes_are_unchanged_and_reproducible(tmp_path):
    from dnnblocks.model_io import save_network

    if dnnblocks.__version__ != "0.1.0":
        pytest.skip("the golden hashes embed dnnblocks 0.1.0; recompute them for a new version")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        _fixed_network().save(folder / "net.npz")
        save_network(_fixed_network(), folder / "net_adam.npz",
                     extra={"mean": np.array([1.0, 2.0]), "note": "x"}, optimizer=Adam())
    for name, digest in GOLDEN_SHA256.items():
        assert (first / f"{name}.npz").read_bytes() == (second / f"{name}.npz").read_bytes()
        assert _sha256(first / f"{name}.npz") == digest, name


def test_saving_a_classifier_twice_gives_identical_bytes(tmp_path, monkeypatch):
    import time

    clf = _fixed_classifier()
    clf.save(tmp_path / "a.npz", extra={"feature_names": ["u", "v"]})
    # A later clock must not change the file: the zip timestamps are fixed.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400 * 400)
    clf.save(tmp_path / "b.npz", extra={"feature_names": ["u", "v"]})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert [info.filename for info in zf.infolist()][0] == "__dnnblocks__.npy"
