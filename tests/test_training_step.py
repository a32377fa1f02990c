"""The whole-step kernel ``make_training_step`` (both backends) and Network.profile."""

import math

import numpy as np
import pytest
from scipy.special import expit

from dnnblocks import Network, get_backend

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def problem(dims, m, dtype, seed=0, order="C"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((dims[0], m)).astype(dtype)
    if order == "F":
        X = np.asfortranarray(X)
    Y = (rng.random((dims[-1], m)) < 0.5).astype(dtype)
    W = [(rng.standard_normal((dims[l + 1], dims[l])) / math.sqrt(dims[l])).astype(dtype)
         for l in range(len(dims) - 1)]
    b = [(0.1 * rng.standard_normal((n, 1))).astype(dtype) for n in dims[1:]]
    return X, Y, W, b


def reference_step(X, Y, W, b, activations, lr, l2=0.0):
    """One gradient-descent step written out in float64 NumPy; returns the cost."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    Wd, bd = [w.astype(np.float64) for w in W], [v.astype(np.float64) for v in b]
    m, L = X.shape[1], len(W)
    g = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
         "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    dg = {"relu": lambda z, a: (z > 0).astype(float), "tanh": lambda z, a: 1 - a**2,
          "sigmoid": lambda z, a: a * (1 - a), "identity": lambda z, a: np.ones_like(z)}
    As, Zs = [X], []
    for l in range(L):
        Z = Wd[l] @ As[-1] + bd[l]
        Zs.append(Z)
        As.append(g[activations[l]](Z))
    ZL = Zs[-1]
    cost = np.sum(np.logaddexp(0, ZL) - Y * ZL) / m + l2 / (2 * m) * sum(np.sum(w * w) for w in Wd)
    dZ = As[-1] - Y
    for l in range(L - 1, -1, -1):
        dW = dZ @ As[l].T / m + l2 / m * Wd[l]
        db = dZ.sum(axis=1, keepdims=True) / m
        if l > 0:
            dA = Wd[l].T @ dZ
            dZ = dA * dg[activations[l - 1]](Zs[l - 1], As[l])
        Wd[l] -= lr * dW
        bd[l] -= lr * db
    return cost, Wd, bd


@pytest.mark.parametrize("hidden", ACTIVATIONS)
@pytest.mark.parametrize("order", ("C", "F"))
@pytest.mark.parametrize("block_columns", (None, 5), ids=("one-block", "blocks-of-5"))
def test_step_matches_the_written_out_mathematics(backend, dtype, hidden, order, block_columns):
    dims, m = (7, 6, 4, 1), 23
    X, Y, W, b = problem(dims, m, dtype, seed=1, order=order)
    acts = (hidden, hidden, "sigmoid")
    cost_ref, W_ref, b_ref = reference_step(X, Y, W, b, acts, lr=0.3, l2=0.7)
    fused = get_backend(backend).make_training_step(W, b, acts, m, block_columns=block_columns)
    cost = fused.run(X, Y, 0.3, 0.7)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    assert cost == pytest.approx(cost_ref, rel=tol["rtol"])
    for l in range(3):
        np.testing.assert_allclose(W[l], W_ref[l], **tol, err_msg=f"W[{l}]")
        np.testing.assert_allclose(b[l], b_ref[l], **tol, err_msg=f"b[{l}]")


def test_backends_agree_over_many_steps(dtype):
    dims, m = (12, 9, 5, 2), 31
    nets = {}
    for name in ("compiled", "numpy"):
        X, Y, W, b = problem(dims, m, dtype, seed=2)
        fused = get_backend(name).make_training_step(W, b, ("relu", "relu", "sigmoid"), m)
        nets[name] = ([fused.run(X, Y, 0.2) for _ in range(40)], W, b)
    rtol = 1e-11 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(nets["compiled"][0], nets["numpy"][0], rtol=rtol)
    assert nets["compiled"][0][-1] < nets["compiled"][0][0]
    for wc, wn in zip(nets["compiled"][1], nets["numpy"][1]):
        np.testing.assert_allclose(wc, wn, rtol=rtol * 10, atol=rtol)


@pytest.mark.parametrize("block_columns", (1, 4, 36, 37, 1000))
def test_blocked_backward_pass_of_a_deeper_network(dtype, block_columns):
    # Two layers whose dA is a GEMM (the output has 3 units, so none is fused),
    # mixed activations, blocks that do and do not divide m.
    dims, m = (9, 8, 7, 5, 3), 37
    acts = ("relu", "tanh", "sigmoid", "sigmoid")
    X, Y, W, b = problem(dims, m, dtype, seed=5)
    cost_ref, W_ref, b_ref = reference_step(X, Y, W, b, acts, lr=0.3, l2=0.1)
    fused = get_backend("compiled").make_training_step(W, b, acts, m, block_columns=block_columns)
    assert fused.block_columns == min(block_columns, m)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    assert fused.run(X, Y, 0.3, 0.1) == pytest.approx(cost_ref, rel=tol["rtol"])
    for l in range(4):
        np.testing.assert_allclose(W[l], W_ref[l], **tol, err_msg=f"W[{l}]")
        np.testing.assert_allclose(b[l], b_ref[l], **tol, err_msg=f"b[{l}]")


def test_blocks_are_chosen_when_dA_is_large():
    # Widest hidden layer 1100 x m 1000 in float64: 8.8 MB > FULL_SCRATCH_BYTES,
    # so dA comes in two column blocks and the step holds less.
    from dnnblocks.backend import _step

    dims, m = (3, 1100, 20, 1), 1000
    X, Y, W, b = problem(dims, m, np.float64, seed=6)
    make = get_backend("compiled").make_training_step
    auto, whole = make(W, b, ("relu", "relu", "sigmoid"), m), make(W, b, ("relu", "relu", "sigmoid"), m, m)
    assert 1100 * m * 8 > _step.FULL_SCRATCH_BYTES
    assert auto.block_columns == 500 and whole.block_columns == m
    # Scratch of half the columns, plus a copy of W[1] and the row sums.
    assert whole.nbytes - auto.nbytes == 8 * (1100 * 500 - 20 * 1100 - 1100)
    W2, b2 = [w.copy() for w in W], [v.copy() for v in b]
    blocked = make(W2, b2, ("relu", "relu", "sigmoid"), m)
    assert blocked.run(X, Y, 0.05) == pytest.approx(whole.run(X, Y, 0.05), rel=1e-14)
    for x, y in zip(W + b, W2 + b2):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", (0, -3, 2.5, True, "4"))
def test_bad_block_columns_are_refused(backend, bad):
    X, Y, W, b = problem((4, 3, 1), 9, np.float64)
    with pytest.raises(ValueError, match="block_columns"):
        get_backend(backend).make_training_step(W, b, ("relu", "sigmoid"), 9, block_columns=bad)


def test_output_pass_is_exact_over_the_whole_range_of_logits(dtype):
    # A one-layer network with W = 1, b = 0: the logits are X itself, from
    # deep underflow of exp(-|z|) to its overflow region, so the output pass
    # (the vectorised exp of the AVX2 build) is checked against libm.
    z = np.concatenate([np.linspace(-745, 745, 301), [-37.5, -1e-300, 0.0, 1e-300, 36.9]])
    if dtype == np.float32:
        z = z[np.abs(z) < 88]
    m = z.size
    X = z.reshape(1, m).astype(dtype)
    Y = (np.arange(m) % 2).reshape(1, m).astype(dtype)
    W, b = [np.ones((1, 1), dtype)], [np.zeros((1, 1), dtype)]
    fused = get_backend("compiled").make_training_step(W, b, ("sigmoid",), m)
    cost = fused.run(X, Y, 1.0)
    zd, yd = X.astype(np.float64), Y.astype(np.float64)
    cost_ref = np.sum(np.logaddexp(0, zd) - yd * zd) / m
    dz = expit(zd) - yd
    f64 = dtype == np.float64
    assert cost == pytest.approx(cost_ref, rel=1e-13 if f64 else 1e-6)
    np.testing.assert_allclose(W[0][0, 0], 1 - np.sum(dz * zd) / m, rtol=1e-12 if f64 else 1e-5)
    np.testing.assert_allclose(b[0][0, 0], -np.sum(dz) / m, atol=1e-15 if f64 else 1e-6)


def test_single_layer_network(backend):
    # No hidden layer: logistic regression, no scratch buffer, no dA GEMM.
    X, Y, W, b = problem((5, 1), 11, np.float64, seed=3)
    cost_ref, W_ref, b_ref = reference_step(X, Y, W, b, ("sigmoid",), lr=0.5)
    fused = get_backend(backend).make_training_step(W, b, ("sigmoid",), 11)
    assert fused.run(X, Y, 0.5) == pytest.approx(cost_ref, rel=1e-13)
    np.testing.assert_allclose(W[0], W_ref[0], rtol=1e-13)


def test_a_non_finite_cost_updates_nothing(backend):
    X, Y, W, b = problem((4, 3, 1), 9, np.float64, seed=4)
    W[0][0, 0] = np.nan
    before = [a.copy() for a in W + b]
    fused = get_backend(backend).make_training_step(W, b, ("tanh", "sigmoid"), 9)
    with np.errstate(invalid="ignore", over="ignore"):
        cost = fused.run(X, Y, 0.1)
    assert not math.isfinite(cost)
    for a, a0 in zip(W + b, before):
        np.testing.assert_array_equal(a, a0)


def test_buffers_are_lean_in_the_compiled_step():
    dims, m = (10, 8, 6, 1), 20
    X, Y, W, b = problem(dims, m, np.float64)
    compiled = get_backend("compiled").make_training_step(W, b, ("relu", "relu", "sigmoid"), m)
    numpy_ = get_backend("numpy").make_training_step(W, b, ("relu", "relu", "sigmoid"), m)
    # A of the hidden layers, one scratch as large as the largest of them, the output row, db.
    assert compiled.nbytes == 8 * (m * (8 + 6 + 8 + 1) + (8 + 6 + 1))
    # Z, A and dA/dZ of every layer, and db.
    assert numpy_.nbytes == 8 * (3 * m * (8 + 6 + 1) + (8 + 6 + 1))
    assert compiled.batch_size == numpy_.batch_size == m


def test_timings_are_added_per_layer_and_block(backend):
    dims, m = (30, 20, 10, 1), 64
    X, Y, W, b = problem(dims, m, np.float64)
    fused = get_backend(backend).make_training_step(W, b, ("relu", "relu", "sigmoid"), m)
    t = np.zeros((3, 6))
    fused.run(X, Y, 0.01, 0.0, t)
    assert t[0, 3] == 0  # no dA GEMM for the first layer
    assert t[2, 2] == 0  # no mask pass for the output layer
    assert (t[:2, [0, 1, 2, 4, 5]] > 0).all() and t[1, 3] > 0
    assert t[2, 1] > 0 and t[2, 5] > 0  # output: cost and dZ; bias update
    if backend == "compiled":
        # The one-unit output layer's products run inside layer 2's passes.
        assert (t[2, [0, 3, 4]] == 0).all()
    else:
        assert (t[2, [0, 3, 4]] > 0).all()
    first = t.copy()
    fused.run(X, Y, 0.01, 0.0, t)
    assert (t >= first).all() and t.sum() > first.sum()


def test_bad_arguments_raise_before_any_work(backend):
    X, Y, W, b = problem((4, 3, 1), 9, np.float64)
    make = get_backend(backend).make_training_step
    fused = make(W, b, ("relu", "sigmoid"), 9)
    before = [a.copy() for a in W + b]
    with pytest.raises(TypeError, match="X"):
        fused.run(X.astype(np.float32), Y, 0.1)
    with pytest.raises(TypeError, match="X"):
        fused.run(X.tolist(), Y, 0.1)
    with pytest.raises(ValueError, match="X must have shape"):
        fused.run(X[:, :5], Y, 0.1)
    with pytest.raises(ValueError, match="contiguous"):
        fused.run(np.repeat(X, 2, axis=1)[:, ::2], Y, 0.1)
    with pytest.raises(ValueError, match="Y must be"):
        fused.run(X, Y[:, :4], 0.1)
    with pytest.raises(ValueError, match="timings"):
        fused.run(X, Y, 0.1, 0.0, np.zeros((3, 6)))
    for a, a0 in zip(W + b, before):
        np.testing.assert_array_equal(a, a0)
    with pytest.raises(ValueError, match="output activation"):
        make(W, b, ("relu", "relu"), 9)
    with pytest.raises(ValueError, match="activation"):
        make(W, b, ("swish", "sigmoid"), 9)
    with pytest.raises(ValueError, match="one entry per layer"):
        make(W, b[:1], ("relu", "sigmoid"), 9)
    with pytest.raises(ValueError, match="m must be"):
        make(W, b, ("relu", "sigmoid"), 0)
    with pytest.raises(TypeError, match="dtype"):
        make([W[0], W[1].astype(np.float32)], b, ("relu", "sigmoid"), 9)
    with pytest.raises(ValueError, match="columns"):
        make([W[0], W[0]], b, ("relu", "sigmoid"), 9)
    with pytest.raises(ValueError, match=r"b\[0\]"):
        make(W, [b[0].ravel(), b[1]], ("relu", "sigmoid"), 9)
    with pytest.raises(ValueError, match="writeable"):
        W_ro = [W[0].copy(), W[1]]
        W_ro[0].flags.writeable = False
        make(W_ro, b, ("relu", "sigmoid"), 9)


def test_uses_tells_whether_the_parameters_are_the_same_arrays(backend):
    X, Y, W, b = problem((4, 3, 1), 9, np.float64)
    fused = get_backend(backend).make_training_step(W, b, ("relu", "sigmoid"), 9)
    assert fused.uses(W, b)
    assert fused.uses(list(W), tuple(b))
    assert not fused.uses([W[0].copy(), W[1]], b)
    assert not fused.uses(W[:1], b[:1])


def test_network_step_follows_replaced_parameters(backend):
    # A user (or a model loader) may put new arrays into net.W: the fused step
    # must train those, not the arrays it was first built with.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, 12))
    Y = (rng.random((1, 12)) < 0.5).astype(float)
    net = Network([4, 3, 1], backend=backend, seed=0)
    twin = Network([4, 3, 1], backend=backend, seed=1)
    net.step(X, Y, 0.1)
    old = net.W[0]
    net.W[0] = twin.W[0].copy()
    new = net.W[0].copy()
    net.step(X, Y, 0.1)
    assert not np.array_equal(net.W[0], new)
    assert net.W[0] is not old


def test_a_training_run_keeps_no_course_caches(backend):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((5, 30))
    Y = (rng.random((1, 30)) < 0.5).astype(float)
    net = Network([5, 4, 3, 1], backend=backend, seed=0)
    for _ in range(3):
        net.step(X, Y, 0.1)
    (ws,) = net._workspaces.values()
    assert ws._Z is None and ws._A is None and ws._D is None
    assert ws.fused is not None and ws.fused.batch_size == 30
    # The caches are still there to look at (same arrays as a later forward pass).
    caches = net.caches
    net.forward(X)
    assert net.caches[1][1] is caches[1][1]


def test_profile_reports_every_block_and_leaves_the_network_alone(backend, capsys):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20, 50))
    Y = (rng.random((1, 50)) < 0.5).astype(float)
    net = Network([20, 8, 4, 1], backend=backend, seed=0)
    before = [a.copy() for a in net.W + net.b]
    result = net.profile(X, Y, learning_rate=0.1, repeats=3)
    out = capsys.readouterr().out
    for label in ("linear", "activation", "mask+sum", "dA GEMM", "dW GEMM", "update", "GEMM-only"):
        assert label in out
    assert result.blocks.shape == (3, 6)
    assert result.blocks[0, 3] == 0 and (result.blocks[:2, 0] > 0).all()
    assert result.step > 0 and result.gemm_only > 0
    assert result.as_dict()["layer_dims"] == [20, 8, 4, 1]
    for a, a0 in zip(net.W + net.b, before):
        np.testing.assert_array_equal(a, a0)
    net.profile(X, Y, repeats=1, print_table=False)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="learning_rate"):
        net.profile(X, Y, learning_rate=-1)
