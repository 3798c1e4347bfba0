"""Class-balanced wrapper (PCB): the picking rule and the candidate set."""

import numpy as np
import pytest

from peal_sk.base import BaseSelector
from peal_sk.selection import (
    ClassBalancedSelector,
    EntropySelector,
    class_balanced_picks,
    class_balanced_sampling,
    entropy_scores,
    random_sampling,
)


class FixedProba:
    def __init__(self, proba, classes):
        self.proba = np.asarray(proba, dtype=float)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba.copy()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _proba_for(pred, n_classes, confidence):
    """Rows predicting ``pred`` with distinct confidences (so distinct entropies)."""
    proba = np.empty((len(pred), n_classes))
    for i, (c, top) in enumerate(zip(pred, confidence, strict=True)):
        proba[i] = (1 - top) / (n_classes - 1)
        proba[i, c] = top
    return proba


# -- the picking rule ----------------------------------------------------------------------
def test_picks_fewest_labelled_class_first_then_falls_back():
    y_cand = np.array([0, 0, 0, 1])
    for seed in range(20):
        picks = class_balanced_picks(
            y_cand, np.array([0, 1]), np.array([5, 0]), 3, np.random.default_rng(seed)
        )
        assert picks[0] == 3  # the only candidate of the least-labelled class
        # class 1 (count 1 < 5) has no candidate left: random candidates, counts unchanged
        assert set(picks[1:].tolist()) <= {0, 1, 2}
        assert np.unique(picks).size == 3


def test_ties_go_to_the_lowest_class_index():
    y_cand = np.array([2, 1, 0, 2, 1, 0])
    for seed in range(20):
        picks = class_balanced_picks(
            y_cand, np.array([0, 1, 2]), np.array([2, 2, 2]), 6, np.random.default_rng(seed)
        )
        assert y_cand[picks].tolist() == [0, 1, 2, 0, 1, 2]


def test_seeded_random_candidate_within_a_class():
    y_cand = np.array([0, 0, 0, 0, 1])
    firsts = {
        int(
            class_balanced_picks(
                y_cand, np.array([0, 1]), np.array([0, 3]), 1, np.random.default_rng(s)
            )[0]
        )
        for s in range(60)
    }
    assert firsts == {0, 1, 2, 3}
    same = [
        class_balanced_picks(
            y_cand, np.array([0, 1]), np.array([0, 3]), 5, np.random.default_rng(9)
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(same[0], same[1])


def test_fallback_leaves_counts_unchanged():
    """Class 0 never has a candidate; if a fallback pick counted for it, class 1 (count 1)
    would win the third pick for sure. With the counts unchanged every pick stays random."""
    y_cand = np.array([2, 2, 2, 2, 1])
    classes, counts = np.array([0, 1, 2]), np.array([0, 1, 5])
    picked_class_1 = [
        4 in class_balanced_picks(y_cand, classes, counts, 3, np.random.default_rng(s)).tolist()
        for s in range(60)
    ]
    assert not all(picked_class_1)
    assert any(picked_class_1)


def test_counts_argument_not_modified():
    counts = np.array([1, 0])
    class_balanced_picks(np.array([0, 1, 1]), np.array([0, 1]), counts, 3, np.random.default_rng(0))
    assert counts.tolist() == [1, 0]


# -- the selector -----------------------------------------------------------------------------
POOL = np.zeros((6, 1))
PRED = np.array([0, 0, 1, 1, 2, 2])
CONF = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5])


def test_selector_balances_by_true_label_counts():
    clf = FixedProba(_proba_for(PRED, 3, CONF), [0, 1, 2])
    y_labeled = np.array([0, 0, 0, 1, 1, 2])  # counts [3, 2, 1]
    for seed in range(20):
        sel = ClassBalancedSelector(EntropySelector(), gamma=1.0, random_state=seed)
        idx, scores = sel(clf, POOL, 3, y_labeled=y_labeled)
        # class 2 (1 label) -> counts [3,2,2] -> class 1 (tie with 2, lowest) -> class 2
        assert PRED[idx].tolist() == [2, 1, 2]
        np.testing.assert_allclose(scores, entropy_scores(clf.proba)[idx])


