"""The common suite: every selector of the registry honours the selector contract."""

import copy
import inspect
import warnings

import numpy as np
import pytest
from _cases import CASE_IDS, SELECTOR_CASES
from sklearn.base import clone
from sklearn.utils import estimator_checks as sk_checks
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.base import BaseSelector
from peal_sk.utils.estimator_checks import check_selector

cases = pytest.mark.parametrize("case", SELECTOR_CASES, ids=CASE_IDS)
SETUPS = ("minimal", "learner")


def _inputs(case, data, setup):
    return data.inputs(case) if setup == "minimal" else data.learner_inputs(case)


@cases
@pytest.mark.parametrize("setup", SETUPS)
def test_check_selector(case, data, setup):
    check_selector(case.factory(), X_pool=data.X_pool, **_inputs(case, data, setup))


@cases
def test_is_a_base_selector(case):
    assert isinstance(case.factory(), BaseSelector)


@cases
@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("n_instances", [1, 2, 7, 29, 30])
def test_contract(case, data, setup, n_instances):
    """Unique np.intp indices in range, exactly n_instances, and float scores to match."""
    selector = case.factory(random_state=0)
    inputs = _inputs(case, data, setup)
    idx = selector.select(data.X_pool, n_instances, **inputs)
    assert isinstance(idx, np.ndarray)
    assert idx.dtype == np.intp
    assert idx.shape == (n_instances,)
    assert np.unique(idx).size == n_instances
    assert idx.min() >= 0 and idx.max() < len(data.X_pool)

    classifier = inputs.pop("classifier")
    result = selector(classifier, data.X_pool, n_instances, **inputs)
    assert isinstance(result, tuple) and len(result) == 2
    query_idx, scores = result
    assert query_idx.dtype == np.intp
    np.testing.assert_array_equal(query_idx, idx)
    assert scores.dtype == np.float64
    assert scores.shape == (n_instances,)
    assert not np.isnan(scores).any()


@cases
def test_whole_pool(case, data):
    """n_instances == n_pool returns a permutation of the pool."""
    n_pool = len(data.X_pool)
    idx = case.factory(random_state=0).select(data.X_pool, n_pool, **data.inputs(case))
    np.testing.assert_array_equal(np.sort(idx), np.arange(n_pool))


@cases
def test_single_sample_pool(case, data):
    idx = case.factory(random_state=0).select(data.X_pool[:1], 1, **data.inputs(case))
    assert idx.tolist() == [0]


@cases
@pytest.mark.parametrize("setup", SETUPS)
def test_deterministic_under_random_state(case, data, setup):
    inputs = _inputs(case, data, setup)
    first = case.factory(random_state=7).select(data.X_pool, 5, **inputs)
    for _ in range(2):
        again = case.factory(random_state=7).select(data.X_pool, 5, **inputs)
        np.testing.assert_array_equal(again, first)
    # the same instance gives the same answer on a second call too
    selector = case.factory(random_state=7)
    selector.select(data.X_pool, 5, **inputs)
    np.testing.assert_array_equal(selector.select(data.X_pool, 5, **inputs), first)


@cases
def test_call_random_state_seeds_unseeded_selector(case, data):
    """ActiveLearner seeds strategies through the call's random_state."""
    inputs = data.learner_inputs(case)
    seeded = case.factory(random_state=3).select(data.X_pool, 4, **inputs)
    idx, _ = case.factory()(data.learner, data.X_pool, 4, random_state=3)
    np.testing.assert_array_equal(idx, seeded)


@cases
@pytest.mark.parametrize("setup", SETUPS)
def test_inputs_not_modified(case, data, setup):
    inputs = _inputs(case, data, setup)
    X_pool = data.X_pool.copy()
    before = copy.deepcopy((X_pool, data.X_labeled, data.y_labeled))
    coef = data.classifier.coef_.copy()
    selector = case.factory(random_state=0)
    classifier = inputs.pop("classifier")
    selector.select(X_pool, 6, classifier=classifier, **inputs)
    selector(classifier, X_pool, 6, **inputs)
    np.testing.assert_array_equal(X_pool, before[0])
    np.testing.assert_array_equal(data.X_labeled, before[1])
    np.testing.assert_array_equal(data.y_labeled, before[2])
    np.testing.assert_array_equal(data.learner.X_training, before[1])
    np.testing.assert_array_equal(data.learner.y_training, before[2])
    np.testing.assert_array_equal(data.classifier.coef_, coef)
    assert X_pool.flags.writeable


