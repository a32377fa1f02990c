"""Sphinx configuration of the dnnblocks documentation.

Build with ``bash tools/build_docs.sh`` (or ``python -m sphinx -W -b html docs
docs/_build/html``) after installing the package with its ``docs`` extra: the API
reference is generated from the docstrings of the *installed* package.
"""

import importlib.util

import dnnblocks

project = "dnnblocks"
author = "the dnnblocks developers"
copyright = "2026, the dnnblocks developers"  # noqa: A001 (Sphinx's name)
release = dnnblocks.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Narrative pages are Markdown (MyST): the README's sections, adapted.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one page per documented object, from the numpydoc docstrings.
autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the docstrings carry the types (numpydoc)
numpydoc_show_class_members = False  # autosummary lists the members; no duplicate targets
numpydoc_class_members_toctree = False
# numpydoc's checks of docstring sections; names in "See Also" that are not
# cross-reference targets are rendered as text rather than failing the build.
numpydoc_xref_param_type = False

# The pydata theme when it is installed (the `docs` extra has it); Sphinx's own otherwise.
if importlib.util.find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
else:
    html_theme = "alabaster"
html_title = f"dnnblocks {release}"
html_static_path = []


def _skip_sklearn_request_methods(app, what, name, obj, skip, options):
    # scikit-learn adds set_fit_request, set_score_request, ... to every
    # estimator class (metadata routing). Their docstrings cross-reference
    # scikit-learn's own glossary, which does not exist here: leave them out.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_request_methods)
