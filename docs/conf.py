"""Sphinx configuration of the peal_sk documentation.

Build (offline, every warning an error)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build never touches the network. Links into the scikit-learn, NumPy, PyTorch and
skorch documentation (intersphinx) are opt-in: set ``PEAL_SK_DOCS_INTERSPHINX=1`` on a
machine with internet access to fetch their inventories. Without it, references to those
projects render as plain text; ``nitpicky`` stays off so that they are not warnings.
"""

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the checkout's peal_sk, also without an install

import peal_sk  # noqa: E402

# -- project ------------------------------------------------------------------------------
project = "peal_sk"
author = "The peal_sk developers"
copyright = "2026, The peal_sk developers"
release = peal_sk.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ---------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "md_include",  # docs/_ext: CHANGELOG.md and benchmarks/README.md, converted
    "peal_sk_refs",  # docs/_ext: peal_sk.X re-exports resolve to their documented page
    "selector_table",  # docs/_ext: the strategy table, generated from the registry
    "cli_help",  # docs/_ext: `peal-sk ... --help` texts, generated from the parser
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/sg_execution_times.rst"]
root_doc = "index"
default_role = "literal"  # `x` in docstrings is code, never a dangling reference
nitpicky = False  # external types without intersphinx are not warnings
add_module_names = False
pygments_style = "sphinx"

# -- autodoc / autosummary ----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    "special-members": "__call__",
    "member-order": "groupwise",
}
autodoc_typehints = "none"  # types come from the numpydoc docstrings
autodoc_inherit_docstrings = True


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document members defined in peal_sk only.

    Inherited scikit-learn methods (``get_params``, ``set_params``, ``set_output``, the
    metadata-routing ``set_*_request``) are documented by scikit-learn; their docstrings
    point at scikit-learn's own labels, which would be broken references here.
    """
    if skip or what != "class":
        return None
    func = getattr(obj, "fget", None) or getattr(obj, "__func__", obj)
    module = getattr(func, "__module__", None) or ""
    if callable(func) or isinstance(obj, property):
        return not module.startswith("peal_sk") or None
    return None


def _constant_docs(app, what, name, obj, options, lines):
    """Docs of re-exported constants (``peal_sk.experiments.ITERATIVE``).

    A ``#:`` comment documents a constant where it is defined (a private submodule);
    autodoc looks for it in the module that re-exports it and otherwise shows the
    docstring of ``tuple`` or ``dict``. Find the comment in the package's submodules.
    """
    if what != "data" or not name.startswith("peal_sk."):
        return
    import importlib
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    package, _, attr = name.rpartition(".")
    pkg = importlib.import_module(package)
    doc = []
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        try:
            found = ModuleAnalyzer.for_module(f"{package}.{info.name}").find_attr_docs()
        except Exception:  # noqa: BLE001 - a module without source: nothing to find
            continue
        if ("", attr) in found:
            doc = list(found[("", attr)])
            break
    marker = ("..", "!! processed by numpydoc !!")  # numpydoc's trailer, not content
    text = [t for t in lines if t.strip() and t.strip() not in marker]
    if not text or text[0].strip() == (type(obj).__doc__ or "").strip().splitlines()[0]:
        lines[:] = doc


# -- numpydoc -----------------------------------------------------------------------------
numpydoc_show_class_members = False  # the autosummary class template lists members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Parameter types link to their documentation only for the names aliased here; any other
# word of a type ("of", "shape", "default", array-like, ...) stays text. Without
# intersphinx the aliased targets are unresolved, which is silent with nitpicky off.
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {
    # numpydoc's defaults point some words at glossary terms and labels of the Python and
    # NumPy docs (``:term:`numpy:array_like```); unresolved, those are warnings even with
    # nitpicky off, so every default is replaced by a plain object reference.
    "None": "None",
    "True": "True",
    "False": "False",
    "bool": "bool",
    "boolean": "bool",
    "int": "int",
    "float": "float",
    "str": "str",
    "string": "str",
    "list": "list",
    "tuple": "tuple",
    "dict": "dict",
    "callable": "callable",
    "iterable": "collections.abc.Iterable",
    "sequence": "collections.abc.Sequence",
    "generator": "collections.abc.Generator",
    "contextmanager": "contextlib.contextmanager",
    "namedtuple": "collections.namedtuple",
    "array-like": "numpy.typing.ArrayLike",
    "array_like": "numpy.typing.ArrayLike",
    "scalar": "numpy.generic",
    "numpy": "numpy",
    "np.inf": "numpy.inf",
    "np.nan": "numpy.nan",
    "array": "numpy.ndarray",
    "np.ndarray": "numpy.ndarray",
    "RandomState": "numpy.random.RandomState",
    "np.random.RandomState": "numpy.random.RandomState",
    # peal_sk's own vocabulary
    "ndarray": "numpy.ndarray",
    "Generator": "numpy.random.Generator",
    "numpy.random.Generator": "numpy.random.Generator",
    "dtype": "numpy.dtype",
    "estimator": "sklearn.base.BaseEstimator",
    "Pipeline": "sklearn.pipeline.Pipeline",
    "torch.nn.Module": "torch.nn.Module",
    "nn.Module": "torch.nn.Module",
    "skorch.NeuralNetClassifier": "skorch.classifier.NeuralNetClassifier",
    "BaseSelector": "peal_sk.base.BaseSelector",
    "QueryRecord": "peal_sk.learner.QueryRecord",
    "SimulationConfig": "peal_sk.experiments.SimulationConfig",
    "Dataset": "peal_sk.experiments.Dataset",
    "ActiveLearner": "peal_sk.learner.ActiveLearner",
    "PEALClassifier": "peal_sk.classifier.PEALClassifier",
}

# -- intersphinx (opt-in: the build must not need the network) ---------------------------
if os.environ.get("PEAL_SK_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable/", None),
    }
else:
    intersphinx_mapping = {}

# -- sphinx-gallery -----------------------------------------------------------------------
os.environ.setdefault("MPLBACKEND", "agg")
warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg, which is a non-GUI backend",
)
sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "doc_module": ("peal_sk",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"peal_sk": None},
    "min_reported_time": 0,
    "write_computation_times": False,
    "show_memory": False,
    "image_scrapers": ("matplotlib",),
    "remove_config_comments": True,
}

# -- HTML ---------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"peal_sk {release}"
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
html_static_path = ["_static"]
html_css_files = ["peal_sk.css"]  # tables scroll inside their box
# the whole contents in the left sidebar, on every page but the front page
html_sidebars = {"**": ["sidebar-global-nav"], "index": []}


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-docstring", _constant_docs)
