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
"""

from .backend import BACKENDS, KERNEL_NAMES, get_backend
from .exceptions import TrainingDivergedError
from .network import Network

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "KERNEL_NAMES",
    "Network",
    "TrainingDivergedError",
    "get_backend",
    "__version__",
]
