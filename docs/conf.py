"""Sphinx configuration for numpyro-ssm."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "numpyro-ssm"
author = "The numpyro-ssm developers"
copyright = "The numpyro-ssm developers"

try:
    from importlib.metadata import version as _version

    release = _version("numpyro-ssm")
except Exception:  # not installed: the docs still build from the source tree
    release = "0.1.0.dev0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

nitpicky = False

# Google-style docstrings. Attributes become :ivar: fields, so NamedTuple fields documented in
# an ``Attributes:`` section are not declared twice.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_attr_annotations = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "numpyro-ssm"
html_static_path = []


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):
    """Hide the auto-generated ``Alias for field number N`` properties of NamedTuples."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    """Register the NamedTuple alias filter."""
    app.connect("autodoc-skip-member", _skip_namedtuple_aliases)
