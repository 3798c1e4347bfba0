"""The strategy registry, the capability tags and validation done once per call."""

import copy

import numpy as np
import pytest
from sklearn import config_context
from sklearn.base import clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk import selection
from peal_sk.base import BaseSelector, SelectorTags, get_selector_tags
from peal_sk.selection import (
    ActiveFTSelector,
    BiLAFSelector,
    ClassBalancedSelector,
    EntropySelector,
    FeatureDistanceSelector,
    KCenterSelector,
    get_selector,
    list_selectors,
    register_selector,
)
from peal_sk.selection._registry import _REGISTRY

#: what each built-in strategy needs, written out once more by hand to check the tags
EXPECTED = {
    "activeft": (True, False, False, True),
    "badge": (False, True, False, True),
    "dropquery": (False, True, False, True),
    "probcover": (True, False, False, True),
    "typiclust": (True, False, False, True),
    "bilaf": (True, False, False, True),
    "centroid": (True, False, False, True),
    "class_balanced": (False, True, True, False),
    "entropy": (False, True, False, False),
    "featdist": (False, True, True, True),
    "hybrid": (False, True, False, True),
    "kcenter": (True, False, False, True),
    "kmeans": (True, False, False, True),
    "least_confident": (False, True, False, False),
    "margin": (False, True, False, False),
    "random": (True, False, False, False),
}


def _as_tuple(tags):
    return (tags.cold_start, tags.requires_proba, tags.requires_labels, tags.uses_embeddings)


def test_every_exported_selector_is_registered():
    registered = {info.selector for info in list_selectors()}
    exported = {
        getattr(selection, name)
        for name in selection.__all__
        if isinstance(getattr(selection, name), type)
        and issubclass(getattr(selection, name), BaseSelector)
    }
    assert exported <= registered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tags_of_builtin_strategies(name):
    (info,) = [i for i in list_selectors() if i.name == name]
    assert _as_tuple(info.tags) == EXPECTED[name]
    assert info.function is not None and callable(info.function)
    assert info.summary and "\n" not in info.summary


def test_tags_are_consistent_for_every_strategy():
    for info in list_selectors():
        tags = info.tags
        if tags.cold_start:
            assert not tags.requires_proba and not tags.requires_labels, info.name


def test_tags_through_sklearn_get_tags():
    tags = get_tags(EntropySelector())
    assert isinstance(tags.selector_tags, SelectorTags)
    assert tags.selector_tags.requires_proba


def test_tags_depend_on_parameters():
    assert get_selector_tags(FeatureDistanceSelector(mode="kcenter")).cold_start
    nearest = get_selector_tags(FeatureDistanceSelector(mode="nearest"))
    assert (nearest.cold_start, nearest.requires_labels, nearest.requires_proba) == (
        False,
        True,
        False,
    )
    assert get_selector_tags(ClassBalancedSelector(KCenterSelector())).uses_embeddings


def test_get_selector_tags_rejects_non_selectors():
    with pytest.raises(TypeError, match="BaseSelector"):
        get_selector_tags(object())


def test_list_selectors_filters_by_tags():
    cold = {i.name for i in list_selectors(cold_start=True)}
    assert {"random", "kcenter", "bilaf", "activeft", "kmeans"} <= cold
    assert "entropy" not in cold
    proba = {i.name for i in list_selectors(requires_proba=True)}
    assert {"entropy", "margin", "hybrid"} <= proba
    with pytest.raises(TypeError, match="Unknown tag"):
        list_selectors(fast=True)


def test_get_selector_builds_with_defaults_and_params():
    sel = get_selector("featdist", random_state=3)
    assert isinstance(sel, FeatureDistanceSelector)
    assert sel.mode == "class_mean" and sel.random_state == 3
    assert get_selector("featdist", mode="kcenter").mode == "kcenter"
    # defaults that are estimators are cloned: two selectors never share one
    a, b = get_selector("class_balanced"), get_selector("class_balanced")
    assert isinstance(a.base, EntropySelector) and a.base is not b.base


def test_get_selector_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"Unknown strategy 'entorpy'.*Did you mean 'entropy'"):
        get_selector("entorpy")
    with pytest.raises(TypeError, match=r"BiLAFSelector .*'bilaf'.* no parameter.*'n_core'"):
        get_selector("bilaf", n_core=3)
    with pytest.raises(InvalidParameterError, match="n_cores"):
        get_selector("bilaf", n_cores=-1)


def test_register_selector_rejects_bad_entries():
    with pytest.raises(ValueError, match="lower-case"):
        register_selector("Bad Name", EntropySelector)
    with pytest.raises(TypeError, match="BaseSelector subclass"):
        register_selector("not_a_selector", object)
    with pytest.raises(ValueError, match="already registered"):
        register_selector("entropy", KCenterSelector)


