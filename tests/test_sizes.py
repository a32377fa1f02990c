"""Absurd layer sizes are refused, naming the argument, before anything is allocated."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dnnblocks
from dnnblocks import _validation, course

# Each entry point is run in a child whose address space is capped at 2 GiB:
# a regression that tries the 22-104 GiB allocation then fails at once with
# a MemoryError (and the timeout ends a child that hangs) instead of eating
# the machine's memory.
_CAP = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
""")
_CHILD = _CAP + textwrap.dedent("""
    import numpy as np
    import dnnblocks
    from dnnblocks import course
    try:
        {call}
    except ValueError as exc:
        print("ValueError:", exc)
        sys.exit(0)
    except MemoryError:
        print("MemoryError")
        sys.exit(3)
    print("no error")
    sys.exit(4)
""")

_CALLS = {
    "network": ("dnnblocks.Network([5, 2 * 10**9, 1])", "layer_dims"),
    "course": ("course.initialize_parameters_deep([5, 10**9, 1])", "layer_dims"),
    "course_model": ("course.L_layer_model(np.zeros((5, 3)), np.zeros((1, 3)), [5, 10**9, 1])",
                     "layers_dims"),
    "estimator": ("dnnblocks.DNNClassifier(hidden_layer_sizes=(10**9,))"
                  ".fit(np.random.rand(10, 3), np.arange(10) % 2)", "hidden_layer_sizes"),
}


def _run(code, timeout=60):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=os.path.dirname(__file__))


@pytest.mark.parametrize("entry", sorted(_CALLS))
def test_absurd_sizes_refused_before_allocation(entry):
    call, name = _CALLS[entry]
    proc = _run(_CHILD.format(call=call))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = proc.stdout
    assert out.startswith(f"ValueError: {name} asks for at least"), out
    # The limit met is the child's 2 GiB cap, stated in bytes.
    assert "address-space limit (RLIMIT_AS) of 2147483648 bytes" in out, out


def test_cli_layers_refused_before_training(tmp_path):
    csv = tmp_path / "d.csv"
    rows = ["a,b,y"] + [f"{i % 3},{i % 5},{i % 2}" for i in range(20)]
    csv.write_text("\n".join(rows) + "\n")
    code = _CAP + textwrap.dedent(f"""
        from dnnblocks.cli import main
        sys.exit(main(["train", {str(csv)!r}, "--target", "y", "--layers", "1000000000",
                       "--out", {str(tmp_path / "m.npz")!r}, "--quiet"]))
    """)
    proc = _run(code)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "hidden_layer_sizes asks for at least" in proc.stderr, proc.stderr
    assert "MemoryError" not in proc.stderr
    assert not (tmp_path / "m.npz").exists()


def test_normal_size_still_works():
    dims = [12288, 20, 7, 5, 1]
    net = dnnblocks.Network(dims, seed=0)
    assert [w.shape for w in net.W] == [(20, 12288), (7, 20), (5, 7), (1, 5)]
    params = course.initialize_parameters_deep(dims)
    assert params["W1"].shape == (20, 12288)
    expected = (12288 * 20 + 20 + 20 * 7 + 7 + 7 * 5 + 5 + 5 + 1) * 8
    assert _validation.check_parameter_memory(tuple(dims), np.float64) == expected


def _fake_limit(monkeypatch, limit):
    monkeypatch.setattr(_validation, "_memory_limit", lambda: (limit, "fake memory"))


def test_boundary_with_fake_limit(monkeypatch):
    dims = (3, 4, 1)  # 3*4 + 4 + 4*1 + 1 = 21 parameters
    copies = _validation.PARAMETER_COPIES
    for dtype, itemsize in ((np.float64, 8), (np.float32, 4)):
        needed = 21 * itemsize
        _fake_limit(monkeypatch, needed * copies)  # exactly enough: accepted
        assert _validation.check_parameter_memory(dims, np.dtype(dtype)) == needed
        net = dnnblocks.Network(list(dims), dtype=dtype)
        assert net.W[0].shape == (4, 3)
        _fake_limit(monkeypatch, needed * copies - 1)  # one byte short: refused
        with pytest.raises(ValueError, match=rf"layer_dims asks for at least 21 parameters: "
                                             rf"W and b need {needed} bytes") as info:
            dnnblocks.Network(list(dims), dtype=dtype)
        assert f"fake memory of {needed * copies - 1} bytes" in str(info.value)


def test_fake_limit_reaches_every_entry_point(monkeypatch):
    _fake_limit(monkeypatch, 1000)
    with pytest.raises(ValueError, match="^layer_dims asks"):
        course.initialize_parameters_deep([10, 10, 1])
    with pytest.raises(ValueError, match="^layers_dims asks"):
        course.L_layer_model(np.zeros((10, 2)), np.zeros((1, 2)), [10, 10, 1])
    clf = dnnblocks.DNNClassifier(hidden_layer_sizes=(20, 20))  # >= (20 + 20) + (400 + 20) + (20 + 1) params
    with pytest.raises(ValueError, match="^hidden_layer_sizes asks for at least 481 parameters"):
        clf.fit(np.random.rand(10, 3), np.arange(10) % 2)
    assert not hasattr(clf, "_network")  # refused before a network was made
    # Below the limit all three still work.
    assert course.initialize_parameters_deep([3, 2, 1])["W1"].shape == (2, 3)


def test_dimension_and_product_limits():
    big = _validation.BLAS_INT_MAX + 1
    with pytest.raises(ValueError, match=r"hidden_layer_sizes: size 2147483648 exceeds BLAS"):
        _validation.check_parameter_memory((1, big, 1), np.dtype(np.float64), "hidden_layer_sizes")
    # Each size within BLAS's limit, but a product beyond what NumPy can index:
    # counted in Python ints, so refused rather than overflowing.
    n = _validation.BLAS_INT_MAX
    with pytest.raises(ValueError, match=r"a layer of \d+ x \d+ weights is more than a NumPy array"):
        _validation.check_parameter_memory((n, n, 1), np.dtype(np.float64))


def test_memory_limit_is_physical_memory_or_rlimit():
    limit, what = _validation._memory_limit()
    assert isinstance(limit, int) and limit > 0
    if hasattr(os, "sysconf"):
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert limit <= phys
        assert what in ("physical memory", "address-space limit (RLIMIT_AS)")
