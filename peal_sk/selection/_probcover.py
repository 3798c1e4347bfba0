"""ProbCover (Yehuda, Dekel, Hacohen and Weinshall, NeurIPS 2022): greedy maximum
coverage of delta-balls.

Specified on the algorithm page (docs/user_guide/algorithms.rst, "ProbCover");
``tests/_lowbudget_reference.py`` transcribes the specification loop by loop and the
tests require this implementation to return the same samples in the same order (exact
search). Decisions the specification leaves open are documented on
:class:`ProbCoverSelector`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import heapq
import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._blocks import FAISS_QUERY_BLOCK, block_rows, sq_distances
from ..utils._faiss import faiss_kmeans, few_threads_when_small, float32_scale
from ..utils._parallel import N_JOBS_CONSTRAINT, piece_bounds, run_pieces
from ._lowbudget_common import n_distinct_at_least, stack_features
from ._registry import register_selector

__all__ = ["ProbCoverSelector", "probcover_sampling"]

_EPS32 = 2.0**-24
#: ``search="auto"`` searches exactly while n_pool**2 * n_features stays below this
#: (about 5 s of float32 GEMM on one core of the development machine)
EXACT_WORK = 1.5e11
#: query rows per range-search chunk (one of faiss's query blocks)
CHUNK = FAISS_QUERY_BLOCK
#: blocks of pool rows per parallel piece of the purity estimate
_BLOCKS_PER_PIECE = 8
#: random rows and columns whose pairwise distances give the coverage radius
COVERAGE_ROWS, COVERAGE_COLS = 256, 16_384


def _sq_norms(X):
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def _nearest_other_label(F, labels, queries, n_jobs=None):
    """Distance from each row ``F[q]`` to its nearest row of another label (inf if none).

    Blocks of ``F``'s rows are independent (a minimum is exact in any order): with
    ``n_jobs`` pieces of them run through joblib, each receiving its rows.
    """
    Q = F[queries]
    q_sq = _sq_norms(Q).astype(F.dtype)
    f_sq = _sq_norms(F).astype(F.dtype)
    q_lab = labels[queries]
    step = block_rows(4 * F.itemsize * len(queries))
    bounds = piece_bounds(len(F), step, multiple=_BLOCKS_PER_PIECE)
    parts = run_pieces(
        _nearest_other_rows,
        ((F[a:b], f_sq[a:b], labels[a:b]) for a, b in bounds),
        n_jobs=n_jobs,
        shared=(Q, q_sq, q_lab, step),
        n_pieces=len(bounds),
    )
    best = np.full(len(queries), np.inf)
    for part in parts:
        np.minimum(best, part, out=best)
    return np.sqrt(np.maximum(best, 0))


def _nearest_other_rows(Q, q_sq, q_lab, step, F, f_sq, labels):
    """Per query, the smallest squared distance to a row of ``F`` of another label."""
    best = np.full(len(Q), np.inf)
    for s in range(0, len(F), step):
        D = sq_distances(Q, F[s : s + step], q_sq, f_sq[s : s + step], clip=False)
        D[q_lab[:, None] == labels[None, s : s + step]] = np.inf
        np.minimum(best, D.min(axis=1), out=best)
    return best


def _coverage_delta(F, share, rng):
    """The ``share``-quantile of the distance between two distinct random rows of ``F``:
    a ball of that radius holds on average about ``share`` of the rows. Estimated from
    ``COVERAGE_ROWS x COVERAGE_COLS`` random pairs (one bounded block)."""
    n = len(F)
    rows = rng.choice(n, size=min(n, COVERAGE_ROWS), replace=False)
    cols = rng.choice(n, size=min(n, COVERAGE_COLS), replace=False)
    D = sq_distances(F[rows], F[cols])[rows[:, None] != cols[None, :]]
    if D.size == 0:  # a single row
        return 0.0
    q = min(D.size - 1, max(0, math.ceil(share * D.size) - 1))
    return float(np.sqrt(np.partition(D, q)[q]))


def _purity_delta(r, alpha):
    """Largest delta whose purity (share of sampled balls ``{d < delta}`` holding one
    pseudo-label, i.e. of ``r >= delta``) is at least ``alpha``: the q-th largest r."""
    q = max(1, math.ceil(alpha * len(r) - 1e-9))
    return float(np.sort(r)[::-1][q - 1])


class _BallSearch:
    """Points within distance < delta of query rows, among the pool rows of ``F``.

    ``exact``: faiss brute-force range search in float32 with a radius widened by a
    bound on the float32 error; pairs inside that band are decided again in float64 by
    direct differences, so the graph is what an exact computation gives. Every row's own
    index is always in its ball.
    """

    def __init__(self, F, n_pool, delta):
        self.F, self.n_pool, self.delta2 = F, n_pool, float(delta) ** 2
        self.F32 = np.ascontiguousarray(F, dtype=np.float32)
        self.P32 = self.F32[:n_pool]
        d = F.shape[1]
        max_sq = float(_sq_norms(self.F32).max()) if len(F) else 0.0
        self.tol = 8.0 * (d + 4) * _EPS32 * (2.0 * max_sq + self.delta2) + 1e-30

    def search(self, rows):
        """``(counts, cols)``: the ball of each ``F[rows]`` as pool indices (int32)."""
        return _search_balls(self.F, self.F32, self.n_pool, self.delta2, self.tol, rows)

    def search_chunks(self, start, stop, n_jobs):
        """:meth:`search` of the rows ``start .. stop - 1`` in chunks of :data:`CHUNK`
        rows, in order (a lazy iterator); with ``n_jobs`` the chunks run through joblib,
        ``F`` being sent once per call."""
        bounds = [(s, min(s + CHUNK, stop)) for s in range(start, stop, CHUNK)]
        return run_pieces(
            _search_chunk,
            bounds,
            n_jobs=n_jobs,
            shared=(self.F, self.F32, self.n_pool, self.delta2, self.tol),
            as_generator=True,
        )


def _range_search(P32, Q, delta2):
    import faiss

    nq = len(Q)
    res = faiss.RangeSearchResult(nq)
    faiss.range_search_L2sqr(
        faiss.swig_ptr(Q), faiss.swig_ptr(P32), Q.shape[1], nq, len(P32), delta2, res
    )
    lims = faiss.rev_swig_ptr(res.lims, nq + 1).copy()
    m = int(lims[-1])
    D = faiss.rev_swig_ptr(res.distances, m).copy() if m else np.empty(0, np.float32)
    I = faiss.rev_swig_ptr(res.labels, m).copy() if m else np.empty(0, np.int64)
    return lims, D, I


def _search_balls(F, F32, n_pool, delta2, tol, rows):
    """The balls of ``F[rows]`` (see :class:`_BallSearch`); a pure function of its
    arguments, so chunks of rows can be searched in any process."""
    Q = np.ascontiguousarray(F32[rows])
    nq = len(rows)
    P32 = F32[:n_pool]
    with few_threads_when_small(nq * n_pool * Q.shape[1]):
        lims, D, I = _range_search(P32, Q, delta2 + tol)
    counts = np.diff(lims).astype(np.int64)
    q = np.repeat(np.asarray(rows, dtype=np.int64), counts)
    keep = I != q  # self is added below for every row
    band = np.flatnonzero(keep & (D >= delta2 - tol))
    if band.size:
        diff = F[q[band]].astype(np.float64) - F[I[band]].astype(np.float64)
        keep[band] = np.einsum("ij,ij->i", diff, diff) < delta2
    local = np.repeat(np.arange(nq), counts)
    local, cols = local[keep], I[keep]
    self_cols = np.asarray(rows, dtype=np.int64)
    is_pool = self_cols < n_pool
    local = np.concatenate([local, np.flatnonzero(is_pool)])
    cols = np.concatenate([cols, self_cols[is_pool]])
    order = np.argsort(local, kind="stable")
    return np.bincount(local, minlength=nq), cols[order].astype(np.int32)


def _search_chunk(F, F32, n_pool, delta2, tol, start, stop):
    return _search_balls(F, F32, n_pool, delta2, tol, np.arange(start, stop))


def _cell_graph(F32, delta2, nprobe, rng, max_edges, too_many, n_jobs=None):
    """Approximate ball graph (CSR) of ``F32`` by inverted-file cells and BLAS blocks.

    The rows are split into ``sqrt(n)`` k-means cells; the members of each cell are
    compared (one float32 GEMM per block) with the members of the ``nprobe`` cells whose
    centres are nearest to their cell's centre, skipping cells that the triangle
    inequality rules out (``|c - c'| >= r_c + r_c' + delta``, ``r``: cell radius). A ball
    member in a cell that is not probed is missed; nothing is ever added wrongly.

    Cells are independent: with ``n_jobs`` they run through joblib (``F32`` is sent once
    per call, each cell receives its member and candidate indices).
    """
    n, d = F32.shape
    nlist = max(1, int(np.sqrt(n)))
    seed = int(rng.integers(np.iinfo(np.int32).max))
    km = faiss_kmeans(F32, nlist, seed, n_iter=5, max_points_per_centroid=64)
    centres, labels = km.centres.astype(np.float64), km.labels
    sq = np.einsum("ij,ij->i", F32, F32)
    diff_sq = np.empty(n)
    step = block_rows(8 * d, n)
    centres32 = centres.astype(np.float32)
    for s in range(0, n, step):
        diff = F32[s : s + step] - centres32[labels[s : s + step]]
        diff_sq[s : s + step] = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    radius = np.zeros(nlist)  # (float32 rounding: the pruning below keeps a margin)
    np.maximum.at(radius, labels, np.sqrt(diff_sq))
    c_sq = np.einsum("ij,ij->i", centres, centres)
    cc = np.sqrt(np.maximum(c_sq[:, None] + c_sq[None, :] - 2 * centres @ centres.T, 0))
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=nlist))])
    delta = np.sqrt(delta2)

    def pieces():
        for c in cells:
            members = order[starts[c] : starts[c + 1]]
            probes = np.argsort(cc[c], kind="stable")[: int(nprobe)]
            probes = probes[cc[c, probes] < (radius[c] + radius[probes] + delta) * 1.001]
            cand = np.concatenate([order[starts[j] : starts[j + 1]] for j in probes])
            yield members, cand

    cells = np.flatnonzero(starts[1:] > starts[:-1])  # the non-empty ones
    results = run_pieces(
        _cell_edges,
        pieces(),
        n_jobs=n_jobs,
        shared=(F32, sq, delta2),
        n_pieces=len(cells),
        as_generator=True,
    )
    rows, cols, total = [], [], 0
    for r, c, n_self in results:
        rows.append(r)
        cols.append(c)
        total += len(r) + n_self
        if total > max_edges:
            raise ValueError(too_many(f"more than {total:,}"))
    rows.append(np.arange(n, dtype=np.int32))
    cols.append(np.arange(n, dtype=np.int32))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    perm = np.argsort(rows, kind="stable")
    indices = cols[perm]
    del cols, perm
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, indices


def _cell_edges(F32, sq, delta2, members, cand):
    """Edges (self-loops aside) from one cell's ``members`` to its candidates ``cand``,
    in blocks of members; returns ``(rows, cols, len(members))``."""
    Cand = F32[cand]
    step = block_rows(4 * 4 * len(cand))
    rows, cols = [], []
    for s in range(0, len(members), step):
        m = members[s : s + step]
        D = sq_distances(F32[m], Cand, sq[m], sq[cand], clip=False)
        i, j = np.nonzero(D < delta2)
        keep = m[i] != cand[j]  # self is added by the caller
        rows.append(m[i[keep]].astype(np.int32))
        cols.append(cand[j[keep]].astype(np.int32))
    return np.concatenate(rows), np.concatenate(cols), len(members)


class ProbCoverSelector(BaseSelector):
    """ProbCover: greedy coverage of the pool by balls of radius delta (Yehuda et al.,
    NeurIPS 2022).

    A cold-start strategy for low budgets. Every pool sample's ball holds the samples
    within distance ``< delta`` (L2-normalised embeddings); the samples in the ball of a
    labelled sample are covered; each pick is the sample whose ball holds the most
    uncovered samples, whose ball is then covered.

    ``delta`` is given, or estimated by purity: k-means with ``n_classes`` centres gives
    pseudo-labels; a ball is pure when every sample in it shares its centre's
    pseudo-label; the purity radius (``purity_delta_``) is the largest radius at which at
    least ``alpha`` of the balls of ``purity_samples`` random samples (pool and
    labelled) are pure, searched against all samples. Purity decreases with delta, so
    that radius is exactly the ``ceil(alpha m)``-th largest distance from a sampled point
    to its nearest point of another pseudo-label; no bisection is needed.

    **Minimum coverage (``budget_coverage``).** The purity rule alone can give balls so
    small that they hold only their own centre: on CIFAR-10 EfficientNet-Lite0 features
    the purity radius (about 0.70) leaves the median ball with one sample, the greedy
    cover collapses into a few dense corners (10 % of the pool covered with 500 labels)
    and loses 4-7 points to random sampling at 250 and 500 labels. So the estimated
    ``delta_`` is at least the radius at which the average ball holds
    ``budget_coverage / B`` of the samples, ``B`` being the labelled samples plus
    ``n_instances``: ``B`` balls could then hold ``budget_coverage`` times the pool if
    they did not overlap (the radius is the ``budget_coverage / B``-quantile of the
    distance between two random samples, estimated from 256 x 16,384 random pairs; capped
    so that it alone asks for at most half of ``max_edges``). The
    radius shrinks as the labelled set grows, so coverage grows with the budget; where
    the data are well separated the purity radius is the larger one and is kept, as in
    the paper. ``budget_coverage=None`` is the paper's purity rule alone. Measured in
    the documentation's benchmark page (``benchmarks/results/probcover_radius*.json``).

    Decisions (the definition leaves them open or the official code gets them wrong):

    * Ties between equally covering samples go to the lowest pool index. The counts are
      updated lazily (a max-heap of stale counts, re-counted when they reach the top);
      this gives exactly the greedy choice of the specification.
    * When every pool sample is covered (the official code then returns index 0 again),
      the remaining picks are drawn uniformly at random among the unselected samples
      (seeded by ``random_state``); their score is 0. ``n_filled_`` counts them.
    * The ball graph is stored as CSR with int32 indices. Before it is built its size is
      estimated from a sample of balls, and a ``ValueError`` naming ``max_edges`` is
      raised when the estimate or, during the build, the actual count exceeds it.
    * ``search="exact"`` is a brute-force range search (time grows with n_pool**2);
      ``"ivf"`` splits the pool into ``sqrt(n_pool)`` k-means cells and compares each
      cell with the ``nprobe`` cells nearest to it (float32 GEMM blocks; cells that the
      triangle inequality rules out are skipped), so it may miss ball members in other
      cells but never adds a wrong one; ``"auto"`` is exact while
      ``n_pool**2 * n_features`` stays below 1.5e11, else ``"ivf"``. Labelled samples'
      balls are always searched exactly.

    Parameters
    ----------
    delta : float or None, default=None
        Ball radius (Euclidean, after normalisation). None: estimated by purity.
    n_classes : int, default=10
        Number of k-means pseudo-classes of the purity estimate (the number of classes
        of the task); unused when ``delta`` is given.
    alpha : float, default=0.95
        Purity the purity radius keeps.
    budget_coverage : float or None, default=0.5
        Minimum coverage of the estimated radius: ``delta_`` is at least the radius at
        which a ball holds on average ``budget_coverage / (n_labeled + n_instances)`` of
        the samples (see above). None: the purity radius alone (the paper's rule).
        Unused when ``delta`` is given.
    purity_samples : int, default=1000
        Sampled balls of the purity estimate.
    normalize : bool, default=True
        L2-normalise the embeddings first (the paper's setting).
    search : {"auto", "exact", "ivf"}, default="auto"
        Range-search method of the ball graph (see above).
    nprobe : int, default=8
        Cells compared with each cell (``search="ivf"``).
    max_edges : int, default=200_000_000
        Upper bound on the number of (directed) edges of the ball graph (4 bytes each).
    kmeans_iter : int, default=20
        Iterations of faiss k-means of the purity estimate.
    random_state : int, Generator or None, default=None
        Seeds k-means, the purity sample, the cells and the random fill.
    n_jobs : int, default=None
        The range-search chunks of the ball graph (``"exact"``: 4,096 query rows each;
        ``"ivf"``: one cell each), the labelled samples' balls and the blocks of the
        purity estimate run in parallel through joblib, so that
        ``with joblib.parallel_config(backend="dask"):`` spreads them over a Dask
        cluster (the features are sent once per call). k-means and the greedy cover run
        in this process. None means 1 unless in a :func:`joblib.parallel_config`
        context, -1 means every worker. The selection does not depend on it.

    Attributes
    ----------
    delta_ : float
        The radius used by the last query.
    purity_delta_ : float or None
        The purity radius of the last query (None when ``delta`` was given or every
        sample has the same pseudo-label).
    coverage_ : float
        Share of the pool covered after the last query (by labelled and picked samples).
    n_edges_ : int
        Edges of the ball graph (self-loops included).
    n_filled_ : int
        Picks drawn at random because everything was covered.

    See Also
    --------
    probcover_sampling : The modAL function form.
    TypiClustSelector : The other cold-start strategy of the same authors.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import ProbCoverSelector
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 0.1, (40, 2)) + [1, 0], rng.normal(0, 0.1, (40, 2)) + [0, 1]])
    >>> sel = ProbCoverSelector(delta=0.3, random_state=0)
    >>> sorted(int(i) // 40 for i in sel.select(X, 2)), sel.coverage_
    ([0, 1], 1.0)
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "delta": [Interval(Real, 0, None, closed="neither"), None],
        "n_classes": [Interval(Integral, 2, None, closed="left")],
        "alpha": [Interval(Real, 0, 1, closed="right")],
        "purity_samples": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "search": [StrOptions({"auto", "exact", "ivf"})],
        "nprobe": [Interval(Integral, 1, None, closed="left")],
        "max_edges": [Interval(Integral, 1, None, closed="left")],
        "kmeans_iter": [Interval(Integral, 1, None, closed="left")],
        "budget_coverage": [Interval(Real, 0, None, closed="neither"), None],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        *,
        delta=None,
        n_classes=10,
        alpha=0.95,
        budget_coverage=0.5,
        purity_samples=1000,
        normalize=True,
        search="auto",
        nprobe=8,
        max_edges=200_000_000,
        kmeans_iter=20,
        random_state=None,
        n_jobs=None,
    ):
        self.delta = delta
        self.n_classes = n_classes
        self.alpha = alpha
        self.budget_coverage = budget_coverage
        self.purity_samples = purity_samples
        self.normalize = normalize
        self.search = search
        self.nprobe = nprobe
        self.max_edges = max_edges
        self.kmeans_iter = kmeans_iter
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def _estimate_delta(self, F, rng, n_budget, n_pool):
        """The purity radius, raised to the budget's coverage radius (see the class)."""
        n = len(F)
        k = n_distinct_at_least(F, self.n_classes)
        seed = int(rng.integers(np.iinfo(np.int32).max))
        queries = np.sort(rng.choice(n, size=min(n, self.purity_samples), replace=False))
        if k < 2:
            return math.inf
        labels = faiss_kmeans(F, k, seed, n_iter=self.kmeans_iter).labels
        r = _nearest_other_label(F, labels, queries, self.n_jobs)
        self.purity_delta_ = _purity_delta(r, self.alpha)
        if self.budget_coverage is None:
            return self.purity_delta_
        share = min(1.0, float(self.budget_coverage) / n_budget)
        # the coverage radius alone never asks for more than half of max_edges
        share = min(share, 0.5 * self.max_edges / float(n_pool) ** 2)
        return max(self.purity_delta_, _coverage_delta(F, share, rng))

    def _query(self, ctx, n_instances, rng):
        F_pool, F_lab = ctx.pool_embeddings(), ctx.labeled_embeddings()
        n_pool, d = F_pool.shape
        F = stack_features(F_pool, F_lab, normalize=self.normalize)
        # the range search is float32: features of extreme magnitude (normalize=False)
        # are scaled by a power of two, which changes no ball; delta_ is reported unscaled
        scale = float32_scale(F.min(), F.max(), d)
        if scale != 1.0:
            F = F * F.dtype.type(scale)
        self.purity_delta_ = None
        if self.delta is not None:
            delta = self.delta * scale
        else:
            n_budget = (0 if F_lab is None else len(F_lab)) + n_instances
            delta = self._estimate_delta(F, rng, n_budget, n_pool)
        if not math.isfinite(delta):
            # one pseudo-class (e.g. a single distinct row): every ball is pure at any
            # radius; take one that holds every sample
            delta = 2.0 * float(np.sqrt(_sq_norms(F).max())) + 1.0
        self.delta_ = float(delta) / scale
        if self.purity_delta_ is not None:
            self.purity_delta_ /= scale
        method = self.search
        if method == "auto":
            method = "exact" if float(n_pool) ** 2 * d <= EXACT_WORK else "ivf"
        balls = _BallSearch(F, n_pool, delta)

        # size check before the build, from a sample of exact balls
        sample = np.sort(rng.choice(n_pool, size=min(n_pool, 256), replace=False))
        est = float(balls.search(sample)[0].mean()) * n_pool
        if est > self.max_edges:
            raise ValueError(self._too_many(f"about {est:,.0f} (estimated from 256 balls)"))
        if method == "ivf":
            indptr, indices = _cell_graph(
                balls.P32,
                balls.delta2,
                self.nprobe,
                rng,
                self.max_edges,
                self._too_many,
                self.n_jobs,
            )
        else:
            indptr = np.zeros(n_pool + 1, dtype=np.int64)
            chunks, total = [], 0
            for i, (counts, cols) in enumerate(balls.search_chunks(0, n_pool, self.n_jobs)):
                s = i * CHUNK
                indptr[s + 1 : s + 1 + len(counts)] = counts
                chunks.append(cols)
                total += len(cols)
                if total > self.max_edges:
                    raise ValueError(self._too_many(f"more than {total:,}"))
            np.cumsum(indptr, out=indptr)
            indices = np.concatenate(chunks)
            del chunks
        self.n_edges_ = int(indptr[-1])

        covered = np.zeros(n_pool, dtype=bool)
        if F_lab is not None:
            for _, cols in balls.search_chunks(n_pool, len(F), self.n_jobs):
                covered[cols] = True
        picks, scores, n_filled = _greedy_cover(indptr, indices, covered, n_instances, rng)
        self.n_filled_ = n_filled
        self.coverage_ = float(covered.mean())
        return picks, scores

    def _too_many(self, what):
        return (
            f"ProbCover's ball graph would hold {what} edges at delta_={self.delta_:.4g}, "
            f"more than max_edges={self.max_edges:,} (4 bytes each). Pass a smaller delta, "
            "a larger max_edges, or fewer samples"
            + (
                f" (the purity radius purity_delta_={self.purity_delta_:.4g} is that large: "
                "a smaller alpha or a larger n_classes lowers it)."
                if self.delta is None and self.purity_delta_ is not None
                else "."
            )
        )