def test_register_selector_adds_a_strategy():
    class FirstSelector(BaseSelector):
        """The first samples of the pool."""

        def _query(self, ctx, n_instances, rng):
            return np.arange(n_instances), np.zeros(n_instances)

    try:
        register_selector("first_test", FirstSelector)
        info = {i.name: i for i in list_selectors()}["first_test"]
        assert info.tags.cold_start and info.summary == "The first samples of the pool."
        assert get_selector("first_test").select(np.zeros((5, 2)), 2).tolist() == [0, 1]
    finally:
        _REGISTRY.pop("first_test", None)


# -- a user's subclass without random_state -----------------------------------------------
class NoSeedSelector(BaseSelector):
    """Random picks, seeded only by the caller; no parameters at all."""

    def __init__(self):
        pass

    def _query(self, ctx, n_instances, rng):
        return rng.permutation(ctx.n_pool)[:n_instances], np.zeros(n_instances)


def test_subclass_without_random_state_works(data):
    sel = NoSeedSelector()
    assert sel.get_params() == {}
    idx = sel.select(data.X_pool, 4)
    assert idx.shape == (4,)
    first, _ = sel(None, data.X_pool, 4, random_state=1)
    again, _ = sel(None, data.X_pool, 4, random_state=1)
    np.testing.assert_array_equal(first, again)
    assert clone(sel).select(data.X_pool, 2).shape == (2,)


def test_random_state_declared_once_and_inherited():
    for info in list_selectors():
        constraints = info.selector._parameter_constraints
        assert constraints["random_state"] is BaseSelector._parameter_constraints["random_state"]


# -- validation once, honouring skip_parameter_validation ----------------------------------
@pytest.mark.parametrize("method", ["select", "score_samples", "call", "fit"])
def test_validation_runs_once_per_call_and_can_be_skipped(data, method, monkeypatch):
    calls = []
    sel = FeatureDistanceSelector(mode="nearest", random_state=0)
    original = sel._validate_params
    monkeypatch.setattr(sel, "_validate_params", lambda: calls.append(1) or original())
    inputs = {"X_labeled": data.X_labeled, "y_labeled": data.y_labeled}

    def run():
        if method == "select":
            sel.select(data.X_pool, 2, **inputs)
        elif method == "score_samples":
            sel.score_samples(data.X_pool, **inputs)
        elif method == "call":
            sel(None, data.X_pool, 2, **inputs)
        else:
            sel.fit(data.X_labeled, data.y_labeled)

    run()
    assert len(calls) == 1
    with config_context(skip_parameter_validation=True):
        run()
    assert len(calls) == 1


def test_skip_parameter_validation_lets_an_invalid_value_through(data):
    sel = EntropySelector(random_state="not a seed")
    with pytest.raises(InvalidParameterError, match="random_state"):
        sel.select(data.X_pool, 2, classifier=data.classifier)
    with config_context(skip_parameter_validation=True):
        # validation skipped: the bad value reaches the seeding code, which fails there
        with pytest.raises((ValueError, TypeError)):
            sel.select(data.X_pool, 2, classifier=data.classifier)


# -- composites never modify the user's sub-selectors --------------------------------------
def _state(obj):
    return copy.deepcopy(vars(obj))


def test_class_balanced_does_not_modify_its_base(data):
    base = EntropySelector()
    before = _state(base)
    sel = ClassBalancedSelector(base, random_state=0)
    sel.select(data.X_pool, 4, classifier=data.learner)
    assert (
        _state(base).keys() == before.keys() and base.get_params() == EntropySelector().get_params()
    )
    assert sel.base_ is not base and isinstance(sel.base_, EntropySelector)


def test_bilaf_does_not_modify_its_core_selector(data):
    core = ActiveFTSelector(max_iter=10)
    before = sorted(vars(core))
    sel = BiLAFSelector(n_cores=3, core_selector=core, random_state=0)
    sel.select(data.X_pool, 6)
    assert sorted(vars(core)) == before and core.random_state is None
    assert sel.core_selector_ is not core and sel.core_selector_.random_state is not None
    by_name = BiLAFSelector(n_cores=3, core_selector="kcenter", random_state=0)
    by_name.select(data.X_pool, 6)
    assert isinstance(by_name.core_selector_, KCenterSelector)


def test_bilaf_core_selector_name_must_be_a_cold_start_strategy(data):
    with pytest.raises(ValueError, match=r"core_selector='entropy' is not a cold-start"):
        BiLAFSelector(n_cores=3, core_selector="entropy").select(data.X_pool, 6)
    with pytest.raises(ValueError, match=r"core_selector='bogus'"):
        BiLAFSelector(n_cores=3, core_selector="bogus").select(data.X_pool, 6)


def test_centroid_is_kmeans_on_normalised_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)) * rng.uniform(0.1, 10, size=(60, 1))
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    centroid = get_selector("centroid", random_state=0)
    assert centroid.normalize is True
    np.testing.assert_array_equal(
        centroid.select(X, 6), get_selector("kmeans", random_state=0).select(unit, 6)
    )
    assert get_selector("kmeans", normalize=True, random_state=0).select(X, 6).shape == (6,)
