"""Entropy, margin and least-confident sampling against hand-computed values."""

import numpy as np
import pytest

from peal_sk.selection import (
    EntropySelector,
    LeastConfidentSelector,
    MarginSelector,
    entropy_sampling,
    entropy_scores,
    least_confident_sampling,
    least_confident_scores,
    margin_sampling,
    margin_scores,
)
from peal_sk.utils import top_k


class FixedProba:
    """A 'fitted classifier' that returns a given probability matrix."""

    def __init__(self, proba, classes=None):
        self.proba = np.asarray(proba, dtype=float)
        self.classes_ = np.arange(self.proba.shape[1]) if classes is None else classes

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba.copy()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


P = np.array(
    [
        [0.5, 0.5, 0.0],
        [1.0, 0.0, 0.0],
        [0.7, 0.2, 0.1],
        [1 / 3, 1 / 3, 1 / 3],
        [0.6, 0.4, 0.0],
    ]
)
ENTROPY = np.array(
    [
        np.log(2),
        0.0,
        -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)),
        np.log(3),
        -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)),
    ]
)
MARGIN = np.array([0.0, 1.0, 0.5, 0.0, 0.2])
LEAST_CONFIDENT = np.array([0.5, 0.0, 0.3, 2 / 3, 0.4])
X5 = np.zeros((5, 2))


def test_entropy_scores_hand_computed():
    np.testing.assert_allclose(entropy_scores(P), ENTROPY, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        ENTROPY[[0, 2, 3, 4]], [0.693147, 0.801819, 1.098612, 0.673012], atol=1e-6
    )


def test_entropy_zero_log_zero():
    scores = entropy_scores([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.all(scores == 0.0)
    assert not np.isnan(entropy_scores([[0.5, 0.5, 0.0]])).any()


def test_entropy_ranks_confident_rows_exactly():
    """No epsilon: very confident rows keep their order."""
    a = np.array([1e-15, 1e-13, 1e-11, 1e-9])
    scores = entropy_scores(np.column_stack([1 - a, a]))
    assert np.all(scores > 0)
    assert np.all(np.diff(scores) > 0)
    idx = EntropySelector(random_state=0).select(
        np.zeros((4, 1)), 4, classifier=FixedProba(np.column_stack([1 - a, a]))
    )
    assert idx.tolist() == [3, 2, 1, 0]


def test_margin_scores_hand_computed():
    np.testing.assert_allclose(margin_scores(P), MARGIN, atol=1e-12)


def test_margin_single_class():
    np.testing.assert_array_equal(margin_scores([[1.0], [1.0]]), [1.0, 1.0])


def test_least_confident_scores_hand_computed():
    np.testing.assert_allclose(least_confident_scores(P), LEAST_CONFIDENT, atol=1e-12)


@pytest.mark.parametrize(
    "selector_cls, scores, expected",
    [
        (EntropySelector, ENTROPY, [3, 2, 0, 4, 1]),
        (LeastConfidentSelector, LEAST_CONFIDENT, [3, 0, 4, 2, 1]),
    ],
)
def test_top_k_order(selector_cls, scores, expected):
    clf = FixedProba(P)
    for k in range(1, 6):
        idx, returned = selector_cls(random_state=0)(clf, X5, k)
        assert idx.tolist() == expected[:k]
        np.testing.assert_allclose(returned, scores[expected[:k]], atol=1e-12)
    np.testing.assert_allclose(selector_cls().score_samples(X5, classifier=clf), scores, atol=1e-12)


def test_margin_top_k_smallest_first():
    clf = FixedProba(P)
    for seed in range(10):
        idx, returned = MarginSelector(random_state=seed)(clf, X5, 5)
        assert set(idx[:2].tolist()) == {0, 3}  # the two zero margins, order by seed
        assert idx[2:].tolist() == [4, 2, 1]
        np.testing.assert_allclose(returned, MARGIN[idx], atol=1e-12)
        assert np.all(np.diff(returned) >= 0)


@pytest.mark.parametrize(
    "function, score_fn, greater",
    [
        (entropy_sampling, entropy_scores, True),
        (margin_sampling, margin_scores, False),
        (least_confident_sampling, least_confident_scores, True),
    ],
)
def test_sampling_on_real_classifier(function, score_fn, greater, data):
    scores = score_fn(data.classifier.predict_proba(data.X_pool))
    idx, returned = function(data.classifier, data.X_pool, n_instances=4, random_state=0)
    order = np.argsort(-scores if greater else scores, kind="stable")
    assert idx.tolist() == order[:4].tolist()  # no ties on continuous probabilities
    np.testing.assert_array_equal(returned, scores[idx])


@pytest.mark.parametrize("selector_cls", [EntropySelector, MarginSelector, LeastConfidentSelector])
def test_all_equal_scores_ties_broken_by_seed(selector_cls):
    n = 6
    clf = FixedProba(np.full((n, 2), 0.5))
    X = np.zeros((n, 1))
    orders = {
        seed: tuple(selector_cls(random_state=seed).select(X, n, classifier=clf))
        for seed in range(200)
    }
    # same seed, same order
    assert tuple(selector_cls(random_state=17).select(X, n, classifier=clf)) == orders[17]
    # different seeds, different orders; never just index order
    assert len(set(orders.values())) > 50
    # every index can come first
    assert {order[0] for order in orders.values()} == set(range(n))


def test_ties_broken_by_seed_within_top_k():
    """Only the tied samples compete for the last places of the top-k."""
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.99, 0.01]])
    clf = FixedProba(proba)
    X = np.zeros((5, 1))
    seconds = set()
    for seed in range(100):
        idx = EntropySelector(random_state=seed).select(X, 2, classifier=clf)
        assert set(idx.tolist()) <= {1, 2, 3}
        seconds.add(int(idx[1]))
    assert seconds == {1, 2, 3}


def test_top_k_is_a_valid_top_k():
    """Best first; every returned score beats (or ties) every score left out."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        k = int(rng.integers(1, n + 1))
        scores = rng.integers(0, 4, size=n).astype(float)
        largest = bool(rng.integers(2))
        idx = top_k(scores, k, np.random.default_rng(int(rng.integers(1000))), largest=largest)
        assert idx.dtype == np.intp and np.unique(idx).size == k
        key = scores if largest else -scores
        assert np.all(np.diff(key[idx]) <= 0)
        rest = np.setdiff1d(np.arange(n), idx)
        if rest.size:
            assert key[idx].min() >= key[rest].max()


def test_top_k_eligible():
    scores = np.array([5.0, 4.0, 3.0, 2.0])
    eligible = np.array([False, True, False, True])
    idx = top_k(scores, 2, np.random.default_rng(0), eligible=eligible)
    assert idx.tolist() == [1, 3]
    with pytest.raises(ValueError, match="k=3"):
        top_k(scores, 3, np.random.default_rng(0), eligible=eligible)


def test_top_k_infinite_scores_go_to_the_ends():
    scores = np.array([1.0, -np.inf, 2.0, np.inf])
    assert top_k(scores, 4, np.random.default_rng(0)).tolist() == [3, 2, 0, 1]
    assert top_k(scores, 4, np.random.default_rng(0), largest=False).tolist() == [1, 0, 2, 3]


def test_works_through_a_learner(learner, X_pool):
    idx = EntropySelector(random_state=0).select(X_pool, 3, classifier=learner)
    expected = EntropySelector(random_state=0).select(X_pool, 3, classifier=learner.estimator)
    np.testing.assert_array_equal(idx, expected)
