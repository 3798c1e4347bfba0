"""DropQuery: parity with a reference written from the spec; errors of both model-based
strategies (DropQuery and BADGE) when the model does not fit."""

import numpy as np
import pytest
from _cases import LearnerLike
from _linear_models import HeadModel, blobs, fitted_logreg, head_model
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from peal_sk import ActiveLearner
from peal_sk.selection import (
    BadgeSelector,
    DropQuerySelector,
    dropquery_sampling,
    dropquery_scores,
)
from peal_sk.selection._dropquery import _keep_mask
from peal_sk.utils._faiss import faiss_kmeans


def reference_mismatch(Z, W, b, rng, n_passes=3, p=0.75, rescale=True):
    """Steps 1-3 of DropQuery (docs/user_guide/algorithms.rst; masks drawn as the code does)."""
    Z = np.asarray(Z, dtype=np.float64)
    clean = np.argmax(Z @ W.T + b, axis=1)
    mismatch = np.zeros(len(Z), dtype=int)
    if p == 0:
        return mismatch
    for _ in range(n_passes):
        mask, keep = _keep_mask(rng, Z.shape, 1 - p)
        scale = 1 / keep if rescale else 1.0
        mismatch += np.argmax((Z * mask * scale) @ W.T + b, axis=1) != clean
    return mismatch


def reference_dropquery(Z, W, b, n_instances, seed, *, n_passes=3, p=0.75, rescale=True, cf=25):
    rng = np.random.default_rng(seed)
    mismatch = reference_mismatch(Z, W, b, rng, n_passes, p, rescale)
    km_seed = int(rng.integers(np.iinfo(np.int32).max))
    t = n_passes // 2
    while t > 0 and (mismatch > t).sum() < cf * n_instances:
        t -= 1
    cand = np.flatnonzero(mismatch > t)
    if len(cand) <= n_instances:
        first = sorted(cand, key=lambda i: -mismatch[i])
        others = [i for i in range(len(Z)) if i not in set(cand)]
        fill = rng.choice(others, n_instances - len(cand), replace=False)
        return np.concatenate([first, fill]).astype(int), mismatch, t
    F = np.asarray(Z, dtype=np.float32)[cand]  # faiss works in float32
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    centres = faiss_kmeans(F, n_instances, km_seed, n_iter=20, assign=False).centres
    picks = []
    for c in centres.astype(np.float64):
        d = ((F.astype(np.float64) - c) ** 2).sum(axis=1)
        d[picks] = np.inf
        # exact float64 distances; exact ties go to the lowest index
        picks.append(int(np.flatnonzero(d == d.min())[0]))
    picks = cand[picks]
    return np.array(sorted(picks, key=lambda i: -mismatch[i])), mismatch, t


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_instances", [1, 4, 30])
def test_parity_with_reference(seed, n_instances):
    X_pool, clf, _, _ = fitted_logreg(seed=seed)
    sel = DropQuerySelector(random_state=seed, candidate_factor=2)
    idx = sel.select(X_pool, n_instances, classifier=clf)
    ref, mismatch, t = reference_dropquery(
        X_pool, clf.coef_, clf.intercept_, n_instances, seed, cf=2
    )
    np.testing.assert_array_equal(sel.mismatch_, mismatch)
    assert sel.threshold_ == t
    assert sel.n_candidates_ == (mismatch > t).sum()
    np.testing.assert_array_equal(idx, ref)


@pytest.mark.parametrize("p, rescale", [(0.0, True), (0.3, False), (0.5, True), (0.9, True)])
def test_dropout_parameters_parity(p, rescale):
    X_pool, clf, _, _ = fitted_logreg(seed=1)
    sel = DropQuerySelector(p=p, rescale=rescale, n_passes=5, random_state=0)
    idx = sel.select(X_pool, 6, classifier=clf)
    ref, mismatch, _ = reference_dropquery(
        X_pool, clf.coef_, clf.intercept_, 6, 0, n_passes=5, p=p, rescale=rescale
    )
    np.testing.assert_array_equal(sel.mismatch_, mismatch)
    np.testing.assert_array_equal(idx, ref)


def test_no_dropout_means_no_candidates_and_a_random_fill():
    X_pool, clf, _, _ = fitted_logreg()
    sel = DropQuerySelector(p=0.0, random_state=0)
    idx, scores = sel(clf, X_pool, 7)
    assert sel.n_candidates_ == 0 and sel.threshold_ == 0
    np.testing.assert_array_equal(scores, 0)
    assert np.unique(idx).size == 7


