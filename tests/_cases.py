"""The selectors that the common tests run over, and the data they use.

The cases come from the strategy registry (:func:`peal_sk.selection.list_selectors`):
every registered strategy is tested, with what it needs read from its tags. Only two
things are written here: :data:`TEST_PARAMS`, parameters that keep a slow strategy fast
on the test data (by registry name), and :data:`VARIANTS`, parameter settings of a
registered strategy that change what it needs (``featdist`` modes).
"""

from functools import partial
from typing import Any, NamedTuple

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from peal_sk.base import get_selector_tags
from peal_sk.selection import ActiveFTSelector, get_selector, list_selectors

#: parameters that make a strategy fast on 30 samples (registry name -> params)
TEST_PARAMS = {
    "activeft": {"max_iter": 30},
    "bilaf": {"n_cores": 0.1, "core_selector": ActiveFTSelector(max_iter=30)},
}
#: more settings of a registered strategy, each tested like a strategy of its own
VARIANTS = {
    "featdist": [{"mode": "nearest"}, {"mode": "kcenter"}],
}


class SelectorCase(NamedTuple):
    """One selector under test.

    Attributes
    ----------
    name : str
        Its registry name.
    factory : callable
        ``factory(**params)`` builds the selector (``params`` such as ``random_state``).
    function : callable or None
        The modAL function form, ``function(classifier, X_pool, n_instances, **kwargs)``.
    kwargs : dict
        Keyword arguments the function form needs to behave as ``factory()``.
    needs_proba : bool
        The strategy needs a classifier with ``predict_proba`` (its tags).
    needs_labels : bool
        The strategy needs labelled data (its tags).
    """

    name: str
    factory: Any
    function: Any
    kwargs: dict
    needs_proba: bool
    needs_labels: bool

    @property
    def id(self):
        return repr(self.factory())


def _cases():
    cases = []
    for info in list_selectors():
        for extra in [{}, *VARIANTS.get(info.name, [])]:
            params = {**TEST_PARAMS.get(info.name, {}), **extra}
            factory = partial(get_selector, info.name, **params)
            tags = get_selector_tags(factory())
            kwargs = {**info.defaults, **params}
            cases.append(
                SelectorCase(
                    info.name,
                    factory,
                    info.function,
                    kwargs,
                    needs_proba=tags.requires_proba,
                    needs_labels=tags.requires_labels,
                )
            )
    return cases


SELECTOR_CASES = _cases()

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


def stripe_images(n=40, seed=0, size=28):
    """Two classes of uint8 NHWC images: horizontal vs vertical stripes, with noise.

    The torch-half tests' images (PEALClassifier's fast path), learnable in a few epochs.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    stripes = (np.arange(size) // 2 % 2 * 120.0 + 60)[:, None] * np.ones((1, size))
    base = np.where(y[:, None, None] == 1, stripes.T[None], stripes[None])[..., None]
    X = np.clip(base + rng.normal(scale=25, size=(n, size, size, 3)), 0, 255).astype(np.uint8)
    return X, y