def test_class_known_only_to_the_estimator_counts_zero():
    pred = np.array([0, 1, 3, 0, 1, 2])
    clf = FixedProba(_proba_for(pred, 4, [0.9, 0.8, 0.7, 0.6, 0.55, 0.5]), [0, 1, 2, 3])
    sel = ClassBalancedSelector(EntropySelector(), gamma=1.0, random_state=0)
    idx = sel.select(POOL, 2, classifier=clf, y_labeled=[0, 1, 2])
    assert idx[0] == 2  # class 3: no labelled sample, known to the estimator
    assert pred[idx[1]] == 0  # then counts are [1, 1, 1, 1]: the lowest class index


def test_picks_are_among_the_base_candidates(data):
    proba = data.classifier.predict_proba(data.X_pool)
    order = np.argsort(-entropy_scores(proba))
    for gamma, n_instances in [(0.1, 2), (0.3, 4), (0.5, 2)]:
        n_cand = max(n_instances, int(gamma * len(data.X_pool)))
        for seed in range(5):
            idx = ClassBalancedSelector(EntropySelector(), gamma=gamma, random_state=seed).select(
                data.X_pool, n_instances, classifier=data.learner
            )
            assert set(idx.tolist()) <= set(order[:n_cand].tolist())


@pytest.mark.parametrize(
    "gamma, n_instances, n_pool, n_cand",
    [(0.1, 2, 30, 3), (0.1, 5, 30, 5), (0.5, 2, 30, 15), (1.0, 3, 30, 30), (0.33, 1, 10, 3)],
)
def test_number_of_candidates(gamma, n_instances, n_pool, n_cand):
    asked = []

    def base(classifier, X_pool, n_instances=1):
        asked.append(n_instances)
        return np.arange(n_instances), np.zeros(n_instances)

    pred = np.arange(n_pool) % 3
    clf = FixedProba(_proba_for(pred, 3, np.linspace(0.5, 0.9, n_pool)), [0, 1, 2])
    idx = ClassBalancedSelector(base, gamma=gamma, random_state=0).select(
        np.zeros((n_pool, 1)), n_instances, classifier=clf, y_labeled=[0, 1, 2]
    )
    assert asked == [n_cand]
    assert set(idx.tolist()) <= set(range(n_cand))


class RecordingSelector(BaseSelector):
    """Proposes the first n candidates and records the n it was asked for."""

    _parameter_constraints = {"random_state": ["random_state"]}
    asked = []

    def __init__(self, *, random_state=None):
        self.random_state = random_state

    def _query(self, ctx, n_instances, rng):
        RecordingSelector.asked.append(n_instances)
        return np.arange(n_instances), np.arange(n_instances, 0, -1.0)


def test_selector_base_is_asked_for_n_cand(data):
    RecordingSelector.asked.clear()
    sel = ClassBalancedSelector(RecordingSelector(), gamma=0.4, random_state=0)
    idx, scores = sel(data.learner, data.X_pool, 5)
    assert RecordingSelector.asked == [12]
    assert set(idx.tolist()) <= set(range(12))
    np.testing.assert_array_equal(scores, 12.0 - idx)  # the base's scores of the picks


def test_function_form_default_base_is_entropy(data):
    a = class_balanced_sampling(data.learner, data.X_pool, 4, random_state=1)
    b = ClassBalancedSelector(EntropySelector(), random_state=1)(data.learner, data.X_pool, 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_callable_base_is_seeded_by_random_state(data):
    """Every random choice flows from random_state, including a modAL-function base's."""
    sel = ClassBalancedSelector(random_sampling, gamma=0.5, random_state=0)
    picks = [sel.select(data.X_pool, 3, classifier=data.learner).tolist() for _ in range(5)]
    assert all(p == picks[0] for p in picks), picks


@pytest.mark.parametrize("y_labeled", [None, [], np.array([], dtype=int)])
def test_no_labels_is_an_error(data, y_labeled):
    sel = ClassBalancedSelector(EntropySelector())
    kw = {} if y_labeled is None else {"X_labeled": np.empty((0, 4)), "y_labeled": y_labeled}
    with pytest.raises(ValueError, match="ClassBalancedSelector.*no labels"):
        sel.select(data.X_pool, 2, classifier=data.classifier, **kw)


def test_no_labels_through_learner_is_an_error(data):
    learner = type(data.learner)(data.classifier, None, None)
    with pytest.raises(ValueError, match="no labels"):
        ClassBalancedSelector(EntropySelector()).select(data.X_pool, 2, classifier=learner)