def _greedy_cover(indptr, indices, covered, n_instances, rng):
    """Greedy max coverage (lazy counts, ties: lowest index); fills at random when
    everything is covered. ``covered`` is updated in place."""
    n = len(covered)
    uncovered = (~covered).astype(np.int64)
    counts = np.add.reduceat(uncovered[indices], indptr[:-1]) if len(indices) else uncovered
    counts[np.diff(indptr) == 0] = 0
    nz = np.flatnonzero(counts)
    heap = list(zip((-counts[nz]).tolist(), nz.tolist(), strict=True))
    heapq.heapify(heap)
    picked = np.zeros(n, dtype=bool)
    picks, scores = [], []
    while len(picks) < n_instances and heap:
        neg, x = heapq.heappop(heap)
        ball = indices[indptr[x] : indptr[x + 1]]
        new = ball[~covered[ball]]
        if new.size != -neg:  # stale count: put it back with the true one
            if new.size:
                heapq.heappush(heap, (-int(new.size), x))
            continue
        covered[new] = True
        picked[x] = True
        picks.append(x)
        scores.append(float(new.size))
    n_filled = n_instances - len(picks)
    if n_filled:
        rest = np.flatnonzero(~picked)
        picks.extend(rng.choice(rest, size=n_filled, replace=False).tolist())
        scores.extend([0.0] * n_filled)
    return np.asarray(picks, dtype=np.intp), np.asarray(scores), n_filled


