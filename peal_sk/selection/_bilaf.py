"""BiLAF: one-shot core + boundary selection (Lu et al., "Boundary Matters", NeurIPS 2024).

The algorithm is specified on the documentation's algorithm page
(docs/user_guide/algorithms.rst, "BiLAF"); the points it leaves open are decided here and
documented on :class:`BiLAFSelector`. ``tests/_bilaf_reference.py`` is a slow,
loop-by-loop transcription of the same specification and the tests require this
implementation to return the same samples in the same order.

Where the time goes and how it is kept down (N = 50k, d = 384, K = 250, B = 5000 takes
about 0.65 s here, against 7.0 s for the official code; benchmarks/bench_bilaf.py):

* assignment (N x K distances, in blocks of rows): a float32 GEMM screens the cores;
  when the second-nearest core is separated from the rest by more than twice a bound on
  the float32 error, the two nearest are certain and only their distances are
  recomputed in float64; other rows are done in float64 against every core;
* one pass per cluster: the allocation depends only on the kept sizes, which follow
  from the cluster sizes (:func:`_kept_size`), so each cluster is denoised, scored and
  selected while its distance matrix exists, and only one such matrix exists at a time;
* per-cluster distances: a float64 Gram matrix of the cluster's *distinct* rows, so
  duplicated samples get bit-identical distances; clusters with more than
  ``_DENSE_MAX`` distinct rows compute blocks on demand instead;
* denoising: for each member not added yet, a sorted buffer of its ``n_neighbors``
  smallest distances to the added ones, merged with each new ring (in a large cluster,
  once a buffer is full, only the new distances below its largest are picked out);
* ``d_in`` of a large cluster: each block of the kept x kept upper triangle is computed
  once and gives both its row and its column sums (one 30,000-member cluster: 7.4 s,
  against 13.8 s for every row against every kept member; bench_bilaf.py --big-cluster);
* greedy selection: one row of the cluster matrix per pick and an O(n) partition for
  the ``r - 1`` candidates nearest the pick.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import math
import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._blocks import SMALL_BLOCK_ROWS, block_rows, sq_distances
from ..utils._faiss import float32_scale
from ..utils._parallel import N_JOBS_CONSTRAINT, effective_n_jobs, piece_bounds, run_pieces
from ..utils._validation import check_query_indices, check_rng
from ._registry import register_selector

__all__ = ["BiLAFSelector", "bilaf", "bilaf_sampling"]

#: Clusters with fewer members than this are kept whole by the denoising step (the
#: literal threshold of the official code).
SMALL_CLUSTER = 10
#: Clusters with more distinct rows than this compute their distances block by block
#: instead of holding the full (distinct x distinct) float64 matrix (4096^2 x 8 B = 128 MiB).
_DENSE_MAX = 4096
_EPS32 = 2.0**-24
#: blocks of rows per parallel piece of the assignment (at most SMALL_BLOCK_ROWS a block)
_ASSIGN_BLOCKS_PER_PIECE = 64


# -- stage 0: cores and clusters -----------------------------------------------------------
def _dedup_cores(F, cores):
    """Sorted cores, dropping a core whose feature row equals an earlier kept core's."""
    cores = np.sort(np.asarray(cores, dtype=np.intp))
    _, first = np.unique(F[cores], axis=0, return_index=True)
    return cores[np.sort(first)]


