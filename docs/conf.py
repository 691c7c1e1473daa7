"""
Sphinx configuration: the narrative documentation in this folder, and the
API reference that pydoctor builds from the docstrings (epytext, like
Twisted's) into the same site, under api/.

Build it with ``sphinx-build -W -b html docs docs/_build/html`` (README.rst).
"""

from __future__ import annotations

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, root)

import endpointkit  # noqa: E402

project = "endpointkit"
author = "the endpointkit developers"
copyright = "2026, the endpointkit developers"
version = release = endpointkit.__version__

extensions = ["sphinx.ext.intersphinx", "pydoctor.sphinx_ext.build_apidocs"]
# No inventories: the build works without a network.
intersphinx_mapping: dict[str, tuple[str, None]] = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

# The API reference, from the docstrings.  Links to Twisted and the standard
# library are not resolved (the build works without a network), so pydoctor
# runs quietly enough that only docstring errors reach Sphinx, where -W
# makes them fail the build.
pydoctor_args = [
    "-q", "-q",
    "--project-name=endpointkit",
    f"--project-version={release}",
    "--docformat=epytext",
    "--html-output={outdir}/api",
    f"--project-base-dir={root}",
    os.path.join(root, "endpointkit"),
]
pydoctor_url_path = "api/"
