"""Random sampling: the seeded baseline."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.utils._param_validation import validate_params

from ..base import BaseSelector, function_form_constraints
from ._registry import register_selector

__all__ = ["RandomSelector", "random_sampling"]


class RandomSelector(BaseSelector):
    """Uniform random sampling without replacement (the baseline every paper reports).

    Needs no model, labels or features, so it works on any pool (images, file paths).

    Parameters
    ----------
    random_state : int, Generator or None, default=None
        Pass an int for the same selection on every call.

    See Also
    --------
    random_sampling : The modAL function form.

    Examples
    --------
    >>> from peal_sk.selection import RandomSelector
    >>> idx = RandomSelector(random_state=0).select(list("abcdef"), 3)
    >>> len(set(idx.tolist()))
    3
    """

    def __init__(self, *, random_state=None):
        self.random_state = random_state

    def _query(self, ctx, n_instances, rng):
        idx = rng.choice(ctx.n_pool, size=n_instances, replace=False)
        return idx, np.zeros(n_instances)


@validate_params(function_form_constraints(RandomSelector), prefer_skip_nested_validation=False)
def random_sampling(classifier, X_pool, n_instances=1, *, random_state=None):
    """modAL query strategy: uniform random sampling (see :class:`RandomSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Ignored.
    X_pool : array-like
    n_instances : int, default=1
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
    scores : ndarray of shape (n_instances,)
        Zeros (random sampling has no score).

    Examples
    --------
    >>> from peal_sk.selection import random_sampling
    >>> idx, scores = random_sampling(None, list(range(10)), 2, random_state=0)
    >>> idx.dtype.kind, scores.tolist()
    ('i', [0.0, 0.0])
    """
    return RandomSelector(random_state=random_state)(classifier, X_pool, n_instances)


register_selector("random", RandomSelector, random_sampling)
