"""The ``.pyi`` stubs of the compiled modules match the modules (checked on the installed package).

Every compiled module ``dnnblocks/_xxx*.so`` has a stub ``_xxx*.pyi`` beside it,
installed with it. Each stub is parsed with ``ast`` and compared with the module
itself, read through ``inspect.signature`` (Cython 3 builds ``def`` functions with
``binding=True``, so they carry real signatures):

* the module's public names (functions, classes, constants defined there) are
  exactly the stub's;
* every function has the same parameters in the same order, of the same kind
  (positional, keyword-only, ``*args``, ``**kwargs``) with the same defaults;
* every class has the same public methods and properties, each method with the
  same parameters.

A stub that drifts from its ``.pyx`` fails here; the last tests show that the
comparison itself catches a renamed parameter, a changed default, a missing
function and a missing stub.
"""

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dnnblocks

PACKAGE_DIR = Path(dnnblocks.__file__).parent
COMPILED = sorted(p.name.split(".")[0] for p in PACKAGE_DIR.iterdir()
                  if p.suffix in (".so", ".pyd"))

_KINDS = {
    "posonly": inspect.Parameter.POSITIONAL_ONLY,
    "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "vararg": inspect.Parameter.VAR_POSITIONAL,
    "kwonly": inspect.Parameter.KEYWORD_ONLY,
    "kwarg": inspect.Parameter.VAR_KEYWORD,
}
_NO_DEFAULT = "<no default>"
_UNKNOWN = "<signature not readable at run time>"


def _stub_parameters(func):
    """(name, kind, default) of every parameter of a stub's ``def``."""
    args = func.args
    positional = args.posonlyargs + args.args
    defaults = [_NO_DEFAULT] * (len(positional) - len(args.defaults))
    defaults += [ast.literal_eval(d) for d in args.defaults]
    out = []
    for i, arg in enumerate(positional):
        kind = _KINDS["posonly"] if i < len(args.posonlyargs) else _KINDS["args"]
        out.append((arg.arg, kind, defaults[i]))
    if args.vararg:
        out.append((args.vararg.arg, _KINDS["vararg"], _NO_DEFAULT))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        out.append((arg.arg, _KINDS["kwonly"],
                    _NO_DEFAULT if default is None else ast.literal_eval(default)))
    if args.kwarg:
        out.append((args.kwarg.arg, _KINDS["kwarg"], _NO_DEFAULT))
    return out


def _runtime_parameters(obj):
    """(name, kind, default) of every parameter of a compiled function or method."""
    out = []
    for p in inspect.signature(obj).parameters.values():
        default = _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default
        out.append((p.name, p.kind, default))
    return out


def _is_property(node):
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def parse_stub(text):
    """The stub's public names: {name: ("function", params) | ("class", members) | ("constant",)}."""
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = ("function", _stub_parameters(node))
        elif isinstance(node, ast.ClassDef):
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = (("property",) if _is_property(item)
                                          else ("method", _stub_parameters(item)))
            found[node.name] = ("class", members)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = ("constant",)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ("constant",)
    return {name: what for name, what in found.items() if not name.startswith("_")}


def _defined_here(module, value):
    # Cython names a module after its .pyx file: "_layer" for dnnblocks._layer.
    owner = getattr(value, "__module__", None)
    return owner is None or owner in (module.__name__, module.__name__.rpartition(".")[2])


def describe_module(module):
    """The module's public names, in the form of :func:`parse_stub`."""
    found = {}
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if inspect.isclass(value):
            if not _defined_here(module, value):
                continue
            members = {}
            for member, attr in vars(value).items():
                if member.startswith("_") and member != "__init__":
                    continue
                if inspect.isgetsetdescriptor(attr) or inspect.ismemberdescriptor(attr) \
                        or isinstance(attr, property):
                    members[member] = ("property",)
                elif member == "__init__" and type(attr).__name__ == "wrapper_descriptor":
                    # A cdef class's __init__ is a slot: no signature to read at run
                    # time (test_training_step_init_matches_its_factory checks it).
                    members[member] = ("method", _UNKNOWN)
                elif callable(attr):
                    members[member] = ("method", _runtime_parameters(getattr(value, member)))
            found[name] = ("class", members)
        elif callable(value):
            if _defined_here(module, value):
                found[name] = ("function", _runtime_parameters(value))
        else:
            found[name] = ("constant",)
    return found


def differences(stub, runtime, module_name):
    """Human-readable differences between a parsed stub and a described module."""
    problems = []
    for name in sorted(set(stub) | set(runtime)):
        if name not in stub:
            problems.append(f"{module_name}.{name} exists but is not in the stub")
            continue
        if name not in runtime:
            problems.append(f"{module_name}.{name} is in the stub but not in the module")
            continue
        s, r = stub[name], runtime[name]
        if s[0] != r[0]:
            problems.append(f"{module_name}.{name}: the stub has a {s[0]}, the module a {r[0]}")
        elif s[0] == "function" and s[1] != r[1]:
            problems.append(f"{module_name}.{name}: stub parameters {s[1]} != module {r[1]}")
        elif s[0] == "class":
            for member in sorted(set(s[1]) | set(r[1])):
                sm, rm = s[1].get(member), r[1].get(member)
                where = f"{module_name}.{name}.{member}"
                if sm is None or rm is None:
                    side = "stub" if sm is None else "module"
                    problems.append(f"{where} is missing from the {side}")
                elif sm[0] != rm[0]:
                    problems.append(f"{where}: the stub has a {sm[0]}, the module a {rm[0]}")
                elif sm[0] == "method" and rm[1] != _UNKNOWN and sm[1] != rm[1]:
                    problems.append(f"{where}: stub parameters {sm[1]} != module {rm[1]}")
    return problems


