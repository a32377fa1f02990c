#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, warnings as errors.
#
#   bash tools/build_docs.sh          # needs the package installed with its docs extra:
#                                     #   pip install ".[docs]"
#
# The API reference is generated from the docstrings of the INSTALLED package
# (autosummary writes its pages into docs/generated/), so reinstall after
# changing a docstring.
set -euo pipefail
cd "$(dirname "$0")/.."

python -c "import sphinx, numpydoc, myst_parser" 2>/dev/null \
  || { echo 'build_docs: install the docs extra first: pip install ".[docs]"' >&2; exit 1; }
rm -rf docs/_build docs/generated
start=$SECONDS
# -W: every warning fails the build; --keep-going: report all of them first; -n: nitpicky off
# (numpydoc's type names are prose, not cross-reference targets).
python -m sphinx -W --keep-going -b html docs docs/_build/html
echo "build_docs: docs/_build/html/index.html ($((SECONDS - start)) s)"
