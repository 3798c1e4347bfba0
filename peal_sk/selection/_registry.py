"""One registry of query strategies: short name -> selector class and modAL function.

Every module of :mod:`peal_sk.selection` registers its strategies at import time with
:func:`register_selector`; the command line (``peal-sk simulate``, ``peal-sk project``),
the experiments, the common tests and the documentation's strategy table all read
:func:`list_selectors` / :func:`get_selector`, so adding a strategy needs its module, its
tests and its documentation entry, nothing else.
"""

# SPDX-License-Identifier: BSD-3-Clause

import difflib
import functools
import inspect
import json
from dataclasses import dataclass, field

from sklearn.base import clone

from ..base import BaseSelector, SelectorTags, get_selector_tags

__all__ = [
    "SelectorInfo",
    "get_selector",
    "list_selectors",
    "make_selector",
    "parse_selector_params",
    "register_selector",
]

_REGISTRY = {}


@dataclass(frozen=True)
class SelectorInfo:
    """A registered strategy.

    Attributes
    ----------
    name : str
        Short name used by the command line and :func:`get_selector`.
    selector : type
        The :class:`~peal_sk.base.BaseSelector` subclass.
    function : callable or None
        The modAL query function ``function(classifier, X_pool, n_instances, **kwargs)``,
        with ``defaults`` applied (``"centroid"``: ``kmeans_sampling`` with
        ``normalize=True`` unless the caller says otherwise).
    defaults : dict
        Parameters the name stands for (``"featdist"`` is
        ``FeatureDistanceSelector(mode="class_mean")``); estimators among them are cloned
        for every new instance.
    batch_defaults : callable or None
        ``batch_defaults(n_instances) -> dict``: parameters the command line uses when the
        user sets none, given the query size (BiLAF: a third of the batch as cores).
    summary : str
        One line: the first paragraph of the class docstring.
    tags : SelectorTags
        The capability tags of ``get_selector(name)``.

    Examples
    --------
    >>> from peal_sk.selection import list_selectors
    >>> info = {i.name: i for i in list_selectors()}["featdist"]
    >>> info.selector.__name__, info.defaults, info.tags.requires_labels
    ('FeatureDistanceSelector', {'mode': 'class_mean'}, True)
    """

    name: str
    selector: type
    function: object = None
    defaults: dict = field(default_factory=dict)
    batch_defaults: object = None

    @property
    def summary(self):
        """One line: the first paragraph of the class docstring."""
        paragraph = (self.selector.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())

    @property
    def tags(self):
        """The :class:`~peal_sk.base.SelectorTags` of a selector built with the defaults."""
        return get_selector_tags(self.build())

    def build(self, **params):
        """A new selector: the registered defaults, then ``params`` (not validated).

        Parameters
        ----------
        **params
            Parameters of the selector class.

        Returns
        -------
        selector : BaseSelector
        """
        defaults = {
            k: clone(v) if hasattr(v, "get_params") else v for k, v in self.defaults.items()
        }
        return self.selector(**{**defaults, **params})


def register_selector(name, selector, function=None, *, defaults=None, batch_defaults=None):
    """Register a strategy under a short name.

    Called once per strategy at the bottom of the module that defines it.

    Parameters
    ----------
    name : str
        Short name (lower case, no spaces), unique.
    selector : type
        A :class:`~peal_sk.base.BaseSelector` subclass.
    function : callable, default=None
        Its modAL query function.
    defaults : dict, default=None
        Parameters the short name implies.
    batch_defaults : callable, default=None
        ``batch_defaults(n_instances) -> dict``: defaults of the command line that depend
        on the query size (see :func:`make_selector`).

    Returns
    -------
    selector : type
        ``selector``, unchanged (so this can decorate a class).

    Examples
    --------
    >>> from peal_sk.base import BaseSelector
    >>> from peal_sk.selection import register_selector, list_selectors
    >>> class FirstSelector(BaseSelector):
    ...     '''The first samples of the pool.'''
    ...     def _query(self, ctx, n_instances, rng):
    ...         return list(range(n_instances)), [0.0] * n_instances
    >>> _ = register_selector("first_demo", FirstSelector)
    >>> "first_demo" in [info.name for info in list_selectors()]
    True
    """
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"A selector name must be a lower-case word; got {name!r}.")
    if not (isinstance(selector, type) and issubclass(selector, BaseSelector)):
        raise TypeError(f"selector must be a BaseSelector subclass; got {selector!r}.")
    old = _REGISTRY.get(name)
    if old is not None and old.selector is not selector:
        raise ValueError(
            f"A selector is already registered as {name!r} ({old.selector.__name__}); "
            "choose another name."
        )
    defaults = dict(defaults or {})
    if function is not None and defaults:
        function = _function_with_defaults(function, defaults)
    _REGISTRY[name] = SelectorInfo(name, selector, function, defaults, batch_defaults)
    return selector


def _function_with_defaults(function, defaults):
    """``function`` with the registered ``defaults`` applied unless the caller passes them,
    so that the function form of a name runs what the name stands for (``"centroid"``:
    ``kmeans_sampling(..., normalize=True)``); estimators are cloned for every call."""
    sig = inspect.signature(function)
    unknown = sorted(set(defaults) - set(sig.parameters))
    if unknown:
        raise TypeError(f"{function.__name__} has no parameter(s) {unknown} to default.")

    @functools.wraps(function)
    def strategy(*args, **kwargs):
        bound = sig.bind_partial(*args, **kwargs)
        for key, value in defaults.items():
            if key not in bound.arguments:
                bound.arguments[key] = clone(value) if hasattr(value, "get_params") else value
        return function(*bound.args, **bound.kwargs)

    strategy.__signature__ = sig.replace(
        parameters=[
            p.replace(default=defaults[p.name]) if p.name in defaults else p
            for p in sig.parameters.values()
        ]
    )
    return strategy


