"""ActiveFT's bounded pass with its two bounds, on the same real features, same seed.

``activeft_select`` recomputes a sample's row of similarities only when its bounds
cannot prove its nearest centroid unchanged. On non-negative features (pooled CNN
features) the bound is the positive part of each centroid's displacement; elsewhere
Cauchy-Schwarz. This runs the selection with each (``_POSITIVE_PART_BOUND`` switched
off for the second) on the cached CIFAR-10 Lite0 features (50,000 x 1,280, see
``bench_selectors.py``), one BLAS thread, alternating the two, and records wall and CPU
time, rows recomputed and rebased, and whether the two runs are the same bit for bit
(picks, loss curve, centroids): the bounds must decide only which rows are recomputed.

Usage::

    python benchmarks/bench_activeft_bounds.py             # K = 50 and 250, seed 0

Writes ``benchmarks/results/activeft_bounds.json``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from _common import run_metadata, write_json
from bench_selectors import FEATURES, RESULTS

BOUNDS = {"positive-part": True, "cauchy-schwarz": False}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", default=str(FEATURES))
    p.add_argument("--cores", type=int, nargs="+", default=[50, 250], help="K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--out", default=str(RESULTS / "activeft_bounds.json"))
    args = p.parse_args(argv)
    if not os.path.exists(args.features):
        p.error(f"{args.features} does not exist (run cifar10_oneshot.py first)")

    from threadpoolctl import threadpool_limits

    from peal_sk.selection import _activeft

    F = np.load(args.features)
    with threadpool_limits(1):  # warm-up: libraries loaded, memory faulted in once
        _activeft.activeft_select(F, min(args.cores), np.random.default_rng(0), max_iter=2)
    runs, same = [], {}
    for i, K in enumerate(args.cores):
        out = {}
        order = list(BOUNDS) if i % 2 == 0 else list(BOUNDS)[::-1]  # alternate who goes first
        for name in order:
            _activeft._POSITIVE_PART_BOUND = BOUNDS[name]
            with threadpool_limits(1):
                t0, c0 = time.perf_counter(), time.process_time()
                idx, info = _activeft.activeft_select(
                    F, K, np.random.default_rng(args.seed), max_iter=args.max_iter
                )
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[name] = (idx, info)
            runs.append(
                {
                    "K": K,
                    "bound": name,
                    "seconds": round(wall, 2),
                    "cpu_seconds": round(cpu, 2),
                    "n_recomputed": int(info["n_recomputed"]),
                    "n_rebased": int(info["n_rebased"]),
                    "final_loss": float(info["loss"][-1]),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
        (ia, a), (ib, b) = out.values()
        same[str(K)] = {
            "picks": bool(np.array_equal(ia, ib)),
            "loss_curve": bool(np.array_equal(a["loss"], b["loss"])),
            "centroids": bool(np.array_equal(a["centroids"], b["centroids"])),
        }
    _activeft._POSITIVE_PART_BOUND = True

    lines = [
        "| K | bound | time (s) | rows recomputed | rows rebased | same bit for bit |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['K']} | {r['bound']} | {r['seconds']:.1f} | {r['n_recomputed']:,} | "
            f"{r['n_rebased']:,} | {all(same[str(r['K'])].values())} |"
        )
    table = "\n".join(lines)
    print(table)
    result = {
        "meta": run_metadata("bench_activeft_bounds.py"),
        "threads": "1 (threadpoolctl)",
        "seed": args.seed,
        "max_iter": args.max_iter,
        "same_bit_for_bit": same,
        "table_markdown": table,
        "runs": runs,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
