"""K-means selection from the subspace start against the random-rows start, over seeds.

``KMeansSelector(init="subspace")`` (the default above 256 features) clusters the pool in
its top 128 principal axes before the full-space Lloyd iterations; ``init="random"``
starts them from the random rows directly (the previous default). On the cached CIFAR-10
Lite0 features (50,000 x 1,280, see ``bench_selectors.py``) at B = 1,000, for each seed:
CPU time of the selection (one BLAS / OpenMP thread), k-means objective, iterations, and
the test accuracy of the linear probe of ``bench_selectors.py`` on the picks; then the
mean and standard deviation over the seeds and the paired (same seed) differences.

Usage::

    python benchmarks/bench_kmeans_start.py                # seeds 0-4, B = 1,000

Writes ``benchmarks/results/kmeans_start.json``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from _common import run_metadata, write_json
from bench_selectors import DATA, FEATURES, RESULTS, TEST_FEATURES, probe_accuracy


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", default=str(FEATURES))
    p.add_argument("--test-features", default=str(TEST_FEATURES))
    p.add_argument("--data", default=str(DATA), help="cifar10-jpeg.npz (labels)")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--inits", nargs="+", default=["subspace", "random"])
    p.add_argument("--out", default=str(RESULTS / "kmeans_start.json"))
    args = p.parse_args(argv)
    for path in (args.features, args.test_features, args.data):
        if not os.path.exists(path):
            p.error(f"{path} does not exist (run cifar10_oneshot.py first for the features)")

    import faiss
    from threadpoolctl import threadpool_limits

    from peal_sk.selection import KMeansSelector

    faiss.omp_set_num_threads(1)
    F, F_test = np.load(args.features), np.load(args.test_features)
    labels = np.load(args.data)
    y, y_test = labels["train_labels"], labels["test_labels"]
    runs = []
    for init in args.inits:
        for seed in args.seeds:
            sel = KMeansSelector(init=init, random_state=seed)
            with threadpool_limits(1):
                c0 = time.process_time()
                idx = sel.select(F, args.budget)
                cpu = time.process_time() - c0
            acc = probe_accuracy(idx, F, y, F_test, y_test)
            runs.append(
                {
                    "init": init,
                    "seed": seed,
                    "cpu_seconds": round(cpu, 2),
                    "objective": float(sel.inertia_),
                    "n_iter_subspace": int(sel.n_iter_subspace_),
                    "n_iter": int(sel.n_iter_),
                    "probe_acc": acc,
                }
            )
            print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for init in args.inits:
        rows = [r for r in runs if r["init"] == init]
        acc = 100 * np.array([r["probe_acc"] for r in rows])
        summary[init] = {
            "cpu_seconds_mean": float(np.mean([r["cpu_seconds"] for r in rows])),
            "objective_mean": float(np.mean([r["objective"] for r in rows])),
            "probe_acc_mean_pct": float(acc.mean()),
            "probe_acc_sd_pct": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
        }
    lines = ["| start | CPU (s) | objective | probe acc (%) |", "|---|---|---|---|"]
    for init, s in summary.items():
        lines.append(
            f"| {init} | {s['cpu_seconds_mean']:.1f} | {s['objective_mean']:,.0f} | "
            f"{s['probe_acc_mean_pct']:.2f} ± {s['probe_acc_sd_pct']:.2f} |"
        )
    if len(args.inits) == 2:
        a, b = args.inits
        by = {(r["init"], r["seed"]): r for r in runs}
        diff = 100 * np.array([by[a, s]["probe_acc"] - by[b, s]["probe_acc"] for s in args.seeds])
        speed = [by[b, s]["cpu_seconds"] / by[a, s]["cpu_seconds"] for s in args.seeds]
        summary["paired"] = {
            "probe_acc_diff_pct_mean": float(diff.mean()),
            "probe_acc_diff_pct_sd": float(diff.std(ddof=1)) if diff.size > 1 else 0.0,
            "speedup_mean": float(np.mean(speed)),
        }
        lines.append(
            f"\n{a} - {b}, same seed: probe accuracy {diff.mean():+.2f} ± "
            f"{summary['paired']['probe_acc_diff_pct_sd']:.2f} points, "
            f"{np.mean(speed):.2f}x faster"
        )
    table = "\n".join(lines)
    print(table)
    out = {
        "meta": run_metadata("bench_kmeans_start.py"),
        "threads": "1 per selection (threadpoolctl; faiss's OpenMP too); the probe is not timed",
        "budget": args.budget,
    }
    out.update({"summary": summary, "table_markdown": table, "runs": runs})
    write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
