"""Model files: one ``.npz`` archive, no pickle, written atomically.

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

Files are written to a temporary file in the target's folder, flushed to
disk and moved over the target with :func:`os.replace`, so a crash never
leaves a half-written file under the target name. :func:`load` refuses files
of a newer format version, and reports files that are not dnnblocks models
or are truncated with :class:`~dnnblocks.exceptions.ModelFileError`.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from ._validation import check_layer_dims
from .exceptions import ModelFileError

FORMAT_NAME = "dnnblocks-model"
#: The model-file format this version writes, and the newest it reads.
FORMAT_VERSION = 1
_META_KEY = "__dnnblocks__"


# ------------------------------------------------------------------ writing
def _version():
    from . import __version__

    return __version__


def _rng_state(rng):
    """The generator's state as JSON, or None when it cannot be stored."""
    if not isinstance(rng, np.random.Generator):
        return None
    state = rng.bit_generator.state
    try:
        json.dumps(state)
    except TypeError:  # pragma: no cover - bit generators with array state
        return None
    return state


def _restore_rng(state):
    if not state:
        return None
    bit_generator = getattr(np.random, state.get("bit_generator", ""), None)
    if bit_generator is None:
        return None
    rng = np.random.Generator(bit_generator())
    rng.bit_generator.state = state
    return rng


def network_payload(net, optimizer=None):
    """Metadata and arrays describing `net` (and an optimizer's state)."""
    meta = {
        "network": {
            "layer_dims": list(net.layer_dims),
            "hidden_activation": net.hidden_activation,
            "output": net.output,
            "dtype": net.dtype.name,
            "init": net.init,
            "backend": net.backend,
        },
        "rng_state": _rng_state(getattr(net, "_rng", None)),
        "optimizer": None,
    }
    arrays = {}
    for l in range(net.n_layers):
        arrays[f"W{l}"] = net.W[l]
        arrays[f"b{l}"] = net.b[l]
    if optimizer is not None:
        scalars, state = optimizer.state_dict()
        meta["optimizer"] = {"scalars": scalars, "arrays": {}}
        for i, (name, a) in enumerate(state.items()):
            key = f"opt_{i}"
            meta["optimizer"]["arrays"][name] = key
            arrays[key] = a
    return meta, arrays


def network_from_payload(meta, arrays):
    """Rebuild ``(network, optimizer or None)`` from :func:`network_payload`'s output."""
    from .network import Network
    from .optimizers import optimizer_from_state

    spec = meta["network"]
    # The arrays are checked against the architecture before the Network is
    # built: corrupted metadata must not make it allocate (or initialise) a
    # huge network, and weights that are not finite are refused.
    dims = check_layer_dims(spec["layer_dims"])
    for l in range(len(dims) - 1):
        for name, shape in ((f"W{l}", (dims[l + 1], dims[l])), (f"b{l}", (dims[l + 1], 1))):
            src = arrays.get(name)
            if src is None or src.shape != shape:
                raise ModelFileError(f"array {name} has shape {getattr(src, 'shape', None)}; the "
                                     f"architecture {list(dims)} says {shape}")
            if src.dtype.kind != "f" or not np.isfinite(src).all():
                raise ModelFileError(f"array {name} holds values that are not finite numbers "
                                     f"(dtype {src.dtype}); the file is corrupted")
    net = Network(spec["layer_dims"], hidden_activation=spec["hidden_activation"],
                  dtype=spec["dtype"], backend=spec.get("backend", "compiled"),
                  init=spec.get("init", "he"), output=spec.get("output", "sigmoid"), seed=0)
    for l in range(net.n_layers):
        for name, target in ((f"W{l}", net.W[l]), (f"b{l}", net.b[l])):
            src = arrays[name]
            if src.shape != target.shape or src.dtype != target.dtype:
                raise ModelFileError(
                    f"array {name} has shape {src.shape} and dtype {src.dtype}; the architecture "
                    f"says {target.shape} {target.dtype}"
                )
            np.copyto(target, src)
    rng = _restore_rng(meta.get("rng_state"))
    if rng is not None:
        net._rng = rng
    optimizer = None
    opt_meta = meta.get("optimizer")
    if opt_meta:
        optimizer = optimizer_from_state(opt_meta["scalars"])
        state = {name: arrays[key] for name, key in opt_meta["arrays"].items()}
        optimizer.load_state(opt_meta["scalars"].get("t", 0), state, net.W, net.b)
    return net, optimizer


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
        "dnnblocks_version": _version(),
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
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{_META_KEY: np.array(text)}, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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


