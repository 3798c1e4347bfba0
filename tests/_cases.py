"""The registry of selectors that the common tests run over, and the data they use.

To add a selector, append a :class:`SelectorCase` to :data:`SELECTOR_CASES`. A cold-start
strategy that needs only 2-D features (no model, no labels) is registered as, e.g.::

    SelectorCase(BiLAFSelector, bilaf_sampling, {}, needs_proba=False, needs_labels=False)

and a parameterised one through ``functools.partial`` (``factory(random_state=0)`` must
build it) with the same parameters in ``kwargs`` for its function form.
"""

from functools import partial
from typing import Any, NamedTuple

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from peal_sk.selection import (
    ActiveFTSelector,
    BiLAFSelector,
    ClassBalancedSelector,
    EntropySelector,
    FeatureDistanceSelector,
    HybridSelector,
    KCenterSelector,
    KMeansSelector,
    LeastConfidentSelector,
    MarginSelector,
    RandomSelector,
    activeft_sampling,
    bilaf_sampling,
    class_balanced_sampling,
    entropy_sampling,
    featdist_sampling,
    hybrid_sampling,
    kcenter_sampling,
    kmeans_sampling,
    least_confident_sampling,
    margin_sampling,
    random_sampling,
)


class SelectorCase(NamedTuple):
    """One entry of the registry.

    Attributes
    ----------
    factory : callable
        ``factory(**params)`` builds the selector (``params`` such as ``random_state``).
    function : callable or None
        The modAL function form, ``function(classifier, X_pool, n_instances, **kwargs)``.
    kwargs : dict
        Keyword arguments the function form needs to behave as ``factory()``.
    needs_proba : bool
        The strategy needs a classifier with ``predict_proba``.
    needs_labels : bool
        The strategy needs labelled data (``X_labeled`` / ``y_labeled``).
    """

    factory: Any
    function: Any
    kwargs: dict
    needs_proba: bool
    needs_labels: bool

    @property
    def id(self):
        return repr(self.factory())


def _class_balanced_entropy(**params):
    return ClassBalancedSelector(EntropySelector(), **params)


SELECTOR_CASES = [
    SelectorCase(EntropySelector, entropy_sampling, {}, needs_proba=True, needs_labels=False),
    SelectorCase(MarginSelector, margin_sampling, {}, needs_proba=True, needs_labels=False),
    SelectorCase(
        LeastConfidentSelector,
        least_confident_sampling,
        {},
        needs_proba=True,
        needs_labels=False,
    ),
    SelectorCase(
        partial(FeatureDistanceSelector, mode="class_mean"),
        featdist_sampling,
        {"mode": "class_mean"},
        needs_proba=True,
        needs_labels=True,
    ),
    SelectorCase(
        partial(FeatureDistanceSelector, mode="nearest"),
        featdist_sampling,
        {"mode": "nearest"},
        needs_proba=False,
        needs_labels=True,
    ),
    SelectorCase(
        partial(FeatureDistanceSelector, mode="kcenter"),
        featdist_sampling,
        {"mode": "kcenter"},
        needs_proba=False,
        needs_labels=False,
    ),
    SelectorCase(KCenterSelector, kcenter_sampling, {}, needs_proba=False, needs_labels=False),
    SelectorCase(RandomSelector, random_sampling, {}, needs_proba=False, needs_labels=False),
    SelectorCase(
        _class_balanced_entropy,
        class_balanced_sampling,
        {},
        needs_proba=True,
        needs_labels=True,
    ),
    SelectorCase(HybridSelector, hybrid_sampling, {}, needs_proba=True, needs_labels=False),
    SelectorCase(
        partial(ActiveFTSelector, max_iter=30),
        activeft_sampling,
        {"max_iter": 30},
        needs_proba=False,
        needs_labels=False,
    ),
    SelectorCase(
        partial(BiLAFSelector, n_cores=0.1, core_selector=ActiveFTSelector(max_iter=30)),
        bilaf_sampling,
        {"n_cores": 0.1, "core_selector": ActiveFTSelector(max_iter=30)},
        needs_proba=False,
        needs_labels=False,
    ),
    SelectorCase(KMeansSelector, kmeans_sampling, {}, needs_proba=False, needs_labels=False),
]

CASE_IDS = [case.id for case in SELECTOR_CASES]


class LearnerLike:
    """The duck type of a modAL learner: ``estimator``, ``X_training``, ``y_training``."""

    def __init__(self, estimator, X_training, y_training):
        self.estimator = estimator
        self.X_training = X_training
        self.y_training = y_training

    def predict_proba(self, X):
        return self.estimator.predict_proba(X)

    def predict(self, X):
        return self.estimator.predict(X)


class Data(NamedTuple):
    X_pool: np.ndarray
    X_labeled: np.ndarray
    y_labeled: np.ndarray
    classifier: LogisticRegression
    learner: LearnerLike

    def inputs(self, case):
        """The least a case needs: a model if it uses probabilities, labels if it uses them."""
        return {
            "classifier": self.classifier if case.needs_proba else None,
            "X_labeled": self.X_labeled if case.needs_labels else None,
            "y_labeled": self.y_labeled if case.needs_labels else None,
        }

    def learner_inputs(self, case):
        """Everything through a modAL-like learner (the way modAL calls a strategy)."""
        return {"classifier": self.learner, "X_labeled": None, "y_labeled": None}


def make_data(seed=0, *, n_pool=30, n_per_class=3, n_features=4):
    """Three overlapping blobs: a pool, a labelled set with every class, a fitted model."""
    X, y = make_blobs(
        n_samples=n_pool + 3 * n_per_class,
        centers=3,
        n_features=n_features,
        cluster_std=3.0,
        random_state=seed,
    )
    lab = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in range(3)])
    rest = np.setdiff1d(np.arange(len(y)), lab)
    X_labeled, y_labeled = X[lab], y[lab]
    clf = LogisticRegression().fit(X_labeled, y_labeled)
    learner = LearnerLike(clf, X_labeled, y_labeled)
    return Data(X[rest], X_labeled, y_labeled, clf, learner)
