"""Time and memory of TypiClust and ProbCover at scale (issue 12, item 3).

Each configuration runs in this process once (first call, cold memory); run one
configuration per invocation for a clean peak RSS::

    python benchmarks/bench_lowbudget.py --n 1000000 --d 384 --budget 1000
    python benchmarks/bench_lowbudget.py --budget 1000 \
        --features benchmarks/.cache/cifar10_train_efficientnet_lite0_128px_fp32.npy

Synthetic data are issue 3's (``_common.make_data``: 100 centres N(0, 2^2), points
centre + N(0, 1), float32). Appends one record per strategy to
``benchmarks/results/lowbudget_scaling.json`` with the time, the process peak RSS
(``resource.getrusage``) and the selectors' fitted attributes.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from _common import make_data, run_metadata

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds():
    """User + system CPU time of this process (wall time is noisy on a shared machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--features", type=Path, help="a .npy of features instead of synthetic")
    p.add_argument("--budget", type=int, default=1_000)
    p.add_argument("--strategies", nargs="+", default=["typiclust", "probcover"])
    p.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads")
    p.add_argument("--delta", type=float, default=None, help="ProbCover's delta (default: purity)")
    args = p.parse_args(argv)
    if args.threads:
        import faiss
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(args.threads)

    from peal_sk.selection import ProbCoverSelector, TypiClustSelector

    t0 = time.perf_counter()
    if args.features:
        X = np.load(args.features).astype(np.float32, copy=False)
        source = str(args.features.name)
    else:
        X = make_data(args.n, args.d)
        source = f"synthetic make_data({args.n}, d={args.d})"
    print(f"data {X.shape} {X.dtype} in {time.perf_counter() - t0:.1f} s, "
          f"RSS {peak_rss_mib():.0f} MiB", flush=True)  # fmt: skip
    base_rss = peak_rss_mib()
    records = []
    for name in args.strategies:
        if name == "probcover":
            sel = ProbCoverSelector(delta=args.delta, random_state=0)
        else:
            sel = TypiClustSelector(random_state=0)
        t0, c0 = time.perf_counter(), cpu_seconds()
        idx = sel.select(X, args.budget)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        attrs = {
            k: getattr(sel, k)
            for k in ("n_clusters_", "delta_", "coverage_", "n_edges_", "n_filled_")
            if hasattr(sel, k)
        }
        rec = {
            "strategy": name,
            "data": source,
            "shape": list(X.shape),
            "budget": args.budget,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "peak_rss_mib": round(peak_rss_mib()),
            "rss_after_data_mib": round(base_rss),
            "n_unique": int(np.unique(idx).size),
            **attrs,
            "meta": run_metadata("bench_lowbudget.py"),
        }
        records.append(rec)
        print(json.dumps(rec), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "lowbudget_scaling.json"
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + records, indent=2) + "\n")


if __name__ == "__main__":
    main()
