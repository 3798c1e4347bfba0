"""Resolve references to re-exported peal_sk names (``peal_sk.ActiveLearner``).

Every public object is documented once, on the page of the module listed in the API
reference (``peal_sk.learner.ActiveLearner``, ``peal_sk.selection.EntropySelector``,
...). Docstrings and guides also use the shorter re-exports (``peal_sk.ActiveLearner``,
``peal_sk.PEALClassifier``); this handler looks the referenced object up by identity and
points the reference at the page where it is documented.
"""

import importlib

_CACHE = {}  # built once per build, after all documents are read


def _import(target):
    """The object named by a dotted ``target``, or None."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env):
    """``id(object) -> documented name`` for every peal_sk object in the Python domain."""
    cache = _CACHE.get("documented")
    if cache is None:
        cache = _CACHE["documented"] = {}
        for name in env.get_domain("py").objects:
            if name.startswith("peal_sk."):
                obj = _import(name)
                if obj is not None and not isinstance(obj, (int, float, str, tuple, dict)):
                    cache.setdefault(id(obj), name)
    return cache


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("peal_sk."):
        return None
    documented = _documented(env)
    parts = target.split(".")
    for cut in range(len(parts), 1, -1):  # the object itself, else its owner + attribute
        obj = _import(".".join(parts[:cut]))
        if obj is None or id(obj) not in documented:
            continue
        new = ".".join([documented[id(obj)], *parts[cut:]])
        if new == target:
            return None
        domain = env.get_domain("py")
        node = node.deepcopy()
        node["reftarget"] = new
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], new, node, contnode
        )
    return None


def _reset(app, env, *args):
    _CACHE.clear()


def setup(app):
    app.connect("missing-reference", _resolve)
    app.connect("env-updated", _reset)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
