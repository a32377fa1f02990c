"""The epoch runner (dnnblocks.epoch): whole epochs in one call, the per-step path's numbers.

Every comparison runs today's ``train()`` (``Network._train_step`` batch after
batch) on one network and the runner, driven as the loop drives it (one
``rng.shuffle`` of the index array per epoch, dropout draws from the same
generator), on an identical twin, and asserts the weights are equal to the
last bit.
"""

import numpy as np
import pytest

from dnnblocks import Network
from dnnblocks import epoch as epoch_module
from dnnblocks.epoch import EpochRunner, optimizer_arrays
from dnnblocks.exceptions import TrainingDivergedError
from dnnblocks.optimizers import get_optimizer
from dnnblocks.training import train


def _problem(m=103, n=5, k=1, seed=0, dtype=np.float64, layout="C"):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((m, n)).astype(dtype)
    X = np.asfortranarray(data.T) if layout == "F" else np.ascontiguousarray(data.T)
    score = data[:, 0] * data[:, 1] + 0.3 * data[:, 2]
    if k == 1:
        Y = (score > 0).astype(dtype).reshape(1, m)
    else:
        labels = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))
        Y = np.zeros((k, m), dtype)
        Y[labels, np.arange(m)] = 1
    return X, Y


def _drive(net, X, Y, *, epochs, batch_size, learning_rate, optimizer, l2=0.0, dropout=0.0, seed=3,
           shuffle=True, backend="compiled", **options):
    """Train `net` with the runner the way train() runs its epochs; returns the epoch costs."""
    opt = get_optimizer(optimizer, **options)
    kind, state, hyper = optimizer_arrays(opt, net.W, net.b)
    runner = EpochRunner(net.W, net.b, net.hidden_activation, net.output, min(batch_size, X.shape[1]),
                         optimizer=kind, state=state, l2=l2, keep_prob=1.0 - dropout, backend=backend,
                         **hyper)
    rng = np.random.default_rng(seed)
    idx = np.arange(X.shape[1], dtype=np.int64)
    one_batch = batch_size >= X.shape[1]
    costs = []
    for _ in range(epochs):
        if one_batch or not shuffle:
            order = None  # train() reads a single batch in place, without a shuffle call
        else:
            rng.shuffle(idx)
            order = idx
        result = runner.run_epoch(X, Y, order, learning_rate, t=opt.t, rng=rng)
        result.raise_if_diverged(learning_rate)
        if kind != "sgd":
            opt.t = result.t
        costs.append(result.cost)
    return costs


def _twins(dims, dtype, output="sigmoid", activation="relu", backend="compiled"):
    return [Network(dims, hidden_activation=activation, dtype=dtype, seed=1, output=output,
                    backend=backend) for _ in range(2)]


def _assert_bits(a, b):
    for x, y in zip(a.W + a.b, b.W + b.b):
        np.testing.assert_array_equal(x, y)


