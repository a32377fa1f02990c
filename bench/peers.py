"""The peers of the benchmark: the course's textbook NumPy code, PyTorch and JAX.

Each is a factory ``(layer_dims, X, Y, W0, b0, lr) -> object with step() -> cost``
for :func:`dnnblocks.benchmark.run`'s ``factories``: one full gradient-descent
step (forward, cost, backward, update) of the relu network with a sigmoid
output, from the same data and initial parameters as dnnblocks' backends.

``textbook``
    The course assignment's NumPy code as a learner writes it: every step
    makes fresh arrays (Z, A, the caches, dA of every layer including the
    first, dW, the new W), the cost from ``log(AL)`` and the backward pass from
    ``dAL = -(Y/AL - (1-Y)/(1-AL))``. What a learner switching to
    ``dnnblocks.course`` starts from.
``torch``
    PyTorch on the CPU, autograd and ``torch.optim.SGD`` (when importable).
``jax``
    JAX, the whole step under ``jax.jit`` (when importable).

Import it from a script in this folder (``import peers``), or put the
folder on ``sys.path``.
"""

import importlib.util
import sys

import numpy as np

from dnnblocks import benchmark

#: Every implementation of the full benchmark, in table order.
IMPLEMENTATIONS = ("compiled", "numpy", "textbook", "torch", "jax", "gemm")


class TextbookStep:
    """The course's forward/backward/update functions, inlined (see the module docstring)."""

    def __init__(self, dims, X, Y, W0, b0, lr):
        self.W, self.b, self.X, self.Y, self.lr = list(W0), list(b0), X, Y, lr

    def step(self):
        W, b, X, Y, lr = self.W, self.b, self.X, self.Y, self.lr
        m, L = X.shape[1], len(W)
        caches, A = [], X
        for l in range(L):  # L_model_forward
            Z = np.dot(W[l], A) + b[l]
            caches.append((A, W[l], b[l], Z))
            A = 1 / (1 + np.exp(-Z)) if l == L - 1 else np.maximum(0, Z)
        AL = A
        cost = float(np.squeeze(-np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m))
        dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))  # L_model_backward
        grads = {}
        for l in range(L - 1, -1, -1):
            A_prev, W_l, b_l, Z = caches[l]
            if l == L - 1:  # sigmoid_backward
                s = 1 / (1 + np.exp(-Z))
                dZ = dA * s * (1 - s)
            else:  # relu_backward
                dZ = np.array(dA, copy=True)
                dZ[Z <= 0] = 0
            grads[l] = (np.dot(dZ, A_prev.T) / m, np.sum(dZ, axis=1, keepdims=True) / m)
            dA = np.dot(W_l.T, dZ)
        for l in range(L):  # update_parameters
            W[l] = W[l] - lr * grads[l][0]
            b[l] = b[l] - lr * grads[l][1]
        return cost


class TorchStep:
    """PyTorch on the CPU: autograd and ``torch.optim.SGD``."""

    def __init__(self, dims, X, Y, W0, b0, lr):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.W = [torch.tensor(w, requires_grad=True) for w in W0]
        self.b = [torch.tensor(b, requires_grad=True) for b in b0]
        self.X = torch.from_numpy(X)
        self.Y = torch.from_numpy(Y)
        self.m = X.shape[1]
        self.opt = torch.optim.SGD(self.W + self.b, lr=lr)

    def step(self):
        W, b = self.W, self.b
        self.opt.zero_grad(set_to_none=False)
        A = self.X
        for l in range(len(W) - 1):
            A = self.torch.relu(W[l] @ A + b[l])
        Z = W[-1] @ A + b[-1]
        loss = self.F.binary_cross_entropy_with_logits(Z, self.Y, reduction="sum") / self.m
        loss.backward()
        self.opt.step()
        return float(loss.item())


class JaxStep:
    """JAX: the whole step under ``jax.jit``, compiled before the first step."""

    def __init__(self, dims, X, Y, W0, b0, lr):
        import jax

        if X.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        m = X.shape[1]
        L = len(W0)

        def loss_fn(params, X, Y):
            A = X
            for l in range(L - 1):
                A = jax.nn.relu(params[2 * l] @ A + params[2 * l + 1])
            Z = params[2 * L - 2] @ A + params[2 * L - 1]
            return jnp.sum(jax.nn.softplus(Z) - Y * Z) / m

        grad_fn = jax.value_and_grad(loss_fn)

        def step(params, X, Y):
            cost, grads = grad_fn(params, X, Y)
            return tuple(p - lr * g for p, g in zip(params, grads)), cost

        params = []
        for w, bias in zip(W0, b0):
            params += [jnp.asarray(w), jnp.asarray(bias)]
        self.params = tuple(params)
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)
        # Compiled ahead of time, so that no step pays for (or measures) XLA's compiler.
        self._step = jax.jit(step, donate_argnums=0).lower(self.params, self.X, self.Y).compile()

    def step(self):
        self.params, cost = self._step(self.params, self.X, self.Y)
        return float(cost)


#: name -> (factory, module that must be importable, or None)
PEERS = {"textbook": (TextbookStep, None), "torch": (TorchStep, "torch"), "jax": (JaxStep, "jax")}


def available_peers():
    """``name -> factory`` for the peers that can run here (torch and jax only when importable)."""
    return {name: factory for name, (factory, module) in PEERS.items()
            if module is None or importlib.util.find_spec(module) is not None}


def available_implementations():
    """Every implementation that can run here, in table order."""
    peers = available_peers()
    return tuple(n for n in IMPLEMENTATIONS if n in peers or n in benchmark.IMPLEMENTATIONS)


def make_implementation(name, layer_dims, X, Y, W0, b0, lr=benchmark.LEARNING_RATE):
    """Like :func:`dnnblocks.benchmark.make_implementation`, peers included."""
    if name in PEERS:
        return PEERS[name][0](layer_dims, X, Y, [w.copy() for w in W0], [b.copy() for b in b0], lr)
    return benchmark.make_implementation(name, layer_dims, X, Y, W0, b0, lr)


def limit_torch_threads(threads):
    """PyTorch keeps its own thread pool, which threadpoolctl does not reach."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
