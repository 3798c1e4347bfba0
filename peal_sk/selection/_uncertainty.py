"""Uncertainty sampling: entropy, margin and least-confident (PEAL "Entropy")."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from scipy.special import entr
from sklearn.utils._param_validation import validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._validation import check_proba
from ._registry import register_selector

__all__ = [
    "EntropySelector",
    "LeastConfidentSelector",
    "MarginSelector",
    "entropy_sampling",
    "entropy_scores",
    "least_confident_sampling",
    "least_confident_scores",
    "margin_sampling",
    "margin_scores",
]


def _proba(proba):
    proba = np.asarray(proba)
    return check_proba(proba, proba.shape[0] if proba.ndim else 0, name="proba")


@validate_params({"proba": ["array-like"]}, prefer_skip_nested_validation=True)
def entropy_scores(proba):
    """Shannon entropy of each row, ``-sum_c p_c log p_c`` with ``0 log 0 = 0``.

    No epsilon is added, so the ranking of confident rows is exact.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities; rows sum to one.

    Returns
    -------
    scores : ndarray of shape (n_samples,)
        Larger is more uncertain.

    Examples
    --------
    >>> from peal_sk.selection import entropy_scores
    >>> entropy_scores([[0.5, 0.5], [1.0, 0.0]]).round(4)
    array([0.6931, 0.    ])
    """
    return entr(_proba(proba)).sum(axis=1)


@validate_params({"proba": ["array-like"]}, prefer_skip_nested_validation=True)
def margin_scores(proba):
    """Margin between the two most probable classes, ``p_(1) - p_(2)``.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)

    Returns
    -------
    scores : ndarray of shape (n_samples,)
        SMALLER is more uncertain. With a single class the margin is ``p_(1)``.

    Examples
    --------
    >>> from peal_sk.selection import margin_scores
    >>> margin_scores([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]])
    array([0.2, 0.8])
    """
    proba = _proba(proba)
    if proba.shape[1] == 1:
        return proba[:, 0].copy()
    top2 = -np.partition(-proba, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


@validate_params({"proba": ["array-like"]}, prefer_skip_nested_validation=True)
def least_confident_scores(proba):
    """One minus the largest class probability, ``1 - p_(1)``.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)

    Returns
    -------
    scores : ndarray of shape (n_samples,)
        Larger is more uncertain.

    Examples
    --------
    >>> from peal_sk.selection import least_confident_scores
    >>> least_confident_scores([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]])
    array([0.5, 0.1])
    """
    return 1.0 - _proba(proba).max(axis=1)


class _UncertaintySelector(BaseSelector):
    """Top-k of an uncertainty score of ``classifier.predict_proba(X_pool)``."""

    _score_fn = None
    _name = ""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.cold_start = False
        tags.selector_tags.requires_proba = True
        return tags

    def __init__(self, *, random_state=None):
        self.random_state = random_state

    def _check_context(self, ctx):
        ctx.require_proba_model(type(self).__name__)

    def _score(self, ctx):
        ctx.require_proba_model(type(self).__name__)
        return type(self)._score_fn(ctx.proba())


class EntropySelector(_UncertaintySelector):
    """Entropy sampling: the samples whose predicted class distribution has most entropy.

    Scores come from :func:`entropy_scores`; ties are broken by a permutation seeded by
    ``random_state``.

    Parameters
    ----------
    random_state : int, Generator or None, default=None
        Seeds the tie-breaking. Pass an int for the same selection on every call.

    See Also
    --------
    entropy_sampling : The modAL function form.
    MarginSelector, LeastConfidentSelector

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import EntropySelector
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> EntropySelector(random_state=0).select(X, 3, classifier=clf).shape
    (3,)
    """

    _score_fn = staticmethod(entropy_scores)


class MarginSelector(_UncertaintySelector):
    """Margin sampling: the samples with the smallest gap between the two top classes.

    Scores come from :func:`margin_scores` (smaller is more informative; the returned
    scores are the margins themselves).

    Parameters
    ----------
    random_state : int, Generator or None, default=None
        Seeds the tie-breaking.

    See Also
    --------
    margin_sampling : The modAL function form.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import MarginSelector, margin_scores
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx = MarginSelector(random_state=0).select(X, 2, classifier=clf)
    >>> margins = margin_scores(clf.predict_proba(X))
    >>> bool(margins[idx[0]] == margins.min())
    True
    """

    _score_fn = staticmethod(margin_scores)
    _greater_is_better = False


class LeastConfidentSelector(_UncertaintySelector):
    """Least-confident sampling: the samples whose top class is least probable.

    Scores come from :func:`least_confident_scores`.

    Parameters
    ----------
    random_state : int, Generator or None, default=None
        Seeds the tie-breaking.

    See Also
    --------
    least_confident_sampling : The modAL function form.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import LeastConfidentSelector
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> LeastConfidentSelector(random_state=0).select(X, 2, classifier=clf).shape
    (2,)
    """

    _score_fn = staticmethod(least_confident_scores)


@validate_params(function_form_constraints(EntropySelector), prefer_skip_nested_validation=False)
def entropy_sampling(classifier, X_pool, n_instances=1, *, random_state=None):
    """modAL query strategy: entropy sampling (see :class:`EntropySelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba``
    X_pool : array-like
    n_instances : int, default=1
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Entropy of each returned sample.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import entropy_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx, scores = entropy_sampling(clf, X, n_instances=2, random_state=0)
    >>> bool(scores[0] >= scores[1])
    True
    """
    return EntropySelector(random_state=random_state)(classifier, X_pool, n_instances)


@validate_params(function_form_constraints(MarginSelector), prefer_skip_nested_validation=False)
def margin_sampling(classifier, X_pool, n_instances=1, *, random_state=None):
    """modAL query strategy: margin sampling (see :class:`MarginSelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba``
    X_pool : array-like
    n_instances : int, default=1
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Margin of each returned sample (smallest first).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import margin_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx, scores = margin_sampling(clf, X, n_instances=2, random_state=0)
    >>> bool(scores[0] <= scores[1])
    True
    """
    return MarginSelector(random_state=random_state)(classifier, X_pool, n_instances)


@validate_params(
    function_form_constraints(LeastConfidentSelector), prefer_skip_nested_validation=False
)
def least_confident_sampling(classifier, X_pool, n_instances=1, *, random_state=None):
    """modAL query strategy: least-confident sampling (see :class:`LeastConfidentSelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba``
    X_pool : array-like
    n_instances : int, default=1
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        ``1 - max p`` of each returned sample.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import least_confident_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx, scores = least_confident_sampling(clf, X, n_instances=2, random_state=0)
    >>> idx.shape
    (2,)
    """
    return LeastConfidentSelector(random_state=random_state)(classifier, X_pool, n_instances)


register_selector("entropy", EntropySelector, entropy_sampling)
register_selector("margin", MarginSelector, margin_sampling)
register_selector("least_confident", LeastConfidentSelector, least_confident_sampling)