def _filled():
    from .. import selection  # noqa: F401  (importing the package registers everything)

    return _REGISTRY


def list_selectors(**tags):
    """The registered strategies, optionally filtered by their tags.

    Parameters
    ----------
    **tags : bool
        Keep the strategies whose :class:`~peal_sk.base.SelectorTags` have these values,
        e.g. ``cold_start=True``.

    Returns
    -------
    selectors : list of SelectorInfo
        Sorted by name; each has ``name``, ``selector``, ``function``, ``defaults``,
        ``summary`` and ``tags``.

    Examples
    --------
    >>> from peal_sk.selection import list_selectors
    >>> names = [info.name for info in list_selectors(cold_start=True)]
    >>> "bilaf" in names, "entropy" in names
    (True, False)
    """
    known = set(SelectorTags.__dataclass_fields__)
    bad = sorted(set(tags) - known)
    if bad:
        raise TypeError(f"Unknown tag(s) {bad}; the selector tags are {sorted(known)}.")
    out = []
    for name in sorted(_filled()):
        info = _REGISTRY[name]
        if tags:
            have = info.tags
            if any(getattr(have, k) != bool(v) for k, v in tags.items()):
                continue
        out.append(info)
    return out


def get_selector(name, **params):
    """A new selector from its short name, with its parameters validated.

    Parameters
    ----------
    name : str
        A name from :func:`list_selectors` (``"entropy"``, ``"bilaf"``, ...).
    **params
        Parameters of the selector class; they override the registered defaults.

    Returns
    -------
    selector : BaseSelector

    Raises
    ------
    ValueError
        When ``name`` is not registered (the message lists the names, and the closest).
    TypeError
        When a parameter does not belong to the selector.
    sklearn.utils._param_validation.InvalidParameterError
        When a parameter value is invalid.

    Examples
    --------
    >>> from peal_sk.selection import get_selector
    >>> get_selector("bilaf", n_cores=10, random_state=0)
    BiLAFSelector(n_cores=10, random_state=0)
    """
    registry = _filled()
    if name not in registry:
        names = sorted(registry)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown strategy {name!r}; choose from {names}.{hint}")
    info = registry[name]
    valid = set(info.build().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise TypeError(
            f"{info.selector.__name__} (strategy {name!r}) has no parameter(s) {unknown}; "
            f"its parameters are {sorted(valid)}."
        )
    selector = info.build(**params)
    selector._validate_params()
    return selector


def make_selector(name, params=None, *, n_instances=None, random_state=None):
    """The selector a command (``simulate``, ``project propose``) runs for one query.

    The registered defaults, then the registry's query-size defaults (only for
    parameters the user did not set), then the user's ``params``, then ``random_state``.
    Every command builds its selectors here, so a strategy is configured the same way
    everywhere (``--param bilaf.n_cores=30``).

    Parameters
    ----------
    name : str
        Registered strategy name.
    params : dict, default=None
        The user's parameters of this strategy.
    n_instances : int, default=None
        The query size, for size-dependent defaults.
    random_state : int or None, default=None

    Returns
    -------
    selector : BaseSelector

    Examples
    --------
    >>> from peal_sk.selection import make_selector
    >>> make_selector("bilaf", n_instances=30, random_state=0)  # cores: a third of 30
    BiLAFSelector(n_cores=10, random_state=0)
    >>> make_selector("bilaf", {"n_cores": 4}, n_instances=30)
    BiLAFSelector(n_cores=4)
    """
    params = dict(params or {})
    info = _filled().get(name)
    if info is not None and info.batch_defaults is not None and n_instances is not None:
        params = {**info.batch_defaults(int(n_instances)), **params}
    return get_selector(name, **params, random_state=random_state)


def _parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a string parameter such as core_selector=kcenter


def parse_selector_params(items):
    """``["bilaf.n_cores=30", ...]`` -> ``{"bilaf": {"n_cores": 30}}``, validated.

    Values are JSON (numbers, ``true``, ``null``, quoted strings, lists); anything else is
    taken as a string. Each strategy's parameters are checked by building it, so a typo
    fails here, before any work, with a ``ValueError`` naming the strategy and the
    parameter.

    Parameters
    ----------
    items : list of str
        ``STRATEGY.PARAMETER=VALUE`` items (the ``--param`` options of the commands).

    Returns
    -------
    params : dict
        ``{strategy: {parameter: value}}``.

    Examples
    --------
    >>> from peal_sk.selection import parse_selector_params
    >>> parse_selector_params(["bilaf.n_cores=30", "bilaf.core_selector=kcenter"])
    {'bilaf': {'n_cores': 30, 'core_selector': 'kcenter'}}
    """
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param:
            raise ValueError(
                f"--param {item!r}: expected STRATEGY.PARAMETER=VALUE, e.g. bilaf.n_cores=30."
            )
        out.setdefault(name, {})[param] = _parse_value(value.strip())
    for name, params in out.items():
        try:
            get_selector(name, **params)
        except TypeError as exc:  # an unknown parameter: a user error on the command line
            raise ValueError(f"--param: {exc}") from exc
    return out