@validate_params(function_form_constraints(ProbCoverSelector), prefer_skip_nested_validation=False)
def probcover_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    X_labeled=None,
    y_labeled=None,
    delta=None,
    n_classes=10,
    alpha=0.95,
    budget_coverage=0.5,
    purity_samples=1000,
    normalize=True,
    search="auto",
    nprobe=8,
    max_edges=200_000_000,
    kmeans_iter=20,
    random_state=None,
    n_jobs=None,
):
    """modAL query strategy: ProbCover (see :class:`ProbCoverSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Used only for embeddings (and a learner's training set as labelled samples).
    X_pool : array-like of shape (n_pool, n_features)
    n_instances : int, default=1
    X_labeled, y_labeled : array-like, default=None
        Labelled samples (default: the learner's ``X_training`` / ``y_training``).
    delta, n_classes, alpha, budget_coverage, purity_samples, normalize, search, nprobe, \
max_edges, kmeans_iter, random_state, n_jobs
        See :class:`ProbCoverSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        In the order picked.
    scores : ndarray of shape (n_instances,)
        Samples each pick newly covered (0 for random fills).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import probcover_sampling
    >>> X = np.random.default_rng(0).normal(size=(100, 3))
    >>> probcover_sampling(None, X, 4, n_classes=3, random_state=0)[0].shape
    (4,)
    """
    selector = ProbCoverSelector(
        delta=delta,
        n_classes=n_classes,
        alpha=alpha,
        budget_coverage=budget_coverage,
        purity_samples=purity_samples,
        normalize=normalize,
        search=search,
        nprobe=nprobe,
        max_edges=max_edges,
        kmeans_iter=kmeans_iter,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


register_selector("probcover", ProbCoverSelector, probcover_sampling)
