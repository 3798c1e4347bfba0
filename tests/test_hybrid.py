"""Hybrid selector: uncertainty candidates, then k-centre among them."""

import numpy as np
import pytest

from peal_sk.selection import (
    EntropySelector,
    HybridSelector,
    entropy_scores,
    hybrid_sampling,
    least_confident_scores,
    margin_scores,
)

SCORES = {
    "entropy": (entropy_scores, True),
    "margin": (margin_scores, False),
    "least_confident": (least_confident_scores, True),
}


def _ranking(uncertainty, proba):
    score_fn, greater = SCORES[uncertainty]
    scores = score_fn(proba)
    return np.argsort(-scores if greater else scores, kind="stable"), scores


@pytest.mark.parametrize("n_instances", [1, 3, 6])
def test_candidate_factor_one_is_entropy_top_b(data, n_instances):
    for seed in range(3):
        idx = HybridSelector(candidate_factor=1, random_state=seed).select(
            data.X_pool, n_instances, classifier=data.learner
        )
        top = EntropySelector(random_state=seed).select(
            data.X_pool, n_instances, classifier=data.learner
        )
        assert set(idx.tolist()) == set(top.tolist())


@pytest.mark.parametrize("uncertainty", sorted(SCORES))
@pytest.mark.parametrize("factor", [2, 3, 5])
def test_picks_within_top_candidates(data, uncertainty, factor):
    order, scores = _ranking(uncertainty, data.classifier.predict_proba(data.X_pool))
    for n_instances in (1, 2, 4):
        idx, returned = HybridSelector(uncertainty, candidate_factor=factor, random_state=0)(
            data.learner, data.X_pool, n_instances
        )
        n_cand = min(len(data.X_pool), factor * n_instances)
        assert set(idx.tolist()) <= set(order[:n_cand].tolist())
        np.testing.assert_array_equal(returned, scores[idx])


def test_kcenter_order_among_candidates(data):
    """With labelled data the picks follow greedy k-centre over the candidates."""
    order, _ = _ranking("entropy", data.classifier.predict_proba(data.X_pool))
    cand = order[:12]
    idx = HybridSelector(candidate_factor=4, random_state=0).select(
        data.X_pool, 3, classifier=data.learner
    )
    X, picked = data.X_pool, []
    mind = np.linalg.norm(X[:, None] - data.X_labeled[None], axis=2).min(axis=1)
    for _ in range(3):
        p = cand[np.argmax(np.where(np.isin(cand, picked), -1, mind[cand]))]
        picked.append(int(p))
        mind = np.minimum(mind, np.linalg.norm(X - X[p], axis=1))
    assert idx.tolist() == picked


def test_diversity_beats_pure_uncertainty_on_duplicates():
    """Near-duplicate uncertain samples: entropy takes copies, hybrid spreads out."""

    class Clf:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            p = 1 / (1 + np.exp(-X[:, 0]))
            return np.column_stack([1 - p, p])

    X = np.array([[0.0, 0.0], [0.001, 0.0], [0.002, 0.0], [0.5, 10.0], [3.0, 0.0]])
    top = EntropySelector(random_state=0).select(X, 2, classifier=Clf())
    assert set(top.tolist()) <= {0, 1, 2}
    idx = HybridSelector(candidate_factor=2, random_state=0).select(X, 2, classifier=Clf())
    assert 3 in idx.tolist()


def test_function_form(data):
    a = hybrid_sampling(data.learner, data.X_pool, 3, uncertainty="margin", random_state=2)
    b = HybridSelector("margin", random_state=2)(data.learner, data.X_pool, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