CASES = [
    # (optimizer, l2, dropout, output units, output, activation)
    ("sgd", 0.0, 0.0, 1, "sigmoid", "relu"),  # the fused step, one-unit output fused in
    ("sgd", 0.7, 0.0, 3, "sigmoid", "tanh"),  # the fused step, several outputs
    ("sgd", 0.0, 0.25, 1, "sigmoid", "sigmoid"),  # per-layer path: dropout
    ("sgd", 0.3, 0.0, 3, "softmax", "relu"),  # per-layer path: softmax
    ("momentum", 0.0, 0.0, 1, "sigmoid", "relu"),
    ("momentum", 0.5, 0.2, 3, "softmax", "tanh"),
    ("adam", 0.0, 0.0, 1, "sigmoid", "relu"),
    ("adam", 0.4, 0.0, 1, "sigmoid", "sigmoid"),
    ("adam", 0.1, 0.3, 4, "softmax", "relu"),
]


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_runner_equals_train_to_the_bit(case, layout, dtype):
    optimizer, l2, dropout, k, output, activation = case
    X, Y = _problem(k=k, dtype=dtype, layout=layout)
    a, b = _twins([5, 7, 6, k], dtype, output, activation)
    options = dict(epochs=4, batch_size=16, learning_rate=0.05, optimizer=optimizer, l2=l2, dropout=dropout)
    history = train(a, X, Y, random_state=3, **options)
    costs = _drive(b, X, Y, seed=3, **options)
    _assert_bits(a, b)
    if l2 == 0 or optimizer == "sgd" and dropout == 0 and output == "sigmoid":
        assert costs == history.cost  # the same cost, summed the same way
    else:
        # The per-step path sums the squared weights of the L2 term with numpy.dot.
        np.testing.assert_allclose(costs, history.cost, rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_full_batch_and_in_order_epochs(optimizer, dtype):
    X, Y = _problem(m=60, dtype=dtype, layout="F")
    for batch_size, shuffle in ((60, True), (25, False)):
        a, b = _twins([5, 4, 1], dtype)
        options = dict(epochs=3, batch_size=batch_size, learning_rate=0.1, optimizer=optimizer)
        history = train(a, X, Y, random_state=0, shuffle=shuffle, **options)
        costs = _drive(b, X, Y, seed=0, shuffle=shuffle, **options)
        _assert_bits(a, b)
        assert costs == history.cost


def test_one_layer_network_and_a_subset_order():
    X, Y = _problem(m=50)
    a, b = _twins([5, 1], np.float64)
    order = np.array([3, 7, 11, 0, 49, 20, 21, 5, 8], dtype=np.int64)
    for net in (a,):
        for start in range(0, len(order), 4):
            ids = order[start:start + 4]
            net.step(np.ascontiguousarray(X[:, ids]), np.ascontiguousarray(Y[:, ids]), 0.2)
    runner = EpochRunner(b.W, b.b, "relu", "sigmoid", 4)
    result = runner.run_epoch(X, Y, order, 0.2)
    assert result.steps_completed == 3 and result.samples_completed == 9
    _assert_bits(a, b)


def test_dropout_split_into_blocks_keeps_the_stream(monkeypatch):
    X, Y = _problem()
    a, b = _twins([5, 7, 6, 1], np.float64)
    options = dict(epochs=3, batch_size=10, learning_rate=0.05, optimizer="adam", dropout=0.3)
    train(a, X, Y, random_state=5, **options)
    # One step per compiled call: the draws of each block are made just before it.
    monkeypatch.setattr(epoch_module, "MASK_BLOCK_BYTES", 1)
    _drive(b, X, Y, seed=5, **options)
    _assert_bits(a, b)


def test_dropout_masks_are_seeded():
    X, Y = _problem()
    nets = _twins([5, 8, 1], np.float64) + _twins([5, 8, 1], np.float64)[:1]
    for net, seed in zip(nets, (1, 1, 2)):
        _drive(net, X, Y, epochs=2, batch_size=20, learning_rate=0.1, optimizer="sgd", dropout=0.5, seed=seed)
    _assert_bits(nets[0], nets[1])
    assert not np.array_equal(nets[0].W[0], nets[2].W[0])


def test_numpy_backend_is_the_same_epoch():
    X, Y = _problem(k=3, layout="F")
    for optimizer, dropout, output in (("sgd", 0.0, "sigmoid"), ("adam", 0.2, "softmax")):
        a, b = _twins([5, 7, 3], np.float64, output, backend="numpy")
        c, _ = _twins([5, 7, 3], np.float64, output)
        options = dict(epochs=3, batch_size=16, learning_rate=0.05, optimizer=optimizer, dropout=dropout)
        history = train(a, X, Y, random_state=2, **options)
        costs = _drive(b, X, Y, seed=2, backend="numpy", **options)
        _assert_bits(a, b)
        assert costs == history.cost
        compiled = _drive(c, X, Y, seed=2, **options)
        np.testing.assert_allclose(compiled, costs, rtol=1e-10)
        for x, y in zip(c.W, b.W):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns of the overflow the test makes
@pytest.mark.parametrize("backend", ["compiled", "numpy"])
def test_divergence_stops_before_the_failing_update(backend):
    X, Y = _problem()
    X = X * 1e3
    a, b = _twins([5, 16, 1], np.float64, backend=backend)
    opt = get_optimizer("momentum")
    kind, state, hyper = optimizer_arrays(opt, b.W, b.b)
    runner = EpochRunner(b.W, b.b, "relu", "sigmoid", 8, optimizer=kind, state=state, backend=backend, **hyper)
    lr = 1e200  # the weights overflow within a few steps
    result = runner.run_epoch(X, Y, None, lr, t=0)
    assert result.diverged
    assert not np.isfinite(result.step_costs[-1]) and np.all(np.isfinite(result.step_costs[:-1]))
    assert result.steps_completed == len(result.step_costs) - 1
    assert result.t == result.steps_completed
    # The per-step path fails at the same step, with the same weights before it.
    ref_opt = get_optimizer("momentum")
    for s in range(result.steps_completed):
        cost = a.step(X[:, 8 * s:8 * s + 8], Y[:, 8 * s:8 * s + 8], lr, optimizer=ref_opt)
        assert cost == result.step_costs[s]
    with pytest.raises(TrainingDivergedError):
        a.step(X[:, 8 * result.steps_completed:8 * result.steps_completed + 8],
               Y[:, 8 * result.steps_completed:8 * result.steps_completed + 8], lr, optimizer=ref_opt)
    _assert_bits(a, b)
    with pytest.raises(TrainingDivergedError, match="learning_rate"):
        result.raise_if_diverged(lr)


def test_state_of_an_unbound_optimizer_is_bound_through_its_public_state():
    net = Network([3, 4, 1], seed=0)
    opt = get_optimizer("adam", beta1=0.8)
    kind, state, hyper = optimizer_arrays(opt, net.W, net.b)
    assert kind == "adam" and hyper == {"beta1": 0.8, "beta2": 0.999, "epsilon": 1e-8}
    assert len(state) == 2 and all(len(s) == 4 for s in state)
    _, arrays = opt.state_dict()
    assert arrays["m/0"] is state[0][0] and not state[0][0].any()


# ------------------------------------------------------------- bad input
def _runner(**kw):
    net = Network([5, 4, 1], seed=0)
    args = dict(W=net.W, b=net.b, hidden_activation="relu", output="sigmoid", batch_size=8)
    args.update(kw)
    return net, args


@pytest.mark.parametrize("change, error, words", [
    (dict(hidden_activation="swish"), ValueError, "hidden_activation"),
    (dict(output="linear"), ValueError, "output"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(optimizer="momentum"), ValueError, "state"),
    (dict(keep_prob=0.0), ValueError, "keep_prob"),
    (dict(l2=-1.0), ValueError, "l2"),
    (dict(beta1=1.0), ValueError, "beta1"),
])
def test_bad_arguments_are_named(change, error, words):
    _, args = _runner(**change)
    with pytest.raises(error, match=words):
        EpochRunner(**args)


def test_bad_parameters_and_state_are_named():
    net, args = _runner()
    args["W"] = [net.W[0].astype(np.float32), net.W[1]]
    with pytest.raises(TypeError, match=r"W\[1\]"):
        EpochRunner(**args)
    net, args = _runner()
    net.b[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"b\[1\] is read-only"):
        EpochRunner(**args)
    net, args = _runner(optimizer="momentum")
    args["state"] = ([np.zeros_like(p) for p in net.W + net.b],)
    args["state"][0][3] = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"state 'velocity'\[3\]"):
        EpochRunner(**args)
    net, args = _runner(output="softmax")
    with pytest.raises(ValueError, match="softmax"):
        EpochRunner(**args)


