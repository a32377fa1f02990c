"""train()/Network.fit on the Gram-matrix route (route="gram"/"auto") against the plain route.

The route changes only the order of the floating-point operations: in
float64 the cost curve and the weights agree with the plain route to about
1e-12 relative after a few hundred full-batch steps.
"""

import numpy as np
import pytest

from dnnblocks import Network
from dnnblocks.exceptions import TrainingDivergedError
from dnnblocks.optimizers import Momentum
from dnnblocks.training import train

RTOL = 1e-12


def _wide(n0=2000, m=100, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n0, m)).astype(dtype)
    Y = (X[0] + 0.5 * X[1] > 0).astype(dtype).reshape(1, m)
    return X, Y


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _fit_both(dims, X, Y, activation="relu", **options):
    nets = [Network(dims, hidden_activation=activation, seed=3) for _ in range(2)]
    h_gram = nets[0].fit(X, Y, route="gram", **options)
    h_plain = nets[1].fit(X, Y, route="plain", **options)
    return (h_gram, nets[0]), (h_plain, nets[1])


@pytest.mark.parametrize("optimizer, l2", [("sgd", 0.0), ("sgd", 0.5), ("momentum", 0.2)])
def test_gram_route_fit_equals_plain_route(optimizer, l2):
    X, Y = _wide()
    (hg, ng), (hp, np_) = _fit_both([2000, 16, 8, 1], X, Y, epochs=200, learning_rate=0.02,
                                    optimizer=optimizer, l2=l2)
    assert hg.route == "gram" and hp.route == "plain"
    assert hp.cost[-1] < 0.8 * hp.cost[0]  # it learned: not a flat line
    assert len(hg.cost) == len(hp.cost) == 200
    assert _rel(hg.cost, hp.cost) <= RTOL
    for a, b in zip(ng.W + ng.b, np_.W + np_.b):
        assert _rel(a, b) <= RTOL
    assert hg.steps_completed == hp.steps_completed == 200
    assert hg.samples_seen == hp.samples_seen == 200 * 100


def test_momentum_state_after_the_gram_route_continues_like_the_plain_one():
    X, Y = _wide()
    nets = [Network([2000, 12, 1], seed=1) for _ in range(2)]
    opts = [Momentum(beta=0.9), Momentum(beta=0.9)]
    nets[0].fit(X, Y, epochs=50, learning_rate=0.02, optimizer=opts[0], route="gram")
    nets[1].fit(X, Y, epochs=50, learning_rate=0.02, optimizer=opts[1], route="plain")
    assert opts[0].t == opts[1].t == 50
    s0, s1 = opts[0].state_dict()[1], opts[1].state_dict()[1]
    assert s0.keys() == s1.keys() and s0
    for key in s0:
        assert _rel(s0[key], s1[key]) <= 1e-11
    # The state carries on: a second fit (plain now, the optimizer has state) agrees too.
    h = [net.fit(X, Y, epochs=20, learning_rate=0.02, optimizer=opt) for net, opt in zip(nets, opts)]
    assert h[0].route == h[1].route == "plain"
    assert _rel(h[0].cost, h[1].cost) <= 1e-11
    for a, b in zip(nets[0].W, nets[1].W):
        assert _rel(a, b) <= 1e-11


def test_auto_takes_the_gram_route_on_wide_data_and_the_plain_one_on_tall_data():
    X, Y = _wide()
    net = Network([2000, 16, 1], seed=0)
    assert net.fit(X, Y, epochs=30, learning_rate=0.01).route == "gram"
    tall_X, tall_Y = _wide(n0=20, m=500)
    assert Network([20, 16, 1], seed=0).fit(tall_X, tall_Y, epochs=5).route == "plain"
    # Per-epoch readers of the weights, mini-batches, Adam keep "auto" on the plain route.
    for options in (dict(validation_fraction=0.2), dict(callback=lambda e, h: False),
                    dict(batch_size=20), dict(optimizer="adam"), dict(dropout=0.2)):
        assert Network([2000, 16, 1], seed=0).fit(X, Y, epochs=3, **options).route == "plain", options


def test_auto_result_equals_forced_gram():
    X, Y = _wide()
    nets = [Network([2000, 10, 1], seed=2) for _ in range(2)]
    ha = nets[0].fit(X, Y, epochs=40, learning_rate=0.02)
    hg = nets[1].fit(X, Y, epochs=40, learning_rate=0.02, route="gram")
    np.testing.assert_array_equal(ha.cost, hg.cost)
    np.testing.assert_array_equal(nets[0].W[0], nets[1].W[0])


