"""Feature-distance sampling (PEAL "Featdist"), and the k-centre greedy selector."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.utils._param_validation import StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._neighbors import kcenter_greedy, nearest_distances
from ..utils._parallel import N_JOBS_CONSTRAINT
from ..utils._selection import top_k
from ..utils._validation import check_features
from ._registry import register_selector

__all__ = [
    "FeatureDistanceSelector",
    "KCenterSelector",
    "featdist_sampling",
    "feature_distance_scores",
    "kcenter_sampling",
]

_MODES = ("class_mean", "nearest", "kcenter")
_UNKNOWN = ("last", "first", "exclude")


@validate_params(
    {
        "X_pool": ["array-like"],
        "X_labeled": ["array-like"],
        "y_labeled": ["array-like", None],
        "y_pred": ["array-like", None],
        # per-sample scores only: "kcenter" is sequential (kcenter_sampling)
        "mode": [StrOptions({"class_mean", "nearest"})],
        "backend": [StrOptions({"auto", "faiss", "numpy"})],
        "n_jobs": N_JOBS_CONSTRAINT,
    },
    prefer_skip_nested_validation=True,
)
def feature_distance_scores(
    X_pool,
    X_labeled,
    y_labeled=None,
    y_pred=None,
    *,
    mode="class_mean",
    backend="auto",
    n_jobs=None,
):
    """Per-sample feature-distance scores (larger is more informative).

    Parameters
    ----------
    X_pool : array-like of shape (n_pool, n_features)
        Pool embeddings.
    X_labeled : array-like of shape (n_labeled, n_features)
        Labelled embeddings.
    y_labeled : array-like of shape (n_labeled,), default=None
        True labels of the labelled samples (``mode="class_mean"``).
    y_pred : array-like of shape (n_pool,), default=None
        Predicted class of each pool sample (``mode="class_mean"``).
    mode : {"class_mean", "nearest"}, default="class_mean"
        ``"class_mean"``: ``||x - mu_{y_pred(x)}||`` with ``mu_c`` the mean labelled
        embedding of true class ``c``; samples whose predicted class has no labelled sample
        get NaN. ``"nearest"``: distance to the nearest labelled sample.
    backend : {"auto", "faiss", "numpy"}, default="auto"
        Distance backend for ``mode="nearest"``.
    n_jobs : int, default=None
        ``mode="nearest"``: blocks of pool rows searched in parallel through joblib
        (see :func:`peal_sk.utils.nearest_distances`); None means 1 unless in a
        :func:`joblib.parallel_config` context. The scores do not depend on it.

    Returns
    -------
    scores : ndarray of shape (n_pool,)
        Euclidean distances (NaN for unknown-class samples in ``class_mean`` mode).

    Examples
    --------
    >>> from peal_sk.selection import feature_distance_scores
    >>> feature_distance_scores([[0, 0], [3, 4]], [[0, 0]], mode="nearest")
    array([0., 5.])
    >>> feature_distance_scores([[0, 0], [3, 4]], [[0, 0], [2, 0]], [0, 0], [0, 1]).tolist()
    [1.0, nan]
    """
    X_pool = check_features(X_pool, name="X_pool")
    X_labeled = check_features(X_labeled, name="X_labeled", n_features=X_pool.shape[1])
    if mode == "nearest":
        return nearest_distances(X_pool, X_labeled, backend=backend, n_jobs=n_jobs)[0]
    if y_labeled is None or y_pred is None:
        raise ValueError("mode='class_mean' needs y_labeled and y_pred.")
    y_labeled, y_pred = np.asarray(y_labeled), np.asarray(y_pred)
    if len(y_labeled) != X_labeled.shape[0]:
        raise ValueError(
            f"X_labeled has {X_labeled.shape[0]} samples but y_labeled has {len(y_labeled)}."
        )
    if len(y_pred) != X_pool.shape[0]:
        raise ValueError(f"X_pool has {X_pool.shape[0]} samples but y_pred has {len(y_pred)}.")
    classes, y_idx = np.unique(y_labeled, return_inverse=True)
    means = np.zeros((len(classes), X_labeled.shape[1]))
    np.add.at(means, y_idx, X_labeled)
    means /= np.bincount(y_idx, minlength=len(classes))[:, None]
    pos = np.searchsorted(classes, y_pred)
    pos = np.clip(pos, 0, len(classes) - 1)
    known = classes[pos] == y_pred
    scores = np.full(X_pool.shape[0], np.nan)
    if known.any():
        diff = X_pool[known] - means[pos[known]].astype(X_pool.dtype)
        scores[known] = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
    return scores


class FeatureDistanceSelector(BaseSelector):
    """Feature-distance sampling (PEAL "Featdist"): pool samples far from what is labelled.

    Embeddings come from ``classifier.transform(X)`` when the model offers it (the
    LoRA-adapted backbone of :class:`~peal_sk.PEALClassifier`), the steps before the final
    estimator of a Pipeline, else ``X`` itself.

    Parameters
    ----------
    mode : {"class_mean", "nearest", "kcenter"}, default="class_mean"
        * ``"class_mean"`` (PEAL authors' definition): distance of each sample to the mean
          labelled embedding of its *predicted* class; the farthest first.
        * ``"nearest"``: distance to the nearest labelled sample; the farthest first.
        * ``"kcenter"``: greedy k-centre (core-set): each pick is the sample farthest from
          the labelled samples and the earlier picks. Works without labels.
    unknown : {"last", "first", "exclude"}, default="last"
        ``class_mean`` only: where samples go whose predicted class has no labelled
        sample. ``"last"`` ranks them after every known-class sample (score ``-inf``),
        ``"first"`` before (score ``+inf``), ``"exclude"`` never selects them (the PEAL
        authors' code gives them a sentinel score and skips them); asking for more than
        the known-class samples is then an error.
    backend : {"auto", "faiss", "numpy"}, default="auto"
        Distance backend: ``"auto"`` uses faiss for float32 embeddings, numpy for float64.
    random_state : int, Generator or None, default=None
        Seeds tie-breaking and the first k-centre pick without labels.
    n_jobs : int, default=None
        Blocks of distance rows (``"nearest"``; the initial distances to the labelled
        samples of ``"kcenter"``) computed in parallel through joblib, so that
        ``with joblib.parallel_config(backend="dask"):`` spreads them over a Dask
        cluster. None means 1 unless in a :func:`joblib.parallel_config` context, -1
        means every worker. The selection does not depend on it. ``"class_mean"`` is
        one pass over the pool and the k-centre greedy loop is sequential: both run in
        this process.

    See Also
    --------
    featdist_sampling : The modAL function form.
    feature_distance_scores : The per-sample scores.
    KCenterSelector : k-centre greedy as a cold-start selector.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import FeatureDistanceSelector
    >>> X_pool = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> sel = FeatureDistanceSelector(mode="nearest", random_state=0)
    >>> sel.select(X_pool, 1, X_labeled=[[0.0, 0.0]], y_labeled=[0]).tolist()
    [2]
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "mode": [StrOptions(set(_MODES))],
        "unknown": [StrOptions(set(_UNKNOWN))],
        "backend": [StrOptions({"auto", "faiss", "numpy"})],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self, mode="class_mean", *, unknown="last", backend="auto", random_state=None, n_jobs=None
    ):
        self.mode = mode
        self.unknown = unknown
        self.backend = backend
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        if self.mode != "kcenter":  # "nearest" and "class_mean" measure from labelled data
            tags.selector_tags.cold_start = False
            tags.selector_tags.requires_labels = True
            tags.selector_tags.requires_proba = self.mode == "class_mean"
        return tags

    def _check_context(self, ctx):
        if self.mode == "kcenter":
            return
        if ctx.n_labeled == 0 or ctx.X_labeled is None:
            raise ValueError(
                f"FeatureDistanceSelector(mode={self.mode!r}) needs labelled data "
                "(X_labeled and y_labeled, or a learner with training data); got none. "
                "Use mode='kcenter' or a cold-start strategy (BiLAFSelector) instead."
            )
        if self.mode == "class_mean":
            ctx.require_proba_model(f"FeatureDistanceSelector(mode={self.mode!r})")

    def _score(self, ctx):
        if self.mode == "kcenter":
            raise NotImplementedError(
                "mode='kcenter' is sequential and has no per-sample score; use select()."
            )
        self._check_context(ctx)
        emb, emb_lab = ctx.pool_embeddings(), ctx.labeled_embeddings()
        if self.mode == "nearest":
            return feature_distance_scores(
                emb, emb_lab, mode="nearest", backend=self.backend, n_jobs=self.n_jobs
            )
        scores = feature_distance_scores(
            emb, emb_lab, ctx.y_labeled, ctx.predicted_labels(), mode="class_mean"
        )
        scores[np.isnan(scores)] = -np.inf if self.unknown != "first" else np.inf
        return scores

    def _query(self, ctx, n_instances, rng):
        if self.mode == "kcenter":
            return kcenter_greedy(
                ctx.pool_embeddings(),
                n_instances,
                rng,
                X_labeled=ctx.labeled_embeddings(),
                backend=self.backend,
                n_jobs=self.n_jobs,
            )
        scores = self._score(ctx)
        eligible = None
        if self.mode == "class_mean" and self.unknown == "exclude":
            eligible = np.isfinite(scores)
            if eligible.sum() < n_instances:
                raise ValueError(
                    f"n_instances={n_instances} but only {int(eligible.sum())} pool samples "
                    "are predicted as a class that has labelled samples, and "
                    "unknown='exclude' skips the others; use unknown='last'."
                )
        idx = top_k(scores, n_instances, rng, eligible=eligible)
        return idx, scores[idx]


class KCenterSelector(BaseSelector):
    """Greedy k-centre selection (core-set; the "FDS" baseline of the BiLAF paper).

    Each pick is the pool sample farthest from the labelled samples (if any) and the
    earlier picks; without labelled samples the first pick is seeded-random. Works on
    embeddings (``classifier.transform``) or raw 2-D features, with no labels and no
    fitted model, so it is a cold-start strategy.

    Parameters
    ----------
    backend : {"auto", "faiss", "numpy"}, default="auto"
        Backend of the initial distances to labelled samples.
    random_state : int, Generator or None, default=None
        Seeds the first pick and tie-breaking.
    n_jobs : int, default=None
        The initial distances to the labelled samples, in blocks computed in parallel
        through joblib (``joblib.parallel_config(backend="dask")`` spreads them over a
        Dask cluster); None means 1 unless in a :func:`joblib.parallel_config` context.
        The greedy loop itself is sequential and runs in this process: its per-pick
        update is too short to pay for a round trip to the workers. The picks do not
        depend on ``n_jobs``.

    See Also
    --------
    kcenter_sampling : The modAL function form.
    FeatureDistanceSelector : ``mode="kcenter"`` is the same algorithm.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import KCenterSelector
    >>> X = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> sorted(KCenterSelector(random_state=0).select(X, 2).tolist()) in ([0, 2], [0, 3],
    ...     [1, 2], [1, 3])
    True
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "backend": [StrOptions({"auto", "faiss", "numpy"})],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(self, *, backend="auto", random_state=None, n_jobs=None):
        self.backend = backend
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _query(self, ctx, n_instances, rng):
        return kcenter_greedy(
            ctx.pool_embeddings(),
            n_instances,
            rng,
            X_labeled=ctx.labeled_embeddings(),
            backend=self.backend,
            n_jobs=self.n_jobs,
        )


@validate_params(
    function_form_constraints(FeatureDistanceSelector), prefer_skip_nested_validation=False
)
def featdist_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    mode="class_mean",
    unknown="last",
    X_labeled=None,
    y_labeled=None,
    backend="auto",
    random_state=None,
    n_jobs=None,
):
    """modAL query strategy: feature-distance sampling (see :class:`FeatureDistanceSelector`).

    Parameters
    ----------
    classifier : learner or estimator
    X_pool : array-like
    n_instances : int, default=1
    mode : {"class_mean", "nearest", "kcenter"}, default="class_mean"
    unknown : {"last", "first", "exclude"}, default="last"
    X_labeled, y_labeled : array-like, default=None
        Default: the learner's ``X_training`` / ``y_training``.
    backend : {"auto", "faiss", "numpy"}, default="auto"
    random_state : int, Generator or None, default=None
    n_jobs : int, default=None
        See :class:`FeatureDistanceSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Distances of the returned samples.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import featdist_sampling
    >>> X_pool = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> idx, d = featdist_sampling(None, X_pool, 2, mode="nearest",
    ...                            X_labeled=[[0.0, 0.0]], y_labeled=[0], random_state=0)
    >>> idx.tolist(), d.tolist()
    ([2, 1], [5.0, 1.0])
    """
    selector = FeatureDistanceSelector(
        mode=mode, unknown=unknown, backend=backend, random_state=random_state, n_jobs=n_jobs
    )
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


@validate_params(function_form_constraints(KCenterSelector), prefer_skip_nested_validation=False)
def kcenter_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    X_labeled=None,
    y_labeled=None,
    backend="auto",
    random_state=None,
    n_jobs=None,
):
    """modAL query strategy: greedy k-centre (see :class:`KCenterSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
    X_pool : array-like
    n_instances : int, default=1
    X_labeled, y_labeled : array-like, default=None
    backend : {"auto", "faiss", "numpy"}, default="auto"
    random_state : int, Generator or None, default=None
    n_jobs : int, default=None
        See :class:`KCenterSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Distance of each pick to its nearest centre when picked (``inf`` for a random
        first pick).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import kcenter_sampling
    >>> X = np.array([[0.0], [1.0], [10.0]])
    >>> kcenter_sampling(None, X, 1, X_labeled=[[0.0]], y_labeled=[0])[0].tolist()
    [2]
    """
    selector = KCenterSelector(backend=backend, random_state=random_state, n_jobs=n_jobs)
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


register_selector(
    "featdist", FeatureDistanceSelector, featdist_sampling, defaults={"mode": "class_mean"}
)
register_selector("kcenter", KCenterSelector, kcenter_sampling)
