"""The model-file format: one ``.npz`` archive, no pickle, written atomically.

This module knows the file and nothing of the objects stored in it: it writes
metadata and arrays, and reads them back only after checking every member
against the metadata (a crafted file is refused before it can allocate more
than the file's size). :mod:`dnnblocks.model_io` builds the models.

Layout of a model file (format version 1)
-----------------------------------------
A NumPy ``.npz`` (zip) archive, readable with ``np.load(path, allow_pickle=False)``:

``__dnnblocks__``
    A 0-d unicode array holding JSON metadata: ``format`` (always
    ``"dnnblocks-model"``), ``format_version``, ``dnnblocks_version``,
    ``kind`` (``"Network"`` or ``"DNNClassifier"``), ``network`` (layer sizes,
    activations, output layer, dtype, initialiser, backend), ``optimizer``
    (name, hyper-parameters, step count), the estimator's hyper-parameters and
    fitted attributes (classes, number of features, feature names, loss curve,
    ...), the random generator's state, the names of the ``extra`` entries,
    and ``arrays``, the list of every array the file must hold.
``W0``, ``b0``, ``W1``, ... : the weights and biases, in the network's dtype.
``opt_<state>_<i>`` : optimizer state (momentum velocity, Adam moments).
``extra_<i>`` : arrays passed as ``extra`` to :meth:`DNNClassifier.save`.

The members are stored uncompressed, in that order, with a fixed zip
timestamp (1980-01-01 00:00:00, the earliest a zip file can hold): the same
model always gives the same bytes.

Files are written to a temporary file in the target's folder, flushed to
disk and moved over the target with :func:`os.replace`, so a crash never
leaves a half-written file under the target name. :func:`read_model` refuses
files of a newer format version, and reports files that are not dnnblocks
models or are truncated with :class:`~dnnblocks.exceptions.ModelFileError`.
"""

import functools
import importlib.metadata
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from ._validation import check_layer_dims
from .exceptions import ModelFileError
from .optimizers import Adam, Momentum, optimizer_from_state

FORMAT_NAME = "dnnblocks-model"
#: The model-file format this version writes, and the newest it reads.
FORMAT_VERSION = 1
_META_KEY = "__dnnblocks__"
#: The timestamp of every member: the zip format's earliest date, so that
#: saving the same model twice gives the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------ writing
@functools.cache
def package_version():
    """The installed dnnblocks version, written into every file.

    Read from the distribution's metadata (the one version number of the
    project), so this module need not import the package above it.
    """
    try:
        return importlib.metadata.version("dnnblocks")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def rng_state(rng):
    """The generator's state as JSON, or None when it cannot be stored."""
    if not isinstance(rng, np.random.Generator):
        return None
    state = rng.bit_generator.state
    try:
        json.dumps(state)
    except TypeError:  # pragma: no cover - bit generators with array state
        return None
    return state


#: Bit generators a file may name. A fixed list: the name comes from the
#: file, and looking it up with getattr(np.random, name) would let a file
#: call any function of numpy.random (``seed`` reseeds the global state).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def restore_rng(state):
    """A Generator in the saved `state`, or None for no state; ModelFileError if invalid."""
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ModelFileError(f"rng_state must be a JSON object or null; got {type(state).__name__}")
    name = state.get("bit_generator")
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise ModelFileError(f"rng_state names bit_generator {name!r}; expected one of {_BIT_GENERATORS}")
    bit_generator = getattr(np.random, name)(0)
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"rng_state is not a valid {name} state ({exc!r})") from None
    return np.random.Generator(bit_generator)


def network_record(*, layer_dims, hidden_activation, output, dtype, init, backend, W, b,
                   rng=None, optimizer=None):
    """Metadata and arrays describing a network given by its parts (and an optimizer's state).

    Returns
    -------
    meta : dict
        The ``network``, ``rng_state`` and ``optimizer`` entries of the metadata.
    arrays : dict of str -> ndarray
        ``W<l>``, ``b<l>`` and the optimizer's ``opt_<i>`` arrays.
    """
    meta = {
        "network": {
            "layer_dims": list(layer_dims),
            "hidden_activation": hidden_activation,
            "output": output,
            "dtype": np.dtype(dtype).name,
            "init": init,
            "backend": backend,
        },
        "rng_state": rng_state(rng),
        "optimizer": None,
    }
    arrays = {}
    for l, (weights, bias) in enumerate(zip(W, b)):
        arrays[f"W{l}"] = weights
        arrays[f"b{l}"] = bias
    if optimizer is not None:
        scalars, state = optimizer.state_dict()
        meta["optimizer"] = {"scalars": scalars, "arrays": {}}
        for i, (name, a) in enumerate(state.items()):
            key = f"opt_{i}"
            meta["optimizer"]["arrays"][name] = key
            arrays[key] = a
    return meta, arrays


