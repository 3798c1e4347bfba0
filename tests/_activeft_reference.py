"""Frozen copy of ``activeft_select`` before the bounded forward pass (issue 13).

The slow reference the tests compare the fast implementation with: same seed, same
selection. Verbatim except for imports (the old 64 MiB block constant is inlined and the
old ``kcenter_greedy`` comes from ``tests/_kcenter_reference.py``). Do not optimise.
"""

from dataclasses import dataclass, field

import numpy as np
from _kcenter_reference import kcenter_greedy_reference as kcenter_greedy
from scipy.special import expit, logsumexp

BLOCK_BYTES = 64 * 2**20

#: Samples whose best centroid could change are found with bounds; a candidate centroid
#: of a group is one within this cosine margin of some member's best similarity.
_MARGIN = 0.1
#: Largest ``n_samples x n_centroids`` float32 similarity matrix kept between passes.
_MAX_SIM_BYTES = 512 * 2**20


def _normalize(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


@dataclass
class _Adam:
    """torch.optim.Adam defaults (betas 0.9, 0.999, eps 1e-8), no weight decay."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: np.ndarray = field(default=None, repr=False)
    v: np.ndarray = field(default=None, repr=False)

    def step(self, param, grad):
        if self.m is None:
            self.m, self.v = np.zeros_like(param), np.zeros_like(param)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class _GroupedForward:
    """Exact ``argmax_j f_i . c_hat_j`` for all samples, amortised over iterations.

    A refresh computes all similarities (blocked GEMM). Samples are grouped by their best
    centroid; each group keeps the centroids within ``_MARGIN`` of some member's best as
    candidates, and each sample the largest similarity ``u_i`` to a non-candidate. Between
    refreshes only group x candidate similarities are computed; since ``||f_i|| = 1`` a
    similarity moves by at most ``||delta c_hat_j||`` per step, so while a sample's best
    exceeds ``u_i + accumulated drift`` its argmax is among the candidates and exact. Any
    violation triggers a refresh. The backward scatter ``sum_{i: k(i)=k} w_i f_i`` is done
    per group on the same contiguous block, so each iteration reads the features once.
    """

    def __init__(self, f):
        self.f = f
        self.n = f.shape[0]

    def refresh(self, c_hat):
        f, n, K = self.f, self.n, c_hat.shape[0]
        c32 = c_hat.astype(f.dtype)
        step = max(1, BLOCK_BYTES // (4 * K))
        best = np.empty(n, dtype=np.float64)
        b = np.empty(n, dtype=np.intp)
        keep = n * K * 4 <= _MAX_SIM_BYTES
        S_all = np.empty((n, K), dtype=f.dtype) if keep else None
        for s0 in range(0, n, step):
            S = f[s0 : s0 + step] @ c32.T
            b[s0 : s0 + step] = np.argmax(S, axis=1)
            best[s0 : s0 + step] = S[np.arange(S.shape[0]), b[s0 : s0 + step]]
            if keep:
                S_all[s0 : s0 + step] = S
        order = np.argsort(b, kind="stable")
        counts = np.bincount(b, minlength=K)
        starts = np.concatenate([[0], np.cumsum(counts)])
        # candidate mask per group: OR over members of (S_ij >= best_i - margin)
        cand = np.zeros((K, K), dtype=bool)
        for s0 in range(0, n, step):
            rows = order[s0 : s0 + step]
            S = S_all[rows] if keep else f[rows] @ c32.T
            near = S >= (best[rows] - _MARGIN)[:, None]
            groups = b[rows]
            bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            cand[groups[bounds]] |= np.logical_or.reduceat(near, bounds, axis=0)
        u = np.empty(n, dtype=np.float64)
        for s0 in range(0, n, step):
            rows = order[s0 : s0 + step]
            S = S_all[rows] if keep else f[rows] @ c32.T
            S = np.where(cand[b[rows]], -np.inf, S)
            u[s0 : s0 + step] = S.max(axis=1)
        self.order, self.starts = order, starts
        self.f_sorted = np.ascontiguousarray(f[order])
        self.u_sorted = u  # already in group order
        self.groups = [
            (k, starts[k], starts[k + 1], np.flatnonzero(cand[k])) for k in range(K) if counts[k]
        ]
        self.drift = 0.0

    def step(self, c_hat, log_S, temperature, log_beta):
        """One forward/backward pass; returns (loss, g_hat) or None if a refresh is needed."""
        fs = self.f_sorted
        c32 = c_hat.astype(fs.dtype)
        K, d = c_hat.shape
        term2 = np.zeros((K, d), dtype=np.float64)
        wsum = np.zeros(K)
        loss = 0.0
        for k, a, z_end, cand in self.groups:
            block = fs[a:z_end]
            S = block @ c32[cand].T
            j = np.argmax(S, axis=1)
            s = S[np.arange(S.shape[0]), j].astype(np.float64)
            if np.any(s <= self.u_sorted[a:z_end] + self.drift):
                return None
            kk = cand[j]
            z = log_beta + log_S[kk] - s / temperature
            loss += np.logaddexp(0.0, z).sum()
            w = expit(z)
            # scatter sum_i w_i f_i to each sample's best centroid: one GEMV for the
            # group's own centroid, then move the few samples whose best is another one
            term2[k] += w.astype(fs.dtype) @ block
            moved = np.flatnonzero(kk != k)
            if moved.size:
                contrib = w[moved, None] * block[moved]
                term2[k] -= contrib.sum(axis=0)
                np.add.at(term2, kk[moved], contrib)
            wsum += np.bincount(kk, weights=w, minlength=K)
        n = self.n
        return loss / n, wsum / n, term2 / n


def _dense_step(f, c_hat, log_S, temperature, log_beta):
    """Plain blocked forward + sparse backward (used for mini-batches)."""
    n, K = f.shape[0], c_hat.shape[0]
    c32 = c_hat.astype(f.dtype)
    step = max(1, BLOCK_BYTES // (4 * K))
    k = np.empty(n, dtype=np.intp)
    s = np.empty(n)
    for s0 in range(0, n, step):
        S = f[s0 : s0 + step] @ c32.T
        k[s0 : s0 + step] = np.argmax(S, axis=1)
        s[s0 : s0 + step] = S[np.arange(S.shape[0]), k[s0 : s0 + step]]
    z = log_beta + log_S[k] - s / temperature
    loss = float(np.mean(np.logaddexp(0.0, z)))
    w = expit(z) / n
    order = np.argsort(k, kind="stable")
    ks = k[order]
    bounds = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    term2 = np.zeros((K, f.shape[1]))
    term2[ks[bounds]] = np.add.reduceat(w[order, None] * f[order], bounds, axis=0)
    wsum = np.bincount(k, weights=w, minlength=K)
    return loss, wsum, term2


def _map_to_samples(f, c_hat):
    """For centroid j = 0..K-1 in order, the untaken sample most similar to it."""
    n, K = f.shape[0], c_hat.shape[0]
    c32 = c_hat.astype(f.dtype)
    step = max(1, BLOCK_BYTES // (4 * n))
    taken = []
    for j0 in range(0, K, step):
        S = c32[j0 : j0 + step] @ f.T
        for row in S:
            if taken:
                row[np.asarray(taken)] = -np.inf
            taken.append(int(np.argmax(row)))  # ties: lowest index
    return np.asarray(taken, dtype=np.intp)


def activeft_select_reference(
    X,
    n_cores,
    rng,
    *,
    temperature=0.07,
    learning_rate=1e-3,
    max_iter=300,
    batch_size="auto",
    init="random",
    beta=1.0,
    _grouped=True,
):
    """Run ActiveFT on features ``X`` and return the selected sample indices.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Features (normalised internally).
    n_cores : int
        Number of samples to select.
    rng : numpy.random.Generator
    temperature, learning_rate, max_iter, batch_size, init, beta
        See :class:`ActiveFTSelector`.

    Returns
    -------
    idx : ndarray of shape (n_cores,), np.intp
        Selected indices, sorted ascending.
    info : dict
        ``loss`` (per iteration), ``centroids`` (final, normalised), ``order`` (the
        selected samples in centroid order), ``n_refresh`` (full similarity passes).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import activeft_select
    >>> X = np.random.default_rng(0).normal(size=(100, 4))
    >>> idx, info = activeft_select(X, 5, np.random.default_rng(0), max_iter=20)
    >>> idx.shape, info["loss"].shape, info["centroids"].shape
    ((5,), (20,), (5, 4))
    """
    n = X.shape[0]
    f = _normalize(X.astype(np.float32 if X.dtype == np.float32 else np.float64))
    if init == "kcenter":
        start, _ = kcenter_greedy(f, n_cores, rng)
    else:
        start = rng.choice(n, size=n_cores, replace=False)
    c = f[start].astype(np.float64)
    # an all-zero sample has no direction: start its centroid from a seeded random one
    zero = np.linalg.norm(c, axis=1) == 0
    if zero.any():
        c[zero] = _normalize(rng.normal(size=(int(zero.sum()), c.shape[1])))
    batch = n if batch_size == "auto" and n <= 65536 else batch_size
    batch = 65536 if batch == "auto" else min(int(batch), n)
    full = batch >= n
    adam = _Adam(lr=learning_rate)
    log_beta = np.log(beta)
    losses = []
    full = full and _grouped
    grouped = _GroupedForward(f) if full else None
    n_refresh = 0
    c_hat_prev = None
    for _ in range(max_iter):
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        c_hat = c / norms
        G = (c_hat @ c_hat.T) / temperature
        log_S = logsumexp(G, axis=1)
        if full:
            if c_hat_prev is None:
                grouped.refresh(c_hat)
                n_refresh += 1
            else:
                grouped.drift += float(np.sqrt(((c_hat - c_hat_prev) ** 2).sum(1).max()))
            out = grouped.step(c_hat, log_S, temperature, log_beta)
            if out is None:
                grouped.refresh(c_hat)
                n_refresh += 1
                out = grouped.step(c_hat, log_S, temperature, log_beta)
            loss, wsum, term2 = out
        else:
            fb = f if batch >= n else f[np.sort(rng.choice(n, size=batch, replace=False))]
            loss, wsum, term2 = _dense_step(fb, c_hat, log_S, temperature, log_beta)
        W = np.exp(G - log_S[:, None])
        g_hat = (wsum[:, None] * (W @ c_hat) - term2) / temperature
        grad = (g_hat - c_hat * np.sum(c_hat * g_hat, axis=1, keepdims=True)) / norms
        losses.append(loss)
        c_hat_prev = c_hat
        adam.step(c, grad)
    c_hat = c / np.linalg.norm(c, axis=1, keepdims=True)
    order = _map_to_samples(f, c_hat)
    return np.sort(order), {
        "loss": np.asarray(losses),
        "centroids": c_hat,
        "order": order,
        "n_refresh": n_refresh,
    }
