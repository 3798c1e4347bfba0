"""Independent pieces of a selection, run in this process or through joblib.

Selectors whose work splits into independent pieces (BiLAF's clusters, TypiClust's
clusters, ProbCover's range-search chunks, blocks of distance rows) hand them to
:func:`run_pieces`. The pieces are fixed before anything runs: their boundaries follow
the data and the block budget (:func:`peal_sk.utils._blocks.block_rows`), never
``n_jobs``, and random draws are made by the caller before dispatch, so a piece computes
the same numbers wherever and with whatever it is grouped; the result equals the one of
``n_jobs=1``.

``n_jobs`` has scikit-learn's meaning: None is 1 unless a
:func:`joblib.parallel_config` context says otherwise, -1 is every worker of the active
backend. When it resolves to 1, or there is a single piece, the pieces run in a plain
loop: no joblib machinery, no pickling.

Large inputs that every piece needs are passed as the *same* array object to every
piece (``shared``), never inside a tuple or an object: joblib then sends them once per
call, not once per task. With ``backend="loky"`` joblib memory-maps arrays above 1 MB
into a temporary folder that the workers read; with ``backend="dask"`` it scatters every
argument above 1 kB to the cluster once per call and passes futures (pass
``scatter=[X]`` to :func:`joblib.parallel_config` to broadcast an array of your own
ahead of time); with ``backend="threading"`` nothing is copied. Per-piece inputs (a
cluster's rows) are sliced by the caller, so each row travels once.
"""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import joblib
from sklearn.utils._param_validation import Interval

__all__ = ["N_JOBS_CONSTRAINT", "effective_n_jobs", "piece_bounds", "run_pieces"]

#: ``_parameter_constraints`` entry of ``n_jobs``: None, -1, -2, ... or 1, 2, ...
N_JOBS_CONSTRAINT = [
    Interval(Integral, None, -1, closed="right"),
    Interval(Integral, 1, None, closed="left"),
    None,
]


def effective_n_jobs(n_jobs):
    """Workers ``n_jobs`` stands for under the active joblib backend (at least 1)."""
    if n_jobs == 1:
        return 1
    # None is 1 unless a parallel_config context sets n_jobs or a backend that spreads
    # work by default (the dask backend: every worker thread of the cluster)
    return max(1, int(joblib.effective_n_jobs(n_jobs)))


def run_pieces(func, pieces, *, n_jobs, shared=(), n_pieces=None, as_generator=False):
    """``[func(*shared, *args) for args in pieces]``, in order, maybe in parallel.

    Parameters
    ----------
    func : callable
        A module-level function (picklable): one piece of work.
    pieces : iterable of tuple
        The per-piece arguments; consumed lazily (joblib dispatches a few at a time), so
        a generator of slices does not hold every slice at once.
    n_jobs : int or None
    shared : tuple, default=()
        Arguments every piece receives first, the same objects each time (sent once
        per call by the loky and dask backends, see the module's docstring).
    n_pieces : int, default=None
        Number of pieces when ``pieces`` has no ``len`` (one piece runs in this process).
    as_generator : bool, default=False
        Return an iterator over the results (in order) instead of a list, so that the
        caller can stop early (joblib then cancels what is still pending).

    Returns
    -------
    list or iterator
        The results, in the order of ``pieces``.
    """
    count = len(pieces) if n_pieces is None else int(n_pieces)
    if count <= 1 or effective_n_jobs(n_jobs) == 1:
        results = (func(*shared, *args) for args in pieces)
        return results if as_generator else list(results)
    # scikit-learn's Parallel/delayed carry its configuration (working_memory, hence the
    # block sizes inside a piece) to the workers
    from sklearn.utils.parallel import Parallel, delayed

    parallel = Parallel(n_jobs=n_jobs, return_as="generator" if as_generator else "list")
    return parallel(delayed(func)(*shared, *args) for args in pieces)


def piece_bounds(n, step, *, multiple=1):
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of ``step * multiple``
    rows (the last one shorter): boundaries fixed by the data and the block size only."""
    size = max(1, int(step) * int(multiple))
    return [(s, min(s + size, n)) for s in range(0, n, size)]