def check_network_arrays(meta, arrays):
    """Check the weights of a record against its architecture; returns the layer sizes.

    Run before a network is built: corrupted metadata must not make the
    caller allocate (or initialise) a huge network, and weights that are not
    finite are refused.
    """
    dims = check_layer_dims(meta["network"]["layer_dims"])
    dtype = np.dtype(meta["network"]["dtype"])
    for l in range(len(dims) - 1):
        for name, shape in ((f"W{l}", (dims[l + 1], dims[l])), (f"b{l}", (dims[l + 1], 1))):
            src = arrays.get(name)
            if src is None or src.shape != shape:
                raise ModelFileError(f"array {name} has shape {getattr(src, 'shape', None)}; the "
                                     f"architecture {list(dims)} says {shape}")
            if src.dtype.kind != "f":
                raise ModelFileError(f"array {name} has dtype {src.dtype}; the architecture says "
                                     f"{dtype} (weights are floating-point numbers)")
            if not np.isfinite(src).all():
                raise ModelFileError(f"array {name} holds values that are not finite numbers "
                                     f"(NaN or infinity); the file is corrupted")
            if src.dtype != dtype:
                raise ModelFileError(f"array {name} has shape {src.shape} and dtype {src.dtype}; the "
                                     f"architecture says {shape} {dtype}")
    return dims


def optimizer_from_record(meta, arrays, W, b):
    """The optimizer a record holds, with its state loaded for weights `W`, `b`; None if none."""
    opt_meta = meta.get("optimizer")
    if not opt_meta:
        return None
    optimizer = optimizer_from_state(opt_meta["scalars"])
    state = {name: arrays[key] for name, key in opt_meta["arrays"].items()}
    # Non-finite state (or a negative second moment, whose square root
    # Adam takes) would turn the weights into NaN at the next step,
    # silently: refuse it here.
    for name, a in state.items():
        if a.dtype.kind != "f":
            raise ModelFileError(f"optimizer state {name} has dtype {a.dtype}; optimizer state is "
                                 f"floating-point numbers")
        if not np.isfinite(a).all():
            raise ModelFileError(f"optimizer state {name} holds values that are not finite numbers")
        if name.startswith("v/") and optimizer.name == "adam" and (a < 0).any():
            raise ModelFileError(f"optimizer state {name} (Adam's second moment) holds negative values")
    optimizer.load_state(opt_meta["scalars"].get("t", 0), state, W, b)
    return optimizer


def _extra_payload(extra):
    if extra is None:
        return {}, {}
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict of str -> ndarray or JSON value; got {type(extra).__name__}")
    index, arrays = {}, {}
    for i, (name, value) in enumerate(extra.items()):
        if not isinstance(name, str):
            raise TypeError(f"extra keys must be strings; got {name!r}")
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(
                    f"extra[{name!r}] is an object array, which cannot be stored without pickle; "
                    f"pass a numeric or string array, or a list"
                )
            key = f"extra_{i}"
            arrays[key] = value
            index[name] = {"array": key}
        else:
            if isinstance(value, np.generic):  # NumPy scalars become Python ones
                value = value.item()
            try:
                json.dumps(value, allow_nan=True)
            except (TypeError, ValueError):
                raise TypeError(
                    f"extra[{name!r}] must be an ndarray or a JSON-serialisable value; "
                    f"got {type(value).__name__}"
                ) from None
            index[name] = {"json": value}
    return index, arrays


def _umask():
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - no /proc: the classic (racy) read
    os.umask(mask)
    return mask


