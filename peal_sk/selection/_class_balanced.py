"""Class-balanced wrapper (PEAL; "PCB", Bang et al., CVPR 2024)."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral, Real

import numpy as np
from sklearn import get_config
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from ..base import BaseSelector, function_form_constraints, get_selector_tags
from ..utils._validation import accepts_keyword, check_query_indices, check_rng
from ._registry import register_selector
from ._uncertainty import EntropySelector

__all__ = ["ClassBalancedSelector", "class_balanced_picks", "class_balanced_sampling"]


@validate_params(
    {
        "y_cand": ["array-like"],
        "classes": ["array-like"],
        "counts": ["array-like"],
        "n_instances": [Interval(Integral, 1, None, closed="left")],
        "rng": [np.random.Generator],
    },
    prefer_skip_nested_validation=True,
)
def _name(strategy):
    return getattr(strategy, "__name__", type(strategy).__name__)


def class_balanced_picks(y_cand, classes, counts, n_instances, rng):
    """The PCB picking rule on a candidate set (:ref:`algorithms`, "Class-balanced sampling").

    Until ``n_instances`` picks: take the class ``c*`` with the fewest labelled samples
    (ties: lowest class index), pick a seeded-random unpicked candidate predicted as
    ``c*`` and increment its count; if there is none, pick a random unpicked candidate
    and leave the counts unchanged.

    Parameters
    ----------
    y_cand : ndarray of shape (n_cand,)
        Predicted class of each candidate.
    classes : ndarray of shape (n_classes,)
        Class labels, in class-index order.
    counts : ndarray of shape (n_classes,)
        Labelled samples per class (zero allowed).
    n_instances : int
        Number of picks, ``<= n_cand``.
    rng : numpy.random.Generator

    Returns
    -------
    picks : ndarray of shape (n_instances,), np.intp
        Positions into the candidate set, in pick order.

    Raises
    ------
    ValueError
        When ``counts`` and ``classes`` differ in length, or ``n_instances`` exceeds the
        number of candidates.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import class_balanced_picks
    >>> y_cand = np.array([0, 0, 0, 1])
    >>> picks = class_balanced_picks(y_cand, np.array([0, 1]), np.array([5, 0]), 2,
    ...                              np.random.default_rng(0))
    >>> int(picks[0])  # class 1 has fewer labels, and only candidate 3 is predicted 1
    3
    """
    y_cand, classes = np.asarray(y_cand), np.asarray(classes)
    if len(counts) != len(classes):
        raise ValueError(
            f"counts has {len(counts)} entries but classes has {len(classes)}; "
            "give one count per class."
        )
    if n_instances > len(y_cand):
        raise ValueError(
            f"n_instances={n_instances} is larger than the number of candidates "
            f"len(y_cand)={len(y_cand)}."
        )
    return _class_balanced_picks(y_cand, classes, counts, n_instances, rng)


def _class_balanced_picks(y_cand, classes, counts, n_instances, rng):
    """The kernel of :func:`class_balanced_picks`, on validated inputs."""
    counts = np.array(counts, dtype=np.int64)
    order = rng.permutation(len(y_cand))
    y_ord = y_cand[order]
    queues = [list(order[y_ord == c][::-1]) for c in classes]  # pop() from the end
    global_queue = list(order[::-1])
    picked = np.zeros(len(y_cand), dtype=bool)
    picks = []
    while len(picks) < n_instances:
        c = int(np.argmin(counts))  # ties: lowest class index
        queue = queues[c]
        while queue and picked[queue[-1]]:
            queue.pop()
        if queue:
            p = queue.pop()
            counts[c] += 1
        else:
            while picked[global_queue[-1]]:
                global_queue.pop()
            p = global_queue.pop()
        picked[p] = True
        picks.append(p)
    return np.asarray(picks, dtype=np.intp)


class ClassBalancedSelector(BaseSelector):
    """Class-balanced wrapper around any base strategy (PCB).

    1. The base strategy proposes its top ``n_cand = max(n_instances, int(gamma * n_pool))``
       candidates.
    2. ``counts[c]`` is the number of labelled samples of true class ``c``, over every
       class known to the estimator (``classes_``, zero allowed) and the labels.
    3. Candidates are picked with :func:`class_balanced_picks`, using the model's
       predicted classes as pseudo-labels.

    Parameters
    ----------
    base : selector or callable
        A :class:`~peal_sk.base.BaseSelector` (it shares the probabilities and embeddings
        computed for this query) or any modAL query function.
    gamma : float, default=0.1
        Candidate fraction of the pool, in (0, 1].
    random_state : int, Generator or None, default=None
        Seeds the picks (and the base strategy when its own ``random_state`` is None).

    See Also
    --------
    class_balanced_sampling : The modAL function form.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import ClassBalancedSelector, EntropySelector
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[:60], y[:60])  # classes 0, 1 only
    >>> sel = ClassBalancedSelector(EntropySelector(), random_state=0)
    >>> sel.select(X, 4, classifier=clf, X_labeled=X[:60], y_labeled=y[:60]).shape
    (4,)
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "base": [HasMethods(["select"]), callable],
        "gamma": [Interval(Real, 0, 1, closed="right")],
    }

    #: the base strategy comes from the user: validate it inside our calls
    _prefer_skip_nested_validation = False

    def __init__(self, base, *, gamma=0.1, random_state=None):
        self.base = base
        self.gamma = gamma
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.cold_start = False
        tags.selector_tags.requires_proba = True
        tags.selector_tags.requires_labels = True
        if isinstance(self.base, BaseSelector):
            tags.selector_tags.uses_embeddings = get_selector_tags(self.base).uses_embeddings
        return tags

    def _check_context(self, ctx):
        if ctx.y_labeled is None or ctx.n_labeled == 0:
            raise ValueError(
                "ClassBalancedSelector needs the labels of the labelled set to count "
                "samples per class; got no labels (y_labeled is empty or None)."
            )
        ctx.require_proba_model("ClassBalancedSelector")
        # the user's base selector is never modified: it is cloned, and what a query
        # records lands on the clone, ``base_``
        self.base_ = clone(self.base) if isinstance(self.base, BaseSelector) else self.base
        if isinstance(self.base_, BaseSelector):
            if not get_config()["skip_parameter_validation"]:
                self.base_._validate_params()
            self.base_._check_context(ctx)

    def _query(self, ctx, n_instances, rng):
        n_cand = min(ctx.n_pool, max(n_instances, int(self.gamma * ctx.n_pool)))
        base = self.base_
        if isinstance(base, BaseSelector):
            own = getattr(base, "random_state", None)
            base_rng = rng if own is None else check_rng(own)
            cand, cand_scores = base._query(ctx, n_cand, base_rng)
        else:
            # a modAL function: seed it from our rng, and pass the labelled data when it
            # takes them, so every random choice flows from random_state
            kwargs = {}
            if accepts_keyword(self.base, "random_state"):
                kwargs["random_state"] = int(rng.integers(np.iinfo(np.uint32).max))
            if ctx.X_labeled is not None:
                for key, value in (("X_labeled", ctx.X_labeled), ("y_labeled", ctx.y_labeled)):
                    if accepts_keyword(self.base, key):
                        kwargs[key] = value
            result = base(ctx.classifier, ctx.X_pool, n_instances=n_cand, **kwargs)
            cand, cand_scores = result if isinstance(result, tuple) else (result, None)
            cand = check_query_indices(
                cand, ctx.n_pool, n_instances=n_cand, name=f"base={_name(self.base)}"
            )
            if cand_scores is None:
                cand_scores = np.zeros(len(cand))
        cand = np.asarray(cand, dtype=np.intp)
        cand_scores = np.asarray(cand_scores, dtype=np.float64).reshape(-1)
        if cand_scores.shape != cand.shape:
            raise ValueError(
                f"base={_name(self.base)} returned {cand.size} indices but {cand_scores.size} "
                "scores; they must have the same length."
            )
        y_pred = ctx.predicted_labels()
        classes = ctx.classes()
        labels = np.unique(ctx.y_labeled)
        classes = labels if classes is None else np.union1d(classes, labels)
        counts = np.array([(ctx.y_labeled == c).sum() for c in classes])
        picks = _class_balanced_picks(y_pred[cand], classes, counts, n_instances, rng)
        return cand[picks], cand_scores[picks]


@validate_params(
    function_form_constraints(ClassBalancedSelector, base=[HasMethods(["select"]), callable, None]),
    prefer_skip_nested_validation=False,
)
def class_balanced_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    base=None,
    gamma=0.1,
    X_labeled=None,
    y_labeled=None,
    random_state=None,
):
    """modAL query strategy: class-balanced sampling (see :class:`ClassBalancedSelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba``
    X_pool : array-like
    n_instances : int, default=1
    base : selector or callable, default=None
        Base strategy; None means :class:`~peal_sk.selection.EntropySelector`.
    gamma : float, default=0.1
    X_labeled, y_labeled : array-like, default=None
        Default: the learner's training data (only ``y_labeled`` is used).
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        The base strategy's scores of the returned samples.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import class_balanced_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx, _ = class_balanced_sampling(clf, X, 3, y_labeled=y[::10], random_state=0)
    >>> idx.shape
    (3,)
    """
    if base is None:
        from ._uncertainty import EntropySelector

        base = EntropySelector()
    selector = ClassBalancedSelector(base, gamma=gamma, random_state=random_state)
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


register_selector(
    "class_balanced",
    ClassBalancedSelector,
    class_balanced_sampling,
    defaults={"base": EntropySelector()},
)
