"""The two interchangeable kernel sets, and how to pick one.

Both backends expose the same kernels with the same signatures (see
:data:`KERNEL_NAMES`); the Python layer never needs to know which one it
calls. ``"compiled"`` is the Cython core over BLAS; ``"numpy"`` is the plain
NumPy reference.
"""

import contextlib
import ctypes
import os
import threading
from types import SimpleNamespace

import numpy as np

from . import _cpu, _dropout, _numpy_kernels, _numpy_step, _output, _update


def _simd_modules():
    """The builds of the per-layer and whole-step kernels for this processor.

    Returns ``(level, _layer, _step)``: the AVX2 builds when the processor runs
    them (and they were built: x86 only), else the baseline ones. Setting the
    environment variable ``DNNBLOCKS_SIMD=baseline`` forces the baseline build,
    e.g. to compare the two.
    """
    if os.environ.get("DNNBLOCKS_SIMD", "").lower() != "baseline" and _cpu.has_avx2_fma():
        try:
            from . import _layer_avx2, _step_avx2
        except ImportError:  # pragma: no cover - a non-x86 build has no AVX2 modules
            pass
        else:
            return "avx2", _layer_avx2, _step_avx2
    from . import _layer, _step

    return "baseline", _layer, _step


#: Instruction set of the compiled elementwise passes in use: "avx2" or "baseline".
SIMD_LEVEL, _layer, _step = _simd_modules()

#: Names every backend provides, each with one signature for both.
KERNEL_NAMES = (
    "linear_activation_forward",
    "activation_backward",
    "linear_backward",
    "linear_backward_update",
    "sigmoid_cross_entropy",
    "cross_entropy_cost",
    "gradient_descent_update",
    "momentum_update",
    "adam_update",
    "softmax_forward",
    "softmax_cross_entropy",
    "dropout_forward",
    "dropout_backward",
    "make_training_step",
)

#: Backend names accepted by ``backend=`` arguments.
BACKENDS = ("compiled", "numpy")

_COMPILED_MODULES = (_layer, _output, _update, _dropout, _step)


def _collect(modules, name):
    funcs = {}
    for kernel in KERNEL_NAMES:
        for module in modules:
            if hasattr(module, kernel):
                funcs[kernel] = getattr(module, kernel)
                break
        else:  # pragma: no cover - a build that lost a kernel
            raise ImportError(f"the {name} backend has no kernel {kernel!r}")
    return SimpleNamespace(name=name, **funcs)


_REGISTRY = {
    "compiled": _collect(_COMPILED_MODULES, "compiled"),
    "numpy": _collect((_numpy_kernels, _numpy_step), "numpy"),
}


def get_backend(backend="compiled"):
    """Return the kernel set named `backend`.

    Parameters
    ----------
    backend : {"compiled", "numpy"} or a backend object
        A backend object (as returned by this function) is passed through.

    Returns
    -------
    types.SimpleNamespace
        With attribute ``name`` and one attribute per kernel in :data:`KERNEL_NAMES`.

    Raises
    ------
    ValueError
        If `backend` is not a known name.
    """
    if isinstance(backend, SimpleNamespace) and getattr(backend, "name", None) in _REGISTRY:
        return backend
    if not isinstance(backend, str) or backend not in _REGISTRY:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return _REGISTRY[backend]


# ------------------------------------------------------------ thread policy
# OpenBLAS starts its threads for any product above a small size, and they spin
# while waiting for work. For the products of a typical mini-batch step (a few
# million multiply-adds) the threads cost more than they save, and on a busy
# machine two spinning pools (or a pool against other processes) made a fit
# 3-7x slower than with one thread. dnnblocks therefore trains with one BLAS
# thread unless a step's largest product is big enough to share.

#: Multiply-adds of a step's largest product from which BLAS may use several threads.
#: 2**24 (about 17 million, a few ms on one core): the `large` benchmark shape
#: (4096 x 1024 x 1024) keeps both cores, a 200-row batch of a 50-100-1 network uses one.
PARALLEL_PRODUCT_SIZE = 2**24

#: Environment variable for the policy: "auto" (default) or a positive number of threads.
THREADS_ENV = "DNNBLOCKS_BLAS_THREADS"

_thread_lock = threading.Lock()
_thread_users = 0
_thread_saved = []  # (setter, count before the first user) per library


def _openblas_controls():
    """(get, set) thread-count functions of every OpenBLAS loaded in this process.

    Found from the process's memory map (Linux); elsewhere none are found and
    the policy does nothing. Both NumPy's and SciPy's OpenBLAS are returned:
    the compiled kernels call SciPy's, and NumPy's must not spin beside it.
    """
    global _CONTROLS
    if _CONTROLS is not None:
        return _CONTROLS
    controls = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in line.rsplit("/", 1)[-1].lower() and ".so" in line})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("", "64_"):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    put.restype, put.argtypes = None, [ctypes.c_int]
                    controls.append((get, put))
                    break
            else:
                continue
            break
    _CONTROLS = controls
    return controls


_CONTROLS = None


def blas_threads_policy(layer_dims, batch_size, threads=None):
    """The number of BLAS threads a training step should use, or None for "as they are".

    Parameters
    ----------
    layer_dims : sequence of int
    batch_size : int
        Examples per step.
    threads : None, "auto" or int >= 1
        None reads the environment variable ``DNNBLOCKS_BLAS_THREADS``
        ("auto" when unset). "auto" is one thread unless the step's largest
        product reaches :data:`PARALLEL_PRODUCT_SIZE` multiply-adds, in which
        case the threads are left as they are. An int caps the threads.

    Returns
    -------
    int or None
    """
    source = "blas_threads"
    if threads is None:
        source = THREADS_ENV
        threads = os.environ.get(THREADS_ENV, "auto").strip() or "auto"
        if threads != "auto":
            try:
                threads = int(threads)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be 'auto' or a positive integer; "
                                 f"got {threads!r}") from None
    if isinstance(threads, str):
        if threads != "auto":
            raise ValueError(f"blas_threads must be 'auto' or a positive integer; got {threads!r}")
        largest = max(n * n_prev for n_prev, n in zip(layer_dims[:-1], layer_dims[1:]))
        return None if largest * batch_size >= PARALLEL_PRODUCT_SIZE else 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"{source} must be 'auto' or a positive integer; got {threads!r}")
    return int(threads)


@contextlib.contextmanager
def limit_blas_threads(threads):
    """Run the body with at most `threads` BLAS threads (None: leave them as they are).

    Only ever lowers the count: a lower limit set by the user (for example
    with ``threadpoolctl.threadpool_limits``) is kept. Nested and concurrent
    uses share one limit; the counts in force before the first are restored
    when the last one ends.
    """
    global _thread_users
    if threads is None:
        yield
        return
    with _thread_lock:
        if _thread_users == 0:
            _thread_saved.clear()
            for get, put in _openblas_controls():
                before = get()
                _thread_saved.append((put, before))
                if threads < before:
                    put(threads)
        _thread_users += 1
    try:
        yield
    finally:
        with _thread_lock:
            _thread_users -= 1
            if _thread_users == 0:
                for put, before in _thread_saved:
                    put(before)
                _thread_saved.clear()


def blas_thread_counts():
    """The current thread count of every OpenBLAS loaded in the process (for tests and reports)."""
    return [get() for get, _ in _openblas_controls()]
