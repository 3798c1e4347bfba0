"""Frozen copy of `_nearest_untaken` with its float64 screen (before the float32 one)."""

import numpy as np

from peal_sk.utils._blocks import block_rows


def nearest_untaken_reference(F, centres):
    """For each centre in order, the nearest sample not taken yet (ties: lowest index).

    Distances are screened with a float64 Gram expansion and the near-ties re-checked by
    direct differences, so exactly tied samples (duplicates) resolve by index.
    """
    F64 = np.asarray(F, dtype=np.float64)
    mu = F64.mean(axis=0)
    Fc = F64 - mu
    Cc = np.asarray(centres, dtype=np.float64) - mu
    f_sq = np.einsum("ij,ij->i", Fc, Fc)
    taken = np.zeros(len(F), dtype=bool)
    picks = np.empty(len(Cc), dtype=np.intp)
    dists = np.empty(len(Cc))
    step = block_rows(8 * len(F), len(Cc))
    for s in range(0, len(Cc), step):
        C = Cc[s : s + step]
        D2 = f_sq[None, :] - 2 * (C @ Fc.T) + np.einsum("ij,ij->i", C, C)[:, None]
        for row, j in enumerate(range(s, s + len(C))):
            d2 = np.where(taken, np.inf, D2[row])
            best = d2.min()
            tol = 1e-9 * (f_sq.max() + float(C[row] @ C[row])) + 1e-12
            near = np.flatnonzero(d2 <= best + tol)
            # exact step on the raw values (as scipy's cdist computes them)
            diff = F64[near] - np.asarray(centres[j], dtype=np.float64)
            exact = np.einsum("ij,ij->i", diff, diff)
            k = near[np.lexsort((near, exact))[0]]
            picks[j], dists[j] = k, np.sqrt(exact.min())
            taken[k] = True
    return picks, dists
