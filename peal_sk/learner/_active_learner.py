"""A drop-in replacement for modAL's ``ActiveLearner`` that works on today's stack."""

# SPDX-License-Identifier: BSD-3-Clause

import inspect
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import scipy.sparse as sp

from ..base import BaseSelector
from ..selection._uncertainty import least_confident_sampling
from ..utils._validation import accepts_keyword, check_query_indices, check_rng, n_samples

__all__ = ["ActiveLearner", "QueryRecord"]


@dataclass(frozen=True)
class QueryRecord:
    """One entry of :attr:`ActiveLearner.history_`.

    Attributes
    ----------
    cycle : int
        0 for the first query, 1 for the second, ...
    query_idx : ndarray of np.intp
        Indices returned by the strategy (into that query's ``X_pool``).
    scores : ndarray of float or None
        The strategy's scores of those samples (None if it returned none).
    n_labeled : int
        Size of the training set when the query was made.
    n_pool : int
        Size of the pool that was queried.
    strategy : str
        Name of the query strategy.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk import ActiveLearner
    >>> from peal_sk.selection import random_sampling
    >>> X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    >>> learner = ActiveLearner(LogisticRegression(), random_sampling, X[:4], y[:4],
    ...                         random_state=0)
    >>> _ = learner.query(X[4:], n_instances=2)
    >>> record = learner.history_[0]
    >>> record.cycle, record.query_idx.shape, record.n_labeled, record.n_pool, record.strategy
    (0, (2,), 4, 6, 'random_sampling')
    """

    cycle: int
    query_idx: np.ndarray
    scores: np.ndarray | None
    n_labeled: int
    n_pool: int
    strategy: str


def _is_pandas(X):
    return type(X).__module__.startswith("pandas")


def retrieve_rows(X, idx):
    """Rows ``idx`` of an array, sparse matrix, DataFrame/Series or list."""
    if _is_pandas(X):
        return X.iloc[idx]
    if isinstance(X, list | tuple):
        return [X[i] for i in idx]
    return X[idx]


def stack_rows(a, b):
    """Concatenate two blocks of samples of the same kind along the first axis."""
    if _is_pandas(a) or _is_pandas(b):
        import pandas as pd

        if type(a) is not type(b):
            raise TypeError(
                f"New samples of type {type(b).__name__} cannot be added to training "
                f"samples of type {type(a).__name__}; pass the same kind (e.g. both "
                "DataFrames with the same columns)."
            )
        if hasattr(a, "columns") and not a.columns.equals(b.columns):
            raise ValueError(
                f"New samples have columns {list(b.columns)} but the training samples "
                f"have {list(a.columns)}; they must match (pandas would fill NaN)."
            )
        return pd.concat([a, b])
    if sp.issparse(a) or sp.issparse(b):
        return sp.vstack([a, b], format="csr")
    if isinstance(a, list) and isinstance(b, list | tuple):
        return a + list(b)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"New samples of shape {b.shape[1:]} do not match the training samples of "
            f"shape {a.shape[1:]}."
        )
    return np.concatenate([a, b], axis=0)


def _strategy_name(strategy):
    if isinstance(strategy, BaseSelector):
        return type(strategy).__name__
    return getattr(strategy, "__name__", type(strategy).__name__)


def _requested_count(strategy, query_args, query_kwargs):
    """The ``n_instances`` a query asks for: given (first positional argument after the
    pool, or by keyword), else the strategy's own default; None when unknown."""
    if query_args:
        n = query_args[0]
    elif "n_instances" in query_kwargs:
        n = query_kwargs["n_instances"]
    else:
        try:
            param = inspect.signature(strategy).parameters.get("n_instances")
        except (TypeError, ValueError):
            return None
        if param is None or param.default is inspect.Parameter.empty:
            return None
        n = param.default
    if isinstance(n, Integral | np.integer) and not isinstance(n, bool):
        return int(n)
    return None  # the strategy itself decides what it accepts


def _accepts_random_state(strategy):
    return isinstance(strategy, BaseSelector) or accepts_keyword(strategy, "random_state")


