"""Weight initialisers: zeros, small random, He, Xavier and Glorot uniform.

Each takes the layer sizes, a :class:`numpy.random.Generator` and a dtype and
returns the lists ``W`` (``W[l-1]`` has shape (n[l], n[l-1])) and ``b`` (shape
(n[l], 1); zeros except for ``glorot``).
"""

import numpy as np

INITIALIZERS = ("zeros", "random", "he", "xavier", "glorot")


def _weight_scale(init, fan_in):
    if init == "random":
        return 0.01
    if init == "he":
        return np.sqrt(2.0 / fan_in)
    if init == "xavier":
        return np.sqrt(1.0 / fan_in)
    raise ValueError(f"init must be one of {INITIALIZERS}; got {init!r}")


def initialize(layer_dims, init, rng, dtype):
    """Return fresh ``(W, b)`` lists for `layer_dims`.

    Parameters
    ----------
    layer_dims : tuple of int
        Sizes n[0] (inputs) to n[L] (outputs).
    init : {"zeros", "random", "he", "xavier"}
        ``zeros`` all zero (breaks no symmetry: a teaching example);
        ``random`` standard normal x 0.01; ``he`` x sqrt(2/n[l-1]) (for ReLU);
        ``xavier`` x sqrt(1/n[l-1]) (for tanh and sigmoid); ``glorot`` uniform
        in +/- sqrt(6/(n[l-1] + n[l])) for the weights and the biases alike
        (Glorot & Bengio's scheme; random biases keep more relu units active
        at the start, which matters when training is short).
    rng : numpy.random.Generator
    dtype : numpy.dtype

    Returns
    -------
    W, b : list of ndarray
    """
    if not isinstance(init, str) or init not in INITIALIZERS:
        raise ValueError(f"init must be one of {INITIALIZERS}; got {init!r}")
    W, b = [], []
    for fan_in, fan_out in zip(layer_dims[:-1], layer_dims[1:]):
        if init == "zeros":
            W.append(np.zeros((fan_out, fan_in), dtype=dtype))
        elif init == "glorot":
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            W.append(np.ascontiguousarray(rng.uniform(-bound, bound, (fan_out, fan_in)), dtype=dtype))
            b.append(np.ascontiguousarray(rng.uniform(-bound, bound, (fan_out, 1)), dtype=dtype))
            continue
        else:
            w = rng.standard_normal((fan_out, fan_in)) * _weight_scale(init, fan_in)
            W.append(np.ascontiguousarray(w, dtype=dtype))
        b.append(np.zeros((fan_out, 1), dtype=dtype))
    return W, b