def test_bad_data_is_refused_before_any_update():
    net, args = _runner(keep_prob=0.5)
    runner = EpochRunner(**args)
    X, Y = _problem(m=20)
    before = [a.copy() for a in net.W + net.b]
    bad = [
        (dict(X=X.astype(np.float32)), TypeError, "X must have"),
        (dict(X=X[:4]), ValueError, "X must have shape"),
        (dict(X=np.ascontiguousarray(np.vstack([X, X])[::2])), None, None),
        (dict(X=np.vstack([X, X])[::2]), ValueError, "strided"),
        (dict(Y=Y[:, :10]), ValueError, "Y must be"),
        (dict(order=np.array([0, 20], dtype=np.int64)), ValueError, "order must hold indices"),
        (dict(order=np.array([0, 1], dtype=np.int32)), TypeError, "int64"),
        (dict(order=np.array([], dtype=np.int64)), ValueError, "at least one"),
        (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
        (dict(t=-1), ValueError, "t"),
        (dict(rng=None), TypeError, "rng"),
    ]
    for change, error, words in bad:
        call = dict(X=X, Y=Y, order=None, learning_rate=0.1, t=0, rng=np.random.default_rng(0))
        call.update(change)
        if error is None:
            continue
        with pytest.raises(error, match=words):
            runner.run_epoch(call.pop("X"), call.pop("Y"), call.pop("order"), call.pop("learning_rate"), **call)
        for x, y in zip(before, net.W + net.b):
            np.testing.assert_array_equal(x, y)


def test_parameters_changed_after_building_are_refused():
    net, args = _runner()
    runner = EpochRunner(**args)
    X, Y = _problem(m=20)
    assert runner.uses(net.W, net.b)
    net.W[0].flags.writeable = False
    assert not runner.uses(net.W, net.b)
    with pytest.raises(ValueError, match="build a new EpochRunner"):
        runner.run_epoch(X, Y, None, 0.1)
    net.W[0].flags.writeable = True
    assert not runner.uses([w.copy() for w in net.W], net.b)
    assert runner.run_epoch(X, Y, None, 0.1).steps_completed == 3
