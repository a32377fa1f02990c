"""The package as ``import dnnblocks`` presents it: lazy submodules, a light import."""

import subprocess
import sys
import textwrap

import pytest


def _run(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("name", ["course", "datasets", "estimator", "plotting", "dask_support"])
def test_submodules_work_after_a_plain_import(name):
    out = _run(f"""
        import sys, dnnblocks
        print('{name}' in dir(dnnblocks))
        module = dnnblocks.{name}
        print(module.__name__, sys.modules['dnnblocks.{name}'] is module)
    """)
    assert out == ["True", f"dnnblocks.{name}", "True"]


def test_course_functions_reachable_from_the_package():
    out = _run("""
        import dnnblocks
        p = dnnblocks.course.initialize_parameters_deep([3, 2, 1])
        print(sorted(p))
    """)
    assert out == ["['W1',", "'W2',", "'b1',", "'b2']"]


def test_unknown_attribute_still_raises():
    import dnnblocks

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        dnnblocks.nonexistent  # noqa: B018


def test_plain_import_stays_light():
    # Optional third-party packages are imported only by what needs them.
    out = _run("""
        import sys, dnnblocks
        heavy = [m for m in ("sklearn", "dask", "distributed", "matplotlib") if m in sys.modules]
        print(heavy or "none")
    """)
    assert out == ["none"]
