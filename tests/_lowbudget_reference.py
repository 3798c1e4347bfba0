"""Slow, loop-by-loop transcriptions of TypiClust and ProbCover (numpy only).

The definitions are on the algorithm page, docs/user_guide/algorithms.rst.

Written from the specification (and the decisions documented on the selectors), not
from the implementation; the tests require both to pick the same samples in the same
order. Features are given already normalised and the clustering already made, so the
references cover everything after the k-means.
"""

import numpy as np


def _dist(a, b):
    return float(np.sqrt(np.sum((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


# -- TypiClust ------------------------------------------------------------------------------
def typicality(points, k, squared=False):
    """1 / (mean distance to the k nearest other points + 1e-5), one point at a time."""
    out = []
    for i, x in enumerate(points):
        dists = []
        for j, y in enumerate(points):
            if i != j:
                d = _dist(x, y)
                dists.append(d * d if squared else d)
        dists.sort()
        out.append(1.0 / (np.mean(dists[:k]) + 1e-5))
    return out


def typiclust_reference(F, n_pool, labels, budget, *, n_neighbors=20, min_cluster_size=5,
                        squared=False):  # fmt: skip
    """``F``: rows of the pool then the labelled samples; ``labels``: their clusters."""
    n_clusters = int(max(labels)) + 1
    clusters = []
    for c in range(n_clusters):
        members = [i for i in range(len(F)) if labels[i] == c]
        if not members:
            continue
        n_lab = sum(1 for i in members if i >= n_pool)
        clusters.append((len(members) <= min_cluster_size, n_lab, -len(members), c))
    clusters.sort()
    big = [c for small, _, _, c in clusters if not small]
    small = [c for is_small, _, _, c in clusters if is_small]
    taken_rows = [tuple(F[i]) for i in range(n_pool, len(F))]  # labelled rows
    selected = []
    scores = []
    for tier in (big, small):
        while len(selected) < budget:
            progressed = False
            for c in tier:
                if len(selected) == budget:
                    break
                avail = [i for i in range(n_pool) if labels[i] == c and i not in selected]
                if not avail:
                    continue
                fresh = [
                    i
                    for i in avail
                    if not any(
                        tuple(F[i]) == row and labels[j] == c
                        for j, row in _rows_with_index(taken_rows, n_pool, selected, F)
                    )
                ]
                P = fresh if fresh else avail
                k = min(n_neighbors, len(P) // 2)
                if len(P) == 1 or k == 0:
                    best, score = P[0], 0.0
                else:
                    typ = typicality([F[i] for i in P], k, squared)
                    pos = int(np.argmax(typ))  # first maximum: lowest index
                    best, score = P[pos], typ[pos]
                selected.append(best)
                scores.append(score)
                progressed = True
            if not progressed:
                break
    return selected, scores


def _rows_with_index(labelled_rows, n_pool, selected, F):
    """(index, row) of every labelled and selected sample."""
    for t, row in enumerate(labelled_rows):
        yield n_pool + t, row
    for i in selected:
        yield i, tuple(F[i])


# -- ProbCover ------------------------------------------------------------------------------
def probcover_reference(F, n_pool, delta, budget):
    """Greedy coverage; stops when everything is covered (the fill is not part of it)."""
    balls = [[j for j in range(n_pool) if _dist(F[i], F[j]) < delta or i == j] for i in
             range(len(F))]  # fmt: skip
    covered = set()
    for i in range(n_pool, len(F)):  # labelled samples cover their balls
        covered.update(balls[i])
    selected, scores = [], []
    while len(selected) < budget:
        best, best_count = None, 0
        for i in range(n_pool):
            count = sum(1 for j in balls[i] if j not in covered)
            if count > best_count:  # strict: ties keep the lowest index
                best, best_count = i, count
        if best is None:
            break
        selected.append(best)
        scores.append(float(best_count))
        covered.update(balls[best])
    return selected, scores, len(covered) / n_pool


def purity_delta_reference(F, labels, queries, alpha):
    """Largest delta (among the candidate radii) whose sampled purity is >= alpha."""
    dist = {(q, j): _dist(F[q], F[j]) for q in queries for j in range(len(F))}
    for delta in sorted(set(dist.values()), reverse=True):
        pure = 0
        for q in queries:
            ball = [j for j in range(len(F)) if dist[q, j] < delta]
            if all(labels[j] == labels[q] for j in ball):
                pure += 1
        if pure / len(queries) >= alpha:
            return delta
    return None
