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
from _common import make_data, run_metadata

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


def run_bilaf(n, activeft=False):
    from peal_sk.selection import ActiveFTSelector, BiLAFSelector

    K, B = CONFIGS.get(n, (max(1, n // 200), max(1, n // 10)))
    X = make_data(n)
    rss_data = peal_rss = peak_rss_mib()
    cores = np.random.default_rng(1).choice(n, size=K, replace=False)
    sel = BiLAFSelector(core_indices=cores)
    t0 = time.perf_counter()
    idx = sel.select(X, B)
    total = time.perf_counter() - t0
    peal_rss = peak_rss_mib()
    out = {
        "n": n,
        "d": X.shape[1],
        "K": K,
        "B": B,
        "bilaf_total_s": total,
        "stages_s": {k: round(v, 4) for k, v in sel.timings_.items()},
        "n_selected": int(idx.size),
        "n_unique": int(np.unique(idx).size),
        "peak_rss_mib": round(peal_rss, 1),
        "data_rss_mib": round(rss_data, 1),
        "data_mib": round(X.nbytes / 2**20, 1),
    }
    if activeft:
        a = ActiveFTSelector(max_iter=300, random_state=0)
        t0 = time.perf_counter()
        a.select(X, K)
        out["activeft_s"] = time.perf_counter() - t0
        out["activeft_loss_first_last"] = [float(a.loss_curve_[0]), float(a.loss_curve_[-1])]
        out["peak_rss_mib_with_activeft"] = round(peak_rss_mib(), 1)
    return out


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
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-activeft", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_bilaf(args.child, activeft=args.child_activeft)))
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
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