def test_threshold_is_lowered_until_enough_candidates():
    X_pool, clf, _, _ = fitted_logreg(seed=2)
    few = DropQuerySelector(random_state=0, candidate_factor=1, n_passes=5)
    few.select(X_pool, 2, classifier=clf)
    assert few.threshold_ == 2  # enough majority flips for 1 x 2 candidates
    many = DropQuerySelector(random_state=0, candidate_factor=1000, n_passes=5)
    many.select(X_pool, 2, classifier=clf)
    assert many.threshold_ == 0
    assert many.n_candidates_ == np.count_nonzero(many.mismatch_ > 0)


def test_scores_are_mismatch_fractions():
    X_pool, clf, _, _ = fitted_logreg(seed=3)
    sel = DropQuerySelector(random_state=5)
    idx, scores = sel(clf, X_pool, 8)
    np.testing.assert_array_equal(scores, sel.mismatch_[idx] / 3)
    assert np.all(np.diff(scores) <= 0)  # more disagreement first
    np.testing.assert_array_equal(
        DropQuerySelector(random_state=5).score_samples(X_pool, classifier=clf),
        sel.mismatch_ / 3,
    )
    np.testing.assert_array_equal(
        dropquery_scores(X_pool, clf.coef_, clf.intercept_, random_state=5), sel.mismatch_ / 3
    )


def test_binary_logistic_regression_is_the_sigmoid_decision():
    X, y = blobs(n=120, n_classes=2, seed=4, std=6.0)
    clf = LogisticRegression().fit(X[:10], y[:10])
    X_pool = X[10:]
    sel = DropQuerySelector(random_state=0)
    idx = sel.select(X_pool, 5, classifier=clf)
    assert np.unique(idx).size == 5
    rng = np.random.default_rng(0)
    w, b = clf.coef_[0], clf.intercept_[0]
    clean = X_pool @ w + b > 0
    mismatch = np.zeros(len(X_pool), dtype=int)
    for _ in range(3):
        mask, keep = _keep_mask(rng, X_pool.shape, 0.25)
        mismatch += ((X_pool * mask / keep) @ w + b > 0) != clean
    np.testing.assert_array_equal(sel.mismatch_, mismatch)


def test_pipeline_embeddings_are_the_scaled_features():
    X_pool, _, X_lab, y_lab = fitted_logreg(seed=5)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_lab * 7 - 2, y_lab)
    pool = X_pool * 7 - 2
    sel = DropQuerySelector(random_state=1, candidate_factor=3)
    idx = sel.select(pool, 5, classifier=pipe)
    Z = pipe[:-1].transform(pool)
    final = pipe[-1]
    ref, mismatch, _ = reference_dropquery(Z, final.coef_, final.intercept_, 5, 1, cf=3)
    np.testing.assert_array_equal(sel.mismatch_, mismatch)
    np.testing.assert_array_equal(idx, ref)


def test_head_model_like_peal_classifier():
    model = head_model(seed=1)
    X = np.random.default_rng(1).normal(size=(80, 6))
    sel = DropQuerySelector(random_state=2, candidate_factor=2)
    idx = sel.select(X, 6, classifier=model)
    ref, mismatch, _ = reference_dropquery(
        model.transform(X), model.coef_, model.intercept_, 6, 2, cf=2
    )
    np.testing.assert_array_equal(sel.mismatch_, mismatch)
    np.testing.assert_array_equal(idx, ref)


def test_duplicates_never_repeat_an_index():
    X_pool, clf, _, _ = fitted_logreg(seed=6)
    pool = np.repeat(X_pool[:5], 8, axis=0)  # 5 distinct rows, 8 copies each
    for n in (3, 5, 12, 40):
        idx = DropQuerySelector(random_state=0, candidate_factor=1).select(pool, n, classifier=clf)
        assert np.unique(idx).size == n


def test_deterministic_and_seed_dependent():
    X_pool, clf, _, _ = fitted_logreg(seed=7)
    a = dropquery_sampling(clf, X_pool, 6, random_state=3)[0]
    b = dropquery_sampling(clf, X_pool, 6, random_state=3)[0]
    np.testing.assert_array_equal(a, b)
    masks = [DropQuerySelector(random_state=s) for s in (3, 4)]
    for m in masks:
        m.select(X_pool, 6, classifier=clf)
    assert not np.array_equal(masks[0].mismatch_, masks[1].mismatch_)


