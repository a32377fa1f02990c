"""The installed distribution's metadata, as an index or a user's tools read it.

One source for the version (meson.build's project(version:)): the wheel's
metadata, ``dnnblocks.__version__`` and ``dnnblocks --version`` agree. The
licence is declared the PEP 639 way and its file is installed. The sdist and the
wheel themselves are checked by tools/build_dist.sh (run in CI).
"""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import dnnblocks

DIST = metadata.distribution("dnnblocks")
REPO = Path(__file__).resolve().parents[1]


def test_one_version_everywhere():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", dnnblocks.__version__)
    assert DIST.version == dnnblocks.__version__
    proc = subprocess.run([sys.executable, "-m", "dnnblocks", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == f"dnnblocks {DIST.version}"


def test_the_version_is_typed_only_in_meson_build():
    # In a source checkout (or the sdist), the version appears in meson.build alone.
    meson = REPO / "meson.build"
    if not meson.is_file():  # tests run from elsewhere than the source tree
        return
    declared = re.search(r"version:\s*'([^']+)'", meson.read_text(encoding="utf-8")).group(1)
    assert declared == dnnblocks.__version__
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)
    init = (REPO / "src" / "dnnblocks" / "__init__.py").read_text(encoding="utf-8")
    assert declared not in init


def test_license_metadata_is_pep_639():
    meta = DIST.metadata
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta.get_all("License-File") == ["LICENSE"]
    # PEP 639 replaces the licence classifiers; both at once is an error for indexes.
    assert not [c for c in meta.get_all("Classifier") if c.startswith("License ::")]
    licence = [f for f in DIST.files if f.name == "LICENSE"]
    assert len(licence) == 1 and "licenses" in licence[0].parts
    text = licence[0].locate().read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License") and "the dnnblocks developers" in text


def test_classifiers_name_the_supported_pythons():
    classifiers = DIST.metadata.get_all("Classifier")
    low = re.search(r">=\s*3\.(\d+)", DIST.metadata["Requires-Python"]).group(1)
    assert f"Programming Language :: Python :: 3.{low}" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Typing :: Typed" in classifiers


def test_type_information_is_installed():
    package = Path(dnnblocks.__file__).parent
    assert (package / "py.typed").is_file()
    compiled = sorted(p.name.split(".")[0] for p in package.glob("*.so"))
    assert compiled and all((package / f"{name}.pyi").is_file() for name in compiled)
    # Build templates stay out of the installed package.
    assert not list(package.glob("*.in"))
