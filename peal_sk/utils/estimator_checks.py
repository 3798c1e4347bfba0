"""Checks that a query strategy honours the selector contract.

Third parties who write their own selector (usually by subclassing
:class:`~peal_sk.base.BaseSelector`) can call :func:`check_selector` from their test suite,
as they would call imbalanced-learn's checks on a sampler. Only NumPy and scikit-learn are
needed.
"""

# SPDX-License-Identifier: BSD-3-Clause

import copy

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import _num_samples

__all__ = ["check_selector"]


def _snapshot(X):
    """A deep copy of an input, to compare with after the selector has run."""
    return None if X is None else copy.deepcopy(X)


def _assert_unchanged(before, after, name):
    if before is None:
        return
    if hasattr(before, "equals") and callable(before.equals):  # pandas
        if not before.equals(after):
            raise AssertionError(f"The selector modified {name} in place.")
        return
    try:
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
    except AssertionError as exc:
        raise AssertionError(f"The selector modified {name} in place.") from exc


def _check_indices(idx, n_instances, n_pool, where):
    if not isinstance(idx, np.ndarray):
        raise AssertionError(f"{where} must return a numpy array; got {type(idx).__name__}.")
    if idx.dtype != np.intp:
        raise AssertionError(f"{where} must return indices of dtype np.intp; got {idx.dtype}.")
    if idx.shape != (n_instances,):
        raise AssertionError(
            f"{where} must return {n_instances} indices for n_instances={n_instances}; "
            f"got shape {idx.shape}."
        )
    if np.unique(idx).size != idx.size:
        raise AssertionError(f"{where} returned duplicate indices: {idx.tolist()}.")
    if idx.size and (idx.min() < 0 or idx.max() >= n_pool):
        raise AssertionError(f"{where} returned indices outside [0, {n_pool}): {idx.tolist()}.")


def _expect_n_instances_error(selector, X_pool, n_instances, kwargs):
    try:
        selector.select(X_pool, n_instances, **kwargs)
    except ValueError as exc:
        if "n_instances" not in str(exc):
            raise AssertionError(
                f"select(n_instances={n_instances}) raised a ValueError that does not name "
                f"n_instances: {exc}"
            ) from exc
    else:
        raise AssertionError(
            f"select(n_instances={n_instances}) did not raise a ValueError (the pool has "
            f"{_num_samples(X_pool)} samples; a selector must not shrink the query)."
        )


def _check_params_round_trip(selector):
    params = selector.get_params(deep=False)
    cloned = clone(selector)
    if type(cloned) is not type(selector):
        raise AssertionError("clone() changed the type of the selector.")
    cloned_params = cloned.get_params(deep=False)
    if set(cloned_params) != set(params):
        raise AssertionError(
            f"clone() changed the parameters: {sorted(params)} != {sorted(cloned_params)}."
        )
    if cloned.set_params(**params) is not cloned:
        raise AssertionError("set_params() must return the selector itself.")
    for name, value in cloned.get_params(deep=False).items():
        if value is not params[name]:
            raise AssertionError(
                f"get_params() after set_params({name}=...) does not return the value set."
            )


