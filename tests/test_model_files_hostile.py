"""Hostile model files: load refuses them with ModelFileError, allocating nothing large."""

import io
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from dnnblocks import ModelFileError, Network, load
from dnnblocks.model_io import save_network
from dnnblocks.optimizers import Adam, Momentum

pytestmark = pytest.mark.filterwarnings("ignore::dnnblocks.exceptions.ConvergenceWarning")


def _npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _write(path, members):
    """A zip of members (name -> bytes), as np.savez writes it (stored)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 20))
    Y = (X[:1] > 0).astype(float)
    net = Network([3, 4, 1], seed=0)
    opt = Adam()
    for _ in range(2):
        net.step(X, Y, 0.01, optimizer=opt)
    path = save_network(net, tmp_path / "good.npz", optimizer=opt)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(str(np.load(path)["__dnnblocks__"][()]))
    return path, meta, members


def _rewrite(tmp_path, meta, members, name="bad.npz", **replace):
    out = dict(members)
    out["__dnnblocks__.npy"] = _npy(np.array(json.dumps(meta)))
    out.update(replace)
    return _write(tmp_path / name, list(out.items()))


def test_good_file_loads(good):
    net = load(good[0])
    assert net.layer_dims == (3, 4, 1)


# ------------------------------------------------------------ 1: rng state
@pytest.mark.parametrize("name", ["test", "seed", "set_state", "__init__", "Generator", "", 3])
def test_bit_generator_outside_the_fixed_list_is_refused(tmp_path, good, name):
    _, meta, members = good
    meta["rng_state"] = {"bit_generator": name, "state": {"state": 1, "inc": 1}}
    path = _rewrite(tmp_path, meta, members)
    np.random.seed(1234)
    before = np.random.get_state()[1].copy()
    with pytest.raises(ModelFileError, match="bit_generator"):
        load(path)
    # seed() would have reseeded the global state; it was never called.
    assert np.array_equal(np.random.get_state()[1], before)


def test_each_listed_bit_generator_round_trips(tmp_path, good):
    _, meta, members = good
    for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
        bg = getattr(np.random, name)(7)
        meta["rng_state"] = json.loads(json.dumps(bg.state, default=lambda a: a.tolist()))
        net = load(_rewrite(tmp_path, meta, members, name=f"{name}.npz"))
        assert type(net._rng.bit_generator).__name__ == name
        assert np.array_equal(net._rng.random(5), np.random.Generator(bg).random(5))


# ------------------------------------------------- 2: sizes from the headers
def _huge_w0(tmp_path):
    meta = {"format": "dnnblocks-model", "format_version": 1, "kind": "Network",
            "network": {"layer_dims": [16000, 16000], "hidden_activation": "relu", "output": "sigmoid",
                        "dtype": "float64", "init": "he", "backend": "compiled"},
            "rng_state": None, "optimizer": None, "extra": {}, "arrays": ["W0", "b0"]}
    # Headers declare 16000x16000 float64 (2 GB); the data is absent.
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False,
                                               "shape": (16000, 16000)})
    return _write(tmp_path / "huge.npz", [("__dnnblocks__.npy", _npy(np.array(json.dumps(meta)))),
                                          ("W0.npy", hdr.getvalue()),
                                          ("b0.npy", _npy(np.zeros((16000, 1))))])


CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    import dnnblocks
    try:
        dnnblocks.load(sys.argv[1])
    except dnnblocks.ModelFileError as exc:
        print("REFUSED", exc)
    else:
        print("LOADED")
""")


