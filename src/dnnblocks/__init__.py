"""dnnblocks: the building blocks of a deep neural network, compiled.

The classic L-layer network of the deep-learning course (linear step,
activation, caches, backward step, gradient descent) with its hot loops as
Cython kernels over BLAS, and a pure-NumPy backend with the same signatures.

Main entry points
-----------------
Network
    Step-by-step use: ``forward``, ``backward``, ``update``, ``step``.
course
    The course's functional API (``L_model_forward``, ``L_layer_model``, ...).
get_backend
    The raw kernels of either backend.
DNNClassifier
    A scikit-learn compatible estimator (examples as rows).
load
    Read a model file written by ``DNNClassifier.save`` or ``Network.save``.
gradient_check
    Back-propagation against centred finite differences on a Network.
"""

from . import optimizers
from ._version import __version__
from .backend import BACKENDS, KERNEL_NAMES, get_backend
from .exceptions import ConvergenceWarning, ModelFileError, TrainingDivergedError
from .gradcheck import gradient_check
from .model_io import load
from .network import Network
from .training import train


__all__ = [
    "BACKENDS",
    "KERNEL_NAMES",
    "ConvergenceWarning",
    "DNNClassifier",
    "ModelFileError",
    "Network",
    "TrainingDivergedError",
    "get_backend",
    "gradient_check",
    "load",
    "optimizers",
    "train",
    "__version__",
]


# Submodules loaded on first attribute access, so that ``import dnnblocks``
# stays light (no scikit-learn, dask or matplotlib) while
# ``dnnblocks.course`` and friends work without an explicit import.
_LAZY_SUBMODULES = frozenset({
    "backend", "benchmark", "cli", "course", "dask_support", "datasets", "estimator",
    "exceptions", "gradcheck", "initializers", "model_io", "network", "plotting", "profiling",
    "training",
})


def __getattr__(name):
    # DNNClassifier is imported on first use so that `import dnnblocks` does
    # not pay for importing scikit-learn (an optional dependency).
    if name == "DNNClassifier":
        from .estimator import DNNClassifier

        return DNNClassifier
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dnnblocks' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"DNNClassifier"} | _LAZY_SUBMODULES)
