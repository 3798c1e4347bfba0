"""Bad input gives a clear ValueError / TypeError naming the parameter and value."""

import re

import numpy as np
import pytest
from _cases import CASE_IDS, SELECTOR_CASES
from sklearn.cluster import KMeans
from sklearn.svm import SVC, LinearSVC
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.selection import (
    ClassBalancedSelector,
    EntropySelector,
    FeatureDistanceSelector,
    HybridSelector,
    KCenterSelector,
    LeastConfidentSelector,
    MarginSelector,
    RandomSelector,
    entropy_sampling,
    entropy_scores,
    featdist_sampling,
    feature_distance_scores,
    hybrid_sampling,
)
from peal_sk.utils import check_features, check_n_instances, check_proba, check_rng

cases = pytest.mark.parametrize("case", SELECTOR_CASES, ids=CASE_IDS)


class Spy:
    """A fitted classifier that counts calls and returns what it is told to."""

    def __init__(self, proba, classes=None):
        self.proba = np.asarray(proba)
        self.classes_ = np.arange(self.proba.shape[-1]) if classes is None else classes
        self.calls = 0

    def predict_proba(self, X):
        self.calls += 1
        return self.proba

    def predict(self, X):
        self.calls += 1
        return np.zeros(len(X), dtype=int)


# -- n_instances ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n_instances, error, message",
    [
        (0, ValueError, "n_instances must be >= 1; got n_instances=0"),
        (-1, ValueError, "n_instances must be >= 1; got n_instances=-1"),
        (31, ValueError, "n_instances=31 is larger than the pool size n_pool=30"),
        (2.5, TypeError, "n_instances must be an int >= 1; got 2.5"),
        (True, TypeError, "n_instances must be an int >= 1; got True"),
        (np.float64(2.0), TypeError, "n_instances must be an int"),
    ],
)
def test_n_instances(data, n_instances, error, message):
    spy = Spy(data.classifier.predict_proba(data.X_pool))
    with pytest.raises(error, match=re.escape(message)):
        EntropySelector().select(data.X_pool, n_instances, classifier=spy)
    assert spy.calls == 0  # before any work
    with pytest.raises(error, match=re.escape(message)):
        entropy_sampling(spy, data.X_pool, n_instances=n_instances)
    assert spy.calls == 0


def test_n_instances_never_shrinks_silently():
    with pytest.raises(ValueError, match="n_instances=4 is larger.*n_pool=3"):
        RandomSelector().select([1, 2, 3], 4)
    with pytest.raises(ValueError, match="n_instances=4"):
        check_n_instances(4, 3)
    assert check_n_instances(np.int32(3), 3) == 3


# -- the pool ---------------------------------------------------------------------------------
@cases
def test_empty_pool_before_any_work(case, data):
    spy = Spy(np.empty((0, 3)))
    kw = {**data.inputs(case), "classifier": spy if case.needs_proba else None}
    with pytest.raises(ValueError, match="X_pool is empty"):
        case.factory().select(np.empty((0, 4)), 1, **kw)
    assert spy.calls == 0


def test_empty_pool_score_samples(data):
    with pytest.raises(ValueError, match="X_pool is empty"):
        EntropySelector().score_samples(np.empty((0, 4)), classifier=data.classifier)


def test_pool_none_and_not_array_like():
    with pytest.raises(ValueError, match="X_pool is None"):
        RandomSelector().select(None, 1)
    with pytest.raises(TypeError, match="X_pool must be an array-like.*int"):
        RandomSelector().select(5, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "selector",
    [
        KCenterSelector(),
        FeatureDistanceSelector("kcenter"),
        FeatureDistanceSelector("nearest"),
        FeatureDistanceSelector("class_mean"),
        HybridSelector(),
    ],
    ids=repr,
)
def test_non_finite_pool_features(data, selector, bad):
    X_pool = data.X_pool.copy()
    X_pool[4, 2] = bad
    spy = Spy(data.classifier.predict_proba(data.X_pool))
    kw = {"classifier": spy, "X_labeled": data.X_labeled, "y_labeled": data.y_labeled}
    with pytest.raises(ValueError, match=r"X_pool.*NaN or infinite.*row 4, column 2"):
        selector.select(X_pool, 2, **kw)


