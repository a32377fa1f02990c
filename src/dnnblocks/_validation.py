"""Input checks done once, in Python, before anything reaches a kernel.

Kernels run with bounds checks off and the GIL released; everything they are
given has passed through here (or through the O(1) shape checks at the top of
each compiled kernel). Messages name the argument and what was expected.
"""

import math
import numbers
import operator
import os

import numpy as np

#: dtypes the kernels are compiled for.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: BLAS takes 32-bit dimensions.
BLAS_INT_MAX = 2**31 - 1

# The one activation table above the kernels (layer 0 keeps its own list of
# what it computes: it imports nothing from the package).
#: Activations a hidden layer may use.
HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")
#: Output layers: sigmoid units with the binary cross-entropy, or softmax with the categorical one.
OUTPUTS = ("sigmoid", "softmax")
#: The estimators' activation names (scikit-learn's, plus ours) -> the network's.
ESTIMATOR_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "sigmoid": "sigmoid"}


def check_dtype(dtype, name="dtype"):
    """Return `dtype` as a NumPy dtype if it is float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64; got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64; got {dt}")
    return dt


def check_positive_int(value, name, minimum=1):
    """Return `value` as an int, requiring an integral number >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_block_columns(block_columns):
    """None, or the number of columns per block of a training step's dA as an int >= 1."""
    if block_columns is None:
        return None
    if (isinstance(block_columns, bool) or not isinstance(block_columns, numbers.Integral)
            or block_columns < 1):
        raise ValueError(f"block_columns must be None or an integer >= 1; got {block_columns!r}")
    return int(block_columns)


def check_layer_dims(layer_dims):
    """Return `layer_dims` as a tuple of at least two positive ints."""
    if isinstance(layer_dims, (str, bytes)) or not hasattr(layer_dims, "__len__"):
        raise TypeError(f"layer_dims must be a sequence of layer sizes; got {layer_dims!r}")
    dims = tuple(layer_dims)
    if len(dims) < 2:
        raise ValueError(
            f"layer_dims must have at least 2 entries (input size and output size); got {list(dims)}"
        )
    out = []
    for i, n in enumerate(dims):
        n = check_positive_int(n, f"layer_dims[{i}]")
        if n > BLAS_INT_MAX:
            raise ValueError(f"layer_dims[{i}] = {n} exceeds BLAS's 32-bit limit {BLAS_INT_MAX}")
        out.append(n)
    return tuple(out)


#: Memory assumed where the physical memory cannot be read (no ``os.sysconf``,
#: e.g. on Windows): enough for any network this library trains in practice,
#: far below the tens of GiB an absurd layer size asks for.
_FALLBACK_MEMORY = 64 * 2**30

#: How many parameter-sized arrays a network may hold: W and b themselves,
#: their gradients dW and db (made by the first backward pass or step), and
#: one more copy -- the training guard's checkpoint, a momentum velocity, or
#: the float64 draws an initialiser makes before casting. Adam holds two
#: moments and would reach 5x: this is a floor that refuses sizes which
#: cannot work, not a promise that a size below it trains.
PARAMETER_COPIES = 3


def _memory_limit():
    """Return ``(bytes, description)``: the memory this process can hope to use.

    The physical memory (``SC_PAGE_SIZE * SC_PHYS_PAGES``), or
    :data:`_FALLBACK_MEMORY` where that is unavailable, lowered to the soft
    ``RLIMIT_AS`` when one is set. A module-level function so that tests can
    replace it with a small fake limit.
    """
    limit, what = None, "physical memory"
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    if not isinstance(limit, int) or limit <= 0:
        limit, what = _FALLBACK_MEMORY, "assumed memory (physical memory unknown)"
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and 0 < soft < limit:
            limit, what = soft, "address-space limit (RLIMIT_AS)"
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    return limit, what