def _assign(F, cores, n_jobs=None):
    """Nearest core (ties: lowest cluster index) and nearest *other* core of every sample.

    Returns
    -------
    labels : ndarray of np.intp
    d_own : ndarray of float64
        Distance to the own core.
    opponents : ndarray of np.intp
        Cluster index of the nearest other core (-1 when ``K == 1``).
    d_out : ndarray of float64
        Distance to that core (inf when ``K == 1``).

    Notes
    -----
    A float32 GEMM screens all cores; when the second-nearest core is separated from the
    third by more than twice a bound on the float32 error, the two nearest are certain
    and their distances are recomputed in float64 (products of float32 values are exact
    in float64). Other rows are done in float64 against every core. The data are shifted
    by their rounded mean, which keeps integer-valued features (exact ties) exact.

    Rows are independent: with ``n_jobs`` they are done in pieces of whole blocks
    through joblib (each piece receives its rows, the cores are sent once per call).
    """
    n, d = F.shape
    K = len(cores)
    origin = np.round(F.mean(axis=0, dtype=np.float64))
    C = F[cores].astype(np.float64) - origin
    c_sq = np.einsum("ij,ij->i", C, C)
    # small blocks: temporaries stay below malloc's mmap threshold and are reused
    step = block_rows(4 * K, n, max_rows=SMALL_BLOCK_ROWS)
    if K == 1:
        labels = np.zeros(n, dtype=np.intp)
        opponents = np.full(n, -1, dtype=np.intp)
        d_own = np.empty(n)
        d_out = np.full(n, np.inf)
        for s in range(0, n, step):
            X = F[s : s + step].astype(np.float64) - origin
            d2 = np.einsum("ij,ij->i", X, X) - 2 * (X @ C[0]) + c_sq[0]
            d_own[s : s + step] = np.sqrt(np.maximum(d2, 0))
        return labels, d_own, opponents, d_out

    # the screen is float32: features of extreme magnitude are scaled by a power of two
    # (exact, so no comparison changes) so that its squared distances cannot overflow
    scale = float32_scale(F.min(), F.max(), d)
    C32 = (C * scale).astype(np.float32)
    c_sq32 = (c_sq * scale**2).astype(np.float32)
    c_sq_max = float(c_sq.max()) * scale**2
    # the float64 recomputation works on the raw features when the data lie near the
    # origin relative to their spread (products of float32 values are exact in
    # float64, so no float64 copy of the data is needed), else on float64 features
    # shifted by the rounded mean
    shifted = float(origin @ origin) > float(c_sq.mean())  # shifting gains > 2x in norm
    Cr = C if shifted else F[cores]
    cr_sq = np.einsum("ij,ij->i", Cr, Cr, dtype=np.float64)
    Cr64 = Cr.astype(np.float64)
    origin_f = origin.astype(F.dtype)
    shared = (origin, origin_f, shifted, scale, C32, c_sq32, c_sq_max, Cr, cr_sq, Cr64, step)
    if effective_n_jobs(n_jobs) == 1:
        return _assign_rows(*shared, F)
    # whole blocks per piece: every row meets the blocks of the serial pass
    bounds = piece_bounds(n, step, multiple=_ASSIGN_BLOCKS_PER_PIECE)
    parts = run_pieces(_assign_rows, [(F[a:b],) for a, b in bounds], n_jobs=n_jobs, shared=shared)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def _assign_rows(origin, origin_f, shifted, scale, C32, c_sq32, c_sq_max, Cr, cr_sq, Cr64, step, F):
    """:func:`_assign` for the rows of ``F`` (K >= 2), ``step`` rows at a time; the
    float32 screen works on the rows times ``scale`` (a power of two)."""
    n, d = F.shape
    K = len(C32)
    labels = np.empty(n, dtype=np.intp)
    opponents = np.empty(n, dtype=np.intp)
    d_own = np.empty(n)
    d_out = np.empty(n)
    for s in range(0, n, step):
        Xr = F[s : s + step].astype(np.float64) - origin if shifted else F[s : s + step]
        rows = np.arange(Xr.shape[0])
        X32 = Xr if shifted else Xr - origin_f
        X32 = (X32 * scale if scale != 1.0 else X32).astype(np.float32)
        x_sq32 = np.einsum("ij,ij->i", X32, X32)
        D2 = X32 @ C32.T
        D2 *= -2
        D2 += x_sq32[:, None]
        D2 += c_sq32[None, :]
        j1 = np.argmin(D2, axis=1)
        D2[rows, j1] = np.inf
        j2 = np.argmin(D2, axis=1)
        v2 = D2[rows, j2].astype(np.float64)
        # bound on |float32 squared distance - exact| (GEMM, norms, the shift and casts)
        tol = 2.0 * (d + 10) * _EPS32 * (1.01 * x_sq32.astype(np.float64) + c_sq_max)
        ok = (D2 <= (v2 + 2.0 * tol)[:, None]).sum(axis=1) == 1  # only j2 near v2
        pair = np.stack([j1, j2], axis=1)
        xr_sq = np.einsum("ij,ij->i", Xr, Xr, dtype=np.float64)
        exact = np.empty((len(rows), 2))
        for t in range(2):
            dot = np.einsum("ij,ij->i", Xr, Cr[pair[:, t]], dtype=np.float64)
            exact[:, t] = xr_sq - 2 * dot + cr_sq[pair[:, t]]
        for i in np.flatnonzero(~ok):  # screening inconclusive: float64 over all cores
            full = xr_sq[i] - 2 * (Cr64 @ Xr[i].astype(np.float64)) + cr_sq
            pair[i] = np.lexsort((np.arange(K), full))[:2]
            exact[i] = full[pair[i]]
        # order the two by (distance, cluster index)
        swap = (exact[:, 1] < exact[:, 0]) | (
            (exact[:, 1] == exact[:, 0]) & (pair[:, 1] < pair[:, 0])
        )
        pair[swap] = pair[swap][:, ::-1]
        exact[swap] = exact[swap][:, ::-1]
        exact = np.sqrt(np.maximum(exact, 0))
        labels[s : s + step], opponents[s : s + step] = pair[:, 0], pair[:, 1]
        d_own[s : s + step], d_out[s : s + step] = exact[:, 0], exact[:, 1]
    return labels, d_own, opponents, d_out


# -- stages 1-2: denoising and d_in, per cluster -------------------------------------------
def _is_identity(inv):
    """Whether ``inv`` is ``0, 1, ..., len(inv) - 1``."""
    return bool((inv == np.arange(inv.size)).all())


@functools.lru_cache(maxsize=8)
def _projection(d):
    return np.random.default_rng(0).uniform(0.5, 1.5, size=d)


def _unique_rows(X, sq):
    """Distinct rows ``U`` and ``inv`` with ``X == U[inv]`` (``U = X`` without duplicates).

    ``sq`` holds the squared row norms. Duplicates are first ruled out with a random
    projection: identical rows project to values within the rounding bound of each
    other, so if all sorted projections are further apart than that bound there are
    none; only otherwise are the rows compared exactly (by value: -0.0 equals 0.0).
    """
    n, d = X.shape
    if n > 1:
        v = _projection(d)
        h = np.sort(X @ v)
        bound = 4 * (d + 2) * np.finfo(np.float64).eps * np.sqrt(sq.max() * (v @ v))
        if np.diff(h).min() > bound:
            return X, np.arange(n)
    Xz = np.ascontiguousarray(X + 0.0)  # + 0.0 turns -0.0 into 0.0
    rows = Xz.view(np.dtype((np.void, Xz.dtype.itemsize * d))).ravel()
    _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
    if first.size == n:  # no duplicates after all: keep the member order
        return X, np.arange(n)
    return X[first], inv.reshape(-1)