def test_with_active_learner_and_modal_style_learner():
    X, y = blobs(n=200, n_classes=3, seed=8)
    learner = ActiveLearner(
        LogisticRegression(),
        DropQuerySelector(),
        X_training=X[:9],
        y_training=y[:9],
        random_state=0,
    )
    idx, X_query = learner.query(X[9:], n_instances=4)
    assert np.unique(idx).size == 4
    learner.teach(X_query, y[9:][idx])
    modal_like = LearnerLike(learner.estimator, learner.X_training, learner.y_training)
    a = DropQuerySelector(random_state=3).select(X, 6, classifier=modal_like)
    b = DropQuerySelector(random_state=3).select(X, 6, classifier=learner.estimator)
    np.testing.assert_array_equal(a, b)


def test_keep_mask_rate():
    rng = np.random.default_rng(0)
    mask, keep = _keep_mask(rng, (200, 500), 0.25)
    assert keep == 0.25 and abs(mask.mean() - 0.25) < 0.01
    mask, keep = _keep_mask(rng, (200, 500), 0.3)
    assert abs(keep - 0.3) < 1e-4 and abs(mask.mean() - 0.3) < 0.01


# -- bad input, for both model-based strategies ------------------------------------------
SELECTORS = [DropQuerySelector, BadgeSelector]


class NoHead(HeadModel):
    """A model with predict_proba and embeddings but no linear final layer."""

    def __init__(self, model):
        self.model = model

    def transform(self, X):
        return self.model.transform(X)

    def predict_proba(self, X):
        return self.model.predict_proba(X)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_no_classifier(Selector):
    X_pool, _, X_lab, y_lab = fitted_logreg()
    with pytest.raises(ValueError, match="classifier=None"):
        Selector().select(X_pool, 2, X_labeled=X_lab, y_labeled=y_lab)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_no_predict_proba(Selector):
    X_pool, _, X_lab, y_lab = fitted_logreg()
    svc = LinearSVC().fit(X_lab, y_lab)  # has coef_, has no predict_proba
    with pytest.raises(TypeError, match="predict_proba"):
        Selector().select(X_pool, 2, classifier=svc)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_no_final_linear_layer(Selector):
    X_pool, _, X_lab, y_lab = fitted_logreg()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X_lab, y_lab)
    with pytest.raises(TypeError, match=r"final linear layer.*coef_.*intercept_"):
        Selector().select(X_pool, 2, classifier=forest)
    with pytest.raises(TypeError, match="coef_"):
        Selector().select(X_pool, 2, classifier=NoHead(head_model()))
    pipe = make_pipeline(StandardScaler(), forest)
    pipe[0].fit(X_lab)
    with pytest.raises(TypeError, match="RandomForestClassifier.*coef_"):
        Selector().select(X_pool, 2, classifier=pipe)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_unfitted_model(Selector):
    X_pool, _, _, _ = fitted_logreg()
    with pytest.raises(NotFittedError, match="fitted"):
        Selector().select(X_pool, 2, classifier=LogisticRegression())


@pytest.mark.parametrize("Selector", SELECTORS)
def test_embeddings_of_the_wrong_width(Selector):
    model = head_model(d_emb=5)
    model.coef_ = model.coef_[:, :4]
    X = np.random.default_rng(0).normal(size=(20, 6))
    with pytest.raises(ValueError, match="5 columns but the final layer expects 4"):
        Selector().select(X, 2, classifier=model)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_more_instances_than_the_pool(Selector):
    X_pool, clf, _, _ = fitted_logreg()
    with pytest.raises(ValueError, match=rf"n_instances={len(X_pool) + 1}.*n_pool={len(X_pool)}"):
        Selector().select(X_pool, len(X_pool) + 1, classifier=clf)


@pytest.mark.parametrize("Selector", SELECTORS)
def test_rows_of_coef_must_match_the_classes(Selector):
    model = head_model(n_classes=3)
    model.classes_ = np.arange(4)
    X = np.random.default_rng(0).normal(size=(20, 6))
    with pytest.raises(TypeError, match="3 rows of coef_ but 4 classes"):
        Selector().select(X, 2, classifier=model)