def test_the_package_has_compiled_modules():
    # Guards the parametrisation below: an empty list would test nothing.
    assert {"_layer", "_step", "_output", "_update", "_dropout", "_cpu"} <= set(COMPILED)


def test_py_typed_is_installed():
    assert (PACKAGE_DIR / "py.typed").is_file()


@pytest.mark.parametrize("name", COMPILED)
def test_every_compiled_module_has_an_installed_stub(name):
    assert (PACKAGE_DIR / f"{name}.pyi").is_file(), (
        f"dnnblocks/{name} has no stub {name}.pyi: add csrc/{name}.pyi and install it (meson.build)")


@pytest.mark.parametrize("name", COMPILED)
def test_stub_matches_the_compiled_module(name):
    stub_path = PACKAGE_DIR / f"{name}.pyi"
    if not stub_path.is_file():
        pytest.fail(f"no stub {stub_path.name}")
    module = importlib.import_module(f"dnnblocks.{name}")
    stub = parse_stub(stub_path.read_text(encoding="utf-8"))
    runtime = describe_module(module)
    assert runtime, f"dnnblocks.{name} shows no public name: nothing would be compared"
    assert differences(stub, runtime, f"dnnblocks.{name}") == []


def test_training_step_init_matches_its_factory():
    # TrainingStep.__init__ (a slot) has the parameters of make_training_step, which
    # only forwards them; the stub must say the same for both.
    module = importlib.import_module("dnnblocks._step")
    stub = parse_stub((PACKAGE_DIR / "_step.pyi").read_text(encoding="utf-8"))
    init = stub["TrainingStep"][1]["__init__"][1]
    factory = _runtime_parameters(module.make_training_step)
    assert init[0][0] == "self" and init[1:] == factory


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_stubtest_agrees(tmp_path):
    # mypy's stubtest also compares the types of defaults and the classes' layout.
    allowlist = Path(__file__).with_name("stubtest_allowlist.txt")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(allowlist),
         *(f"dnnblocks.{name}" for name in COMPILED)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The comparison itself: each kind of drift is caught.

_LAYER_STUB = (PACKAGE_DIR / "_layer.pyi")


def _layer_problems(edit):
    module = importlib.import_module("dnnblocks._layer")
    text = edit(_LAYER_STUB.read_text(encoding="utf-8"))
    return differences(parse_stub(text), describe_module(module), "dnnblocks._layer")


def test_the_check_catches_a_renamed_parameter():
    problems = _layer_problems(lambda t: t.replace("dW_scale: float,\n", "scale: float,\n", 1))
    assert len(problems) == 1 and "linear_backward" in problems[0] and "scale" in problems[0]


def test_the_check_catches_a_changed_default():
    problems = _layer_problems(lambda t: t.replace("weight_decay: float = 0.0", "weight_decay: float = 1.0"))
    assert len(problems) == 1 and "linear_backward_update" in problems[0]


def test_the_check_catches_a_missing_function_and_an_invented_one():
    def edit(text):
        start = text.index("def linear_backward(")
        end = text.index("def linear_backward_update(")
        return text[:start] + text[end:] + "def invented(x: int) -> None: ...\n"
    problems = _layer_problems(edit)
    assert sorted(problems) == [
        "dnnblocks._layer.invented is in the stub but not in the module",
        "dnnblocks._layer.linear_backward exists but is not in the stub",
    ]


def test_the_check_catches_class_drift():
    module = importlib.import_module("dnnblocks._step")
    text = (PACKAGE_DIR / "_step.pyi").read_text(encoding="utf-8")
    text = text.replace("    def uses(self, W: Sequence[_Floats], b: Sequence[_Floats]) -> bool: ...\n", "")
    text = text.replace("l2: float = 0.0,", "l2: float = 0.5,")
    problems = differences(parse_stub(text), describe_module(module), "dnnblocks._step")
    assert len(problems) == 2, problems
    assert any("TrainingStep.uses is missing from the stub" in p for p in problems)
    assert any("TrainingStep.run" in p and "0.5" in p for p in problems)


def test_the_parser_reads_every_parameter_kind():
    stub = parse_stub(textwrap.dedent("""
        def f(a, /, b, c=1, *args, d, e="x", **kw) -> None: ...
        X: int
        _private: int
    """))
    P = inspect.Parameter
    assert stub == {
        "f": ("function", [("a", P.POSITIONAL_ONLY, _NO_DEFAULT), ("b", P.POSITIONAL_OR_KEYWORD, _NO_DEFAULT),
                           ("c", P.POSITIONAL_OR_KEYWORD, 1), ("args", P.VAR_POSITIONAL, _NO_DEFAULT),
                           ("d", P.KEYWORD_ONLY, _NO_DEFAULT), ("e", P.KEYWORD_ONLY, "x"),
                           ("kw", P.VAR_KEYWORD, _NO_DEFAULT)]),
        "X": ("constant",),
    }
