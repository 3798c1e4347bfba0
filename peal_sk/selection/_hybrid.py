"""Hybrid uncertainty + diversity sampling (the PEAL paper's open question)."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._neighbors import kcenter_greedy
from ..utils._selection import top_k
from ._registry import register_selector
from ._uncertainty import entropy_scores, least_confident_scores, margin_scores

__all__ = ["HybridSelector", "hybrid_sampling"]

_UNCERTAINTY = {
    "entropy": (entropy_scores, True),
    "margin": (margin_scores, False),
    "least_confident": (least_confident_scores, True),
}


class HybridSelector(BaseSelector):
    """Uncertainty candidates, then k-centre diversity among them.

    Definition (``B = n_instances``):

    1. candidates = the ``min(n_pool, candidate_factor * B)`` most uncertain pool samples
       under ``uncertainty`` (ties by a seeded permutation);
    2. greedy k-centre over the candidates' embeddings: each pick is the candidate
       farthest from the labelled samples and the earlier picks.

    With ``candidate_factor=1`` this is plain uncertainty sampling (in k-centre order); as
    ``candidate_factor`` grows it tends to k-centre. It avoids the known failure of pure
    uncertainty sampling with batches: many near-duplicate uncertain samples.

    Parameters
    ----------
    uncertainty : {"entropy", "margin", "least_confident"}, default="entropy"
    candidate_factor : int, default=10
        Candidates per requested instance, >= 1.
    backend : {"auto", "faiss", "numpy"}, default="auto"
    random_state : int, Generator or None, default=None

    See Also
    --------
    hybrid_sampling : The modAL function form.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import HybridSelector
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> HybridSelector(random_state=0).select(
    ...     X, 3, classifier=clf, X_labeled=X[::10], y_labeled=y[::10]).shape
    (3,)
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "uncertainty": [StrOptions(set(_UNCERTAINTY))],
        "candidate_factor": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"auto", "faiss", "numpy"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.cold_start = False
        tags.selector_tags.requires_proba = True
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(
        self, uncertainty="entropy", *, candidate_factor=10, backend="auto", random_state=None
    ):
        self.uncertainty = uncertainty
        self.candidate_factor = candidate_factor
        self.backend = backend
        self.random_state = random_state

    def _check_context(self, ctx):
        ctx.require_proba_model("HybridSelector")

    def _query(self, ctx, n_instances, rng):
        score_fn, greater = _UNCERTAINTY[self.uncertainty]
        unc = score_fn(ctx.proba())
        n_cand = min(ctx.n_pool, self.candidate_factor * n_instances)
        cand = top_k(unc, n_cand, rng, largest=greater)
        emb = ctx.pool_embeddings()[cand]
        picks, _ = kcenter_greedy(
            emb, n_instances, rng, X_labeled=ctx.labeled_embeddings(), backend=self.backend
        )
        idx = cand[picks]
        return idx, unc[idx]


@validate_params(function_form_constraints(HybridSelector), prefer_skip_nested_validation=False)
def hybrid_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    uncertainty="entropy",
    candidate_factor=10,
    X_labeled=None,
    y_labeled=None,
    backend="auto",
    random_state=None,
):
    """modAL query strategy: uncertainty candidates + k-centre (see :class:`HybridSelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba``
    X_pool : array-like
    n_instances : int, default=1
    uncertainty : {"entropy", "margin", "least_confident"}, default="entropy"
    candidate_factor : int, default=10
    X_labeled, y_labeled : array-like, default=None
    backend : {"auto", "faiss", "numpy"}, default="auto"
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Uncertainty scores of the returned samples.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import hybrid_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> hybrid_sampling(clf, X, 2, random_state=0)[0].shape
    (2,)
    """
    selector = HybridSelector(
        uncertainty,
        candidate_factor=candidate_factor,
        backend=backend,
        random_state=random_state,
    )
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


register_selector("hybrid", HybridSelector, hybrid_sampling)