def _child(path, timeout=60):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", CHILD, os.fspath(path)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_huge_declared_weight_is_refused_before_allocation(tmp_path):
    path = _huge_w0(tmp_path)
    assert path.stat().st_size < 300_000
    res = _child(path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("REFUSED") and "W0" in res.stdout


def test_the_memory_cap_leaves_room_for_a_real_load(good):
    res = _child(good[0])  # the cap itself is not what refuses the huge file
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "LOADED"


def _header_only(shape, descr):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_unlisted_members_are_ignored_unread(tmp_path, good):
    _, meta, members = good
    # Declares 2 GB: reading it would fail; it is never read.
    path = _rewrite(tmp_path, meta, members, **{"surprise.npy": _header_only((16000, 16000), "<f8")})
    assert load(path).layer_dims == (3, 4, 1)


@pytest.mark.parametrize("case", ["W_shape", "W_dtype", "opt_shape", "extra_huge_str",
                                  "extra_object", "duplicate", "meta_too_big", "b_int"])
def test_members_checked_from_their_headers(tmp_path, good, case):
    path0, meta, members = good
    repl = {}
    if case == "W_shape":
        repl["W0.npy"] = _npy(np.zeros((4, 4)))
    elif case == "W_dtype":
        repl["W0.npy"] = _npy(np.zeros((4, 3), np.float32))
    elif case == "b_int":
        repl["b0.npy"] = _npy(np.zeros((4, 1), np.int64))
    elif case == "opt_shape":
        repl["opt_0.npy"] = _npy(np.zeros((5, 3)))
    elif case == "extra_huge_str":
        meta["extra"] = {"classes": {"array": "extra_0"}}
        meta["arrays"] = sorted(meta["arrays"] + ["extra_0"])
        repl["extra_0.npy"] = _header_only((1,), "<U100000000")
    elif case == "extra_object":
        meta["extra"] = {"x": {"array": "extra_0"}}
        meta["arrays"] = sorted(meta["arrays"] + ["extra_0"])
        repl["extra_0.npy"] = _header_only((2,), "|O")
    if case == "duplicate":
        items = list(members.items()) + [("W0.npy", members["W0.npy"])]
        with pytest.warns(UserWarning, match="Duplicate name"):
            path = _write(tmp_path / "dup.npz", items)
    elif case == "meta_too_big":
        meta["pad"] = "x" * (4 * 1024 * 1024 + 10)  # > 16 MiB as UCS-4
        path = _rewrite(tmp_path, meta, members)
    else:
        path = _rewrite(tmp_path, meta, members, **repl)
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert os.fspath(path) in str(info.value)


# ------------------------------------------------------- 3: bad metadata
def _mutations():
    def drop(key):
        return lambda m: m.pop(key)

    def setpath(*keys, value):
        def f(m):
            d = m
            for k in keys[:-1]:
                d = d[k]
            d[keys[-1]] = value
        return f

    return {
        "format_version_true": setpath("format_version", value=True),
        "format_version_str": setpath("format_version", value="1"),
        "no_network": drop("network"),
        "no_arrays": drop("arrays"),
        "network_list": setpath("network", value=[1]),
        "layer_dims_str": setpath("network", "layer_dims", value="345"),
        "layer_dims_huge": setpath("network", "layer_dims", value=[3, 10 ** 30, 1]),
        "dtype_object": setpath("network", "dtype", value="object"),
        "activation_list": setpath("network", "hidden_activation", value=["relu"]),
        "rng_state_list": setpath("rng_state", value=[1, 2]),
        "rng_state_str": setpath("rng_state", value="PCG64"),
        "rng_state_bad_inner": setpath("rng_state", value={"bit_generator": "PCG64", "state": 5}),
        "extra_list": setpath("extra", value=[1]),
        "extra_entry_str": setpath("extra", value={"a": "b"}),
        "optimizer_list": setpath("optimizer", value=[]),
        "opt_t_inf": setpath("optimizer", "scalars", "t", value=float("inf")),
        "opt_t_negative": setpath("optimizer", "scalars", "t", value=-1),
        "opt_t_float": setpath("optimizer", "scalars", "t", value=2.5),
        "opt_t_huge": setpath("optimizer", "scalars", "t", value=10 ** 30),
        "opt_name": setpath("optimizer", "scalars", "name", value="__class__"),
        "opt_unknown_param": setpath("optimizer", "scalars", "lr", value=1.0),
        "opt_beta_str": setpath("optimizer", "scalars", "beta1", value="x"),
        "opt_state_name": setpath("optimizer", "arrays", value={"zz/0": "opt_0"}),
        "kind_unknown": setpath("kind", value="Pickle"),
        "arrays_dup": lambda m: m["arrays"].append("W0"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_metadata_is_a_model_file_error(tmp_path, good, name):
    _, meta, members = good
    MUTATIONS[name](meta)
    path = _rewrite(tmp_path, meta, members)
    with pytest.raises(ModelFileError, match=re.escape(os.fspath(path))):
        load(path)


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, "{\"a\": " * 50000 + "1" + "}" * 50000,
                                  "not json", "1" * 5000, "[1, 2]"], ids=["deep_list", "deep_dict", "garbage",
                                                                          "long_int", "list"])
def test_unparseable_metadata(tmp_path, good, text):
    _, _, members = good
    path = _write(tmp_path / "m.npz", list({**members, "__dnnblocks__.npy": _npy(np.array(text))}.items()))
    with pytest.raises(ModelFileError):
        load(path)


@pytest.mark.parametrize("member", [("notes.txt", b"hello"), ("__dnnblocks__.npy", b"not npy")],
                         ids=["non_npy_member", "bad_npy_header"])
def test_non_npy_members(tmp_path, good, member):
    _, _, members = good
    path = _write(tmp_path / "m.npz", list({**members, member[0]: member[1]}.items()))
    with pytest.raises(ModelFileError):
        load(path)


def test_metadata_not_a_string_array(tmp_path, good):
    _, _, members = good
    path = _write(tmp_path / "m.npz", list({**members, "__dnnblocks__.npy": _npy(np.zeros(3))}.items()))
    with pytest.raises(ModelFileError, match="unicode"):
        load(path)


# ------------------------------------------------------- classifier metadata
@pytest.fixture
def good_clf(tmp_path):
    pytest.importorskip("sklearn")
    from dnnblocks import DNNClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.array(["a", "b", "c"])[np.argmax(X, axis=1)]
    clf = DNNClassifier((4,), max_iter=300, random_state=0).fit(X, y)
    clf.feature_names_in_ = np.array(["x", "y", "z"], dtype=object)
    path = clf.save(tmp_path / "clf.npz")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(str(np.load(path)["__dnnblocks__"][()]))
    return path, meta, members


CLF_MUTATIONS = {
    "one_class": lambda f: f["classes"].update(values=["a"]),
    "dup_classes": lambda f: f["classes"].update(values=["a", "a", "b"]),
    "unsorted_classes": lambda f: f["classes"].update(values=["b", "a", "c"]),
    "huge_class_dtype": lambda f: f["classes"].update(dtype="<U100000000"),
    "object_class_dtype_code": lambda f: f["classes"].update(dtype="O"),
    "nested_class": lambda f: f["classes"].update(dtype="object", values=[[1], [2], [3]]),
    "dup_feature_names": lambda f: f.update(feature_names_in_=["x", "x", "z"]),
    "feature_names_count": lambda f: f.update(feature_names_in_=["x"]),
    "n_features_str": lambda f: f.update(n_features_in_="3"),
    "loss_curve_dict": lambda f: f.update(loss_curve_={"a": 1}),
    "missing_t_": lambda f: f.pop("t_"),
    "rng_state_list": lambda f: f.update(rng_state=[1]),
}


@pytest.mark.parametrize("name", sorted(CLF_MUTATIONS))
def test_malformed_classifier_metadata(tmp_path, good_clf, name):
    _, meta, members = good_clf
    assert load(good_clf[0]).classes_.tolist() == ["a", "b", "c"]
    CLF_MUTATIONS[name](meta["estimator"]["fitted"])
    path = _rewrite(tmp_path, meta, members)
    with pytest.raises(ModelFileError, match=re.escape(os.fspath(path))):
        load(path)


@pytest.mark.parametrize("param,value", [("solver", "lbfgs"), ("alpha", -1.0), ("dtype", "object"),
                                         ("hidden_layer_sizes", [5]), ("max_iter", "x")])
def test_malformed_classifier_params(tmp_path, good_clf, param, value):
    _, meta, members = good_clf
    meta["estimator"]["params"][param] = value
    with pytest.raises(ModelFileError):
        load(_rewrite(tmp_path, meta, members))


# ---------------------------------------------- 4: non-finite optimizer state
@pytest.mark.parametrize("opt_cls,state,bad", [(Adam, "m", np.nan), (Adam, "v", np.inf),
                                               (Adam, "v", -1.0), (Momentum, "velocity", np.nan)])
def test_non_finite_optimizer_state_is_refused(tmp_path, opt_cls, state, bad):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 20))
    Y = (X[:1] > 0).astype(float)
    net = Network([3, 4, 1], seed=0)
    opt = opt_cls()
    net.step(X, Y, 0.01, optimizer=opt)
    opt._state[state][0][0, 0] = bad
    path = save_network(net, tmp_path / "n.npz", optimizer=opt)
    from dnnblocks.model_io import network_from_payload, read_model

    meta, arrays, _ = read_model(path)
    with pytest.raises(ModelFileError, match=f"optimizer state {state}/0"):
        network_from_payload(meta, arrays)
    opt._state[state][0][0, 0] = 0.0
    save_network(net, path, optimizer=opt)
    _, opt2 = network_from_payload(*read_model(path)[:2])
    assert opt2.t == 1


