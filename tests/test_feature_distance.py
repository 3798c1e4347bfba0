"""Feature-distance sampling (class_mean, nearest, kcenter) and the k-centre greedy."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from peal_sk.base import get_embeddings
from peal_sk.selection import (
    FeatureDistanceSelector,
    KCenterSelector,
    featdist_sampling,
    feature_distance_scores,
    kcenter_sampling,
)
from peal_sk.utils import kcenter_greedy, nearest_distances


class FixedProba:
    """A 'fitted classifier' that returns a given probability matrix (no transform)."""

    def __init__(self, proba, classes):
        self.proba = np.asarray(proba, dtype=float)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba.copy()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _one_hot_proba(pred, n_classes):
    proba = np.full((len(pred), n_classes), 0.1 / (n_classes - 1))
    proba[np.arange(len(pred)), pred] = 0.9
    return proba


# class_mean hand case: mu_0 = (1, 0) from two labelled samples, mu_1 = (0, 4); the
# estimator also knows class 2, which has no labelled sample (unknown class).
X_LAB = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
Y_LAB = np.array([0, 0, 1])
POOL = np.array([[1.0, 0.0], [4.0, 4.0], [0.0, 1.0], [9.0, 9.0], [0.0, 5.0], [1.0, 2.0]])
PRED = np.array([0, 0, 1, 2, 1, 2])
#          dist to mu_pred: 0     5     3    unk    1    unk
KNOWN_ORDER = [1, 2, 4, 0]
CLASS_MEAN = np.array([0.0, 5.0, 3.0, np.nan, 1.0, np.nan])


def _class_mean_clf(classes=(0, 1, 2)):
    return FixedProba(_one_hot_proba(PRED, 3), classes)


def test_feature_distance_scores_class_mean_hand_computed():
    scores = feature_distance_scores(POOL, X_LAB, Y_LAB, PRED, mode="class_mean")
    np.testing.assert_allclose(scores, CLASS_MEAN, atol=1e-12)


def test_feature_distance_scores_nearest_hand_computed():
    scores = feature_distance_scores(POOL, X_LAB, mode="nearest")
    expected = [1.0, 4.0, 1.0, np.hypot(9, 5), 1.0, np.sqrt(5.0)]
    np.testing.assert_allclose(scores, expected, atol=1e-12)


def test_class_mean_unknown_last():
    sel = FeatureDistanceSelector("class_mean", unknown="last", random_state=0)
    kw = {"classifier": _class_mean_clf(), "X_labeled": X_LAB, "y_labeled": Y_LAB}
    idx, scores = sel(kw.pop("classifier"), POOL, 6, **kw)
    assert idx[:4].tolist() == KNOWN_ORDER
    assert set(idx[4:].tolist()) == {3, 5}
    np.testing.assert_allclose(scores[:4], [5.0, 3.0, 1.0, 0.0], atol=1e-12)
    assert np.all(scores[4:] == -np.inf)
    expected = np.where(np.isnan(CLASS_MEAN), -np.inf, CLASS_MEAN)
    np.testing.assert_allclose(
        sel.score_samples(POOL, classifier=_class_mean_clf(), X_labeled=X_LAB, y_labeled=Y_LAB),
        expected,
        atol=1e-12,
    )


def test_class_mean_unknown_first():
    firsts = set()
    for seed in range(30):
        sel = FeatureDistanceSelector("class_mean", unknown="first", random_state=seed)
        idx = sel.select(POOL, 6, classifier=_class_mean_clf(), X_labeled=X_LAB, y_labeled=Y_LAB)
        assert set(idx[:2].tolist()) == {3, 5}
        assert idx[2:].tolist() == KNOWN_ORDER
        firsts.add(int(idx[0]))
    assert firsts == {3, 5}  # the tie between the unknown-class samples follows the seed


def test_class_mean_unknown_exclude():
    sel = FeatureDistanceSelector("class_mean", unknown="exclude", random_state=0)
    kw = {"classifier": _class_mean_clf(), "X_labeled": X_LAB, "y_labeled": Y_LAB}
    assert sel.select(POOL, 4, **kw).tolist() == KNOWN_ORDER
    with pytest.raises(ValueError, match=r"n_instances=5.*only 4.*unknown='exclude'"):
        sel.select(POOL, 5, **kw)


def test_class_mean_uses_true_labels_of_labelled_set():
    """mu_c averages the labelled samples whose TRUE label is c, not their predictions."""
    # a model that predicts everything as class 1: the labelled class-0 samples must still
    # define mu_0, which only matters for pool samples predicted 0
    clf = FixedProba(_one_hot_proba(np.array([0, 1]), 2), [0, 1])
    pool = np.array([[1.0, 3.0], [0.0, 4.0]])
    scores = FeatureDistanceSelector().score_samples(
        pool, classifier=clf, X_labeled=X_LAB, y_labeled=Y_LAB
    )
    np.testing.assert_allclose(scores, [3.0, 0.0], atol=1e-12)


def test_class_mean_string_labels():
    classes = np.array(["cat", "dog", "eel"])
    clf = FixedProba(_one_hot_proba(PRED, 3), classes)
    sel = FeatureDistanceSelector(random_state=0)
    idx = sel.select(POOL, 4, classifier=clf, X_labeled=X_LAB, y_labeled=classes[Y_LAB])
    assert idx.tolist() == KNOWN_ORDER


def test_nearest_hand_case_and_ties():
    X_lab = np.array([[0.0, 0.0], [10.0, 0.0]])
    pool = np.array([[1.0, 0.0], [5.0, 0.0], [7.0, 0.0], [10.0, 3.0]])
    seconds = set()
    for seed in range(40):
        idx, d = featdist_sampling(
            None, pool, 3, mode="nearest", X_labeled=X_lab, y_labeled=[0, 1], random_state=seed
        )
        assert idx[0] == 1
        assert set(idx[1:].tolist()) == {2, 3}  # both at distance 3: a seeded tie
        np.testing.assert_allclose(d, [5.0, 3.0, 3.0])
        seconds.add(int(idx[1]))
    assert seconds == {2, 3}


def test_nearest_distances_hand_case():
    dist, index = nearest_distances(
        np.array([[0.0, 3.0], [10.0, 1.0]]), np.array([[0.0, 0.0], [10.0, 0.0]]), backend="numpy"
    )
    np.testing.assert_allclose(dist, [3.0, 1.0])
    assert index.tolist() == [0, 1]


def test_feature_distance_scores_rejects_kcenter():
    match = "'mode' parameter of feature_distance_scores.*Got 'kcenter'"
    with pytest.raises(ValueError, match=match):
        feature_distance_scores(POOL, X_LAB, mode="kcenter")


def test_kcenter_has_no_per_sample_score():
    with pytest.raises(NotImplementedError, match="kcenter"):
        FeatureDistanceSelector("kcenter").score_samples(POOL)


# -- k-centre greedy against a brute-force reference ----------------------------------------
def reference_kcenter(X, k, X_labeled=None, first=None):
    """Plain O(n * k) greedy k-centre; ``first`` is the first pick when nothing is labelled."""
    if X_labeled is not None and len(X_labeled):
        mind = np.linalg.norm(X[:, None, :] - X_labeled[None, :, :], axis=2).min(axis=1)
        picks, dists = [], []
    else:
        picks, dists = [first], [np.inf]
        mind = np.linalg.norm(X - X[first], axis=1)
    while len(picks) < k:
        masked = mind.copy()
        masked[picks] = -1.0
        p = int(np.argmax(masked))
        picks.append(p)
        dists.append(mind[p])
        mind = np.minimum(mind, np.linalg.norm(X - X[p], axis=1))
    return np.array(picks), np.array(dists)


def _random_pool(rng, kind, n, d):
    if kind == "normal":
        return rng.normal(size=(n, d))
    if kind == "clustered":  # tight clusters far apart: the pruning skips most samples
        centers = rng.normal(scale=20.0, size=(5, d))
        return centers[rng.integers(0, 5, n)] + rng.normal(scale=0.1, size=(n, d))
    if kind == "offset":
        return rng.uniform(size=(n, d)) + 50.0
    return rng.exponential(size=(n, d)) ** 3  # heavy-tailed


@pytest.mark.parametrize("kind", ["normal", "clustered", "offset", "heavy"])
@pytest.mark.parametrize("labelled", [False, True])
def test_kcenter_matches_brute_force(kind, labelled):
    rng = np.random.default_rng(["normal", "clustered", "offset", "heavy"].index(kind))
    for _ in range(25):
        n, d = int(rng.integers(2, 70)), int(rng.integers(1, 6))
        k = int(rng.integers(1, n + 1))
        X = _random_pool(rng, kind, n, d)
        X_lab = _random_pool(rng, kind, int(rng.integers(1, 6)), d) if labelled else None
        seed = int(rng.integers(1000))
        idx, dist = kcenter_greedy(X, k, np.random.default_rng(seed), X_labeled=X_lab)
        ref_idx, ref_dist = reference_kcenter(X, k, X_lab, first=int(idx[0]))
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-9, atol=1e-9)


def test_kcenter_selector_matches_brute_force(data):
    for selector in (
        KCenterSelector(random_state=0),
        FeatureDistanceSelector("kcenter", random_state=0),
    ):
        idx, scores = selector(
            None, data.X_pool, 12, X_labeled=data.X_labeled, y_labeled=data.y_labeled
        )
        ref_idx, ref_dist = reference_kcenter(data.X_pool, 12, data.X_labeled)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(scores, ref_dist, rtol=1e-9)
        assert np.all(np.diff(scores) <= 1e-12)  # greedy distances never grow


def test_kcenter_cold_start_first_pick_is_seeded():
    X = np.random.default_rng(0).normal(size=(8, 2))
    firsts = {int(KCenterSelector(random_state=s).select(X, 1)[0]) for s in range(100)}
    assert firsts == set(range(8))
    idx, scores = kcenter_sampling(None, X, 3, random_state=4)
    assert scores[0] == np.inf
    np.testing.assert_array_equal(idx, reference_kcenter(X, 3, first=int(idx[0]))[0])


def test_kcenter_hand_case():
    X = np.array([[0.0], [1.0], [10.0], [4.0]])
    idx, d = kcenter_sampling(None, X, 3, X_labeled=[[0.0]], y_labeled=[0])
    assert idx.tolist() == [2, 3, 1]
    np.testing.assert_allclose(d, [10.0, 4.0, 1.0])


# -- faiss and numpy backends ------------------------------------------------------------------
def _separated_float32(rng, n, d):
    """Pool whose distances to the labelled origin are 1, 1.5, 2, ... in random directions."""
    u = rng.normal(size=(n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radii = 1.0 + 0.5 * rng.permutation(n)
    return (u * radii[:, None]).astype(np.float32)


def test_nearest_faiss_equals_numpy():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    X = _separated_float32(rng, 60, 8)
    X_lab = np.zeros((1, 8), dtype=np.float32)
    results = {}
    for backend in ("faiss", "numpy", "auto"):
        sel = FeatureDistanceSelector("nearest", backend=backend, random_state=0)
        results[backend] = sel(None, X, 20, X_labeled=X_lab, y_labeled=[0])
    for backend in ("numpy", "auto"):
        np.testing.assert_array_equal(results[backend][0], results["faiss"][0])
        np.testing.assert_allclose(results[backend][1], results["faiss"][1], rtol=1e-5)
    np.testing.assert_array_equal(results["faiss"][0], np.argsort(-np.linalg.norm(X, axis=1))[:20])


@pytest.mark.parametrize("seed", range(3))
def test_kcenter_faiss_equals_numpy(seed):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(80, 6)) * 5).astype(np.float32)
    X_lab = (rng.normal(size=(4, 6)) * 5).astype(np.float32)
    picks = [
        KCenterSelector(backend=b, random_state=0).select(X, 15, X_labeled=X_lab, y_labeled=[0] * 4)
        for b in ("faiss", "numpy")
    ]
    np.testing.assert_array_equal(picks[0], picks[1])
    ref = reference_kcenter(X.astype(np.float64), 15, X_lab.astype(np.float64))[0]
    np.testing.assert_array_equal(picks[0], ref)


def test_nearest_distances_faiss_returns_euclidean_not_squared():
    pytest.importorskip("faiss")
    Q = np.array([[3.0, 4.0]], dtype=np.float32)
    R = np.zeros((1, 2), dtype=np.float32)
    dist, index = nearest_distances(Q, R, backend="faiss")
    np.testing.assert_allclose(dist, [5.0], rtol=1e-6)
    assert index.tolist() == [0]


# -- where the embeddings come from ------------------------------------------------------------
class ProjectingClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose ``transform`` returns embeddings unlike its input."""

    def fit(self, X, y):
        self.lr_ = LogisticRegression().fit(X, y)
        self.classes_ = self.lr_.classes_
        return self

    def predict_proba(self, X):
        return self.lr_.predict_proba(X)

    def predict(self, X):
        return self.lr_.predict(X)

    def transform(self, X):
        X = np.asarray(X)
        return np.column_stack([10.0 * X[:, 0], X[:, 1] ** 2])