def check_save_target(path):
    """Permission bits for the file saved at `path`; refuses targets that must not be replaced.

    A new file gets the mode the umask allows; an existing regular file keeps
    its mode. Refused: a directory (or a link to one), anything else that is
    not a regular file, a read-only file, and a symbolic link. The rename
    that completes a save would replace the link itself and leave the file it
    points to unchanged; writing through it instead would follow, from user
    space, a link that the kernel refuses to follow in a shared folder
    (``fs.protected_symlinks``). Either surprises, so a link is refused with
    the path it points to.

    Raises
    ------
    IsADirectoryError, PermissionError, ValueError
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)  # follows a symlink: a link to a folder is refused as a folder
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"cannot save the model to {path}: it is a directory")
    if os.path.islink(path):
        raise ValueError(f"cannot save the model to {path}: it is a symbolic link (to "
                         f"{os.readlink(path)}); save to the file it points to, or remove the link")
    if st is None:
        return 0o666 & ~_umask()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"cannot save the model to {path}: it exists and is not a regular file")
    # The permission bits, not os.access: root passes every access check, and
    # a file made read-only on purpose must not be replaced by the rename.
    if not st.st_mode & 0o222:
        raise PermissionError(f"cannot save the model to {path}: the existing file is read-only")
    return st.st_mode & 0o777


def _save_error(exc, path):
    """`exc` reworded to name the target, not the temporary file."""
    why = exc.strerror or str(exc)
    if exc.errno is None:
        return type(exc)(f"cannot save the model to {path}: {why}")
    return OSError(exc.errno, f"cannot save the model to {path}: {why}")


def _write_archive(fh, arrays):
    """The ``.npz`` archive ``np.savez`` writes, with a fixed timestamp on every member."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as member:  # zip64 always, as np.savez
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def write_model(path, kind, meta, arrays, extra=None):
    """Write a model file atomically; returns `path`.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write, used as given (no suffix is added).
    kind : str
        ``"Network"`` or ``"DNNClassifier"``.
    meta : dict
        JSON-serialisable metadata (format fields are added here).
    arrays : dict of str -> ndarray
    extra : dict, optional
        User data: str -> ndarray or JSON-serialisable value.
    """
    path = os.fspath(path)
    extra_index, extra_arrays = _extra_payload(extra)
    arrays = {**arrays, **extra_arrays}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dnnblocks_version": package_version(),
        "kind": kind,
        **meta,
        "extra": extra_index,
        "arrays": sorted(arrays),
    }
    text = json.dumps(meta, allow_nan=True)
    for key, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"array {key} has dtype object, which model files do not store")
    directory = os.path.dirname(os.path.abspath(path))
    mode = check_save_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise _save_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_archive(fh, {_META_KEY: np.array(text), **arrays})
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600: give it the target's mode, or the
        # mode a new file gets under the umask, before it takes the name.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _save_error(exc, path) from exc
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        pass
    else:
        try:
            os.fsync(dir_fd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(dir_fd)
    return path


# ------------------------------------------------------------------ reading
def _not_a_model(path, why):
    return ModelFileError(f"{path} is not a dnnblocks model file: {why}")


#: Largest metadata member accepted (bytes of its .npy data, 4 per character).
_META_CAP = 16 * 1024 * 1024
#: Largest .npy header accepted (numpy writes under 200 bytes for our arrays).
_HEADER_CAP = 10000
_FLOAT_DTYPES = ("float32", "float64")


def with_path(exc, path):
    """`exc`, or a ModelFileError that also names the file."""
    path = os.fspath(path)
    return exc if path in str(exc) else ModelFileError(f"{path}: {exc}")


def _open_regular(path):
    """Open `path` for reading, refusing anything but a regular file.

    A FIFO would block ``open`` (and a device could stream forever), so the
    type is checked first, and the open itself does not block.
    """
    st = os.stat(path)  # FileNotFoundError propagates
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path} is not a regular file (a directory, FIFO, socket or device); "
                             f"a model file is expected")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ModelFileError(f"{path} is not a regular file; a model file is expected")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _member_header(path, zf, info):
    """(shape, dtype) of a .npy member, from its header only (no data is read)."""
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_HEADER_CAP)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_HEADER_CAP)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), dtype


def _check_member_size(path, key, info, shape, dtype, archive_size):
    """Refuse a member whose declared size its bytes in the archive cannot hold."""
    if dtype.hasobject:
        raise ModelFileError(f"{path} is truncated or corrupted: array {key} has an object dtype, which "
                             f"would need allow_pickle; model files never hold one")
    nbytes = math.prod(shape) * dtype.itemsize
    # The zip member must really hold the data its header declares: this
    # bounds every allocation by the archive's own size (times the deflate
    # ratio for compressed members) before anything is allocated.
    if dtype.itemsize > info.file_size or nbytes > info.file_size:
        raise ModelFileError(f"{path} is truncated or corrupted: array {key} declares shape {shape} and "
                             f"dtype {dtype} ({nbytes} bytes) but its member holds {info.file_size} bytes")


