"""Sphinx configuration for the skvae documentation.

Build with ``make -C docs html`` (warnings are errors). The build is offline:
no intersphinx inventories are fetched and MathJax is only a script link.
"""

import skvae

project = "skvae"
author = "The skvae developers"
copyright = "2026, The skvae developers"
version = release = skvae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README*", "auto_examples/*.ipynb", "**.ipynb"]
templates_path = ["_templates"]

# Offline: no intersphinx (it would fetch inventories over the network).
# References to scikit-learn and torch objects are written as plain text or
# links to their documentation pages.

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Glossary terms of scikit-learn (:term:`fit`) are not in this project.
numpydoc_validation_checks = set()

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 2

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    # Every script runs (not just those starting with plot_).
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "plot_gallery": "True",
    "reference_url": {"skvae": None},
    "doc_module": ("skvae",),
    "backreferences_dir": "generated",
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "min_reported_time": 1,
}

html_theme = "pydata_sphinx_theme"
html_title = f"skvae {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"benchmarks": [], "api": []}
html_static_path = []
html_show_sourcelink = False

# Docstrings inherited from scikit-learn (get_params, set_output, ...) and our
# own docs refer to scikit-learn's glossary terms, labels and classes.
# Intersphinx would resolve them by downloading scikit-learn's inventory; this
# build is offline, so they are linked to scikit-learn's pages directly. Any
# other unresolved label or term still fails the build.
SKLEARN_DOCS = "https://scikit-learn.org/stable/"
SKLEARN_LABELS = {
    "metadata_routing": "metadata_routing.html",
    "df_output_transform": "auto_examples/miscellaneous/plot_set_output.html",
    "sphx_glr_auto_examples_miscellaneous_plot_set_output.py": (
        "auto_examples/miscellaneous/plot_set_output.html"
    ),
}


def _sklearn_uri(node):
    """scikit-learn's page for a reference, or None."""
    domain, kind = node.get("refdomain"), node.get("reftype")
    target = node.get("reftarget", "")
    if domain == "std" and kind == "term":
        return SKLEARN_DOCS + "glossary.html#term-" + target.lower().replace(" ", "-")
    if domain == "std" and kind == "ref" and target in SKLEARN_LABELS:
        return SKLEARN_DOCS + SKLEARN_LABELS[target]
    if domain == "py" and target.startswith("sklearn."):
        # Classes and functions have a page each; methods an anchor on it.
        page = target
        if kind in ("meth", "attr"):
            page = target.rsplit(".", 1)[0]
        return f"{SKLEARN_DOCS}modules/generated/{page}.html#{target}"
    return None


def _link_sklearn_reference(app, env, node, contnode):
    from docutils import nodes

    uri = _sklearn_uri(node)
    if uri is None:
        return None
    return nodes.reference("", "", contnode, refuri=uri, internal=False)


def setup(app):
    app.connect("missing-reference", _link_sklearn_reference)
