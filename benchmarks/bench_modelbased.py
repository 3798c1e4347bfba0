"""Time and peak memory of one DropQuery / BADGE query (issue 12, item 3).

Each (strategy, size) runs in a fresh process so that its peak RSS is its own. The model
is a ``LogisticRegression(C=--C)`` fitted on the first ``--n-labeled`` samples, labelled
by the nearest of 10 random directions (synthetic pool: ``_common.make_data``, float32,
centres N(0, 2^2), points centre + N(0, 1)) or by CIFAR-10 (``--cifar``: the cached Lite0
fp32 features, pool-standardised).
As a baseline in the same process, the time of one pass over the pool (``predict_proba``
of the same model) is reported, so ratios survive the noise of a shared machine.

Usage::

    python benchmarks/bench_modelbased.py --n 1000000 --d 384 --B 1000
    python benchmarks/bench_modelbased.py --cifar --B 1000
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(args):
    from sklearn.linear_model import LogisticRegression

    from peal_sk.selection import get_selector

    if args.cifar:
        F = np.load(HERE / ".cache" / "cifar10_train_efficientnet_lite0_128px_fp32.npy")
        F = (F - F.mean(axis=0)) / (F.std(axis=0) + 1e-6)
        y = np.load(args.labels)["train_labels"]
    else:
        from _common import make_data

        rng = np.random.default_rng(0)
        F = make_data(args.n, args.d, n_centres=args.n_classes)
        # labels: the nearest of n_classes random directions (a learnable linear problem)
        W = rng.normal(size=(args.n_classes, F.shape[1])).astype(np.float32)
        y = np.argmax(F @ W.T, axis=1)
    F = np.ascontiguousarray(F, dtype=np.float32)
    lab = np.random.default_rng(1).choice(len(F), args.n_labeled, replace=False)
    clf = LogisticRegression(C=args.C, max_iter=300).fit(F[lab], y[lab])
    rss_data = rss_mib()
    t0 = time.perf_counter()
    clf.predict_proba(F)
    t_pass = time.perf_counter() - t0
    sel = get_selector(args.strategy, random_state=0)
    t0 = time.perf_counter()
    idx = sel.select(F, args.B, classifier=clf)
    t_sel = time.perf_counter() - t0
    assert np.unique(idx).size == args.B
    out = {
        "strategy": args.strategy,
        "n": int(F.shape[0]),
        "d": int(F.shape[1]),
        "B": args.B,
        "seconds": t_sel,
        "predict_proba_seconds": t_pass,
        "ratio_to_one_pass": t_sel / t_pass,
        "peak_rss_mib": rss_mib(),
        "rss_after_data_and_model_mib": rss_data,
        "features_mib": F.nbytes / 2**20,
    }
    if hasattr(sel, "n_candidates_"):
        out["n_candidates"] = sel.n_candidates_
        out["threshold"] = sel.threshold_
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=["badge", "dropquery"])
    p.add_argument("--strategy", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=1280)
    p.add_argument("--B", type=int, default=1000)
    p.add_argument("--n-classes", type=int, default=10)
    p.add_argument("--n-labeled", type=int, default=200)
    p.add_argument(
        "--C", type=float, default=0.01, help="probe regularisation (small: a less sure model)"
    )
    p.add_argument("--cifar", action="store_true")
    p.add_argument(
        "--labels", type=Path, default=HERE.parent.parent / "shared/data/cifar10-jpeg.npz"
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.strategy:
        return one(args)
    from _common import run_metadata

    rows = []
    for s in args.strategies:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--strategy", s]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(res.returncode)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(
            json.dumps({"meta": run_metadata("bench_modelbased.py"), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