@pytest.mark.parametrize("options, match", [
    (dict(optimizer="adam"), "adam"),
    (dict(dropout=0.3), "dropout"),
    (dict(batch_size=10), "full batch"),
])
def test_forced_gram_route_names_why_it_cannot_run(options, match):
    X, Y = _wide(n0=300, m=40)
    net = Network([300, 8, 1], seed=0)
    before = [w.copy() for w in net.W]
    with pytest.raises(ValueError, match=f"route='gram'.*{match}"):
        net.fit(X, Y, epochs=3, route="gram", **options)
    for a, b in zip(net.W, before):
        np.testing.assert_array_equal(a, b)


def test_forced_gram_route_refuses_a_softmax_and_a_used_momentum():
    X, _ = _wide(n0=300, m=40)
    Y = np.zeros((3, 40))
    Y[np.arange(40) % 3, np.arange(40)] = 1
    with pytest.raises(ValueError, match="route='gram'.*softmax"):
        Network([300, 8, 3], seed=0, output="softmax").fit(X, Y, epochs=2, route="gram")
    X, Y = _wide(n0=300, m=40)
    opt = Momentum()
    net = Network([300, 8, 1], seed=0)
    net.fit(X, Y, epochs=2, optimizer=opt, route="plain")
    with pytest.raises(ValueError, match="route='gram'.*already holds state"):
        net.fit(X, Y, epochs=2, optimizer=opt, route="gram")
    assert net.fit(X, Y, epochs=2, optimizer=opt).route == "plain"


def test_unknown_route_is_refused():
    X, Y = _wide(n0=50, m=10)
    with pytest.raises(ValueError, match="route must be one of"):
        Network([50, 4, 1], seed=0).fit(X, Y, epochs=1, route="fast")


def test_forced_gram_route_with_validation_and_callback_reads_current_weights():
    X, Y = _wide()
    seen = {}
    nets = [Network([2000, 8, 1], seed=4) for _ in range(2)]

    def record(name, net):
        def callback(epoch, history):
            seen.setdefault(name, []).append(net.W[0].copy())
            return epoch == 9
        return callback

    hs = [net.fit(X, Y, epochs=30, learning_rate=0.02, validation_fraction=0.25, random_state=0,
                  callback=record(route, net), route=route)
          for net, route in zip(nets, ("gram", "plain"))]
    assert hs[0].route == "gram" and hs[0].stop_reason == "callback" and hs[0].n_epochs == 10
    assert _rel(hs[0].validation_cost, hs[1].validation_cost) <= RTOL
    for a, b in zip(seen["gram"], seen["plain"]):
        assert _rel(a, b) <= RTOL


def test_divergence_on_the_gram_route_leaves_finite_weights_and_the_record():
    X, Y = _wide(n0=1000, m=30)
    X = X * 30.0
    net = Network([1000, 6, 1], seed=0)
    with pytest.raises(TrainingDivergedError) as info:
        net.fit(X, Y, epochs=100, learning_rate=1e6, route="gram")
    history = info.value.dnnblocks_history
    assert history.route == "gram"
    assert len(history.cost) == history.n_epochs == history.steps_completed
    assert all(np.all(np.isfinite(w)) for w in net.W + net.b)


def test_interrupt_writes_the_first_layer_of_the_last_completed_step(monkeypatch):
    from dnnblocks import training

    X, Y = _wide()
    nets = [Network([2000, 8, 1], seed=5) for _ in range(2)]
    original = training.GramData.step
    calls = []

    def interrupted(self, batch, learning_rate):
        if len(calls) == 5:  # a Ctrl-C between the 5th and 6th epoch, W[0] not written yet
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, batch, learning_rate)

    monkeypatch.setattr(training.GramData, "step", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        nets[0].fit(X, Y, epochs=20, learning_rate=0.02, route="gram")
    nets[1].fit(X, Y, epochs=5, learning_rate=0.02, route="plain")
    assert info.value.dnnblocks_history.n_epochs == 5
    assert _rel(nets[0].W[0], nets[1].W[0]) <= RTOL
    assert not np.array_equal(nets[0].W[0], Network([2000, 8, 1], seed=5).W[0])