def test_non_finite_features_for_an_uncertainty_strategy(data):
    """The estimator validates its own input; its error is not swallowed."""
    X_pool = data.X_pool.copy()
    X_pool[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        EntropySelector().select(X_pool, 2, classifier=data.classifier)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_labelled_features(data, bad):
    X_labeled = data.X_labeled.copy()
    X_labeled[1, 0] = bad
    with pytest.raises(ValueError, match=r"X_labeled.*NaN or infinite.*row 1"):
        FeatureDistanceSelector("nearest").select(
            data.X_pool, 2, X_labeled=X_labeled, y_labeled=data.y_labeled
        )
    with pytest.raises(ValueError, match=r"X_labeled.*NaN or infinite"):
        KCenterSelector().select(data.X_pool, 2, X_labeled=X_labeled, y_labeled=data.y_labeled)


@pytest.mark.parametrize(
    "selector",
    [KCenterSelector(), FeatureDistanceSelector("kcenter"), FeatureDistanceSelector("nearest")],
    ids=repr,
)
def test_one_d_features(selector):
    with pytest.raises(ValueError, match=r"2-D array.*shape \(10,\)"):
        selector.select(np.arange(10.0), 2, X_labeled=[[0.0]], y_labeled=[0])


def test_four_d_features_without_embeddings():
    with pytest.raises(ValueError, match=r"2-D.*shape \(5, 2, 2, 3\).*transform"):
        KCenterSelector().select(np.zeros((5, 2, 2, 3)), 2)


@pytest.mark.parametrize("pool", [np.array(["a.png", "b.png"]), np.array([{}, {}], dtype=object)])
def test_non_numeric_features(pool):
    with pytest.raises(TypeError, match="X_pool.*numeric.*transform"):
        KCenterSelector().select(pool, 1)


def test_complex_features():
    with pytest.raises(TypeError, match="real-valued"):
        KCenterSelector().select(np.ones((3, 2), dtype=complex), 1)


def test_labelled_features_of_another_width(data):
    with pytest.raises(ValueError, match="X_labeled.*3 features.*4"):
        FeatureDistanceSelector("nearest").select(
            data.X_pool, 2, X_labeled=data.X_labeled[:, :3], y_labeled=data.y_labeled
        )


def test_check_features_keeps_float32_and_does_not_copy():
    X = np.ones((3, 2), dtype=np.float32)
    assert check_features(X) is X
    assert check_features([[1, 2]]).dtype == np.float64


# -- probabilities ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "proba, message",
    [
        ([[2.0, -1.0], [0.5, 0.5]], "negative probabilities (first in row 0)"),
        ([[3.0, 1.0], [0.5, 0.5]], "rows must sum to 1 (tolerance 0.001); row 0 sums to 4"),
        ([[0.5, 0.5], [0.3, 0.3]], "row 1 sums to 0.6"),
        ([[0.5, 0.5], [np.nan, 0.5]], "NaN or infinite values (first in row 1)"),
        ([0.5, 0.5], "must be 2-D (n_samples, n_classes); got shape (2,)"),
        ([[0.5, 0.5]], "has 1 rows but X_pool has 2 samples"),
        (np.empty((2, 0)), "0 columns"),
    ],
)
@pytest.mark.parametrize(
    "selector", [EntropySelector(), MarginSelector(), LeastConfidentSelector(), HybridSelector()]
)
def test_bad_probabilities(selector, proba, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        selector.select(np.zeros((2, 3)), 1, classifier=Spy(proba))
    with pytest.raises(ValueError, match="predict_proba"):
        selector.select(np.zeros((2, 3)), 1, classifier=Spy(proba))


def test_probability_tolerance():
    ok = np.array([[0.5, 0.5 + 5e-4], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(check_proba(ok, 2).sum(axis=1), [1.0005, 1.0], rtol=1e-6)
    with pytest.raises(TypeError, match="numeric"):
        check_proba(np.array([["a", "b"]]), 1)
    with pytest.raises(ValueError, match="proba rows must sum to 1"):
        entropy_scores([[0.2, 0.2]])


# -- labelled data ----------------------------------------------------------------------------
@cases
def test_mismatched_labelled_lengths(case, data):
    with pytest.raises(ValueError, match="X_labeled has 9 samples but y_labeled has 8"):
        case.factory().select(
            data.X_pool,
            2,
            classifier=data.classifier,
            X_labeled=data.X_labeled,
            y_labeled=data.y_labeled[:8],
        )
    with pytest.raises(ValueError, match="X_labeled has 9 samples but y_labeled has 8"):
        case.factory().fit(data.X_labeled, data.y_labeled[:8])


@cases
def test_labelled_features_without_labels(case, data):
    with pytest.raises(ValueError, match="X_labeled was given without y_labeled"):
        case.factory().select(data.X_pool, 2, classifier=data.classifier, X_labeled=data.X_labeled)


@pytest.mark.parametrize("mode", ["class_mean", "nearest"])
def test_feature_distance_without_labels(data, mode):
    with pytest.raises(ValueError, match=rf"mode='{mode}'.*needs labelled data.*kcenter"):
        FeatureDistanceSelector(mode).select(data.X_pool, 2, classifier=data.classifier)


def test_feature_distance_scores_class_mean_needs_predictions(data):
    with pytest.raises(ValueError, match="y_labeled and y_pred"):
        feature_distance_scores(data.X_pool, data.X_labeled, data.y_labeled)
    with pytest.raises(ValueError, match="y_pred has 3"):
        feature_distance_scores(data.X_pool, data.X_labeled, data.y_labeled, [0, 1, 2])


def test_class_balanced_without_labels(data):
    with pytest.raises(ValueError, match="ClassBalancedSelector needs the labels.*no labels"):
        ClassBalancedSelector(EntropySelector()).select(data.X_pool, 2, classifier=data.classifier)


# -- parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "selector, name, value",
    [
        (FeatureDistanceSelector(mode="farthest"), "mode", "'farthest'"),
        (FeatureDistanceSelector(unknown="middle"), "unknown", "'middle'"),
        (FeatureDistanceSelector(backend="gpu"), "backend", "'gpu'"),
        (KCenterSelector(backend="cuda"), "backend", "'cuda'"),
        (HybridSelector(uncertainty="bald"), "uncertainty", "'bald'"),
        (HybridSelector(candidate_factor=0), "candidate_factor", "0"),
        (HybridSelector(candidate_factor=1.5), "candidate_factor", "1.5"),
        (ClassBalancedSelector(EntropySelector(), gamma=0.0), "gamma", "0.0"),
        (ClassBalancedSelector(EntropySelector(), gamma=1.5), "gamma", "1.5"),
        (ClassBalancedSelector("entropy"), "base", "'entropy'"),
        (EntropySelector(random_state=-1), "random_state", "-1"),
        (RandomSelector(random_state="seed"), "random_state", "'seed'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_parameter_names_parameter_and_value(data, selector, name, value):
    match = rf"'{name}' parameter of {type(selector).__name__}.*Got {re.escape(value)} instead"
    with pytest.raises(InvalidParameterError, match=match):
        selector.select(
            data.X_pool,
            2,
            classifier=data.classifier,
            X_labeled=data.X_labeled,
            y_labeled=data.y_labeled,
        )


def test_unknown_names_in_function_forms(data):
    with pytest.raises(InvalidParameterError, match="'mode' parameter.*'far'"):
        featdist_sampling(data.learner, data.X_pool, 2, mode="far")
    with pytest.raises(InvalidParameterError, match="'uncertainty' parameter.*'bald'"):
        hybrid_sampling(data.learner, data.X_pool, 2, uncertainty="bald")
    with pytest.raises(
        InvalidParameterError, match="'mode' parameter of feature_distance_scores.*'far'"
    ):
        feature_distance_scores(data.X_pool, data.X_labeled, mode="far")


def test_unknown_backend_in_kernel():
    from peal_sk.utils import nearest_distances

    with pytest.raises(InvalidParameterError, match="'backend' parameter of nearest_distances"):
        nearest_distances(np.zeros((2, 2)), np.zeros((1, 2)), backend="gpu")


def test_random_state_values():
    with pytest.raises(ValueError, match="random_state=-3"):
        check_rng(-3)
    with pytest.raises(TypeError, match="random_state must be None, an int"):
        check_rng("0")
    with pytest.raises(TypeError, match="random_state"):
        check_rng(True)


# -- the model --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "estimator",
    [LinearSVC(), SVC(), KMeans(n_clusters=3, n_init=1)],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize(
    "selector",
    [
        EntropySelector(),
        MarginSelector(),
        LeastConfidentSelector(),
        HybridSelector(),
        FeatureDistanceSelector("class_mean"),
        ClassBalancedSelector(EntropySelector()),
    ],
    ids=repr,
)
def test_estimator_without_predict_proba(data, estimator, selector):
    estimator.fit(data.X_labeled, data.y_labeled)
    name = type(estimator).__name__
    with pytest.raises(TypeError, match=rf"needs an estimator with predict_proba; {name} has none"):
        selector.select(
            data.X_pool,
            2,
            classifier=estimator,
            X_labeled=data.X_labeled,
            y_labeled=data.y_labeled,
        )


def test_learner_without_predict_proba_estimator(data):
    learner = type(data.learner)(LinearSVC().fit(data.X_labeled, data.y_labeled), None, None)
    with pytest.raises(TypeError, match="LinearSVC has none"):
        EntropySelector().select(data.X_pool, 2, classifier=learner)


def test_uncertainty_without_classifier(data):
    with pytest.raises(ValueError, match="EntropySelector needs a fitted classifier.*None"):
        EntropySelector().select(data.X_pool, 2)
    with pytest.raises(ValueError, match="classifier=None"):
        entropy_sampling(None, data.X_pool, 2)


@cases
def test_fit_labelled_features_without_labels(case, data):
    with pytest.raises(ValueError, match="X_labeled was given without y_labeled"):
        case.factory().fit(data.X_labeled)


def test_huge_float32_features_do_not_degenerate():
    """Issue 16: ~1e19 float32 features overflowed squared distances (picks 0..7)."""
    from peal_sk.selection import ActiveFTSelector, KCenterSelector

    X = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    big = (X * 1e20).astype("f4")
    for make in (
        lambda: ActiveFTSelector(random_state=0, max_iter=50),
        lambda: KCenterSelector(random_state=0),
    ):
        picks = make().select(big, 8)
        assert not np.array_equal(picks, np.arange(8))
        np.testing.assert_array_equal(picks, make().select(X, 8))
    checked = check_features(big)
    assert checked.dtype == np.float64 and np.isfinite(checked).all()
    assert check_features(X).dtype == np.float32  # ordinary float32 stays float32
    with pytest.raises(ValueError, match="overflow even in float64.*Rescale"):
        check_features(X.astype(np.float64) * 1e160)


def test_sparse_features_are_refused_clearly():
    import scipy.sparse as sp

    X = sp.random(20, 5, density=0.3, format="csr", random_state=0)
    with pytest.raises(TypeError, match="sparse matrices are not supported: densify or reduce"):
        check_features(X)
    from peal_sk.selection import KCenterSelector

    with pytest.raises(TypeError, match="sparse matrices are not supported"):
        KCenterSelector(random_state=0).select(X, 3)