class ActiveLearner:
    """Pool-based active learner, a drop-in for ``modAL.models.ActiveLearner``.

    Same constructor, methods and return shapes as modAL 0.4.2.1, but it works with
    current scikit-learn, NumPy 2 and pandas 2, with N-D image arrays, lists and arrays of
    file paths; it is seeded by ``random_state`` and keeps a history of its queries.

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn compatible classifier (a Pipeline, a PEALClassifier, ...).
    query_strategy : callable, default=least_confident_sampling
        ``fn(learner, X_pool, n_instances=1, **kwargs) -> (query_idx, scores)``: a peal_sk
        selector instance, a peal_sk ``*_sampling`` function or a modAL strategy.
    X_training, y_training : array-like, default=None
        Initial labelled data. The estimator is fitted in ``__init__`` only when they are
        given (never without training data).
    bootstrap_init : bool, default=False
        Fit the initial model on a bootstrap sample of the training data.
    on_transformed : bool, default=False
        Kept for modAL signature compatibility; only False is supported.
    random_state : int, Generator or None, default=None
        Seeds bootstrap sampling and, through a fresh seed per query, every strategy whose
        own ``random_state`` is None; the same int reproduces a whole run.
    **fit_kwargs
        Passed to ``estimator.fit`` in ``__init__``.

    Attributes
    ----------
    X_training, y_training : array-like or None
        All labelled data taught so far.
    history_ : list of QueryRecord
        One record per :meth:`query` call.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk import ActiveLearner
    >>> from peal_sk.selection import entropy_sampling
    >>> X, y = load_digits(return_X_y=True)
    >>> learner = ActiveLearner(LogisticRegression(max_iter=200), entropy_sampling,
    ...                         X_training=X[:20], y_training=y[:20], random_state=0)
    >>> idx, X_query = learner.query(X[20:], n_instances=5)
    >>> learner.teach(X_query, y[20:][idx])
    >>> len(learner.y_training), len(learner.history_)
    (25, 1)
    """

    def __init__(
        self,
        estimator,
        query_strategy=least_confident_sampling,
        X_training=None,
        y_training=None,
        bootstrap_init=False,
        on_transformed=False,
        *,
        random_state=None,
        **fit_kwargs,
    ):
        if not callable(query_strategy):
            raise TypeError(
                "query_strategy must be callable as fn(learner, X_pool, n_instances); got "
                f"{query_strategy!r}."
            )
        if on_transformed:
            raise NotImplementedError("on_transformed=True is not supported by peal_sk.")
        if (X_training is None) != (y_training is None):
            raise ValueError("X_training and y_training must be given together.")
        self.estimator = estimator
        self.query_strategy = query_strategy
        self.on_transformed = on_transformed
        self.random_state = random_state
        self._rng = check_rng(random_state)
        self.X_training = X_training
        self.y_training = None if y_training is None else self._check_y(X_training, y_training)
        self.history_ = []
        if X_training is not None:
            self._fit_to_known(bootstrap=bootstrap_init, **fit_kwargs)

    # -- data bookkeeping --------------------------------------------------------------
    @staticmethod
    def _check_y(X, y):
        y = np.asarray(y)
        n_x = n_samples(X, name="X")
        if y.ndim == 0 or len(y) != n_x:
            raise ValueError(
                f"X has {n_x} samples but y has {y.size if y.ndim == 0 else len(y)} labels."
            )
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError(
                f"y contains NaN labels (first at position {int(np.flatnonzero(np.isnan(y))[0])}"
                "); give every sample a label. Nothing was taught."
            )
        return y

    @staticmethod
    def _label_kind(y):
        """``"numeric"``, ``"string"`` or None (other / empty) for a label array."""
        if y.dtype.kind in "biuf":
            return "numeric"
        if y.dtype.kind in "US":
            return "string"
        if y.dtype.kind == "O" and len(y):
            if all(isinstance(v, str) for v in y):
                return "string"
            if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in y):
                return "numeric"
        return None

    def _add_training_data(self, X, y):
        y = self._check_y(X, y)
        if self.y_training is not None and len(self.y_training) and len(y):
            old, new = self._label_kind(self.y_training), self._label_kind(y)
            if old is not None and new is not None and old != new:
                raise TypeError(
                    f"y holds {new} labels (e.g. {y[0]!r}) but the labels taught so far are "
                    f"{old} (e.g. {self.y_training[0]!r}); mixing them would silently turn "
                    "every label into a string. Use one label type. Nothing was taught."
                )
        if self.X_training is None:
            self.X_training, self.y_training = X, y
        else:
            self.X_training = stack_rows(self.X_training, X)
            self.y_training = np.concatenate([self.y_training, y])

    def _fit_to_known(self, bootstrap=False, **fit_kwargs):
        if self.X_training is None:
            raise ValueError("The learner has no training data yet; teach() some first.")
        if bootstrap:
            n = len(self.y_training)
            idx = self._rng.integers(0, n, size=n)
            self.estimator.fit(
                retrieve_rows(self.X_training, idx), self.y_training[idx], **fit_kwargs
            )
        else:
            self.estimator.fit(self.X_training, self.y_training, **fit_kwargs)
        return self

    @property
    def n_labeled(self):
        """Number of labelled samples taught so far."""
        return 0 if self.y_training is None else len(self.y_training)

    # -- modAL API ---------------------------------------------------------------------
    def fit(self, X, y, bootstrap=False, **fit_kwargs):
        """Forget the training data, store ``(X, y)`` and fit the estimator on it.

        Parameters
        ----------
        X : array-like
            Labelled samples, in any form the estimator accepts.
        y : array-like of shape (n_samples,)
            Their labels.
        bootstrap : bool, default=False
            Fit on a bootstrap sample of ``(X, y)``.
        **fit_kwargs
            Passed to ``estimator.fit``.

        Returns
        -------
        self : ActiveLearner
        """
        self.X_training, self.y_training = X, self._check_y(X, y)
        return self._fit_to_known(bootstrap=bootstrap, **fit_kwargs)

    def teach(self, X, y, bootstrap=False, only_new=False, **fit_kwargs):
        """Add labelled samples and refit the estimator on all labelled data.

        Parameters
        ----------
        X : array-like
            New samples (same kind as the training data).
        y : array-like
            Their labels.
        bootstrap : bool, default=False
            Fit on a bootstrap sample of the training data.
        only_new : bool, default=False
            Fit on the new samples only (for models that train incrementally); they are
            still added to the training data.
        **fit_kwargs
            Passed to ``estimator.fit``.

        Raises
        ------
        ValueError, TypeError
            For NaN labels or labels of another type (numbers after strings or the
            reverse). Teaching is all or nothing: when validation or the fit fails, the
            training data is left as it was.
        """
        previous = self.X_training, self.y_training
        self._add_training_data(X, y)
        try:
            if only_new:
                self.estimator.fit(X, self._check_y(X, y), **fit_kwargs)
            else:
                self._fit_to_known(bootstrap=bootstrap, **fit_kwargs)
        except BaseException:
            # all or nothing: a failed fit does not keep the new rows (which would break
            # every later teach)
            self.X_training, self.y_training = previous
            raise

    def query(self, X_pool, *query_args, return_metrics=False, **query_kwargs):
        """Ask the strategy for the most informative samples of ``X_pool``.

        The query is recorded in :attr:`history_`.

        Parameters
        ----------
        X_pool : array-like
            The pool: an array, a sparse matrix, a DataFrame, a list (of images or file
            paths), in any form the estimator and the strategy accept.
        *query_args
            Passed to the strategy after ``X_pool`` (modAL style: ``n_instances``).
        return_metrics : bool, default=False
            Also return the strategy's scores of the returned samples.
        **query_kwargs
            Passed to the strategy, e.g. ``n_instances=10`` or ``n_cores=30`` for
            :func:`~peal_sk.selection.bilaf`. Unless ``random_state`` is among them, a
            strategy that accepts one gets a fresh seed drawn from the learner's
            ``random_state``.

        Returns
        -------
        query_idx : ndarray of np.intp
            Indices into ``X_pool``, most informative first.
        X_query : array-like
            ``X_pool[query_idx]`` (rows of a DataFrame, items of a list).
        scores : ndarray, only if ``return_metrics=True``
            The strategy's scores of the returned samples.
        """
        strategy = self.query_strategy
        if "random_state" not in query_kwargs and _accepts_random_state(strategy):
            query_kwargs["random_state"] = int(self._rng.integers(np.iinfo(np.uint32).max))
        result = strategy(self, X_pool, *query_args, **query_kwargs)
        if isinstance(result, tuple) and len(result) == 2:
            query_idx, scores = result
        else:  # strategies that return only indices
            query_idx, scores = result, None
        n_pool = n_samples(X_pool)
        name = _strategy_name(strategy)
        query_idx = check_query_indices(
            query_idx,
            n_pool,
            n_instances=_requested_count(strategy, query_args, query_kwargs),
            name=f"query_strategy {name}",
        )
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.size != query_idx.size:
                raise ValueError(
                    f"query_strategy {name} returned {query_idx.size} indices but "
                    f"{scores.size} scores; they must have the same length."
                )
        self.history_.append(
            QueryRecord(
                cycle=len(self.history_),
                query_idx=query_idx,
                scores=scores,
                n_labeled=self.n_labeled,
                n_pool=n_pool,
                strategy=_strategy_name(strategy),
            )
        )
        X_query = retrieve_rows(X_pool, query_idx)
        if return_metrics:
            return query_idx, X_query, scores
        return query_idx, X_query

    def predict(self, X, **predict_kwargs):
        """``estimator.predict(X)``.

        Parameters
        ----------
        X : array-like
            Samples to predict.
        **predict_kwargs
            Passed to ``estimator.predict``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            What the estimator predicts.
        """
        return self.estimator.predict(X, **predict_kwargs)

    def predict_proba(self, X, **predict_proba_kwargs):
        """``estimator.predict_proba(X)``.

        Parameters
        ----------
        X : array-like
            Samples to predict.
        **predict_proba_kwargs
            Passed to ``estimator.predict_proba``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities from the estimator.
        """
        return self.estimator.predict_proba(X, **predict_proba_kwargs)

    def score(self, X, y, **score_kwargs):
        """``estimator.score(X, y)`` (accuracy for classifiers).

        Parameters
        ----------
        X : array-like
            Test samples.
        y : array-like of shape (n_samples,)
            Their true labels.
        **score_kwargs
            Passed to ``estimator.score``.

        Returns
        -------
        score : float
            The estimator's score.
        """
        return self.estimator.score(X, y, **score_kwargs)

    def __repr__(self):
        return (
            f"ActiveLearner(estimator={self.estimator!r}, "
            f"query_strategy={_strategy_name(self.query_strategy)}, "
            f"n_labeled={self.n_labeled})"
        )
