"""numpydoc validation of every public docstring.

The objects: everything in ``peal_sk.__all__``, ``peal_sk.selection.__all__``,
``peal_sk.learner.__all__``, ``peal_sk.experiments.__all__`` and
``peal_sk.classifier.__all__`` (skipped when torch is not installed), plus
``peal_sk.utils.estimator_checks.check_selector``; and the public methods of those
classes that peal_sk defines (``select``, ``fit``, ``__call__``, ... but not the
``get_params`` family inherited from scikit-learn). Modules and constants
(``__version__``, ``ITERATIVE``, ...) carry no docstring of their own and are skipped.

Checked error codes (``numpydoc.validate``), each a failure:

* GL08: no docstring;
* GL06: an unknown section name (numpydoc would not render it as a section);
* SS01: no summary line;
* PR01: a parameter of the signature is not documented;
* PR02: a documented parameter is not in the signature;
* PR03: documented parameters in another order than the signature;
* PR10: ``name: type`` without a space before the colon (renders as a name, no type);
* RT01: no Returns section although the function returns something;
* YD01: no Yields section for a generator;
* EX01: no Examples section, for classes and functions (not for methods, whose class
  example shows them in use, as in scikit-learn; not for exception classes).

Two refinements of PR01: parameters whose name starts with ``_`` are private
(``activeft_select(_grouped=...)``) and need no documentation; for dataclasses, whose
generated ``__init__`` takes every field, a field documented under Attributes counts as
documented (records such as ``QueryRecord`` are read, not built, by users).

Deliberately not checked, because they would flag docstrings that follow the project's
scikit-learn style rather than defects:

* ES01 (no extended summary) and SA01 (no See Also): many short functions need neither;
* PR07 / RT03 (a parameter or return value without description): scikit-learn writes
  ``X_pool : array-like`` alone where the name and type say it all;
* PR04 (no type): grouped parameters documented once as "see :class:`BiLAFSelector`";
* SS02-SS06, PR05, PR06, PR08, PR09, RT02, RT04, RT05, SA02-SA04, GL01-GL03, GL07:
  capitalisation, punctuation, wording and layout, e.g. summaries that start with the
  proper name "modAL query strategy: ...".
"""

import dataclasses
import importlib
import importlib.util
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")
from numpydoc.docscrape import get_doc_object  # noqa: E402

CHECKED = {"GL08", "GL06", "SS01", "PR01", "PR02", "PR03", "PR10", "RT01", "YD01", "EX01"}
NOT_FOR_METHODS = {"EX01"}

# submodules first: an object re-exported by ``peal_sk`` is named (and documented) by its
# submodule, e.g. ``peal_sk.selection.EntropySelector``
CORE_MODULES = ["peal_sk.selection", "peal_sk.learner", "peal_sk.experiments", "peal_sk"]
TORCH_MODULES = ["peal_sk.classifier", "peal_sk.distributed"]
EXTRA = ["peal_sk.utils.estimator_checks.check_selector"]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _unwrap(attr):
    """The function behind a method, classmethod, staticmethod or property."""
    if isinstance(attr, property):
        return attr.fget
    return getattr(attr, "__func__", attr)


def _public_objects():
    """``[(dotted name, kind)]``: each public object and method once, by first name."""
    modules = (TORCH_MODULES if HAS_TORCH else []) + CORE_MODULES
    names, seen = [], set()

    def add(name, obj, kind):
        if id(obj) not in seen:
            seen.add(id(obj))
            names.append((name, kind))

    objects = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        # an alias (``bilaf = bilaf_sampling``) after the object's own name
        for attr in sorted(
            module.__all__, key=lambda a: a != getattr(getattr(module, a), "__name__", a)
        ):
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                objects.append((f"{module_name}.{attr}", obj))
    for dotted in EXTRA:
        module_name, _, attr = dotted.rpartition(".")
        objects.append((dotted, getattr(importlib.import_module(module_name), attr)))

    for name, obj in objects:
        add(name, obj, "exception" if _is_exception(obj) else "object")
    public_name = {id(obj): name for name, obj in reversed(objects)}  # first name wins
    for name, obj in objects:
        if not inspect.isclass(obj):
            continue
        for attr in sorted(dir(obj)):
            if attr.startswith("_") and attr != "__call__":
                continue
            func = _unwrap(inspect.getattr_static(obj, attr))
            if callable(func) and (getattr(func, "__module__", "") or "").startswith("peal_sk"):
                # an inherited method is named after the (public) class that defines it
                owner = next(k for k in obj.__mro__ if attr in vars(k))
                add(f"{public_name.get(id(owner), name)}.{attr}", func, "method")
    if not HAS_TORCH:
        names += [(m, "torch") for m in TORCH_MODULES]
    return names


def _is_exception(obj):
    return inspect.isclass(obj) and issubclass(obj, BaseException)


class _Validator(numpydoc_validate.Validator):
    """numpydoc's validator with the two PR01 refinements of the module docstring."""

    def __init__(self, obj_name):
        obj = numpydoc_validate.Validator._load_obj(obj_name)
        super().__init__(get_doc_object(obj))

    @property
    def signature_parameters(self):
        return tuple(p for p in super().signature_parameters if not p.lstrip("*").startswith("_"))

    @property
    def doc_all_parameters(self):
        params = super().doc_all_parameters
        if dataclasses.is_dataclass(self.obj) and inspect.isclass(self.obj):
            fields = {f.name for f in dataclasses.fields(self.obj)}
            for name, value in self._doc_parameters(["Attributes"]).items():
                if name in fields and name not in params:
                    params[name] = value
            # in signature order, so that PR03 compares like with like
            order = {p: i for i, p in enumerate(self.signature_parameters)}
            params = dict(sorted(params.items(), key=lambda kv: order.get(kv[0], len(order))))
        return params


PUBLIC = _public_objects()


def test_the_public_api_is_collected():
    names = [name for name, _ in PUBLIC]
    for expected in (
        "peal_sk.BaseSelector",
        "peal_sk.learner.ActiveLearner",
        "peal_sk.selection.BiLAFSelector",
        "peal_sk.selection.kmeans_sampling",
        "peal_sk.learner.QueryRecord",
        "peal_sk.experiments.simulate",
        "peal_sk.utils.estimator_checks.check_selector",
        "peal_sk.BaseSelector.select",
        "peal_sk.BaseSelector.__call__",
    ):
        assert expected in names
    if HAS_TORCH:
        assert "peal_sk.classifier.PEALClassifier" in names
        assert "peal_sk.classifier.PEALClassifier.save_adapters" in names


@pytest.mark.parametrize("name, kind", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_docstring(name, kind):
    if kind == "torch" or name.startswith(tuple(TORCH_MODULES)):
        pytest.importorskip("torch")
    result = numpydoc_validate.validate(name, validator_cls=_Validator)
    checked = CHECKED - (NOT_FOR_METHODS if kind in ("method", "exception") else set())
    errors = [f"{code}: {message}" for code, message in result["errors"] if code in checked]
    assert not errors, f"{name}:\n  " + "\n  ".join(errors)
