"""The NumPy backend: every compiled kernel again, in plain vectorised NumPy.

Same names, same arguments, same outputs as the compiled kernels in
``csrc/``. This is the readable reference the compiled core is tested
against, and the speed baseline the benchmark compares it with. It is written
the way one would naturally write it in NumPy, not deliberately slowly.
"""

import numpy as np
from scipy.special import expit, xlogy

#: What the per-layer kernels compute (the compiled ones have the same list in C).
KERNEL_ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def _check_activation(activation):
    if activation not in KERNEL_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of 'relu', 'tanh', 'sigmoid', 'identity'; got {activation!r}"
        )


def _activate(Z, activation, out):
    if activation == "relu":
        np.maximum(Z, 0, out=out)
    elif activation == "tanh":
        np.tanh(Z, out=out)
    elif activation == "sigmoid":
        expit(Z, out=out)
    elif out is not Z:
        out[...] = Z


def _derivative(Z, A, activation):
    """g'(Z), from the cached activation A when there is one."""
    if activation == "relu":
        return Z > 0
    if activation == "tanh":
        T = np.tanh(Z) if A is None else A
        return 1 - T**2
    if activation == "sigmoid":
        S = expit(Z) if A is None else A
        return S * (1 - S)
    return 1


def linear_activation_forward(W, b, A_prev, activation, Z, A):
    """Z = W @ A_prev + b and A = g(Z), written into `Z` and `A`."""
    _check_activation(activation)
    np.matmul(W, A_prev, out=Z)
    Z += b
    _activate(Z, activation, A)


def activation_backward(dA, Z, A, activation, dZ, db, db_scale):
    """dZ = dA * g'(Z) and db = db_scale * rowsum(dZ)."""
    _check_activation(activation)
    np.multiply(dA, _derivative(Z, A, activation), out=dZ)
    np.multiply(dZ.sum(axis=1, keepdims=True), db_scale, out=db)


def linear_backward(dZ, A_prev, W, dW, dA_prev, dW_scale):
    """dW = dW_scale * dZ @ A_prev.T and, unless `dA_prev` is None, dA_prev = W.T @ dZ."""
    if dA_prev is not None:
        np.matmul(W.T, dZ, out=dA_prev)
    np.matmul(dZ, A_prev.T, out=dW)
    dW *= dW_scale


def linear_backward_update(dZ, A_prev, W, dA_prev, dW_scale, learning_rate, weight_decay=0.0):
    """dA_prev = W.T @ dZ, then W -= learning_rate * (dW_scale * dZ @ A_prev.T + weight_decay * W)."""
    if dA_prev is not None:
        np.matmul(W.T, dZ, out=dA_prev)
    dW = dW_scale * (dZ @ A_prev.T)
    if weight_decay:
        dW += weight_decay * W
    W -= learning_rate * dW


def _output_gradient(A, Y, dZ, db, db_scale):
    # Both cross-entropies (sigmoid and softmax) have dZ = A - Y at the logits.
    np.subtract(A, Y, out=dZ)
    np.multiply(dZ.sum(axis=1, keepdims=True), db_scale, out=db)


def sigmoid_cross_entropy(Z, A, Y, dZ, db, db_scale):
    """Binary cross-entropy from the logits, dZ = A - Y, db = db_scale * rowsum(dZ)."""
    m = Z.shape[1]
    _output_gradient(A, Y, dZ, db, db_scale)
    if m == 0:
        return float("nan")
    return float(np.sum(np.logaddexp(0, Z) - Y * Z) / m)


def cross_entropy_cost(AL, Y):
    """The course's cost from probabilities: -(1/m) sum(y log a + (1-y) log(1-a))."""
    m = AL.shape[1]
    if m == 0:
        return float("nan")
    return float(-np.sum(xlogy(Y, AL) + xlogy(1 - Y, 1 - AL)) / m)


def gradient_descent_update(param, grad, learning_rate):
    """param -= learning_rate * grad, in place."""
    param -= learning_rate * grad


def momentum_update(param, grad, velocity, learning_rate, beta, weight_decay=0.0):
    """velocity = beta * velocity + (1 - beta) * (grad + weight_decay * param); param -= learning_rate * velocity."""
    g = grad + weight_decay * param if weight_decay else grad
    velocity *= beta
    velocity += (1 - beta) * g
    param -= learning_rate * velocity


def adam_update(param, grad, m, v, learning_rate, beta1, beta2, epsilon, t, weight_decay=0.0):
    """One bias-corrected Adam step on `param`, moments `m` and `v` updated in place."""
    if t < 1:
        raise ValueError(f"t must be an integer >= 1 (Adam counts steps from 1); got {t}")
    if not (0 <= beta1 < 1) or not (0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must be in [0, 1); got {beta1} and {beta2}")
    g = grad + weight_decay * param if weight_decay else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    m_hat = m * (1.0 / (1.0 - beta1**t))
    v_hat = v * (1.0 / (1.0 - beta2**t))
    param -= learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)


def softmax_forward(Z, A):
    """A = softmax(Z) over each column, with the column maximum subtracted first."""
    np.subtract(Z, Z.max(axis=0, keepdims=True) if Z.size else 0, out=A)
    np.exp(A, out=A)
    A /= A.sum(axis=0, keepdims=True)


def softmax_cross_entropy(Z, A, Y, dZ, db, db_scale):
    """Categorical cross-entropy from the logits, dZ = A - Y, db = db_scale * rowsum(dZ)."""
    m = Z.shape[1]
    _output_gradient(A, Y, dZ, db, db_scale)
    if m == 0:
        return float("nan")
    Z64 = Z.astype(np.float64)
    zmax = Z64.max(axis=0, keepdims=True)
    lse = zmax + np.log(np.exp(Z64 - zmax).sum(axis=0, keepdims=True))
    return float(np.sum(Y * (lse - Z64)) / m)


def dropout_forward(A, mask, keep_prob):
    """Inverted dropout in place: `mask` (uniform draws in) becomes 0 or 1/keep_prob, A *= mask."""
    if not (0 < keep_prob <= 1):
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    keep = mask < keep_prob
    np.multiply(keep, 1.0 / keep_prob, out=mask)
    A *= mask


def dropout_backward(dA, mask):
    """dA *= mask, in place."""
    dA *= mask
