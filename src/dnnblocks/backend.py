"""The two interchangeable kernel sets, and how to pick one.

Both backends expose the same kernels with the same signatures (see
:data:`KERNEL_NAMES`); the Python layer never needs to know which one it
calls. ``"compiled"`` is the Cython core over BLAS; ``"numpy"`` is the plain
NumPy reference.
"""

import os
from types import SimpleNamespace

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