def test_embeddings_from_classifier_transform(data):
    clf = ProjectingClassifier().fit(data.X_labeled, data.y_labeled)
    kw = {"X_labeled": data.X_labeled, "y_labeled": data.y_labeled}
    scores = FeatureDistanceSelector("nearest").score_samples(data.X_pool, classifier=clf, **kw)
    expected = feature_distance_scores(
        clf.transform(data.X_pool), clf.transform(data.X_labeled), mode="nearest"
    )
    np.testing.assert_allclose(scores, expected)
    raw = feature_distance_scores(data.X_pool, data.X_labeled, mode="nearest")
    assert not np.allclose(scores, raw)
    # also through a learner, and for kcenter
    learner_scores = FeatureDistanceSelector("nearest").score_samples(
        data.X_pool, classifier=type(data.learner)(clf, data.X_labeled, data.y_labeled)
    )
    np.testing.assert_allclose(learner_scores, expected)
    idx = KCenterSelector(random_state=0).select(data.X_pool, 5, classifier=clf, **kw)
    ref = reference_kcenter(clf.transform(data.X_pool), 5, clf.transform(data.X_labeled))[0]
    np.testing.assert_array_equal(idx, ref)


def test_embeddings_from_pipeline_steps_before_final_estimator(data):
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(data.X_labeled, data.y_labeled)
    assert not hasattr(pipe, "transform")
    scaler = pipe[0]
    np.testing.assert_allclose(get_embeddings(pipe, data.X_pool), scaler.transform(data.X_pool))
    kw = {"X_labeled": data.X_labeled, "y_labeled": data.y_labeled}
    for mode in ("class_mean", "nearest"):
        scores = FeatureDistanceSelector(mode).score_samples(data.X_pool, classifier=pipe, **kw)
        expected = feature_distance_scores(
            scaler.transform(data.X_pool),
            scaler.transform(data.X_labeled),
            data.y_labeled,
            pipe.predict(data.X_pool),
            mode=mode,
        )
        np.testing.assert_allclose(scores, expected)


