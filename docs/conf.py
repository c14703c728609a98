"""Sphinx configuration of the meanfield_gan documentation.

Build (what CI runs, warnings are errors)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Before Sphinx reads anything this file copies the notebooks from ``notebooks/`` into
``docs/notebooks/`` (Sphinx reads only files under ``docs/``) and writes each subcommand's
``--help`` into ``docs/_generated/``, so the pages never drift from the code. Both folders are
build outputs (``docs/.gitignore``).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

import sphinx.ext.autosummary

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # a source checkout builds without being installed

import meanfield_gan  # noqa: E402
from meanfield_gan.cli import SUBCOMMANDS, build_parser  # noqa: E402

project = "meanfield_gan"
author = "the meanfield_gan developers"
copyright = f"2026, {author}"
release = meanfield_gan.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]  # autosummary/class.rst: a class page documents its methods
# .rst first: autosummary writes its generated pages with the first suffix, and they are rst
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# --- MyST and notebooks -----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The notebooks are shown as committed (no outputs) and NOT executed here: the test suite
# already executes every one of them (tests/test_notebooks.py), and running them again would
# double their cost in CI. docs/notebooks.md says so on the site.
nb_execution_mode = "off"

# MathJax renders the maths in the reader's browser, from its CDN by default. For a site read
# offline, build against a local MathJax 2 instead, e.g. Debian's libjs-mathjax:
#   MEANFIELD_GAN_MATHJAX2=/usr/share/javascript/mathjax/MathJax.js sphinx-build ...
if os.environ.get("MEANFIELD_GAN_MATHJAX2"):
    mathjax_path = (Path(os.environ["MEANFIELD_GAN_MATHJAX2"]).resolve().as_uri()
                    + "?config=TeX-AMS-MML_HTMLorMML")
    myst_update_mathjax = False  # MyST's settings are MathJax 3's
    # MyST marks its pages "ignore" so that only the math elements are typeset
    mathjax2_config = {"tex2jax": {"processClass": "math", "ignoreClass": "mathjax_ignore"}}

# --- API reference ----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # numpydoc's Parameters sections give the types
numpydoc_show_class_members = False  # one page per object; no member tables to cross-check
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
# The one-line summaries in the API tables end at the first ". "; "i.i.d." is not an end (our
# docstrings say "Draw i.i.d. initial particles"). Sphinx keeps its list of such abbreviations
# in this module global, read at each call.
_abbreviations = getattr(sphinx.ext.autosummary, "WELL_KNOWN_ABBREVIATIONS", None)
if isinstance(_abbreviations, tuple):
    sphinx.ext.autosummary.WELL_KNOWN_ABBREVIATIONS = _abbreviations + ("i.i.d.", "I.i.d.")

# --- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"meanfield_gan {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # a wider text column on wide screens (see the file)
html_theme_options = {"navigation_with_keys": True}


def _copy_notebooks() -> None:
    dest = DOCS / "notebooks"
    dest.mkdir(exist_ok=True)
    wanted = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for old in dest.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name in sorted(wanted):
        src, dst = ROOT / "notebooks" / name, dest / name
        # copy only what changed, so an incremental build does not re-read every notebook
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


def _write_cli_help() -> None:
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    os.environ["COLUMNS"] = "92"  # argparse wraps at the terminal width: make it fixed
    parser = build_parser()
    pages = {"": parser}
    sub = next(a for a in parser._actions if a.dest == "command")
    pages.update(sub.choices)
    for name, p in pages.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            p.print_help()
        text = buf.getvalue()
        path = out / f"cli_{name or 'meanfield-gan'}.txt"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    assert set(pages) - {""} == set(SUBCOMMANDS)


_copy_notebooks()
_write_cli_help()