@cases
def test_float32_pool_not_modified(case, data):
    X_pool = data.X_pool.astype(np.float32)
    before = X_pool.copy()
    case.factory(random_state=0).select(X_pool, 5, **data.inputs(case))
    np.testing.assert_array_equal(X_pool, before)
    assert X_pool.dtype == np.float32


@cases
@pytest.mark.parametrize("setup", SETUPS)
def test_function_form_equals_class_form(case, data, setup):
    inputs = _inputs(case, data, setup)
    classifier = inputs.pop("classifier")
    fn_kwargs = dict(case.kwargs)
    if case.needs_labels and setup == "minimal":
        fn_kwargs.update(inputs)
    for n_instances in (1, 5):
        fn_idx, fn_scores = case.function(
            classifier, data.X_pool, n_instances, random_state=11, **fn_kwargs
        )
        cls_idx, cls_scores = case.factory(random_state=11)(
            classifier, data.X_pool, n_instances, **inputs
        )
        np.testing.assert_array_equal(fn_idx, cls_idx)
        np.testing.assert_array_equal(fn_scores, cls_scores)
        assert fn_idx.dtype == np.intp
        sel_idx = case.factory(random_state=11).select(
            data.X_pool, n_instances, classifier=classifier, **inputs
        )
        np.testing.assert_array_equal(fn_idx, sel_idx)


@cases
def test_function_form_signature(case):
    """modAL calls ``fn(learner, X_pool, n_instances=...)``; defaults to one instance."""
    params = list(inspect.signature(case.function).parameters.values())
    assert [p.name for p in params[:3]] == ["classifier", "X_pool", "n_instances"]
    assert params[2].default == 1
    assert "random_state" in inspect.signature(case.function).parameters


@cases
def test_labels_from_learner_equal_explicit_labels(case, data):
    """A learner's X_training / y_training are used when no labels are passed."""
    from_learner = case.factory(random_state=0).select(data.X_pool, 6, classifier=data.learner)
    explicit = case.factory(random_state=0).select(
        data.X_pool,
        6,
        classifier=data.classifier,
        X_labeled=data.X_labeled,
        y_labeled=data.y_labeled,
    )
    np.testing.assert_array_equal(from_learner, explicit)


@cases
def test_fit_stores_labels(case, data):
    """Labels given to fit() are used when a query gives none."""
    selector = case.factory(random_state=0)
    assert selector.fit(data.X_labeled, data.y_labeled) is selector
    fitted = selector.select(data.X_pool, 6, classifier=data.classifier)
    explicit = case.factory(random_state=0).select(
        data.X_pool,
        6,
        classifier=data.classifier,
        X_labeled=data.X_labeled,
        y_labeled=data.y_labeled,
    )
    np.testing.assert_array_equal(fitted, explicit)


@cases
@pytest.mark.parametrize("n_instances", [0, -1, 31, 100])
def test_n_instances_out_of_range(case, data, n_instances):
    with pytest.raises(ValueError, match=rf"n_instances.*{n_instances}"):
        case.factory(random_state=0).select(data.X_pool, n_instances, **data.inputs(case))


@cases
@pytest.mark.parametrize("n_instances", [2.5, True, "3", None, 3.0])
def test_n_instances_wrong_type(case, data, n_instances):
    with pytest.raises(TypeError, match="n_instances"):
        case.factory(random_state=0).select(data.X_pool, n_instances, **data.inputs(case))


@cases
def test_n_instances_numpy_integer(case, data):
    idx = case.factory(random_state=0).select(data.X_pool, np.int64(3), **data.inputs(case))
    assert idx.shape == (3,)


@cases
def test_n_instances_larger_than_pool_names_both_sizes(case, data):
    with pytest.raises(ValueError, match=r"n_instances=31.*n_pool=30"):
        case.factory().select(data.X_pool, 31, **data.inputs(case))