def test_embeddings_from_pipeline_with_transforming_final_step(data):
    pipe = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(n_components=2))
    pipe.fit(data.X_labeled, data.y_labeled)
    emb = get_embeddings(pipe, data.X_pool)
    assert emb.shape == (len(data.X_pool), 2)
    np.testing.assert_allclose(emb, pipe.transform(data.X_pool))


def test_embeddings_default_to_features(data):
    np.testing.assert_array_equal(get_embeddings(data.classifier, data.X_pool), data.X_pool)
    np.testing.assert_array_equal(get_embeddings(None, data.X_pool), data.X_pool)


def test_unfitted_model_error_propagates(data):
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    with pytest.raises(NotFittedError, match=r"not fitted.*pipe\[:-1\]\.fit\(X_pool\)"):
        KCenterSelector(random_state=0).select(data.X_pool, 2, classifier=pipe)


def test_float32_embeddings_stay_float32(data):
    X32 = data.X_pool.astype(np.float32)
    idx = FeatureDistanceSelector("nearest", backend="numpy", random_state=0).select(
        X32, 5, X_labeled=data.X_labeled.astype(np.float32), y_labeled=data.y_labeled
    )
    ref = np.argsort(-feature_distance_scores(data.X_pool, data.X_labeled, mode="nearest"))
    np.testing.assert_array_equal(idx, ref[:5])