def check_parameter_memory(layer_dims, dtype, name="layer_dims"):
    """Refuse layer sizes whose parameters cannot fit in memory, before anything is allocated.

    Parameters
    ----------
    layer_dims : tuple of int
        Sizes n[0] to n[L], each already a positive int (see
        :func:`check_layer_dims`).
    dtype : numpy.dtype
        Precision of the parameters.
    name : str
        The argument named in the message.

    Raises
    ------
    ValueError
        When a size exceeds BLAS's 32-bit limit, when a layer's
        n[l] * n[l-1] elements exceed what a NumPy array can index, or when
        :data:`PARAMETER_COPIES` times the bytes of W and b exceed the memory
        of :func:`_memory_limit`.
    """
    itemsize = np.dtype(dtype).itemsize
    # Python ints: the element counts below cannot overflow, whatever the sizes.
    max_elements = np.iinfo(np.intp).max // itemsize
    n_params = 0
    for l in range(1, len(layer_dims)):
        n, k = layer_dims[l], layer_dims[l - 1]
        for i in (l - 1, l):
            if layer_dims[i] > BLAS_INT_MAX:
                raise ValueError(f"{name}: size {layer_dims[i]} exceeds BLAS's 32-bit limit {BLAS_INT_MAX}")
        if n * k > max_elements:
            raise ValueError(f"{name}: a layer of {n} x {k} weights is more than a NumPy array can hold")
        n_params += n * k + n
    needed = n_params * itemsize
    limit, what = _memory_limit()
    if needed * PARAMETER_COPIES > limit:
        raise ValueError(
            f"{name} asks for at least {n_params} parameters: W and b need {needed} bytes "
            f"({needed / 2**30:.3g} GiB) in {np.dtype(dtype)}, and training holds {PARAMETER_COPIES} "
            f"such arrays (parameters, gradients, a checkpoint or optimizer state: "
            f"{needed * PARAMETER_COPIES} bytes), more than the "
            f"{what} of {limit} bytes ({limit / 2**30:.3g} GiB); use smaller layer sizes"
        )
    return needed


