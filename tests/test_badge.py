"""BADGE: parity with a reference that materialises the gradient embeddings."""

import numpy as np
import pytest
from _cases import LearnerLike
from _linear_models import blobs, fitted_logreg, head_model
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from peal_sk import ActiveLearner
from peal_sk.selection import BadgeSelector, badge_embedding_norms, badge_sampling
from peal_sk.selection._badge import _MAX_REJECT, _REFRESH


def gradient_factor(proba):
    """a = onehot(argmax p) - p."""
    a = -np.array(proba, dtype=np.float64)
    a[np.arange(len(a)), a.argmin(axis=1)] += 1.0
    return a


def reference_badge(Z, proba, n_instances, rng, first="largest", a=None):
    """BADGE as written in docs/user_guide/algorithms.rst, "BADGE", with g built explicitly.

    The D^2 draws follow the implementation's lazy scheme (rejection from distances
    refreshed every _REFRESH picks), which samples the same distribution as plain
    k-means++ and consumes the random stream the same way.
    """
    Z = np.asarray(Z, dtype=np.float64)
    n = len(Z)
    a = gradient_factor(proba) if a is None else a
    G = (a[:, :, None] * Z[:, None, :]).reshape(n, -1)  # g = a outer z
    sq = (G**2).sum(axis=1)

    def dist2(rows, centres):
        d2 = ((G[rows][:, None, :] - G[centres][None, :, :]) ** 2).sum(axis=2)
        d2[d2 <= 1e-12 * (sq[rows][:, None] + sq[centres][None, :])] = 0.0
        return d2.min(axis=1)

    c = int(np.argmax(sq)) if first == "largest" else int(rng.integers(n))
    picks, recent, D2, cum, rejected = [c], [c], np.full(n, np.inf), None, 0
    while len(picks) < n_instances:
        if cum is None or len(recent) >= _REFRESH or rejected >= _MAX_REJECT:
            if recent:
                D2 = np.minimum(D2, dist2(np.arange(n), recent))
                recent = []
            D2[picks] = 0.0
            cum, rejected = np.cumsum(D2), 0
            if cum[-1] == 0:
                rest = np.setdiff1d(np.arange(n), picks)
                picks += rng.choice(rest, n_instances - len(picks), replace=False).tolist()
                break
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        now = D2[i] if not recent else min(D2[i], dist2([i], recent)[0])
        if i in picks or rng.random() * D2[i] >= now:
            rejected += 1
            continue
        picks.append(i)
        recent.append(i)
        rejected = 0
    return np.array(picks)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("first", ["largest", "random"])
def test_parity_with_explicit_gradients(seed, first):
    X_pool, clf, _, _ = fitted_logreg(seed=seed)
    idx = BadgeSelector(first=first, random_state=seed).select(X_pool, 12, classifier=clf)
    ref = reference_badge(X_pool, clf.predict_proba(X_pool), 12, np.random.default_rng(seed), first)
    np.testing.assert_array_equal(idx, ref)


def test_binary_logistic_regression_equals_sigmoid_form():
    """One coef_ row: the two-class softmax [0, w] gives the same picks as the sigmoid
    gradient (a_1 outer z), whose distances are those of the softmax form divided by 2."""
    X, y = blobs(n=100, n_classes=2, seed=3)
    clf = LogisticRegression().fit(X[:10], y[:10])
    X_pool = X[10:]
    idx, scores = BadgeSelector(random_state=0)(clf, X_pool, 15)
    p1 = 1 / (1 + np.exp(-clf.decision_function(X_pool)))
    a1 = (p1 > 0.5) - p1  # d loss / d logit of the sigmoid at the predicted label
    ref = reference_badge(X_pool, None, 15, np.random.default_rng(0), a=a1[:, None])
    np.testing.assert_array_equal(idx, ref)
    norm = np.abs(a1[idx[0]]) * np.linalg.norm(X_pool[idx[0]])
    assert scores[0] == pytest.approx(np.sqrt(2) * norm)


def test_pipeline_uses_the_steps_before_the_final_estimator():
    X_pool, _, X_lab, y_lab = fitted_logreg(seed=1)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_lab * 10 + 3, y_lab)
    pool = X_pool * 10 + 3
    idx = BadgeSelector(random_state=2).select(pool, 10, classifier=pipe)
    Z = pipe[:-1].transform(pool)
    ref = reference_badge(Z, pipe.predict_proba(pool), 10, np.random.default_rng(2))
    np.testing.assert_array_equal(idx, ref)


def test_head_model_like_peal_classifier():
    model = head_model(seed=4)
    X = np.random.default_rng(4).normal(size=(60, 6))
    idx = BadgeSelector(random_state=1).select(X, 9, classifier=model)
    ref = reference_badge(model.transform(X), model.predict_proba(X), 9, np.random.default_rng(1))
    np.testing.assert_array_equal(idx, ref)