class _ClusterDistances:
    """Euclidean distances among one cluster's members (float64, Gram expansion).

    Computed between the cluster's *distinct* rows, so members with identical features
    get bit-identical distances to anything and the specification's ties (by index)
    resolve as in the reference. The features are shifted to the core, which keeps the
    expansion well conditioned and integer-valued data exact. Up to ``_DENSE_MAX``
    distinct rows the full member x member matrix is held (``D``); larger clusters
    compute blocks on demand.
    """

    def __init__(self, X, core_pos):
        """``X``: the members' features as a float64 array this object may modify."""
        X -= X[core_pos].copy()
        self.n = X.shape[0]
        sq = np.einsum("ij,ij->i", X, X)
        self.U, self.inv = _unique_rows(X, sq)
        self.sq = sq if self.U is X else sq[np.unique(self.inv, return_index=True)[1]]
        self.D = None
        if len(self.U) <= _DENSE_MAX:
            Du = sq_distances(self.U, self.U, self.sq, self.sq)
            np.fill_diagonal(Du, 0.0)
            np.sqrt(Du, out=Du)
            self.D = Du if len(self.U) == self.n else Du[np.ix_(self.inv, self.inv)]

    def _block(self, ru, cu):
        """Distances between distinct rows ``ru`` and ``cu`` (both ascending, unique)."""
        if ru.size == 1 and cu.size > len(self.U) // 8:
            # one row against many: a matrix-vector product over all distinct rows
            # costs less than gathering the columns' features
            D2 = (self.U @ self.U[ru[0]])[cu][None, :]
            D2 *= -2
            D2 += self.sq[ru][:, None]
            D2 += self.sq[cu][None, :]
            np.maximum(D2, 0, out=D2)
        else:
            D2 = sq_distances(self.U[ru], self.U[cu], self.sq[ru], self.sq[cu])
        # a row's distance to itself is exactly 0 (both index arrays are sorted)
        same_r = np.flatnonzero(np.isin(ru, cu, assume_unique=True))
        if same_r.size:
            D2[same_r, np.searchsorted(cu, ru[same_r])] = 0.0
        return np.sqrt(D2, out=D2)

    def block(self, rows, cols):
        """Distances between member positions ``rows`` and ``cols``."""
        if self.D is not None:
            # D[cols, rows].T: gathering whole rows first is the cheaper copy. D is
            # symmetric only up to rounding, but every block is read in this one
            # orientation, so duplicated members still get bit-identical values. For a
            # few rows (the distances to the core) only those columns are gathered
            if rows.size <= 16:
                return self.D[np.ix_(cols, rows)].T
            return self.D[cols][:, rows].T
        ru, r_inv = np.unique(self.inv[rows], return_inverse=True)
        cu, c_inv = np.unique(self.inv[cols], return_inverse=True)
        D = self._block(ru, cu)
        r_inv, c_inv = r_inv.reshape(-1), c_inv.reshape(-1)
        # ascending members without duplicates are their own distinct rows: no gather
        if not _is_identity(c_inv):
            D = D[:, c_inv]
        return D if _is_identity(r_inv) else D[r_inv]

    def row(self, pos, cols):
        """Distances from member ``pos`` to member positions ``cols``."""
        if self.D is not None:
            return self.D[pos, cols]
        return self.block(np.array([pos]), cols)[0]

    def mean_to(self, kept):
        """Mean distance of every member to the members at positions ``kept``."""
        if self.D is not None:
            if len(self.U) == self.n:  # no duplicates: one matrix-vector product, no copy
                w = np.zeros(self.n)
                w[kept] = 1.0
                return (self.D @ w) / len(kept)
            # duplicated members: a row-wise mean, so that their rows' equal values give
            # equal means (a product's kernel may sum some rows in another order)
            return self.D[:, kept].mean(axis=1)
        w = np.bincount(self.inv[kept], minlength=len(self.U)).astype(np.float64)
        cols = np.flatnonzero(w)  # the distinct rows of the kept members
        rest = np.flatnonzero(w == 0)  # the removed members' distinct rows
        per_u = np.zeros(len(self.U))
        # kept x kept: each block of the upper triangle is computed once and gives the
        # sums of its rows and of its columns (the distances are symmetric), which halves
        # the work of the largest part; the removed rows are a plain (rows x kept) product
        Uc, sq_c, w_c = self.U[cols], self.sq[cols], w[cols]  # gathered once
        step = max(1, math.isqrt(block_rows(8, cols.size * cols.size)))
        for a in range(0, cols.size, step):
            ra = slice(a, a + step)
            for b in range(a, cols.size, step):
                rb = slice(b, b + step)
                D = sq_distances(Uc[ra], Uc[rb], sq_c[ra], sq_c[rb])
                if a == b:  # a row's distance to itself is exactly 0
                    np.fill_diagonal(D, 0.0)
                np.sqrt(D, out=D)
                per_u[cols[ra]] += D @ w_c[rb]
                if b > a:
                    per_u[cols[rb]] += w_c[ra] @ D
        step = block_rows(8 * max(1, cols.size), rest.size)
        for s in range(0, rest.size, step):
            rr = rest[s : s + step]
            D2 = sq_distances(self.U[rr], Uc, self.sq[rr], sq_c)
            per_u[rr] = np.sqrt(D2, out=D2) @ w_c
        return per_u[self.inv] / len(kept)


