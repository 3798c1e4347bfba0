"""Base class of every query strategy.

A selector has three faces that share one implementation (:meth:`BaseSelector._query`):

* ``select(X_pool, n_instances, *, classifier=None, X_labeled=None, y_labeled=None)``
  returns the chosen indices, most informative first;
* ``score_samples(X_pool, ...)`` returns one score per pool sample, where such a score
  exists;
* calling the instance, ``selector(classifier, X_pool, n_instances=1, **kwargs)``, follows
  the modAL query-strategy contract and returns ``(query_idx, scores)``, so a selector can
  be passed as ``query_strategy`` to :class:`peal_sk.ActiveLearner` or to modAL's own
  ``ActiveLearner``.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
from dataclasses import dataclass, field, fields

import numpy as np
from sklearn import config_context, get_config
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils import Tags

from .utils._validation import (
    check_features,
    check_n_instances,
    check_no_inf,
    check_proba,
    check_rng,
    n_samples,
)

__all__ = ["BaseSelector", "QueryContext", "SelectorTags", "get_embeddings", "get_selector_tags"]
# (function_form_constraints is shared by the selection modules, not public)


@dataclass(slots=True)
class SelectorTags:
    """What a query strategy needs: the capability tags of a selector.

    Read them with :func:`get_selector_tags` (or ``sklearn.utils.get_tags(sel).selector_tags``);
    a selector class declares them in ``__sklearn_tags__``, the scikit-learn way::

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.selector_tags.requires_proba = True
            tags.selector_tags.cold_start = False
            return tags

    Tags may depend on parameters (``FeatureDistanceSelector(mode="kcenter")`` works at a
    cold start, ``mode="nearest"`` needs labelled data), so they belong to instances.

    Attributes
    ----------
    cold_start : bool, default=True
        Works before anything is labelled: no labels and no fitted model.
    requires_proba : bool, default=False
        Needs a fitted classifier with ``predict_proba``.
    requires_labels : bool, default=False
        Needs labelled data (``X_labeled`` / ``y_labeled`` or a learner's training set).
    uses_embeddings : bool, default=False
        Compares samples in feature space (the classifier's ``transform``, a Pipeline's
        steps before its final estimator, or the features themselves).
    """

    cold_start: bool = True
    requires_proba: bool = False
    requires_labels: bool = False
    uses_embeddings: bool = False


@dataclass
class _Tags(Tags):
    """scikit-learn's :class:`~sklearn.utils.Tags` plus the selector tags."""

    selector_tags: SelectorTags = field(default_factory=SelectorTags)


def get_selector_tags(selector):
    """The :class:`SelectorTags` of a selector instance.

    Parameters
    ----------
    selector : BaseSelector
        A selector instance (tags can depend on its parameters).

    Returns
    -------
    tags : SelectorTags

    Examples
    --------
    >>> from peal_sk.base import get_selector_tags
    >>> from peal_sk.selection import EntropySelector
    >>> tags = get_selector_tags(EntropySelector())
    >>> tags.cold_start, tags.requires_proba
    (False, True)
    """
    tags = getattr(selector, "__sklearn_tags__", lambda: None)()
    if not isinstance(getattr(tags, "selector_tags", None), SelectorTags):
        raise TypeError(
            f"{type(selector).__name__} has no selector tags; derive it from "
            "peal_sk.base.BaseSelector."
        )
    return tags.selector_tags


def _selector_context(method):
    """Validate the selector's parameters once per public call, as ``_fit_context`` does.

    Honours ``sklearn.config_context(skip_parameter_validation=True)``. Inside the call,
    nested validation (scikit-learn estimators and helper functions the strategy calls
    with parameters it built itself) is skipped unless the class sets
    ``_prefer_skip_nested_validation = False`` (composites whose sub-selectors come from
    the user).
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        global_skip = get_config()["skip_parameter_validation"]
        if not global_skip:
            self._validate_params()
        skip = global_skip or self._prefer_skip_nested_validation
        with config_context(skip_parameter_validation=skip):
            return method(self, *args, **kwargs)

    return wrapper


def function_form_constraints(selector_cls, **overrides):
    """``@validate_params`` constraints of a modAL function form: the class's
    ``_parameter_constraints`` (one definition for both forms), ``overrides`` (e.g. a
    default of None that the function turns into an object), and no constraint on the
    arguments the selector validates against the data (``classifier``, ``X_pool``,
    ``n_instances``, ``X_labeled``, ``y_labeled``)."""
    data = dict.fromkeys(
        ("classifier", "X_pool", "n_instances", "X_labeled", "y_labeled"), "no_validation"
    )
    return {**data, **selector_cls._parameter_constraints, **overrides}


def _unwrap(classifier):
    """The estimator behind a modAL-style learner (``learner.estimator``), else itself."""
    return getattr(classifier, "estimator", classifier)


def get_embeddings(classifier, X):
    """Embeddings that feature-based strategies compare.

    * ``classifier.transform(X)`` when the model offers it (e.g. ``PEALClassifier``
      returns its adapted backbone features; a Pipeline offers it when its final step does);
    * for a :class:`~sklearn.pipeline.Pipeline` whose final step has no ``transform``,
      the output of the steps before the final estimator;
    * otherwise ``X`` itself, which must then be 2-D numeric features.

    Errors raised by the model (for example ``NotFittedError`` from an unfitted scaler)
    propagate; they are never replaced by made-up features.
    """
    est = _unwrap(classifier)
    if est is None:
        return X
    try:
        if hasattr(est, "transform"):
            return est.transform(X)
        if isinstance(est, Pipeline) and len(est.steps) > 1:
            return est[:-1].transform(X)
    except NotFittedError as exc:
        raise NotFittedError(
            f"{exc} Feature-based strategies embed the samples with the model's "
            "`transform` (for a Pipeline: its steps before the final estimator), which "
            "is not fitted yet. At a cold start, fit those steps first (e.g. "
            "`pipe[:-1].fit(X_pool)`) or query with classifier=None to use the features "
            "themselves."
        ) from exc
    return X


class QueryContext:
    """Everything a strategy may ask about one query, computed once and cached.

    Composite strategies (class-balanced, hybrid) share one context with their base
    strategy, so probabilities and embeddings are computed only once per query.

    Parameters
    ----------
    X_pool : array-like
        The pool, in whatever form the classifier accepts (arrays, images, file paths).
    classifier : object, default=None
        A fitted estimator or a modAL-style learner (``.estimator``, ``.X_training``,
        ``.y_training``).
    X_labeled, y_labeled : array-like, default=None
        Labelled data. When omitted, the learner's ``X_training`` / ``y_training``.
    """

    def __init__(self, X_pool, *, classifier=None, X_labeled=None, y_labeled=None):
        self.X_pool = X_pool
        self.classifier = classifier
        self.n_pool = n_samples(X_pool)
        check_no_inf(X_pool, name="X_pool")
        if (X_labeled is None) != (y_labeled is None) and X_labeled is not None:
            # y without X is allowed for label-only strategies; X without y is not
            raise ValueError("X_labeled was given without y_labeled; pass both.")
        if X_labeled is None and y_labeled is None and classifier is not None:
            X_labeled = getattr(classifier, "X_training", None)
            y_labeled = getattr(classifier, "y_training", None)
        if X_labeled is not None and y_labeled is not None:
            n_x, n_y = n_samples(X_labeled, name="X_labeled"), len(y_labeled)
            if n_x != n_y:
                raise ValueError(
                    f"X_labeled has {n_x} samples but y_labeled has {n_y}; they must match."
                )
        if X_labeled is not None:
            check_no_inf(X_labeled, name="X_labeled")
        self.X_labeled = X_labeled
        self.y_labeled = None if y_labeled is None else np.asarray(y_labeled)
        self._cache = {}

    @property
    def estimator(self):
        return _unwrap(self.classifier)

    @property
    def n_labeled(self):
        return 0 if self.y_labeled is None else len(self.y_labeled)

    def _cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def require_proba_model(self, strategy):
        est = self.estimator
        if self.classifier is None:
            raise ValueError(
                f"{strategy} needs a fitted classifier with predict_proba; got classifier=None."
            )
        if not hasattr(est, "predict_proba") or not hasattr(self.classifier, "predict_proba"):
            raise TypeError(
                f"{strategy} needs an estimator with predict_proba; {type(est).__name__} has none."
            )

    def proba(self):
        """Validated ``classifier.predict_proba(X_pool)``."""

        def compute():
            return check_proba(self.classifier.predict_proba(self.X_pool), self.n_pool)

        return self._cached("proba", compute)

    def classes(self):
        """Class labels of the estimator (``classes_``), or None if it has none."""
        classes = getattr(self.estimator, "classes_", None)
        if classes is None:
            classes = getattr(self.classifier, "classes_", None)
        return None if classes is None else np.asarray(classes)

    def predicted_labels(self):
        """Predicted class of every pool sample: ``classes_[argmax predict_proba]``."""

        def compute():
            proba = self.proba()
            classes = self.classes()
            if classes is not None and len(classes) == proba.shape[1]:
                return classes[np.argmax(proba, axis=1)]
            return np.asarray(self.classifier.predict(self.X_pool))

        return self._cached("y_pred", compute)

    def pool_embeddings(self):
        """Validated 2-D finite embeddings of the pool."""

        def compute():
            emb = get_embeddings(self.classifier, self.X_pool)
            emb = check_features(emb, name="X_pool (embeddings)")
            if emb.shape[0] != self.n_pool:
                raise ValueError(
                    f"The embeddings have {emb.shape[0]} rows but X_pool has {self.n_pool}."
                )
            return emb

        return self._cached("emb_pool", compute)

    def labeled_embeddings(self):
        """Validated embeddings of ``X_labeled`` (None when there is no labelled data)."""

        def compute():
            if self.X_labeled is None or n_samples(self.X_labeled, name="X_labeled") == 0:
                return None
            emb = get_embeddings(self.classifier, self.X_labeled)
            return check_features(
                emb, name="X_labeled (embeddings)", n_features=self.pool_embeddings().shape[1]
            )

        return self._cached("emb_labeled", compute)


class BaseSelector(BaseEstimator):
    """Base class for query strategies.

    Subclasses declare ``_parameter_constraints`` and implement
    ``_query(ctx, n_instances, rng) -> (query_idx, scores)`` on a validated
    :class:`QueryContext`; where a per-sample score exists they also implement
    ``_score(ctx) -> scores`` and set ``_greater_is_better``.

    Users can subclass it to write their own strategy and check it with
    :func:`peal_sk.utils.estimator_checks.check_selector`.

    Examples
    --------
    A strategy with a per-sample score: the pool samples farthest from the pool's mean.

    >>> import numpy as np
    >>> from peal_sk.base import BaseSelector
    >>> class FarthestFromMean(BaseSelector):
    ...     def __init__(self, *, random_state=None):
    ...         self.random_state = random_state
    ...     def _score(self, ctx):
    ...         emb = ctx.pool_embeddings()
    ...         return np.linalg.norm(emb - emb.mean(axis=0), axis=1)
    >>> X = np.array([[0.0], [1.0], [-5.0], [2.0]])
    >>> FarthestFromMean(random_state=0).select(X, 2).tolist()
    [2, 3]
    """

    #: ``random_state`` is declared here once; subclasses extend the dict with
    #: ``{**BaseSelector._parameter_constraints, "param": [...]}``. A subclass without a
    #: ``random_state`` parameter works too (its queries are seeded by the caller's).
    _parameter_constraints: dict = {"random_state": ["random_state", np.random.Generator]}
    #: whether a larger ``score_samples`` value means a more informative sample
    _greater_is_better = True
    #: skip the validation of nested calls (see :func:`_selector_context`)
    _prefer_skip_nested_validation = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        return _Tags(
            **{f.name: getattr(tags, f.name) for f in fields(tags)},
            selector_tags=SelectorTags(),
        )

    @_selector_context
    def fit(self, X_labeled=None, y_labeled=None):
        """Remember labelled data to use when a query gives none.

        Parameters
        ----------
        X_labeled : array-like of shape (n_labeled, ...), default=None
        y_labeled : array-like of shape (n_labeled,), default=None

        Returns
        -------
        self : object
        """
        if X_labeled is not None and y_labeled is None:
            raise ValueError("X_labeled was given without y_labeled; pass both.")
        if X_labeled is not None and y_labeled is not None:
            n_x, n_y = n_samples(X_labeled, name="X_labeled"), len(y_labeled)
            if n_x != n_y:
                raise ValueError(
                    f"X_labeled has {n_x} samples but y_labeled has {n_y}; they must match."
                )
        self.X_labeled_ = X_labeled
        self.y_labeled_ = None if y_labeled is None else np.asarray(y_labeled)
        return self

    # -- the three public faces ------------------------------------------------------
    @_selector_context
    def select(self, X_pool, n_instances=1, *, classifier=None, X_labeled=None, y_labeled=None):
        """Choose ``n_instances`` samples of the pool.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...)
            Unlabelled pool: features, images or whatever ``classifier`` accepts.
        n_instances : int, default=1
            Number of samples to return; ``1 <= n_instances <= n_pool``.
        classifier : estimator or learner, default=None
            Model used for probabilities and embeddings (strategy dependent).
        X_labeled, y_labeled : array-like, default=None
            Labelled data (default: what :meth:`fit` stored, else the learner's
            ``X_training`` / ``y_training``).

        Returns
        -------
        query_idx : ndarray of shape (n_instances,), dtype=np.intp
            Unique indices into ``X_pool``, most informative first.
        """
        return self._run(classifier, X_pool, n_instances, X_labeled, y_labeled, None)[0]

    @_selector_context
    def __call__(
        self,
        classifier,
        X_pool,
        n_instances=1,
        *,
        X_labeled=None,
        y_labeled=None,
        random_state=None,
    ):
        """modAL query-strategy contract.

        Parameters
        ----------
        classifier : learner or estimator
        X_pool : array-like
        n_instances : int, default=1
        X_labeled, y_labeled : array-like, default=None
        random_state : int, Generator or None, default=None
            Used only when the selector's own ``random_state`` is None (lets
            :class:`peal_sk.ActiveLearner` seed strategies reproducibly).

        Returns
        -------
        query_idx : ndarray of shape (n_instances,), dtype=np.intp
        scores : ndarray of shape (n_instances,), dtype=float64
            The strategy's score of each returned sample.
        """
        return self._run(classifier, X_pool, n_instances, X_labeled, y_labeled, random_state)

    @_selector_context
    def score_samples(self, X_pool, *, classifier=None, X_labeled=None, y_labeled=None):
        """Per-sample informativeness score (see ``_greater_is_better`` for the direction).

        Strategies without a per-sample score (k-centre, including
        ``FeatureDistanceSelector(mode="kcenter")``, ActiveFT, k-means, random, the
        class-balanced and hybrid strategies) raise ``NotImplementedError``.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...)
            Unlabelled pool: features, images or whatever ``classifier`` accepts.
        classifier : estimator or learner, default=None
            Model used for probabilities and embeddings (strategy dependent).
        X_labeled, y_labeled : array-like, default=None
            Labelled data (default: what :meth:`fit` stored, else the learner's
            ``X_training`` / ``y_training``).

        Returns
        -------
        scores : ndarray of shape (n_pool,), dtype=float64
        """
        ctx = self._context(classifier, X_pool, X_labeled, y_labeled)
        if ctx.n_pool < 1:
            raise ValueError("X_pool is empty (0 samples); there is nothing to score.")
        return np.asarray(self._score(ctx), dtype=np.float64)

    def _score(self, ctx):
        raise NotImplementedError(f"{type(self).__name__} has no per-sample score.")

    # -- shared machinery --------------------------------------------------------------
    def _context(self, classifier, X_pool, X_labeled, y_labeled):
        if X_labeled is None and y_labeled is None:
            X_labeled = getattr(self, "X_labeled_", None)
            y_labeled = getattr(self, "y_labeled_", None)
        return QueryContext(X_pool, classifier=classifier, X_labeled=X_labeled, y_labeled=y_labeled)

    def _run(self, classifier, X_pool, n_instances, X_labeled, y_labeled, random_state):
        ctx = self._context(classifier, X_pool, X_labeled, y_labeled)
        n_instances = check_n_instances(n_instances, ctx.n_pool)
        self._check_context(ctx)
        own = getattr(self, "random_state", None)
        seed = own if own is not None else random_state
        rng = check_rng(seed)
        idx, scores = self._query(ctx, n_instances, rng)
        idx = np.asarray(idx, dtype=np.intp)
        scores = np.asarray(scores, dtype=np.float64)
        if idx.shape != (n_instances,) or np.unique(idx).size != n_instances:
            raise RuntimeError(  # a bug in the strategy, never a user error
                f"{type(self).__name__} returned {idx.size} indices "
                f"({np.unique(idx).size} unique) for n_instances={n_instances}."
            )
        return idx, scores

    def _check_context(self, ctx):
        """Cheap, strategy-specific checks before any expensive work (override)."""

    def _query(self, ctx, n_instances, rng):
        """Default for score-based strategies: top-k of :meth:`_score`."""
        from .utils._selection import top_k

        scores = np.asarray(self._score(ctx), dtype=np.float64)
        idx = top_k(scores, n_instances, rng, largest=self._greater_is_better)
        return idx, scores[idx]
