"""Hypothesis property tests of the selector contract over random pools and probabilities."""

import numpy as np
import pytest
from _cases import CASE_IDS, SELECTOR_CASES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peal_sk.selection import (
    EntropySelector,
    FeatureDistanceSelector,
    LeastConfidentSelector,
    MarginSelector,
)
from peal_sk.utils import kcenter_greedy

SETTINGS = settings(max_examples=50, deadline=None)


class FixedProba:
    """A 'fitted classifier' whose probabilities on the pool are drawn by hypothesis."""

    def __init__(self, proba):
        self.proba = proba
        self.classes_ = np.arange(proba.shape[1])

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba.copy()

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class LinearProba(FixedProba):
    """A fitted linear model (``coef_``, ``intercept_``, softmax) for the strategies that
    use the final linear layer (DropQuery, BADGE); its weights are drawn by hypothesis."""

    def __init__(self, coef, intercept):
        self.coef_, self.intercept_ = coef, intercept
        self.classes_ = np.arange(coef.shape[0])

    def predict_proba(self, X):
        logits = np.asarray(X) @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


#: registry names of strategies that need the final linear layer of the model
LINEAR_HEAD = {"dropquery", "badge"}


def _classifier(case, problem):
    if not case.needs_proba:
        return None
    if case.name not in LINEAR_HEAD:
        return FixedProba(problem["proba"])
    rng = np.random.default_rng(problem["random_state"])
    n_classes, d = problem["proba"].shape[1], problem["X_pool"].shape[1]
    scale = rng.choice([0.0, 1.0, 30.0])  # 0: every gradient is 0; 30: saturated softmax
    return LinearProba(scale * rng.normal(size=(n_classes, d)), rng.normal(size=n_classes))


def _features(rng, n, d, tied):
    if tied:  # a few distinct values: many exact ties in scores and distances
        return rng.integers(-2, 3, size=(n, d)).astype(np.float64)
    return rng.normal(size=(n, d))


@st.composite
def problems(draw):
    n_pool = draw(st.integers(1, 25))
    n_features = draw(st.integers(1, 3))
    n_classes = draw(st.integers(2, 4))
    tied = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw = draw(
        arrays(
            np.float64,
            (n_pool, n_classes),
            elements=st.floats(0, 1, allow_subnormal=False) | st.sampled_from([0.0, 1.0]),
        )
    )
    sums = raw.sum(axis=1, keepdims=True)
    proba = np.where(sums > 1e-6, raw / np.where(sums > 1e-6, sums, 1.0), 1.0 / n_classes)
    n_labeled = draw(st.integers(1, 8))
    y_labeled = np.array(
        draw(st.lists(st.integers(0, n_classes - 1), min_size=n_labeled, max_size=n_labeled))
    )
    return {
        "X_pool": _features(rng, n_pool, n_features, tied),
        "proba": proba,
        "X_labeled": _features(rng, n_labeled, n_features, tied),
        "y_labeled": y_labeled,
        "n_instances": draw(st.integers(1, n_pool)),
        "random_state": draw(st.integers(0, 2**32 - 1)),
    }


def _is_top_k(selector):
    if isinstance(selector, EntropySelector | MarginSelector | LeastConfidentSelector):
        return True
    return isinstance(selector, FeatureDistanceSelector) and selector.mode != "kcenter"


# tied pools can hold fewer distinct points than KMeans centres: it warns, we still
# return distinct samples (checked here)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case", SELECTOR_CASES, ids=CASE_IDS)
@SETTINGS
@given(problem=problems())
def test_contract(case, problem):
    X_pool, n_instances = problem["X_pool"], problem["n_instances"]
    n_pool = len(X_pool)
    X_before = X_pool.copy()
    kw = {
        "classifier": _classifier(case, problem),
        "X_labeled": problem["X_labeled"] if case.needs_labels else None,
        "y_labeled": problem["y_labeled"] if case.needs_labels else None,
    }
    selector = case.factory(random_state=problem["random_state"])
    idx = selector.select(X_pool, n_instances, **kw)

    assert idx.dtype == np.intp
    assert idx.shape == (n_instances,)
    assert np.unique(idx).size == n_instances
    assert 0 <= idx.min() and idx.max() < n_pool

    classifier = kw.pop("classifier")
    call_idx, scores = selector(classifier, X_pool, n_instances, **kw)
    np.testing.assert_array_equal(call_idx, idx)  # and so: deterministic
    assert scores.dtype == np.float64 and scores.shape == (n_instances,)
    assert not np.isnan(scores).any()
    np.testing.assert_array_equal(X_pool, X_before)

    if _is_top_k(selector):
        all_scores = selector.score_samples(X_pool, classifier=classifier, **kw)
        key = all_scores if selector._greater_is_better else -all_scores
        assert np.all(key[idx][:-1] >= key[idx][1:])  # most informative first
        rest = np.setdiff1d(np.arange(n_pool), idx)
        if rest.size:
            assert key[idx].min() >= key[rest].max()


@SETTINGS
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 3),
    n_labeled=st.integers(0, 4),
    tied=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_kcenter_covering_property(n, d, n_labeled, tied, seed, data):
    """Each pick is a farthest sample from the labelled set and the earlier picks."""
    rng = np.random.default_rng(seed)
    X = _features(rng, n, d, tied)
    X_lab = _features(rng, n_labeled, d, tied) if n_labeled else None
    k = data.draw(st.integers(1, n))
    idx, dist = kcenter_greedy(X, k, np.random.default_rng(seed), X_labeled=X_lab)
    assert np.unique(idx).size == k
    centres = [] if X_lab is None else list(X_lab)
    for t, p in enumerate(idx):
        if not centres:
            assert dist[t] == np.inf
        else:
            mind = np.linalg.norm(X[:, None] - np.array(centres)[None], axis=2).min(axis=1)
            unpicked = np.setdiff1d(np.arange(n), idx[:t])
            assert mind[p] >= mind[unpicked].max() - 1e-9
            assert dist[t] == pytest.approx(mind[p], abs=1e-9)
        centres.append(X[p])