def _kept_size(n, ring_fraction, removal_fraction):
    """Members a cluster of ``n`` keeps after denoising (known before denoising it).

    The expansion order has ``m * int(n / m)`` members; the first
    ``max(1, int(len(order) * (1 - removal_fraction)))`` are kept. The core is the first
    of the order, so it is never removed and every cluster can contribute its core.
    """
    if n < SMALL_CLUSTER:
        return n
    m = max(1, int(n * ring_fraction))
    return max(1, int(m * int(n / m) * (1 - removal_fraction)))


def _k_smallest(dist, rows, cols, k, prev=None):
    """Per row, the ``k`` smallest of ``prev`` (row-aligned) and the distances to ``cols``.

    Sorted ascending, bit for bit ``np.sort(np.concatenate([prev, D], 1))[:, :k]``, but
    computed in blocks of rows (so no ``rows x cols`` matrix is held) and by a partition
    before the sort, or (a large cluster, ``prev`` full) by :func:`_merge_smaller`.
    """
    width = min(k, cols.size + (0 if prev is None else prev.shape[1]))
    if prev is not None and prev.shape[1] == width and dist.D is None:
        # a large cluster (no dense matrix): its blocks are large enough for the
        # threshold merge to pay; a dense cluster's small blocks partition faster
        return _merge_smaller(dist, rows, np.sort(cols), prev)
    out = np.empty((rows.size, width))
    # per row: the distance block, its gathered copy and the merged row
    step = block_rows(8 * 3 * (cols.size + width), rows.size)
    for s0 in range(0, rows.size, step):
        D = dist.block(rows[s0 : s0 + step], cols)
        if prev is not None:
            D = np.concatenate([prev[s0 : s0 + step], D], axis=1)
        if D.shape[1] > width:
            D = np.partition(D, width - 1, axis=1)[:, :width]
        out[s0 : s0 + step] = np.sort(D, axis=1)
    return out


def _merge_smaller(dist, rows, cols, prev):
    """:func:`_k_smallest` when ``prev`` is full (``k`` values a row): only the distances
    below a row's current ``k``-th smallest can enter it, and after the first rings they
    are few, so they are picked out with one comparison instead of partitioning every row.
    The values are only moved, never recomputed, so the result is the same, bit for bit.
    """
    k = prev.shape[1]
    out = prev.copy()
    # per row: the distance block and its comparison mask
    step = block_rows(9 * cols.size, rows.size)
    for s0 in range(0, rows.size, step):
        D = dist.block(rows[s0 : s0 + step], cols)
        kth = prev[s0 : s0 + step, k - 1]
        r, c = np.nonzero(D < kth[:, None])  # equal values would not change the row
        if r.size == 0:
            continue
        hit = np.unique(r)
        # the candidates and the hit rows' current values, sorted by (row, value): each
        # hit row then has k values or more, and its first k are the new row
        row_id = np.concatenate([np.repeat(hit, k), r])
        vals = np.concatenate([prev[s0 + hit].ravel(), D[r, c]])
        order = np.lexsort((vals, row_id))
        row_id, vals = row_id[order], vals[order]
        starts = np.searchsorted(row_id, hit)
        rank = np.arange(row_id.size) - np.repeat(starts, np.diff(np.append(starts, row_id.size)))
        out[s0 + hit] = vals[rank < k].reshape(hit.size, k)
    return out


def _denoise(dist, core_pos, n, *, n_neighbors, ring_fraction, removal_fraction):
    """Expansion-order denoising of one cluster; returns the kept mask over members.

    ``dist`` is the cluster's :class:`_ClusterDistances`, members in ascending global
    index order, the core at position ``core_pos``.
    """
    kept = np.ones(n, dtype=bool)
    if n < SMALL_CLUSTER:
        return kept
    m = max(1, int(n * ring_fraction))
    positions = np.arange(n)
    d_core = dist.block(np.array([core_pos]), positions)[0]
    by_dist = np.lexsort((positions, d_core))
    first_ring = np.concatenate([[core_pos], by_dist[by_dist != core_pos][: m - 1]])
    order = [first_ring]
    n_rings = int(n / m)
    added = np.zeros(n, dtype=bool)
    added[first_ring] = True
    rest = np.flatnonzero(~added)  # ascending, so a stable sort breaks ties by index
    # buf: for each member not added yet, its k smallest distances to the added ones,
    # sorted ascending (a k-buffer, merged with each new ring)
    k = n_neighbors
    buf = _k_smallest(dist, rest, first_ring, k) if n_rings >= 2 else None
    for ring in range(2, n_rings + 1):
        # rho: mean of the k smallest distances to the members added so far, summed in
        # sorted order exactly as ``np.mean(np.sort(D[i, added])[:k])``
        rho = np.mean(buf, axis=1)
        pick = np.argsort(rho, kind="stable")[:m]
        new = rest[pick]
        order.append(new)
        stay = np.ones(rest.size, dtype=bool)
        stay[pick] = False
        rest, buf = rest[stay], buf[stay]
        if ring < n_rings and rest.size:
            buf = _k_smallest(dist, rest, new, k, buf)
    order = np.concatenate(order)
    n_keep = _kept_size(n, ring_fraction, removal_fraction)
    assert len(order) == m * n_rings and n_keep <= len(order)
    kept[:] = False
    kept[order[:n_keep]] = True
    return kept


