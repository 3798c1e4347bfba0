"""Speed of feature-distance selection (PEAL Featdist) and k-centre greedy.

Pool: N = 50,000 x 384 float32 clustered features (100 centres N(0, 2^2) plus N(0, 1)
noise, fixed seed), 500 labelled samples, 500 picks. Times, best of ``--repeat``:

* nearest-labelled distances (``FeatureDistanceSelector(mode="nearest")``): faiss
  (``backend="faiss"``) vs peal_sk's blocked numpy kernel vs scikit-learn's
  ``pairwise_distances_argmin_min``;
* k-centre greedy, 500 picks (``KCenterSelector``): faiss / numpy backends (they differ
  only in the initial distances to the labelled set; the greedy loop prunes centres by
  the triangle inequality) vs a plain greedy loop (one full distance pass per pick).

Usage::

    python benchmarks/bench_featdist.py [--repeat 3]

Writes ``benchmarks/results/featdist.json``.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from _common import make_data, run_metadata, write_json
from sklearn.metrics import pairwise_distances_argmin_min

from peal_sk.selection import FeatureDistanceSelector, KCenterSelector

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(repeat, fn):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def plain_kcenter(X, X_labeled, n_picks):
    """Textbook greedy k-centre: one full distance pass per pick (the baseline)."""
    x_sq = np.einsum("ij,ij->i", X, X)
    _, mind = pairwise_distances_argmin_min(X, X_labeled)
    mind = mind.astype(np.float64) ** 2
    picks = []
    for _ in range(n_picks):
        p = int(np.argmax(mind))
        picks.append(p)
        d2 = x_sq - 2 * (X @ X[p]) + x_sq[p]
        np.minimum(mind, d2, out=mind)
        mind[p] = -1
    return np.asarray(picks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    X = make_data(50_000)
    rng = np.random.default_rng(1)
    lab = rng.choice(len(X), size=500, replace=False)
    X_lab, y_lab = X[lab], rng.integers(10, size=500)
    X_pool = np.delete(X, lab, axis=0)
    res = {}

    for backend in ("faiss", "numpy"):
        sel = FeatureDistanceSelector("nearest", backend=backend, random_state=0)
        res[f"nearest_{backend}_s"], idx = best_of(
            args.repeat, lambda sel=sel: sel.select(X_pool, 500, X_labeled=X_lab, y_labeled=y_lab)
        )
        res[f"nearest_{backend}_first10"] = idx[:10].tolist()
    res["nearest_sklearn_s"], _ = best_of(
        args.repeat, lambda: pairwise_distances_argmin_min(X_pool, X_lab)
    )
    for backend in ("faiss", "numpy"):
        sel = KCenterSelector(backend=backend, random_state=0)
        res[f"kcenter_{backend}_s"], idx = best_of(
            args.repeat, lambda sel=sel: sel.select(X_pool, 500, X_labeled=X_lab, y_labeled=y_lab)
        )
        res[f"kcenter_{backend}_picks"] = idx.tolist()
    res["kcenter_plain_s"], plain = best_of(1, lambda: plain_kcenter(X_pool, X_lab, 500))
    same = len(set(plain.tolist()) & set(res["kcenter_numpy_picks"])) / 500
    res["kcenter_overlap_with_plain"] = same

    print(
        f"N={len(X_pool):,} x {X.shape[1]} float32, 500 labelled, 500 picks, best of {args.repeat}"
    )
    print(
        f"nearest-labelled: faiss {res['nearest_faiss_s']:.3f} s, peal_sk numpy "
        f"{res['nearest_numpy_s']:.3f} s, sklearn {res['nearest_sklearn_s']:.3f} s "
        f"(sklearn / faiss = {res['nearest_sklearn_s'] / res['nearest_faiss_s']:.1f}x)"
    )
    print(
        f"k-centre 500 picks: faiss {res['kcenter_faiss_s']:.3f} s, numpy "
        f"{res['kcenter_numpy_s']:.3f} s, plain greedy {res['kcenter_plain_s']:.3f} s "
        f"(plain / faiss = {res['kcenter_plain_s'] / res['kcenter_faiss_s']:.1f}x); "
        f"same picks as plain: {same:.0%}"
    )
    for key in [k for k in res if k.endswith("_picks") or k.endswith("_first10")]:
        res.pop(key)
    RESULTS.mkdir(exist_ok=True)
    meta = run_metadata("bench_featdist.py")
    path = RESULTS / "featdist.json"
    write_json(path, {"meta": meta, "results": res})


if __name__ == "__main__":
    main()
