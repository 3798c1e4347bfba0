"""Slow, obviously-correct reference of BiLAF selection (docs/user_guide/algorithms.rst, "BiLAF").

Written straight from the specification, independently of ``peal_sk.selection._bilaf``,
to check the fast implementation sample for sample. Plain Python loops over a full
``scipy.spatial.distance.cdist`` matrix; one function per stage. Only for small pools.

The points the specification leaves open are decided as the project decided them:

* cores: sort the given indices, drop a core whose feature row equals (exactly) the row
  of an earlier kept core;
* clusters smaller than 10 are kept whole; the removed samples are the cut tail of the
  expansion order and the ``n_j mod m`` members no ring reached;
* ``d_in`` of a removed sample is its mean distance to the kept members of its cluster;
* ``K == 1``: ``d_out = inf`` and every boundary score is 1.0;
* ``B < K``: a k-centre subset of the cores (first pick the lowest core index);
* allocation by largest remainder computed exactly in integers, capped, overflow
  redistributed; when ``B`` exceeds the kept samples, the removed samples top the
  selection up, nearest to their own core first.
"""

import numpy as np
from scipy.spatial.distance import cdist

__all__ = [
    "allocate",
    "assign",
    "bilaf_reference",
    "boundary_scores",
    "dedup_cores",
    "denoise",
    "kcenter_cores",
    "penalised_score",
    "prepare",
    "select_cluster",
    "select_from",
]

#: Clusters with fewer members than this are kept whole by the denoising step.
SMALL_CLUSTER = 10


def dedup_cores(F, core_indices):
    """Sorted core indices, dropping a core whose features equal an earlier kept core's."""
    kept = []
    for c in sorted(int(c) for c in core_indices):
        if any(np.array_equal(F[c], F[k]) for k in kept):
            continue
        kept.append(c)
    return kept


def assign(D, cores):
    """Cluster label of every sample: its nearest core (ties: the lowest cluster index)."""
    n = D.shape[0]
    labels = np.empty(n, dtype=np.intp)
    for i in range(n):
        best = 0
        for j in range(1, len(cores)):
            if D[i, cores[j]] < D[i, cores[best]]:
                best = j
        labels[i] = best
    for j, c in enumerate(cores):
        assert labels[c] == j, "a core must lie in its own cluster"
    return labels


def denoise(D, members, core, *, n_neighbors, ring_fraction, removal_fraction):
    """Expansion-order denoising of one cluster; returns (kept, removed) member lists.

    ``members`` are the cluster's global indices in ascending order.
    """
    n = len(members)
    if n < SMALL_CLUSTER:
        return list(members), []
    m = max(1, int(n * ring_fraction))

    # ring 1: the core, then the m - 1 other members nearest to it
    others = sorted((i for i in members if i != core), key=lambda i: (D[i, core], i))
    order = [core] + others[: m - 1]

    for _ring in range(2, int(n / m) + 1):
        added = list(order)  # everything added before this ring
        in_order = set(order)
        rest = [i for i in members if i not in in_order]
        rho = {i: np.mean(np.sort(D[i, added])[:n_neighbors]) for i in rest}
        order += sorted(rest, key=lambda i: (rho[i], i))[:m]

    n_keep = max(1, int(len(order) * (1 - removal_fraction)))  # the core is always kept
    kept = set(order[:n_keep])
    return [i for i in members if i in kept], [i for i in members if i not in kept]


def boundary_scores(D, cores, labels, kept_by_cluster):
    """Unpenalised boundary score of every sample, with its d_in, d_out and opponent.

    Returns
    -------
    bs, d_in, d_out : ndarray of float64
    opponent : ndarray of np.intp
        Cluster index of the nearest other core (-1 when there is a single core).
    """
    n, K = D.shape[0], len(cores)
    bs = np.empty(n)
    d_in = np.empty(n)
    d_out = np.empty(n)
    opponent = np.full(n, -1, dtype=np.intp)
    for i in range(n):
        j = labels[i]
        d_in[i] = np.mean(D[i, kept_by_cluster[j]])
        if K == 1:
            d_out[i] = np.inf
            bs[i] = 1.0
            continue
        best = None
        for l in range(K):
            if l == j:
                continue
            if best is None or D[i, cores[l]] < D[i, cores[best]]:
                best = l
        opponent[i] = best
        d_out[i] = D[i, cores[best]]
        bs[i] = (d_out[i] - d_in[i]) / max(d_out[i], d_in[i])
    return bs, d_in, d_out, opponent


def penalised_score(i, pen, d_in, d_out, opponent):
    """BS(i) with ``d_out`` multiplied by the penalty of i's opponent."""
    if opponent[i] < 0:  # a single core: every score is 1
        return 1.0
    return (d_out[i] * pen[opponent[i]] - d_in[i]) / max(d_out[i], d_in[i])


def kcenter_cores(D, cores, budget):
    """k-centre subset of the cores: start at the lowest index, then farthest-first."""
    picks = [cores[0]]
    while len(picks) < budget:
        best, best_dist = None, -1.0
        for c in cores:  # ascending, so ties go to the lowest index
            if c in picks:
                continue
            dist = min(D[c, p] for p in picks)
            if dist > best_dist:
                best, best_dist = c, dist
        picks.append(best)
    return picks