# ------------------------------------------------------ 5: non-regular files
def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    code = ("import sys, dnnblocks\ntry:\n    dnnblocks.load(sys.argv[1])\n"
            "except ValueError as e:\n    print('REFUSED', e)\n")
    res = subprocess.run([sys.executable, "-c", code, os.fspath(fifo)], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.startswith("REFUSED") and os.fspath(fifo) in res.stdout, res.stderr


def test_directory_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not a regular file"):
        load(tmp_path)


# ---------------------------------------------------------------- 6: writing
def _net():
    return Network([2, 3, 1], seed=0)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_respects_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = _net().save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_existing_mode_is_kept(tmp_path):
    path = tmp_path / "m.npz"
    _net().save(path)
    os.chmod(path, 0o640)
    _net().save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_saving_over_a_directory_or_a_link_to_one(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    for path in (target, link):
        with pytest.raises(IsADirectoryError, match=str(path)):
            _net().save(path)
    assert link.is_symlink() and (target / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "link.npz"]


def test_read_only_target_is_not_replaced(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"precious")
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match="read-only"):
        _net().save(path)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_os_error_names_the_target(tmp_path):
    path = tmp_path / "missing_dir" / "m.npz"
    with pytest.raises(OSError) as info:
        _net().save(path)
    assert str(path) in str(info.value) and ".tmp" not in str(info.value)


def test_compressed_members_are_refused(tmp_path, good):
    with np.load(good[0]) as f:
        arrays = {k: f[k] for k in f.files}
    path = tmp_path / "z.npz"
    np.savez_compressed(path, **arrays)
    with pytest.raises(ModelFileError, match="compressed"):
        load(path)


def test_largest_metadata_parses_within_the_memory_cap(tmp_path):
    # The costliest JSON per character (empty lists) at the largest metadata
    # size accepted: parsing it must stay far under the child's 1 GiB.
    n = (16 * 1024 * 1024 - 256) // 4 // 3
    text = "[" + "[]," * (n - 1) + "[]]"
    path = _write(tmp_path / "big_meta.npz", [("__dnnblocks__.npy", _npy(np.array(text)))])
    res = _child(path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("REFUSED") and "does not name the dnnblocks model format" in res.stdout


@pytest.mark.parametrize("dangling", [False, True], ids=["to_a_file", "dangling"])
def test_saving_over_a_symlink_is_refused_and_changes_nothing(tmp_path, dangling):
    # Replacing the link would leave the file it points to stale; writing
    # through it would follow a link the kernel refuses in shared folders.
    target = tmp_path / "real.npz"
    if not dangling:
        target.write_bytes(b"precious")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with pytest.raises(ValueError, match=r"link\.npz: it is a symbolic link \(to .*real\.npz\)"):
        _net().save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"precious" if not dangling else not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["link.npz"] if dangling else ["link.npz", "real.npz"])
    _net().save(target)  # the file itself can be saved, and the link then reads it
    assert isinstance(load(link), Network)


# ------------------------------------- non-float weights: named as a wrong dtype
@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128], ids=["int", "bool", "complex"])
def test_weights_of_a_non_float_dtype_are_named_by_their_dtype(tmp_path, good, dtype):
    # Integer, boolean or complex weights are finite numbers; the message must
    # say what is wrong with them (their dtype), not call them "not finite".
    _, meta, members = good
    W0 = np.load(io.BytesIO(members["W0.npy"]))
    path = _rewrite(tmp_path, meta, members, **{"W0.npy": _npy(np.ones_like(W0, dtype=dtype))})
    with pytest.raises(ModelFileError, match=f"W0 has dtype {np.dtype(dtype)}") as info:
        load(path)
    assert "not finite" not in str(info.value)
    assert "float64" in str(info.value)
