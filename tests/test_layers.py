"""The layer table of the design (DESIGN.md, "Layers"), checked on the installed package.

Every module of the package has a layer; a module may import (at module level
or inside a function) only from its own layer or the layers below. An
``ast`` scan of the installed sources finds every ``import``/``from ... import``
of a package module. Optional third-party packages are not package modules, so
their lazy imports are not counted.

``KNOWN_VIOLATIONS`` lists the upward imports that exist today and are to be
removed by the engine re-layering (issue 12). It only shrinks: an import not
on it fails the test, and so does an entry that no longer exists (remove it).

A function-level import of a package module is how a cycle gets hidden, so
it is flagged too, downward or not (DESIGN.md: only optional third-party
packages are imported lazily). ``KNOWN_LAZY_IMPORTS`` is its ratchet.
"""

import ast
import importlib.util
from pathlib import Path

import dnnblocks

PACKAGE = "dnnblocks"

#: Layer of every module of the package (0 kernels ... 6 doors).
LAYERS = {
    # 0 kernels: arithmetic only; the compiled modules and their NumPy twins.
    "_layer": 0, "_layer_avx2": 0, "_step": 0, "_step_avx2": 0, "_output": 0, "_update": 0,
    "_dropout": 0, "_cpu": 0, "_numpy_kernels": 0, "_numpy_step": 0, "_gram": 0, "_gram_avx2": 0,
    "_epoch": 0, "_epoch_avx2": 0,
    # 1 base: facts and checks everything above shares.
    "backend": 1, "exceptions": 1, "_validation": 1, "initializers": 1, "optimizers": 1,
    "_version": 1, "datasets": 1, "model_file": 1,
    # 2 engine: how a step and an epoch run.
    "propagation": 2, "training": 2, "_safeguards": 2, "profiling": 2, "wide": 2, "epoch": 2,
    # 3 model.
    "network": 3,
    # 4 faces over the model.
    "course": 4, "gradcheck": 4, "_dask_data": 4, "onnx_export": 4,
    # 5 estimators.
    "_estimator_base": 5, "estimator": 5,
    # 6 doors: what users call from outside.
    "dask_support": 6, "cli": 6, "plotting": 6, "benchmark": 6, "model_io": 6,
    # The package's own entry points sit above everything.
    "__init__": 7, "__main__": 7,
}

#: (importer, imported) pairs that break the table today; see the module docstring.
KNOWN_VIOLATIONS = {
    ("_numpy_step", "_validation"),  # the NumPy twin checks block_columns itself
}


#: (importer, imported) package imports made inside a function today; only shrinks.
KNOWN_LAZY_IMPORTS = {
    ("__init__", "estimator"),  # DNNClassifier on first use: import dnnblocks stays light
    ("backend", "_layer"), ("backend", "_step"),  # the compiled modules, chosen at run time
    ("backend", "_layer_avx2"), ("backend", "_step_avx2"),
    # load builds a DNNClassifier file as dnnblocks.DNNClassifier only when asked, so that
    # loading a Network (or the command line's scikit-learn-free classifier) never imports
    # scikit-learn, an optional dependency.
    ("model_io", "estimator"),
    ("cli", "plotting"),  # matplotlib, an optional dependency, only for --plot
}


def _package_dir():
    return Path(dnnblocks.__file__).parent


def _imports(path, module, lazy_only=False):
    """Package modules imported by `path` (the module `module`), as names without the package.

    With `lazy_only`, only the imports made inside a function.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if lazy_only:
        nodes = [node for func in ast.walk(tree)
                 if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(func)]
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import a, b
                found.update(alias.name for alias in node.names)
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    # `from . import __version__` (or `load`) names an attribute of the package
    # itself, not a module: that is an import of the package's __init__.
    return {name if name in LAYERS or _is_module(name) else "__init__" for name in found}


def _is_module(name):
    return importlib.util.find_spec(f"{PACKAGE}.{name}") is not None


def _modules():
    pkg = _package_dir()
    out = {}
    for path in sorted(pkg.glob("*.py")):
        out[path.stem] = path
    return out


def test_every_module_has_a_layer():
    names = set(_modules())
    for suffix in (".so", ".pyd"):
        names |= {p.name.split(".")[0] for p in _package_dir().glob(f"*{suffix}")}
    missing = sorted(names - set(LAYERS))
    assert not missing, f"modules without a layer in tests/test_layers.py: {missing}"


def test_imports_only_go_down():
    upward = set()
    for module, path in _modules().items():
        for imported in _imports(path, module):
            assert imported in LAYERS, f"{module} imports {imported}, which has no layer"
            if LAYERS[imported] > LAYERS[module]:
                upward.add((module, imported))
    new = sorted(upward - KNOWN_VIOLATIONS)
    assert not new, f"imports that go up the layer table (DESIGN.md, Layers): {new}"
    gone = sorted(KNOWN_VIOLATIONS - upward)
    assert not gone, f"fixed violations still listed in KNOWN_VIOLATIONS (remove them): {gone}"


def test_the_scan_sees_function_level_imports(tmp_path):
    # The scanner itself: an import inside a function counts like one at the top.
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from .estimator import X\n    from dnnblocks import cli\n"
                    "import dnnblocks.network\nfrom . import course, training, __version__\n")
    assert _imports(path, "m") == {"estimator", "cli", "network", "course", "training", "__init__"}


def test_no_function_level_imports_of_package_modules():
    lazy = set()
    for module, path in _modules().items():
        lazy.update((module, imported) for imported in _imports(path, module, lazy_only=True))
    new = sorted(lazy - KNOWN_LAZY_IMPORTS)
    assert not new, f"function-level imports of package modules (import at the top): {new}"
    gone = sorted(KNOWN_LAZY_IMPORTS - lazy)
    assert not gone, f"fixed lazy imports still listed in KNOWN_LAZY_IMPORTS (remove them): {gone}"


def test_the_scan_tells_function_level_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import dnnblocks.network\nfrom . import training\n"
                    "try:\n    from . import course\nexcept ImportError:\n    pass\n"
                    "class C:\n    def f(self):\n        from .estimator import X\n"
                    "def g():\n    from dnnblocks import cli\n")
    assert _imports(path, "m", lazy_only=True) == {"estimator", "cli"}