def allocate(sizes, budget):
    """Picks per cluster: one each, the rest by largest remainder, capped at the size."""
    K = len(sizes)
    b = [1] * K
    R = budget - K
    while R > 0 and any(b[j] < sizes[j] for j in range(K)):
        open_ = [j for j in range(K) if b[j] < sizes[j]]
        S = sum(sizes[j] for j in open_)
        share = {j: (R * sizes[j]) // S for j in open_}
        frac = {j: (R * sizes[j]) % S for j in open_}
        n_extra = R - sum(share.values())
        for j in sorted(open_, key=lambda j: (-frac[j], j))[:n_extra]:
            share[j] += 1
        added = 0
        for j in open_:
            new = min(b[j] + share[j], sizes[j])
            added += new - b[j]
            b[j] = new
        R -= added
    return b


def select_cluster(D, core, kept, b, *, d_in, d_out, opponent, K, opponent_penalty):
    """Greedy boundary selection inside one cluster; the core is the first pick."""
    sel = [core]
    cand = list(kept)
    r = int(len(kept) / b)
    pen = np.ones(K)
    while len(sel) < b:
        node = sel[-1]
        cand.remove(node)
        nearest = sorted(cand, key=lambda c: (D[node, c], c))[: r - 1]
        cand = [c for c in cand if c not in nearest]
        if node != core and K > 1:
            pen[opponent[node]] *= opponent_penalty
        best = min(
            cand,
            key=lambda c: (penalised_score(c, pen, d_in, d_out, opponent), D[node, c], c),
        )
        sel.append(best)
    return sel


def prepare(
    F,
    core_indices,
    n_neighbors=10,
    ring_fraction=0.1,
    removal_fraction=0.1,
):
    """Stages 0-2 (cores, clusters, denoising, boundary scores); they do not depend on B.

    Returns
    -------
    state : dict
        ``D``, ``cores``, ``labels``, ``kept_by_cluster``, ``removed``,
        ``boundary_scores``, ``d_in``, ``d_out``, ``opponents``.
    """
    F = np.asarray(F, dtype=np.float64)
    D = cdist(F, F)
    cores = dedup_cores(F, core_indices)
    labels = assign(D, cores)

    kept_by_cluster, removed = [], np.zeros(len(F), dtype=bool)
    for j, core in enumerate(cores):
        members = [i for i in range(len(F)) if labels[i] == j]
        kept, gone = denoise(
            D,
            members,
            core,
            n_neighbors=n_neighbors,
            ring_fraction=ring_fraction,
            removal_fraction=removal_fraction,
        )
        kept_by_cluster.append(kept)
        removed[gone] = True

    bs, d_in, d_out, opponent = boundary_scores(D, cores, labels, kept_by_cluster)
    return {
        "D": D,
        "cores": cores,
        "labels": labels,
        "kept_by_cluster": kept_by_cluster,
        "removed": removed,
        "boundary_scores": bs,
        "d_in": d_in,
        "d_out": d_out,
        "opponents": opponent,
    }


def select_from(state, B, opponent_penalty=1.1):
    """Stage 3 (allocation, per-cluster greedy selection, top-up) on a prepared state.

    Returns
    -------
    indices : ndarray of np.intp
    allocation : ndarray of np.intp or None
        Picks per cluster; None when ``B < K`` (the k-centre subset of the cores).
    """
    D, cores, labels = state["D"], state["cores"], state["labels"]
    kept_by_cluster, removed = state["kept_by_cluster"], state["removed"]
    K = len(cores)
    if B < K:
        return np.asarray(kcenter_cores(D, cores, B), dtype=np.intp), None

    alloc = allocate([len(kept) for kept in kept_by_cluster], B)
    selection = []
    for j, core in enumerate(cores):
        selection += select_cluster(
            D,
            core,
            kept_by_cluster[j],
            alloc[j],
            d_in=state["d_in"],
            d_out=state["d_out"],
            opponent=state["opponents"],
            K=K,
            opponent_penalty=opponent_penalty,
        )
    n_top_up = B - len(selection)
    if n_top_up > 0:
        gone = [i for i in range(len(D)) if removed[i]]
        gone.sort(key=lambda i: (D[i, cores[labels[i]]], i))
        selection += gone[:n_top_up]
    return np.asarray(selection, dtype=np.intp), np.asarray(alloc, dtype=np.intp)


def bilaf_reference(
    F,
    B,
    core_indices,
    n_neighbors=10,
    ring_fraction=0.1,
    removal_fraction=0.1,
    opponent_penalty=1.1,
):
    """BiLAF selection of ``B`` samples of ``F`` around the given cores.

    Returns
    -------
    indices : ndarray of np.intp
        The selection, cluster by cluster (core first), then the top-up.
    info : dict
        ``cores``, ``labels``, ``removed``, ``boundary_scores``, ``opponents``,
        ``allocation`` (None when ``B < K``), ``d_in``, ``d_out``.
    """
    state = prepare(
        F,
        core_indices,
        n_neighbors=n_neighbors,
        ring_fraction=ring_fraction,
        removal_fraction=removal_fraction,
    )
    indices, allocation = select_from(state, B, opponent_penalty)
    info = {
        "cores": np.asarray(state["cores"], dtype=np.intp),
        "allocation": allocation,
        **{
            key: state[key]
            for key in ("labels", "removed", "boundary_scores", "opponents", "d_in", "d_out")
        },
    }
    return indices, info