@cases
@pytest.mark.parametrize("empty", [np.empty((0, 4)), []], ids=["array", "list"])
def test_empty_pool(case, data, empty):
    with pytest.raises(ValueError, match="X_pool is empty"):
        case.factory().select(empty, 1, **data.inputs(case))


@cases
def test_needs_what_it_says(case, data):
    """A strategy that needs a model or labels says so when it has none."""
    X_pool = data.X_pool
    if case.needs_proba:
        with pytest.raises(ValueError, match="classifier=None"):
            case.factory().select(X_pool, 2, X_labeled=data.X_labeled, y_labeled=data.y_labeled)
    if case.needs_labels:
        with pytest.raises(ValueError, match="label"):
            case.factory().select(X_pool, 2, classifier=data.classifier)
    if not (case.needs_proba or case.needs_labels):  # cold start: raw 2-D features only
        assert case.factory(random_state=0).select(X_pool, 3).shape == (3,)


class _Spy:
    """A fitted classifier that counts how often it is asked for anything."""

    def __init__(self, estimator):
        self.estimator_ = estimator
        self.classes_ = estimator.classes_
        self.calls = 0

    def predict_proba(self, X):
        self.calls += 1
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        self.calls += 1
        return self.estimator_.predict(X)


#: Tried in order; every parameter must reject at least one of them.
INVALID_VALUES = ("__invalid__", object(), -1, 0, -0.5, 1.5, 2**40)


@cases
def test_every_parameter_is_validated(case, data):
    """For each parameter an invalid value gives InvalidParameterError naming it, and the
    error comes before any work (the model is never asked for anything)."""
    selector = case.factory()
    inputs = data.inputs(case)
    for name in selector.get_params(deep=True):
        leaf = name.rsplit("__", 1)[-1]
        for value in INVALID_VALUES:
            spy = _Spy(data.classifier)
            bad = clone(selector).set_params(**{name: value})
            try:
                bad.select(data.X_pool, 2, **{**inputs, "classifier": spy})
            except InvalidParameterError as exc:
                assert f"'{leaf}' parameter" in str(exc), str(exc)
                assert spy.calls == 0
                break
            except Exception:  # noqa: BLE001 - a valid value may still fail later
                continue
        else:
            pytest.fail(f"No invalid value of {name!r} raised InvalidParameterError.")


@cases
def test_parameter_constraints_cover_init(case):
    """Every constructor parameter is declared in _parameter_constraints (and no more)."""
    selector = case.factory()
    init_params = set(inspect.signature(type(selector).__init__).parameters) - {"self"}
    assert init_params == set(type(selector)._parameter_constraints)


@cases
def test_init_params_are_keyword_only_after_first(case):
    params = list(inspect.signature(type(case.factory()).__init__).parameters.values())[1:]
    assert all(p.kind == p.KEYWORD_ONLY for p in params[1:])


@cases
def test_init_does_not_validate(case):
    """Like scikit-learn, invalid values are accepted by __init__ / set_params."""
    selector = case.factory()
    params = {name: "__invalid__" for name in selector.get_params(deep=False)}
    type(selector)(**params)
    clone(selector).set_params(**params)


@cases
def test_repr_and_clone(case):
    selector = case.factory(random_state=5)
    assert repr(selector).startswith(type(selector).__name__ + "(")
    assert "random_state=5" in repr(selector)
    cloned = clone(selector)
    assert cloned is not selector
    assert cloned.get_params(deep=False).keys() == selector.get_params(deep=False).keys()
    assert repr(cloned) == repr(selector)


SKLEARN_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
]


@cases
@pytest.mark.parametrize("check_name", SKLEARN_CHECKS)
def test_sklearn_checks(case, check_name):
    """The scikit-learn common checks that apply to estimators without ``fit``."""
    check = getattr(sk_checks, check_name, None)
    if check is None:
        pytest.skip(f"{check_name} is not in this scikit-learn")
    selector = case.factory()
    with warnings.catch_warnings():
        # check_set_params only warns when set_params validates: make that a failure
        warnings.simplefilter("error", UserWarning)
        check(type(selector).__name__, selector)