def _int(value, name, low=0, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        raise ModelFileError(f"{name} must be an integer >= {low}"
                             + (f" and <= {high}" if high is not None else "") + f"; got {value!r}")
    return value


def _number(value, name, none=False):
    if value is None and none:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFileError(f"{name} must be a number{' or null' if none else ''}; got {value!r}")
    return value


def _dict(value, name, keys=()):
    if not isinstance(value, dict):
        raise ModelFileError(f"{name} must be a JSON object; got {type(value).__name__}")
    for k in keys:
        if k not in value:
            raise ModelFileError(f"{name} has no {k!r} entry")
    return value


def _expected_arrays(path, meta):
    """{array name: (shape, dtype) or None for any} that the metadata allows, checking its types."""
    net = _dict(meta.get("network"), "metadata 'network'", ("layer_dims", "hidden_activation", "dtype"))
    try:
        dims = check_layer_dims(net["layer_dims"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid layer_dims ({exc})") from None
    for key in ("hidden_activation", "output", "init", "backend"):
        if key in net and not isinstance(net[key], str):
            raise ModelFileError(f"{path}: network {key} must be a string; got {net[key]!r}")
    if net["dtype"] not in _FLOAT_DTYPES:
        raise ModelFileError(f"{path}: network dtype must be float32 or float64; got {net['dtype']!r}")
    dtype = np.dtype(net["dtype"])
    L = len(dims) - 1
    shapes = [(dims[l + 1], dims[l]) for l in range(L)] + [(dims[l + 1], 1) for l in range(L)]
    expected = {}
    for l in range(L):
        expected[f"W{l}"] = (shapes[l], dtype)
        expected[f"b{l}"] = (shapes[L + l], dtype)
    opt = meta.get("optimizer")
    if opt is not None:
        _dict(opt, "metadata 'optimizer'", ("scalars", "arrays"))
        scalars = _dict(opt["scalars"], "optimizer scalars", ("name",))
        state_names = {"momentum": Momentum._STATE, "adam": Adam._STATE}.get(scalars["name"], ())
        _int(scalars.get("t", 0), "optimizer t", 0, 2 ** 62)
        for name, key in _dict(opt["arrays"], "optimizer arrays").items():
            state, _, index = name.partition("/")
            if (state not in state_names or not index.isdigit() or int(index) >= 2 * L
                    or not isinstance(key, str) or not key.startswith("opt_") or key in expected):
                raise ModelFileError(f"{path}: unexpected optimizer state {name!r} -> {key!r}")
            expected[key] = (shapes[int(index)], dtype)
        if opt["arrays"] and len(opt["arrays"]) != 2 * L * len(state_names):
            raise ModelFileError(f"{path}: the optimizer state is incomplete")
    for name, entry in _dict(meta.get("extra", {}), "metadata 'extra'").items():
        entry = _dict(entry, f"extra[{name!r}]")
        if list(entry) == ["array"]:
            key = entry["array"]
            if not isinstance(key, str) or not key.startswith("extra_") or key in expected:
                raise ModelFileError(f"{path}: extra[{name!r}] names an unexpected array {key!r}")
            expected[key] = None
        elif list(entry) != ["json"]:
            raise ModelFileError(f"{path}: extra[{name!r}] must hold 'array' or 'json'")
    listed = meta.get("arrays")
    if (not isinstance(listed, list) or not all(isinstance(k, str) for k in listed)
            or len(set(listed)) != len(listed) or set(listed) != set(expected)):
        raise ModelFileError(f"{path}: the metadata's array list does not match its architecture, "
                             f"optimizer and extra entries")
    return expected


def _check_estimator_meta(path, meta):
    """Types and consistency of a DNNClassifier's metadata (before anything is built)."""
    est = _dict(meta.get("estimator"), "metadata 'estimator'", ("params", "fitted"))
    params = _dict(est["params"], "estimator params", ("dtype",))
    fitted = _dict(est["fitted"], "estimator fitted", ("classes", "n_features_in_", "n_iter_", "t_",
                                                      "loss_curve_", "best_loss_", "validation_scores_",
                                                      "best_validation_score_"))
    if params["dtype"] != meta["network"]["dtype"]:
        raise ModelFileError(f"{path}: estimator dtype {params['dtype']!r} is not the network's")
    sizes = params.get("hidden_layer_sizes")
    dims = list(meta["network"]["layer_dims"])
    if (sizes if isinstance(sizes, list) else [sizes]) != dims[1:-1]:
        raise ModelFileError(f"{path}: hidden_layer_sizes {sizes!r} does not match layer_dims {dims}")
    rs = params.get("random_state")
    if rs is not None and (isinstance(rs, bool) or not isinstance(rs, int)):
        raise ModelFileError(f"{path}: random_state must be an integer or null; got {rs!r}")
    spec = _dict(fitted["classes"], "classes", ("dtype", "values"))
    values = spec["values"]
    if not isinstance(values, list) or len(values) < 2:
        raise ModelFileError(f"{path}: classes must be a list of at least 2 labels; got {values!r}")
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
        raise ModelFileError(f"{path}: classes must be JSON scalars")
    if spec["dtype"] != "object":
        try:
            cdtype = np.dtype(spec["dtype"]) if isinstance(spec["dtype"], str) else None
        except (TypeError, ValueError):
            cdtype = None
        # A huge declared itemsize (<U100000000) would allocate that much per label.
        if cdtype is None or cdtype.kind not in "biufUSMm" or cdtype.itemsize * len(values) > _META_CAP:
            raise ModelFileError(f"{path}: invalid classes dtype {spec['dtype']!r}")
    try:
        classes = np.array(values, dtype=object if spec["dtype"] == "object" else cdtype)
        unique = np.unique(classes)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{path}: invalid classes ({exc})") from None
    if len(unique) != len(values) or not (unique == classes).all():
        raise ModelFileError(f"{path}: classes must be unique and sorted; got {values!r}")
    n_out = 1 if len(values) == 2 else len(values)
    if dims[-1] != n_out or _int(fitted["n_features_in_"], "n_features_in_", 1) != dims[0]:
        raise ModelFileError(f"{path}: the network's shape {dims} does not match n_features_in_ "
                             f"and classes")
    _int(fitted["n_iter_"], "n_iter_")
    _int(fitted["t_"], "t_")
    for key in ("loss_curve_", "validation_scores_"):
        curve = fitted[key]
        if curve is None and key == "validation_scores_":
            continue
        if not isinstance(curve, list):
            raise ModelFileError(f"{path}: {key} must be a list of numbers")
        for v in curve:
            _number(v, key)
    _number(fitted["best_loss_"], "best_loss_", none=True)
    _number(fitted["best_validation_score_"], "best_validation_score_", none=True)
    names = fitted.get("feature_names_in_")
    if names is not None and (not isinstance(names, list) or len(names) != dims[0]
                              or not all(isinstance(f, str) for f in names)
                              or len(set(names)) != len(names)):
        raise ModelFileError(f"{path}: feature_names_in_ must be {dims[0]} distinct strings")


def _check_meta(path, meta):
    """Check the metadata; return the arrays it allows."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _not_a_model(path, "its metadata does not name the dnnblocks model format")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in model-file format {version} (by dnnblocks "
            f"{meta.get('dnnblocks_version', '?')}); this dnnblocks reads formats up to "
            f"{FORMAT_VERSION}. Upgrade dnnblocks to load it."
        )
    kind = meta.get("kind")
    if kind not in ("Network", "DNNClassifier"):
        raise ModelFileError(f"{path} holds an unknown kind of model {kind!r}")
    expected = _expected_arrays(path, meta)
    for key in ("rng_state",):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ModelFileError(f"{path}: {key} must be a JSON object or null")
    if kind == "DNNClassifier":
        _check_estimator_meta(path, meta)
        rng = meta["estimator"]["fitted"].get("rng_state")
        if rng is not None and not isinstance(rng, dict):
            raise ModelFileError(f"{path}: rng_state must be a JSON object or null")
    return expected


def _read_archive(path, fh):
    head = fh.read(6)
    if not head:
        raise _not_a_model(path, "the file is empty")
    if head == b"\x93NUMPY":
        raise _not_a_model(path, "it holds a single NumPy array, not a model archive")
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile as exc:
        if head[:4] == b"PK\x03\x04":
            raise ModelFileError(f"{path} is truncated or corrupted ({exc}); save the model again") from None
        raise _not_a_model(path, f"it is not a NumPy .npz archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise ModelFileError(f"{path}: the archive lists a member twice")
        members = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise _not_a_model(path, f"member {info.filename!r} is not a .npy array")
            # dnnblocks writes stored (uncompressed) members only: a member's
            # data then lies in the file, which bounds what reading it can
            # allocate by the file's size (a deflated one could expand 1000x).
            if info.compress_type != zipfile.ZIP_STORED:
                raise ModelFileError(f"{path}: member {info.filename!r} is compressed; dnnblocks model "
                                     f"files store their arrays uncompressed")
            if info.file_size != info.compress_size:
                raise ModelFileError(f"{path} is truncated or corrupted: member {info.filename!r} "
                                     f"declares sizes the file cannot hold")
            members[info.filename[:-4]] = info
        # Members may not overlap (a crafted directory can point several names
        # into one stretch of bytes): then their data sizes add up to at most
        # the file's size.
        end = 0
        for info in sorted(infos, key=lambda i: i.header_offset):
            if info.header_offset < end:
                raise ModelFileError(f"{path} is corrupted: member {info.filename!r} overlaps another")
            end = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size
            if end > size:
                raise ModelFileError(f"{path} is truncated or corrupted: member {info.filename!r} "
                                     f"extends past the end of the file")
        if _META_KEY not in members:
            raise _not_a_model(path, f"the archive has no {_META_KEY!r} entry")
        info = members[_META_KEY]
        if info.file_size > _META_CAP:
            raise ModelFileError(f"{path}: the metadata member is {info.file_size} bytes; at most "
                                 f"{_META_CAP} are read")
        shape, dtype = _member_header(path, zf, info)
        if shape != () or dtype.kind != "U":
            raise _not_a_model(path, "its metadata is not a unicode string")
        _check_member_size(path, _META_KEY, info, shape, dtype, size)
        with zf.open(info) as fp:
            text = str(np.lib.format.read_array(fp, allow_pickle=False)[()])
        try:
            meta = json.loads(text)
        except RecursionError:
            raise ModelFileError(f"{path}: its metadata is nested too deeply") from None
        except ValueError as exc:
            raise ModelFileError(f"{path}: its metadata is not valid JSON ({exc})") from None
        try:
            expected = _check_meta(path, meta)
        except ModelFileError as exc:
            raise with_path(exc, path) from None
        # Members the metadata does not list are accepted (as before) but
        # never read: they cost no memory.
        # Every header first: nothing is allocated until all the declared
        # shapes and dtypes are known to fit the architecture and the file.
        for key, want in expected.items():
            if key not in members:
                raise ModelFileError(f"{path} is truncated or corrupted: array {key!r} is missing")
            shape, dtype = _member_header(path, zf, members[key])
            _check_member_size(path, key, members[key], shape, dtype, size)
            if want is not None and shape != want[0]:
                raise ModelFileError(f"{path}: array {key} has shape {shape}; the architecture "
                                     f"{list(meta['network']['layer_dims'])} says {want[0]}")
            if want is not None and dtype.kind != "f":
                raise ModelFileError(f"{path}: array {key} has dtype {dtype}; the architecture says "
                                     f"{want[1]} (weights are floating-point numbers)")
            if want is not None and dtype != want[1]:
                raise ModelFileError(f"{path}: array {key} has shape {shape} and dtype {dtype}; the "
                                     f"architecture says {want[0]} {want[1]}")
        arrays = {}
        for key in expected:
            with zf.open(members[key]) as fp:
                arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    return meta, arrays


def read_model(path):
    """Read and check a model file: returns ``(meta, arrays, extra)``.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ModelFileError
        If the file is not a regular file or not a dnnblocks model, is
        truncated or corrupted, or is of a newer format version.
    """
    path = os.fspath(path)
    with _open_regular(path) as fh:
        try:
            meta, arrays = _read_archive(path, fh)
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, TypeError, MemoryError,
                OverflowError, RecursionError, NotImplementedError) as exc:
            raise ModelFileError(f"{path} is truncated or corrupted ({exc}); save the model again") from None
    extra = {}
    for name, entry in meta.get("extra", {}).items():
        extra[name] = arrays[entry["array"]] if "array" in entry else entry["json"]
    return meta, arrays, extra