# -- stage 3: allocation and greedy selection ----------------------------------------------
def _allocate(sizes, budget):
    """One pick per cluster, the rest by largest remainder (exact integers), capped."""
    sizes = np.asarray(sizes, dtype=np.int64)
    b = np.ones(len(sizes), dtype=np.int64)
    R = int(budget) - len(sizes)
    while R > 0:
        open_ = np.flatnonzero(b < sizes)
        if open_.size == 0:
            break
        s = sizes[open_]
        S = int(s.sum())
        share = (R * s) // S
        frac = (R * s) % S
        n_extra = R - int(share.sum())
        if n_extra:
            share[np.lexsort((open_, -frac))[:n_extra]] += 1
        new = np.minimum(b[open_] + share, s)
        R -= int((new - b[open_]).sum())
        b[open_] = new
    return b.astype(np.intp)


def _smallest_mask(values, count):
    """Mask of the ``count`` smallest ``values`` (``0 < count``), ties by position."""
    if count >= values.size:
        return np.ones(values.size, dtype=bool)
    v = np.partition(values, count - 1)[count - 1]
    mask = values < v
    missing = count - np.count_nonzero(mask)
    if missing:
        mask[np.flatnonzero(values == v)[:missing]] = True
    return mask


def _select_cluster(dist, core_pos, kept_pos, b, *, d_in, d_out, opp, K, opponent_penalty):
    """Greedy boundary selection inside one cluster; returns member positions.

    ``kept_pos`` are the positions (ascending) of the kept members, ``d_in``, ``d_out``
    and ``opp`` are indexed by member position.
    """
    sel = [int(core_pos)]
    if b <= 1:
        return sel
    r = int(len(kept_pos) / b)
    alive = np.ones(len(kept_pos), dtype=bool)
    where = np.full(dist.n, -1, dtype=np.intp)
    where[kept_pos] = np.arange(len(kept_pos))
    pen = np.ones(K)
    denom = np.maximum(d_out, d_in)
    while len(sel) < b:
        node = sel[-1]
        alive[where[node]] = False
        cand = kept_pos[alive]
        dn = dist.row(node, cand)
        if r > 1:  # drop the r - 1 candidates nearest the node (ties: lower index)
            drop = _smallest_mask(dn, r - 1)
            alive[where[cand[drop]]] = False
            keep = ~drop
            cand, dn = cand[keep], dn[keep]
        if node != core_pos and K > 1:
            pen[opp[node]] *= opponent_penalty
        if K > 1:
            score = (d_out[cand] * pen[opp[cand]] - d_in[cand]) / denom[cand]
            best = int(np.argmin(score))
            if np.count_nonzero(score == score[best]) > 1:
                # ties: closest to node, then lowest index (cand is ascending)
                tied = np.flatnonzero(score == score[best])
                best = int(tied[np.argmin(dn[tied])])
        else:
            best = int(np.argmin(dn))  # every score is 1: closest, then lowest index
        sel.append(int(cand[best]))
    return sel


def _kcenter_cores(F, cores, budget):
    """k-centre subset of the cores: the lowest core index first, then farthest-first."""
    C = F[cores].astype(np.float64)
    C -= C.mean(axis=0)
    sq = np.einsum("ij,ij->i", C, C)
    picks = [0]
    min_d = np.full(len(cores), np.inf)
    for _ in range(budget - 1):
        last = picks[-1]
        row = np.sqrt(np.maximum(sq + sq[last] - 2 * (C @ C[last]), 0))
        np.minimum(min_d, row, out=min_d)
        min_d[picks] = -1.0
        picks.append(int(np.argmax(min_d)))  # first maximum: lowest index
    return np.asarray(cores)[picks]


# -- one cluster: stages 1-3 -------------------------------------------------------------------
def _cluster_stages(
    n_neighbors, ring_fraction, removal_fraction, opponent_penalty, K, Fm, core_pos, d_out, opp,
    b,
):  # fmt: skip
    """Denoising, ``d_in`` and (``b > 0``) the greedy picks of one cluster.

    ``Fm``: the members' features (ascending pool index), the core at ``core_pos``;
    ``d_out`` / ``opp``: their distance to and cluster of the nearest other core; ``b``:
    the cluster's picks (0: no selection). Depends on nothing else, so clusters run in
    any process and any order. Returns the kept mask, ``d_in``, the picked member
    positions (or None) and the seconds of the three stages.
    """
    ta = time.perf_counter()
    dist = _ClusterDistances(Fm.astype(np.float64), core_pos)
    kept = _denoise(
        dist,
        core_pos,
        len(Fm),
        n_neighbors=n_neighbors,
        ring_fraction=ring_fraction,
        removal_fraction=removal_fraction,
    )
    tb = time.perf_counter()
    kept_pos = np.flatnonzero(kept)
    d_in = dist.mean_to(kept_pos)
    tc = time.perf_counter()
    picks = None
    if b > 0:
        picks = _select_cluster(
            dist,
            core_pos,
            kept_pos,
            b,
            d_in=d_in,
            d_out=d_out,
            opp=opp,
            K=K,
            opponent_penalty=opponent_penalty,
        )
    return kept, d_in, picks, (tb - ta, tc - tb, time.perf_counter() - tc)