def test_random_state_accepts_numpy_generator(data):
    """Every selector documents ``random_state : int, Generator or None``."""
    rejected = []
    for case in SELECTOR_CASES:
        try:
            idx = case.factory(random_state=np.random.default_rng(0)).select(
                data.X_pool, 3, **data.inputs(case)
            )
        except InvalidParameterError as exc:
            rejected.append(f"{case.id}: {exc}")
        else:
            assert idx.shape == (3,)
    assert not rejected, "\n".join(rejected)


@cases
def test_random_state_legacy_random_state_instance(case, data):
    rs = np.random.RandomState(0)
    idx = case.factory(random_state=rs).select(data.X_pool, 3, **data.inputs(case))
    assert idx.shape == (3,)


# -- check_selector itself catches broken selectors -----------------------------------------
class GoodSelector(BaseSelector):
    """A third-party selector: the samples with the largest first feature."""

    _parameter_constraints = {"shift": [float], "random_state": ["random_state"]}

    def __init__(self, shift=0.0, *, random_state=None):
        self.shift = shift
        self.random_state = random_state

    def _score(self, ctx):
        return np.asarray(ctx.X_pool, dtype=float)[:, 0] + self.shift


class ListSelector(GoodSelector):
    def select(self, X_pool, n_instances=1, **kwargs):
        return super().select(X_pool, n_instances, **kwargs).tolist()


class Int32Selector(GoodSelector):
    def select(self, X_pool, n_instances=1, **kwargs):
        return super().select(X_pool, n_instances, **kwargs).astype(np.int32)


class DuplicateSelector(GoodSelector):
    def select(self, X_pool, n_instances=1, **kwargs):
        idx = super().select(X_pool, n_instances, **kwargs)
        idx[-1] = idx[0]
        return idx


class ShrinkingSelector(GoodSelector):
    def select(self, X_pool, n_instances=1, **kwargs):
        return super().select(X_pool, min(max(n_instances, 1), len(X_pool)), **kwargs)


class UnseededSelector(GoodSelector):
    def _query(self, ctx, n_instances, rng):
        return np.random.default_rng().permutation(ctx.n_pool)[:n_instances], np.zeros(n_instances)


class IndicesOnlyCallSelector(GoodSelector):
    def __call__(self, classifier, X_pool, n_instances=1, **kwargs):
        return super().__call__(classifier, X_pool, n_instances, **kwargs)[0]


class ReversedCallSelector(GoodSelector):
    def __call__(self, classifier, X_pool, n_instances=1, **kwargs):
        idx, scores = super().__call__(classifier, X_pool, n_instances, **kwargs)
        return idx[::-1].copy(), scores


class ShortScoresSelector(GoodSelector):
    def __call__(self, classifier, X_pool, n_instances=1, **kwargs):
        idx, scores = super().__call__(classifier, X_pool, n_instances, **kwargs)
        return idx, scores[:-1]


class MutatingSelector(GoodSelector):
    def _score(self, ctx):
        ctx.X_pool[0, 0] = -1e9
        return super()._score(ctx)


class ModifyingInitSelector(GoodSelector):
    def __init__(self, shift=0.0, *, random_state=None):
        self.shift = shift + 1.0
        self.random_state = random_state


def test_check_selector_accepts_a_third_party_selector(data):
    check_selector(GoodSelector())
    check_selector(GoodSelector(random_state=3), X_pool=data.X_pool)


@pytest.mark.parametrize(
    "selector, match",
    [
        (ListSelector(), "must return a numpy array"),
        (Int32Selector(), "dtype np.intp"),
        (DuplicateSelector(), "duplicate indices"),
        (ShrinkingSelector(), "did not raise a ValueError"),
        (UnseededSelector(), "not deterministic"),
        (IndicesOnlyCallSelector(), "2-tuple"),
        (ReversedCallSelector(), "but select\\(\\) returned"),
        (ShortScoresSelector(), "scores must be"),
        (MutatingSelector(), "modified X_pool"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseSelector) else None,
)
def test_check_selector_catches_broken_selectors(data, selector, match):
    with pytest.raises(AssertionError, match=match):
        check_selector(selector, X_pool=data.X_pool.copy())


def test_check_selector_catches_modified_parameters():
    with pytest.raises(RuntimeError, match="Cannot clone"):
        check_selector(ModifyingInitSelector())
