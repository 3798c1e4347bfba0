"""Speed and scale of BiLAF and ActiveFT on synthetic clustered features.

Data (issue 3 protocol, fixed seed): N points in d=384, float32; 100 centres drawn from
N(0, 2^2), each point a random centre plus N(0, 1) noise. Cores are drawn uniformly
(``core_indices``) so the BiLAF stages are timed without the core selector. Comparisons
with the official code are made in the same run on real features by
``benchmarks/bench_selectors.py --official-dir DIR``, never against a constant.

Usage::

    python benchmarks/bench_bilaf.py                     # N=50k: BiLAF + ActiveFT
    python benchmarks/bench_bilaf.py --scaling           # N=10k, 50k, 200k, 1M (BiLAF)
    python benchmarks/bench_bilaf.py --skip-activeft --sizes 50000
    python benchmarks/bench_bilaf.py --big-cluster       # one 30,000-member cluster

Prints per-stage times and peak memory (RSS high-water mark of the process, so each size
runs in a fresh subprocess); writes
``benchmarks/results/bilaf.json``.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import make_data, run_metadata, write_json

RESULTS = Path(__file__).resolve().parent / "results"

# (N, K, B) per size: the 50k setting; K = 0.5 % of N and B = 10 % of N elsewhere,
# except 1M where the issue fixes K=5000, B=20000
CONFIGS = {
    10_000: (50, 1_000),
    50_000: (250, 5_000),
    200_000: (1_000, 20_000),
    1_000_000: (5_000, 20_000),
}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bilaf_record(X, K, B, sel, idx, total, rss_data):
    """What one BiLAF selection reports (the peak RSS read right after it)."""
    return {
        "n": X.shape[0],
        "d": X.shape[1],
        "K": K,
        "B": B,
        "bilaf_total_s": total,
        "stages_s": {k: round(v, 4) for k, v in sel.timings_.items()},
        "n_selected": int(idx.size),
        "n_unique": int(np.unique(idx).size),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "data_rss_mib": round(rss_data, 1),
        "data_mib": round(X.nbytes / 2**20, 1),
    }


def run_bilaf(n, activeft=False):
    from peal_sk.selection import ActiveFTSelector, BiLAFSelector

    K, B = CONFIGS.get(n, (max(1, n // 200), max(1, n // 10)))
    X = make_data(n)
    rss_data = peak_rss_mib()
    cores = np.random.default_rng(1).choice(n, size=K, replace=False)
    sel = BiLAFSelector(core_indices=cores)
    t0 = time.perf_counter()
    idx = sel.select(X, B)
    total = time.perf_counter() - t0
    out = _bilaf_record(X, K, B, sel, idx, total, rss_data)
    if activeft:
        a = ActiveFTSelector(max_iter=300, random_state=0)
        t0 = time.perf_counter()
        a.select(X, K)
        out["activeft_s"] = time.perf_counter() - t0
        out["activeft_loss_first_last"] = [float(a.loss_curve_[0]), float(a.loss_curve_[-1])]
        out["peak_rss_mib_with_activeft"] = round(peak_rss_mib(), 1)
    return out


def big_cluster_data(n=50_000, big=30_000, n_blobs=50, d=384, seed=0):
    """``big`` points around one centre, the rest spread over ``n_blobs - 1`` others.

    Centres are drawn from N(0, 2^2) and points are a centre plus N(0, 1) noise, as in
    :func:`_common.make_data`; in 384-d the centres are far apart next to the noise, so
    the core of each blob (its first point) gets that blob's points.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_blobs, d))
    blob = np.concatenate([np.zeros(big, dtype=int), rng.integers(1, n_blobs, size=n - big)])
    blob = blob[rng.permutation(n)]
    X = (centres[blob] + rng.normal(size=(n, d))).astype(np.float32)
    cores = np.array([np.flatnonzero(blob == b)[0] for b in range(n_blobs)])
    return X, cores


def run_big_cluster():
    """BiLAF (cores given, K = 50, B = 500) on 50,000 x 384 with one 30,000-member cluster."""
    from peal_sk.selection import BiLAFSelector

    X, cores = big_cluster_data()
    rss_data = peak_rss_mib()
    sel = BiLAFSelector(core_indices=cores)
    t0, c0 = time.perf_counter(), time.process_time()
    idx = sel.select(X, 500)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = _bilaf_record(X, len(cores), 500, sel, idx, total, rss_data)
    # the cluster sizes: nearest core of every sample (after the timing)
    C = X[cores].astype(np.float64)
    near = np.argmin((C**2).sum(1)[None, :] - 2 * X.astype(np.float64) @ C.T, axis=1)
    sizes = np.bincount(near, minlength=len(cores))
    return {**out, "largest_cluster": int(sizes.max()), "bilaf_cpu_s": cpu}


def report(r):
    st = r["stages_s"]
    print(
        f"N={r['n']:>9,} K={r['K']:>5} B={r['B']:>6}: BiLAF (cores given) "
        f"{r['bilaf_total_s']:.3f} s [assign {st['assign']:.3f}, denoise {st['denoise']:.3f}, "
        f"boundary {st['boundary']:.3f}, select {st['select']:.3f}]; "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB (data {r['data_mib']:.0f} MiB)"
    )
    if "activeft_s" in r:
        print(
            f"  ActiveFT K={r['K']}, 300 iterations: {r['activeft_s']:.1f} s; loss "
            f"{r['activeft_loss_first_last'][0]:.4f} -> {r['activeft_loss_first_last'][1]:.4f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000])
    parser.add_argument("--scaling", action="store_true", help="N = 10k, 50k, 200k, 1M")
    parser.add_argument("--skip-activeft", action="store_true")
    parser.add_argument(
        "--big-cluster",
        action="store_true",
        help="one 30,000-member cluster in 50,000 x 384 (K = 50, B = 500)",
    )
    parser.add_argument("--child-big", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-activeft", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_bilaf(args.child, activeft=args.child_activeft)))
        return
    if args.child_big:
        print(json.dumps(run_big_cluster()))
        return
    if args.big_cluster:  # a fresh process: its peak RSS is this selection's
        cmd = [sys.executable, __file__, "--child-big"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        report(r)
        print(f"  largest cluster {r['largest_cluster']:,} members; CPU {r['bilaf_cpu_s']:.1f} s")
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "bilaf_big_cluster.json"
        meta = run_metadata("bench_bilaf.py")
        write_json(path, {"meta": meta, "results": [r]})
        return
    sizes = sorted(CONFIGS) if args.scaling else args.sizes
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n)]
        if n == 50_000 and not args.skip_activeft:
            cmd.append("--child-activeft")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        report(r)
        results.append(r)
    RESULTS.mkdir(exist_ok=True)
    meta = run_metadata("bench_bilaf.py")
    path = RESULTS / ("bilaf_scaling.json" if args.scaling else "bilaf.json")
    write_json(path, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