def save_network(net, path, extra=None, optimizer=None):
    """Save a :class:`~dnnblocks.Network` (and optionally an optimizer's state) to `path`."""
    meta, arrays = network_payload(net, optimizer)
    return write_model(path, "Network", meta, arrays, extra)


# ------------------------------------------------------------------ reading
def _not_a_model(path, why):
    return ModelFileError(f"{path} is not a dnnblocks model file: {why}")


def read_model(path):
    """Read and check a model file: returns ``(meta, arrays, extra)``.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ModelFileError
        If the file is not a dnnblocks model, is truncated or corrupted, or
        is of a newer format version.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise _not_a_model(path, "the file is empty")
    try:
        archive = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as exc:
        if head == b"PK\x03\x04":
            raise ModelFileError(f"{path} is truncated or corrupted ({exc}); save the model again") from None
        raise _not_a_model(path, str(exc)) from None
    except (ValueError, OSError, EOFError) as exc:
        raise _not_a_model(path, "it is not a NumPy .npz archive") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _not_a_model(path, "it holds a single NumPy array, not a model archive")
    with archive:
        try:
            if _META_KEY not in archive.files:
                raise _not_a_model(path, f"the archive has no {_META_KEY!r} entry")
            meta = json.loads(str(archive[_META_KEY][()]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                raise _not_a_model(path, "its metadata does not name the dnnblocks model format")
            version = meta.get("format_version")
            if not isinstance(version, int) or version < 1:
                raise ModelFileError(f"{path} has an invalid format_version {version!r}")
            if version > FORMAT_VERSION:
                raise ModelFileError(
                    f"{path} was written in model-file format {version} (by dnnblocks "
                    f"{meta.get('dnnblocks_version', '?')}); this dnnblocks reads formats up to "
                    f"{FORMAT_VERSION}. Upgrade dnnblocks to load it."
                )
            arrays = {}
            for key in meta["arrays"]:
                if key not in archive.files:
                    raise ModelFileError(f"{path} is truncated or corrupted: array {key!r} is missing")
                arrays[key] = archive[key]
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, TypeError, MemoryError) as exc:
            raise ModelFileError(f"{path} is truncated or corrupted ({exc}); save the model again") from None
    extra = {}
    for name, entry in meta.get("extra", {}).items():
        extra[name] = arrays[entry["array"]] if "array" in entry else entry["json"]
    return meta, arrays, extra


def load(path, with_extra=False):
    """Load a model saved by :meth:`DNNClassifier.save` or :meth:`Network.save`.

    Parameters
    ----------
    path : str or os.PathLike
    with_extra : bool, default False
        Also return the ``extra`` dict saved with the model.

    Returns
    -------
    model : DNNClassifier or Network
        Predicts bit for bit what the saved model predicted, and can continue
        training (the optimizer state and random generator are restored).
    extra : dict
        Only with ``with_extra=True``: str -> ndarray or JSON value.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    dnnblocks.exceptions.ModelFileError
        A ValueError: the file is not a dnnblocks model, is truncated or
        corrupted, or was written by a newer format version.
    """
    meta, arrays, extra = read_model(path)
    kind = meta.get("kind")
    try:
        if kind == "Network":
            model, _ = network_from_payload(meta, arrays)
        elif kind == "DNNClassifier":
            from .estimator import DNNClassifier

            model = DNNClassifier._from_payload(meta, arrays)
        else:
            raise ModelFileError(f"{os.fspath(path)} holds an unknown kind of model {kind!r}")
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{os.fspath(path)} has inconsistent metadata ({exc!r})") from None
    return (model, extra) if with_extra else model