def check_scalar(value, name, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Return `value` as a finite float within the given bounds."""
    # A plain float skips the ABC check and the conversion: Network.step
    # checks three scalars per step, and for a small network that overhead
    # is a tenth of the step.
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number; got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float (e.g. 10**400)
            raise ValueError(f"{name} must be finite; got an integer too large for a float") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}; got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}; got {value}")
    return value


#: Largest finite value of each kernel dtype: a learning rate beyond it is
#: infinite once the kernels cast it to the network's precision.
_FLOAT_MAX = {dt: float(np.finfo(dt).max) for dt in FLOAT_DTYPES}


def check_learning_rate(learning_rate, name="learning_rate", dtype=None):
    """A learning rate is a finite float > 0 (and finite in `dtype`, when given)."""
    value = check_scalar(learning_rate, name, low=0.0, low_inclusive=False)
    if dtype is not None and value > _FLOAT_MAX.get(
            dtype if isinstance(dtype, np.dtype) else np.dtype(dtype), math.inf):
        raise ValueError(
            f"{name} = {value:g} overflows {np.dtype(dtype)}, the network's precision; "
            f"use a (much) smaller {name}"
        )
    return value


def check_blas_shape(X, name):
    """Refuse an array-like whose shape exceeds BLAS's 32-bit dimensions, before anything copies it.

    Only reads ``X.shape`` (when there is one), so a huge broadcast view is
    refused in O(1) instead of being converted or scanned.
    """
    if type(X) is np.ndarray:  # the common case: plain int dimensions
        if X.ndim and max(X.shape) > BLAS_INT_MAX:
            raise ValueError(f"{name} has shape {X.shape}, beyond BLAS's 32-bit limit {BLAS_INT_MAX}")
        return
    shape = getattr(X, "shape", None)
    if isinstance(shape, tuple) and any(
        isinstance(d, numbers.Integral) and d > BLAS_INT_MAX for d in shape
    ):
        raise ValueError(f"{name} has shape {shape}, beyond BLAS's 32-bit limit {BLAS_INT_MAX}")


def _all_finite(X):
    """Whether every entry of the float array X is finite, without a temporary.

    ``np.isfinite(X).all()`` allocates a boolean copy of X (2.5 MB for the
    course's cat images, more than a training step's own buffers). A sum is
    finite whenever every term is (NaN and inf propagate); only when it is not
    (or when finite terms overflowed) is the exact, allocating test needed.
    """
    if X.size <= 1 << 16:  # small: the temporary is cheaper than the errstate context
        return bool(np.isfinite(X).all())
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.sum(X))):
            return True
    return bool(np.isfinite(X).all())


def as_float_matrix(X, name, dtype, n_rows=None, allow_empty=False, check_finite=True):
    """Validate a 2-D float matrix without copying it.

    Returns `X` itself when it is already a C- or F-contiguous array of
    `dtype`; a non-contiguous view is copied once into C order. Other float
    precisions and non-float dtypes are refused (no silent dtype mixing).
    """
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(X).__name__}")
    if X.dtype != dtype:
        if X.dtype.kind == "f":
            raise TypeError(
                f"{name} has dtype {X.dtype} but the network computes in {dtype}; "
                f"convert with {name}.astype(np.{dtype})"
            )
        raise TypeError(f"{name} must be a {dtype} array; got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (n_features, m); got shape {X.shape}")
    if n_rows is not None and X.shape[0] != n_rows:
        raise ValueError(
            f"{name} must have {n_rows} rows (one per input feature, examples as columns); "
            f"got shape {X.shape}"
        )
    if X.shape[1] == 0 and not allow_empty:
        raise ValueError(f"{name} must have at least one example (column); got shape {X.shape}")
    if X.shape[1] > BLAS_INT_MAX or X.shape[0] > BLAS_INT_MAX:
        raise ValueError(f"{name} has shape {X.shape}, beyond BLAS's 32-bit limit {BLAS_INT_MAX}")
    if check_finite and not _all_finite(X):
        raise ValueError(f"{name} contains NaN or infinity; all values must be finite")
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    return X


def as_binary_labels(Y, name, dtype, shape):
    """Validate labels in {0, 1} of the given shape; return them as a C-contiguous `dtype` array."""
    if not isinstance(Y, np.ndarray):
        Y = np.asarray(Y)
    if Y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers 0 and 1; got dtype {Y.dtype}")
    if Y.ndim == 1 and shape[0] == 1:
        Y = Y.reshape(1, -1)
    if Y.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {Y.shape}")
    bad = (Y != 0) & (Y != 1)
    if bad.any():
        raise ValueError(
            f"{name} must contain only the labels 0 and 1; got {np.unique(Y[bad])[:5].tolist()}"
        )
    return np.ascontiguousarray(Y, dtype=dtype)


def check_parameters(W, b, layer_dims, dtype, writeable=False):
    """Check, in O(L), that the lists `W` and `b` hold arrays the kernels can take.

    A network's ``W`` and ``b`` are public lists that users may assign to;
    this runs before any kernel touches them, so a wrong array is refused
    with its name (``W[1]``, ``b[0]``) instead of failing half-way through an
    update. With `writeable`, the arrays must also be writeable (training).
    """
    L = len(layer_dims) - 1
    for name, arrays in (("W", W), ("b", b)):
        if not isinstance(arrays, list) or len(arrays) != L:
            raise ValueError(
                f"{name} must be a list of {L} arrays, one per layer; got {type(arrays).__name__}"
                + (f" of length {len(arrays)}" if hasattr(arrays, "__len__") else "")
            )
    for l in range(L):
        for name, a, shape in ((f"W[{l}]", W[l], (layer_dims[l + 1], layer_dims[l])),
                               (f"b[{l}]", b[l], (layer_dims[l + 1], 1))):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy.ndarray of shape {shape}; got {type(a).__name__}")
            if a.dtype != dtype:
                raise TypeError(f"{name} must have the network's dtype {dtype}; got {a.dtype}")
            if a.shape != shape:
                raise ValueError(f"{name} must have shape {shape} (layer_dims {list(layer_dims)}); got {a.shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous; assign np.ascontiguousarray(...) to it")
            if writeable and not a.flags.writeable:
                raise ValueError(f"{name} is read-only; training updates the parameters in place")


def encode_labels(y, classes, dtype, where=""):
    """Class labels -> the network's 0/1 target matrix, one column per example.

    The one label encoder of the package (in-memory fits and the Dask workers).

    Parameters
    ----------
    y : ndarray of shape (m,)
        Labels, each one of `classes`.
    classes : ndarray of shape (k,)
        Sorted unique classes, k >= 2.
    dtype : numpy.dtype
    where : str, optional
        Appended to the error message (e.g. " (row block 3)").

    Returns
    -------
    ndarray of shape (1, m) for two classes (1 for ``classes[1]``), else (k, m) one-hot.

    Raises
    ------
    ValueError
        If a label is not in `classes`; the message lists up to five of them.
    """
    idx = np.searchsorted(classes, y)
    idx = np.minimum(idx, len(classes) - 1)
    unknown = classes[idx] != y
    if np.any(unknown):
        bad = np.unique(np.asarray(y)[unknown])[:5]
        raise ValueError(f"y contains labels not in classes_ {classes.tolist()}: {bad.tolist()}{where}")
    m = len(y)
    if len(classes) == 2:
        return (idx == 1).astype(dtype).reshape(1, m)
    Y = np.zeros((len(classes), m), dtype=dtype)
    Y[idx, np.arange(m)] = 1
    return Y