def test_score_samples_are_gradient_norms():
    X_pool, clf, _, _ = fitted_logreg()
    scores = BadgeSelector().score_samples(X_pool, classifier=clf)
    np.testing.assert_allclose(scores, badge_embedding_norms(clf.predict_proba(X_pool), X_pool))
    a = np.eye(4)[clf.predict(X_pool)] - clf.predict_proba(X_pool)
    np.testing.assert_allclose(
        scores, np.linalg.norm(a, axis=1) * np.linalg.norm(X_pool, axis=1), rtol=1e-10
    )


def test_first_pick_is_the_largest_gradient():
    X_pool, clf, _, _ = fitted_logreg(seed=2)
    idx, scores = badge_sampling(clf, X_pool, 5, random_state=0)
    norms = BadgeSelector().score_samples(X_pool, classifier=clf)
    assert idx[0] == np.argmax(norms)
    assert scores[0] == pytest.approx(norms.max())


def test_all_zero_gradients_fill_uniformly():
    X_pool, clf, _, _ = fitted_logreg()
    zeros = np.zeros((25, X_pool.shape[1]))  # z = 0: every gradient embedding is 0
    idx, scores = BadgeSelector(random_state=0)(clf, zeros, 10)
    assert np.unique(idx).size == 10
    assert idx[0] == 0  # largest norm, ties: lowest index
    np.testing.assert_array_equal(scores, 0)
    again = BadgeSelector(random_state=0).select(zeros, 10, classifier=clf)
    np.testing.assert_array_equal(idx, again)
    other = BadgeSelector(random_state=1).select(zeros, 10, classifier=clf)
    assert not np.array_equal(idx, other)


def test_duplicates_are_not_picked_before_distinct_points():
    X_pool, clf, _, _ = fitted_logreg(seed=5)
    rows = X_pool[:6]
    pool = np.repeat(rows, 4, axis=0)  # 6 distinct rows, 4 copies each
    idx = BadgeSelector(random_state=0).select(pool, 6, classifier=clf)
    assert len(set((idx // 4).tolist())) == 6  # one copy of each distinct row first
    idx = BadgeSelector(random_state=0).select(pool, 24, classifier=clf)
    np.testing.assert_array_equal(np.sort(idx), np.arange(24))
    assert len(set((idx[:6] // 4).tolist())) == 6


def test_float32_embeddings_give_the_same_picks():
    X_pool, clf, _, _ = fitted_logreg(seed=6)
    a = BadgeSelector(random_state=0).select(X_pool, 10, classifier=clf)
    b = BadgeSelector(random_state=0).select(X_pool.astype(np.float32), 10, classifier=clf)
    np.testing.assert_array_equal(a, b)


def test_with_active_learner_and_modal_style_learner():
    X, y = blobs(n=200, n_classes=3, seed=7)
    learner = ActiveLearner(
        LogisticRegression(), BadgeSelector(), X_training=X[:9], y_training=y[:9], random_state=0
    )
    idx, X_query = learner.query(X[9:], n_instances=5)
    assert np.unique(idx).size == 5
    learner.teach(X_query, y[9:][idx])
    assert len(learner.y_training) == 14
    modal_like = LearnerLike(learner.estimator, learner.X_training, learner.y_training)
    a = BadgeSelector(random_state=3).select(X, 6, classifier=modal_like)
    b = BadgeSelector(random_state=3).select(X, 6, classifier=learner.estimator)
    np.testing.assert_array_equal(a, b)


def test_softmax_of_head_matches_predict_proba_on_multinomial_logreg():
    X_pool, clf, _, _ = fitted_logreg()
    np.testing.assert_allclose(
        softmax(X_pool @ clf.coef_.T + clf.intercept_, axis=1), clf.predict_proba(X_pool)
    )


def test_lazy_updates_on_many_picks():
    """Several refreshes (120 picks from 600 samples) against the reference."""
    X, y = blobs(n=640, n_classes=5, seed=9, std=4.0)
    clf = LogisticRegression(C=0.05).fit(X[:40], y[:40])
    X_pool = X[40:]
    for first in ("largest", "random"):
        idx = BadgeSelector(first=first, random_state=4).select(X_pool, 120, classifier=clf)
        ref = reference_badge(
            X_pool, clf.predict_proba(X_pool), 120, np.random.default_rng(4), first
        )
        np.testing.assert_array_equal(idx, ref)


def test_second_pick_follows_the_d2_distribution():
    """Rejection sampling gives exact k-means++ draws: P(second = i) = D^2_i / sum D^2."""
    X_pool, clf, _, _ = fitted_logreg(seed=3)
    X_pool = X_pool[:6]
    counts = np.zeros(6)
    for seed in range(1500):
        counts[BadgeSelector(random_state=seed).select(X_pool, 2, classifier=clf)[1]] += 1
    G = gradient_factor(clf.predict_proba(X_pool))[:, :, None] * X_pool[:, None, :]
    G = G.reshape(6, -1)
    first = np.argmax((G**2).sum(axis=1))
    d2 = ((G - G[first]) ** 2).sum(axis=1)
    np.testing.assert_allclose(counts / counts.sum(), d2 / d2.sum(), atol=0.04)