# -- the selector -----------------------------------------------------------------------------
class BiLAFSelector(BaseSelector):
    """BiLAF: cold-start selection of core samples, then denoised boundary samples.

    Needs no labels and no fitted model. Four stages (:ref:`algorithms`):

    0. **cores**: ``K`` core samples for global diversity (ActiveFT by default); every
       sample joins the cluster of its nearest core;
    1. **denoising**: each cluster is grown in rings from its core by density distance
       (mean distance to the ``n_neighbors`` nearest members added so far); the last
       ``removal_fraction`` of that order (and the members no ring reached) are removed
       as outliers and are never selected;
    2. **boundary score** of every sample, ``BS = (d_out - d_in) / max(d_out, d_in)`` with
       ``d_in`` its mean distance to its (denoised) cluster and ``d_out`` its distance to
       the nearest other core; lower means closer to a decision boundary;
    3. **selection**: the budget ``B`` (which counts the cores) is shared between
       clusters in proportion to their denoised sizes; each cluster starts from its core
       and repeatedly skips the ``r - 1`` candidates nearest the last pick (spreading the
       picks) and takes the lowest boundary score, penalising opponents already faced
       (``d_out`` multiplied by ``opponent_penalty`` per earlier pick facing that cluster).

    Distances are Euclidean on the raw features (or the classifier's embeddings, see
    :func:`peal_sk.base.get_embeddings`); ActiveFT normalises internally.

    Parameters
    ----------
    n_cores : int or float, default=0.005
        Number of cores ``K``: an int ``>= 1``, or a fraction of the pool in ``(0, 1]``
        (``K = max(1, round(n_cores * n_pool))``). The paper uses 0.1-0.5 % of the pool.
        Ignored when ``core_indices`` is given.
    core_indices : array-like of int, default=None
        Use these pool indices as cores instead of running ``core_selector``.
    core_selector : str or selector, default="activeft"
        How cores are chosen: the name of a registered cold-start strategy
        (``list_selectors(cold_start=True)``: ``"activeft"``, ``"kcenter"`` for k-centre
        greedy from a random start, ``"kmeans"``, ``"typiclust"``, ``"probcover"``, ...),
        or any object with ``select(X, n_instances)`` (cloned, the clone is kept as
        ``core_selector_``; seeded from ``random_state`` when its own is None), or a modAL
        query function ``fn(None, X, n_instances)``.
    n_neighbors : int, default=10
        ``k`` of the density distance.
    ring_fraction : float, default=0.1
        ``P_in``: each ring adds ``m = max(1, int(n_j * ring_fraction))`` members.
    removal_fraction : float, default=0.1
        ``P_rm``: fraction of the expansion order removed as noise, in ``[0, 1)``.
    opponent_penalty : float, default=1.1
        ``delta``: multiplies the penalty of an opponent cluster each time a pick faces it.
    random_state : int, Generator or None, default=None
        Seeds the core selector.
    n_jobs : int, default=None
        Clusters processed in parallel through joblib (denoising, boundary scores and
        each cluster's picks, which depend on nothing outside the cluster once the
        allocation is known), and the assignment to the nearest cores in blocks of rows.
        ``with joblib.parallel_config(backend="dask"):`` spreads them over a Dask
        cluster; each cluster's rows are sent once. None means 1 unless in a
        :func:`joblib.parallel_config` context, -1 means every worker. The selection
        does not depend on it. A core selector given by name gets the same ``n_jobs``
        when it takes one (``"kcenter"``, ``"typiclust"``, ``"probcover"``).

    Attributes
    ----------
    cores_ : ndarray of shape (K,), dtype=np.intp
        Core indices, ascending (duplicated feature rows dropped).
    labels_ : ndarray of shape (n_pool,), dtype=np.intp
        Cluster (index into ``cores_``) of every sample.
    removed_ : ndarray of shape (n_pool,), dtype=bool
        Samples removed by denoising.
    boundary_scores_ : ndarray of shape (n_pool,), dtype=float64
        Unpenalised boundary score of every sample (removed ones included, against their
        cluster's kept members); 1.0 for every sample when ``K == 1``.
    opponents_ : ndarray of shape (n_pool,), dtype=np.intp
        Cluster of each sample's nearest other core (-1 when ``K == 1``).
    allocation_ : ndarray of shape (K,), dtype=np.intp
        Picks per cluster (when ``n_instances < K``: 1 for the chosen cores, else 0).
    timings_ : dict
        Seconds spent in each stage: ``cores``, ``assign``, ``denoise``, ``boundary``,
        ``select`` (the per-cluster stages summed over clusters: with ``n_jobs`` they
        add up the workers' time).

    Notes
    -----
    Decisions where the specification or the official code leave room (all tested
    against ``tests/_bilaf_reference.py``):

    * cores are sorted ascending and a core whose feature row equals an earlier core's
      is dropped, so ``len(cores_)`` can be smaller than ``K``; a core always lies in its
      own cluster;
    * denoising: ring 1 is the core then the ``m - 1`` members nearest it (ties by
      index); rings ``2 .. int(n_j / m)`` follow; the first
      ``max(1, int(len(order) * (1 - removal_fraction)))`` of the order are kept, so the
      core is never removed; the ``n_j mod m`` members no ring reached are removed;
    * the official code averages ``D[i][positions]`` with cluster positions used as
      sample indices; here ``rho(i) = mean(sort(D[i, added])[:k])`` as intended;
    * allocation: one pick per cluster, the remaining ``B - K`` by largest remainder in
      exact integers (ties to the lower cluster), capped at the cluster's kept size with
      the overflow redistributed: never more picks than members, never zero (both happen
      in the official code);
    * ``B < K``: a k-centre subset of the cores, starting from the lowest core index;
    * ``B`` larger than the number of kept samples: the removed samples top the
      selection up, nearest to their own core first.

    The returned order is cluster by cluster (core first), then the top-up; the scores
    returned with it are the boundary scores.

    See Also
    --------
    bilaf_sampling : The modAL function form.
    ActiveFTSelector : The default core selector.

    References
    ----------
    Lu et al., "Boundary Matters: A Bi-Level Active Finetuning Method", NeurIPS 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import BiLAFSelector
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(loc=c, size=(100, 2)) for c in (-4, 0, 4)])
    >>> sel = BiLAFSelector(n_cores=3, core_selector="kcenter", random_state=0)
    >>> idx = sel.select(X, 12)
    >>> idx.shape, len(sel.cores_), int(sel.allocation_.sum())
    ((12,), 3, 12)
    >>> bool(np.isin(sel.cores_, idx).all())
    True
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "n_cores": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="right"),
        ],
        "core_indices": ["array-like", None],
        "core_selector": [
            str,
            HasMethods(["select"]),
            callable,
        ],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "ring_fraction": [Interval(Real, 0, 1, closed="both")],
        "removal_fraction": [Interval(Real, 0, 1, closed="left")],
        "opponent_penalty": [Interval(Real, 0, None, closed="neither")],
        "n_jobs": N_JOBS_CONSTRAINT,
    }
    _greater_is_better = False

    #: the core selector may come from the user: validate it inside our calls
    _prefer_skip_nested_validation = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(
        self,
        n_cores=0.005,
        *,
        core_indices=None,
        core_selector="activeft",
        n_neighbors=10,
        ring_fraction=0.1,
        removal_fraction=0.1,
        opponent_penalty=1.1,
        random_state=None,
        n_jobs=None,
    ):
        self.n_cores = n_cores
        self.core_indices = core_indices
        self.core_selector = core_selector
        self.n_neighbors = n_neighbors
        self.ring_fraction = ring_fraction
        self.removal_fraction = removal_fraction
        self.opponent_penalty = opponent_penalty
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- validation before any expensive work ---------------------------------------------
    def _check_context(self, ctx):
        n = ctx.n_pool
        if self.core_indices is not None:
            self._validated_core_indices(n)
        elif isinstance(self.n_cores, Integral) and self.n_cores > n:
            raise ValueError(f"n_cores={self.n_cores} is larger than the pool size n_pool={n}.")
        if self.core_indices is None and isinstance(self.core_selector, str):
            from ._registry import list_selectors

            names = [i.name for i in list_selectors(cold_start=True) if i.name != "bilaf"]
            if self.core_selector not in names:
                raise ValueError(
                    f"core_selector={self.core_selector!r} is not a cold-start strategy; "
                    f"choose from {names} or pass a selector object."
                )

    def _validated_core_indices(self, n):
        arr = np.asarray(self.core_indices)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                "core_indices must be a non-empty 1-D array of pool indices; got shape "
                f"{arr.shape}."
            )
        if arr.dtype.kind not in "iu":
            raise TypeError(f"core_indices must be integers; got dtype {arr.dtype}.")
        if arr.min() < 0 or arr.max() >= n:
            raise ValueError(
                f"core_indices must lie in [0, {n}) for a pool of {n} samples; got values "
                f"from {arr.min()} to {arr.max()}."
            )
        if np.unique(arr).size != arr.size:
            raise ValueError("core_indices must not contain duplicates.")
        return arr.astype(np.intp)

    def _n_cores(self, n):
        if isinstance(self.n_cores, Integral):
            return int(self.n_cores)
        return max(1, int(round(self.n_cores * n)))

    # -- stages ---------------------------------------------------------------------------
    def _choose_cores(self, F, rng):
        if self.core_indices is not None:
            return self._validated_core_indices(len(F))
        K = self._n_cores(len(F))
        seed = int(rng.integers(np.iinfo(np.int32).max))
        spec = self.core_selector
        if isinstance(spec, str):
            from ._registry import get_selector

            self.core_selector_ = get_selector(spec, random_state=seed)
            if "n_jobs" in self.core_selector_.get_params():
                self.core_selector_.set_params(n_jobs=self.n_jobs)
            return self.core_selector_.select(F, K)
        who = f"core_selector={getattr(spec, '__name__', type(spec).__name__)}"
        if hasattr(spec, "select"):
            # the user's selector is never modified: the clone runs and is kept
            sel = clone(spec) if hasattr(spec, "get_params") else spec
            if hasattr(sel, "get_params") and "random_state" in sel.get_params():
                if sel.get_params()["random_state"] is None:
                    sel.set_params(random_state=seed)
            self.core_selector_ = sel
            return check_query_indices(sel.select(F, K), len(F), n_instances=K, name=who)
        result = spec(None, F, K)
        result = result[0] if isinstance(result, tuple) else result
        return check_query_indices(result, len(F), n_instances=K, name=who)

    def _cluster_distances(self, F, members, core_pos):
        return _ClusterDistances(F[members].astype(np.float64), core_pos)

    def _run_stages(self, ctx, rng, budget=None):
        """All stages; the selection (stage 3) only when ``budget`` is given.

        Every cluster is processed in one pass (denoise, boundary scores, its picks), so
        only one cluster's distance matrix exists at a time. That works because the
        allocation needs only the kept sizes, which follow from the cluster sizes
        (:func:`_kept_size`) before any cluster is denoised.
        """
        F = ctx.pool_embeddings()
        timings = dict.fromkeys(("cores", "assign", "denoise", "boundary", "select"), 0.0)
        t0 = time.perf_counter()
        cores = _dedup_cores(F, self._choose_cores(F, rng))
        t1 = time.perf_counter()
        labels, d_own, opponents, d_out = _assign(F, cores, self.n_jobs)
        K = len(cores)
        labels[cores] = np.arange(K)  # exact: a core is at distance 0 from itself
        d_own[cores] = 0.0
        t2 = time.perf_counter()
        timings["cores"], timings["assign"] = t1 - t0, t2 - t1

        n = len(F)
        sizes = np.bincount(labels, minlength=K)
        kept_sizes = [_kept_size(int(s), self.ring_fraction, self.removal_fraction) for s in sizes]
        select = budget is not None and budget >= K
        alloc = _allocate(kept_sizes, budget) if select else None
        removed = np.zeros(n, dtype=bool)
        d_in = np.empty(n)
        bs = np.ones(n)
        order = np.argsort(labels, kind="stable")  # members of each cluster, ascending
        starts = np.concatenate([[0], np.cumsum(sizes)])

        def members_of(j):
            return order[starts[j] : starts[j + 1]]

        def pieces():  # one per cluster, sliced lazily: each row is sent once
            for j in range(K):
                members = members_of(j)
                core_pos = int(np.searchsorted(members, cores[j]))
                b = int(alloc[j]) if select else 0
                yield F[members], core_pos, d_out[members], opponents[members], b

        params = (self.n_neighbors, self.ring_fraction, self.removal_fraction)
        results = run_pieces(
            _cluster_stages,
            pieces(),
            n_jobs=self.n_jobs,
            shared=(*params, self.opponent_penalty, K),
            n_pieces=K,
            as_generator=True,
        )
        parts = []
        for j, (kept, din, picks, seconds) in enumerate(results):
            members = members_of(j)
            removed[members[~kept]] = True
            d_in[members] = din
            if K > 1:
                dout = d_out[members]
                bs[members] = (dout - din) / np.maximum(dout, din)
            if select:
                parts.append(members[picks])
            # summed over clusters: CPU seconds, spread over the workers when parallel
            timings["denoise"] += seconds[0]
            timings["boundary"] += seconds[1]
            timings["select"] += seconds[2]

        self.cores_ = cores
        self.labels_ = labels
        self.removed_ = removed
        self.boundary_scores_ = bs
        self.opponents_ = opponents
        self.timings_ = timings
        if budget is None:
            return None
        t0 = time.perf_counter()
        if not select:  # B < K: a k-centre subset of the cores
            idx = _kcenter_cores(F, cores, budget)
            self.allocation_ = np.isin(cores, idx).astype(np.intp)
        else:
            self.allocation_ = alloc
            idx = np.concatenate(parts)
            n_top_up = budget - idx.size
            if n_top_up > 0:  # more budget than kept samples: nearest removed ones
                gone = np.flatnonzero(removed)
                gone = gone[np.lexsort((gone, d_own[gone]))]
                idx = np.concatenate([idx, gone[:n_top_up]])
        timings["select"] += time.perf_counter() - t0
        return np.asarray(idx, dtype=np.intp)

    def _score(self, ctx):
        self._run_stages(ctx, check_rng(self.random_state))
        return self.boundary_scores_

    def _query(self, ctx, n_instances, rng):
        idx = self._run_stages(ctx, rng, n_instances)
        return idx, self.boundary_scores_[idx]


@validate_params(function_form_constraints(BiLAFSelector), prefer_skip_nested_validation=False)
def bilaf_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    n_cores=0.005,
    core_indices=None,
    core_selector="activeft",
    n_neighbors=10,
    ring_fraction=0.1,
    removal_fraction=0.1,
    opponent_penalty=1.1,
    random_state=None,
    n_jobs=None,
):
    """modAL query strategy: BiLAF core + boundary selection (see :class:`BiLAFSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Used only for embeddings (``transform``, or a Pipeline's steps before the final
        estimator); with None or a plain classifier the features are ``X_pool`` itself.
    X_pool : array-like of shape (n_pool, n_features)
    n_instances : int, default=1
        The budget ``B`` (counts the cores).
    n_cores, core_indices, core_selector, n_neighbors, ring_fraction, removal_fraction, \
opponent_penalty, random_state, n_jobs
        See :class:`BiLAFSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        Cluster by cluster, each core first.
    scores : ndarray of shape (n_instances,)
        Boundary scores of the returned samples (lower: nearer a boundary).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import bilaf
    >>> X = np.random.default_rng(0).normal(size=(300, 5))
    >>> idx, scores = bilaf(None, X, 10, n_cores=2, core_selector="kcenter", random_state=0)
    >>> idx.shape, scores.shape
    ((10,), (10,))
    """
    selector = BiLAFSelector(
        n_cores=n_cores,
        core_indices=core_indices,
        core_selector=core_selector,
        n_neighbors=n_neighbors,
        ring_fraction=ring_fraction,
        removal_fraction=removal_fraction,
        opponent_penalty=opponent_penalty,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    return selector(classifier, X_pool, n_instances)


#: Short alias used in the README: ``ActiveLearner(..., query_strategy=bilaf)``.
bilaf = bilaf_sampling


register_selector(
    "bilaf",
    BiLAFSelector,
    bilaf_sampling,
    # commands default to a third of the batch as cores (K = B / 3)
    batch_defaults=lambda n_instances: {"n_cores": max(1, n_instances // 3)},
)