def check_selector(selector, *, X_pool=None, classifier=None, X_labeled=None, y_labeled=None):
    """Check that a selector honours the peal_sk selector contract.

    The checks, each raising an ``AssertionError`` that says what is wrong:

    * ``select(X_pool, n)`` returns ``n`` unique ``np.intp`` indices into ``X_pool``, for
      ``n`` in ``1``, about half the pool and the whole pool;
    * with an int ``random_state`` the selection is the same on every call and for a clone;
    * calling the selector as a modAL strategy, ``selector(classifier, X_pool, n)``,
      returns a 2-tuple ``(query_idx, scores)``: the same indices as ``select`` and float
      scores of the same length; ``random_state`` given to the call seeds a selector whose
      own ``random_state`` is None the same way;
    * ``X_pool``, ``X_labeled`` and ``y_labeled`` are not modified;
    * ``clone``, ``get_params`` and ``set_params`` round-trip;
    * ``n_instances=0`` and ``n_instances=n_pool + 1`` raise a ``ValueError`` that names
      ``n_instances`` (no silent shrink of the query).

    Parameters
    ----------
    selector : BaseSelector
        The selector instance to check (it is cloned, never modified).
    X_pool : array-like of shape (n_pool, ...), default=None
        Pool to select from. Default: 20 samples of 3 standard-normal features.
    classifier : estimator or learner, default=None
        Passed to the selector; needed by strategies that use ``predict_proba`` or
        embeddings of a model.
    X_labeled, y_labeled : array-like, default=None
        Labelled data, for strategies that need it.

    Raises
    ------
    AssertionError
        When the selector breaks the contract.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import FeatureDistanceSelector, RandomSelector
    >>> from peal_sk.utils.estimator_checks import check_selector
    >>> X_pool = np.random.default_rng(0).normal(size=(12, 2))
    >>> check_selector(FeatureDistanceSelector(mode="kcenter"), X_pool=X_pool)
    >>> check_selector(RandomSelector(random_state=0))
    """
    if X_pool is None:
        X_pool = np.random.default_rng(0).normal(size=(20, 3))
    n_pool = _num_samples(X_pool)
    if n_pool < 1:
        raise ValueError("check_selector needs a non-empty X_pool.")
    kwargs = {"classifier": classifier, "X_labeled": X_labeled, "y_labeled": y_labeled}
    call_kwargs = {"X_labeled": X_labeled, "y_labeled": y_labeled}
    before = {"X_pool": _snapshot(X_pool)}
    before["X_labeled"] = _snapshot(X_labeled)
    before["y_labeled"] = _snapshot(y_labeled)

    has_random_state = "random_state" in selector.get_params(deep=False)
    seeded = clone(selector)
    if has_random_state:
        seeded.set_params(random_state=0)

    for n_instances in sorted({1, max(1, n_pool // 2), n_pool}):
        idx = seeded.select(X_pool, n_instances, **kwargs)
        _check_indices(idx, n_instances, n_pool, f"select(n_instances={n_instances})")

        again = seeded.select(X_pool, n_instances, **kwargs)
        fresh = clone(seeded).select(X_pool, n_instances, **kwargs)
        if not (np.array_equal(idx, again) and np.array_equal(idx, fresh)):
            raise AssertionError(
                f"select(n_instances={n_instances}) is not deterministic with an int "
                f"random_state: {idx.tolist()}, then {again.tolist()}, then {fresh.tolist()} "
                "(clone)."
            )

        result = seeded(classifier, X_pool, n_instances, **call_kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AssertionError(
                "Calling the selector as a modAL strategy must return a 2-tuple "
                f"(query_idx, scores); got {type(result).__name__}."
            )
        call_idx, scores = result
        _check_indices(call_idx, n_instances, n_pool, "selector(classifier, X_pool, n)")
        if not np.array_equal(call_idx, idx):
            raise AssertionError(
                f"selector(...) returned {call_idx.tolist()} but select() returned "
                f"{idx.tolist()} for the same random_state."
            )
        scores = np.asarray(scores)
        if scores.shape != (n_instances,) or not np.issubdtype(scores.dtype, np.floating):
            raise AssertionError(
                f"The scores must be {n_instances} floats; got dtype {scores.dtype} and "
                f"shape {scores.shape}."
            )

        if has_random_state:
            unseeded = clone(selector).set_params(random_state=None)
            call_idx, _ = unseeded(classifier, X_pool, n_instances, random_state=0, **call_kwargs)
            if not np.array_equal(call_idx, idx):
                raise AssertionError(
                    "selector(..., random_state=0) with the selector's random_state=None "
                    f"returned {call_idx.tolist()}, but random_state=0 on the selector gives "
                    f"{idx.tolist()}."
                )

    for n_instances in (0, n_pool + 1):
        _expect_n_instances_error(seeded, X_pool, n_instances, kwargs)

    _assert_unchanged(before["X_pool"], X_pool, "X_pool")
    _assert_unchanged(before["X_labeled"], X_labeled, "X_labeled")
    _assert_unchanged(before["y_labeled"], y_labeled, "y_labeled")
    _check_params_round_trip(selector)
