"""ProbCover's radius on a second public dataset: scikit-learn's digits (raw pixels).

Issue 27: with the purity radius alone, ProbCover lost to random sampling on real
features. This script compares, on ``sklearn.datasets.load_digits`` (1,797 8x8 images,
10 classes, shipped inside scikit-learn, raw pixel values), random sampling, TypiClust,
ProbCover with the paper's purity radius alone (``budget_coverage=None``) and ProbCover
with its default (the purity radius raised to the budget's coverage radius), each built
by the registry (``make_selector``) with ``random_state=seed``.

Protocol (the one of ``cifar10_oneshot.py``, scaled down): a stratified split of 1,297
pool and 500 test images (fixed); a selection of B pool images is labelled with the true
labels; kNN with ``k = min(20, max(1, B // 10))`` on L2-normalised pixels and a
``LogisticRegression(C=1.0)`` on pool-standardised pixels are fitted on them and scored
on the test images. Seconds on one thread.

Usage::

    python benchmarks/bench_probcover_radius.py                  # 5 seeds, B = 10 ... 250
    python benchmarks/bench_probcover_radius.py --seeds 0 1 --budgets 20 50

Writes ``benchmarks/results/probcover_radius_digits.json`` (``--out``).
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
from _common import limit_threads, log, run_metadata, write_json

RESULTS = Path(__file__).resolve().parent / "results"
#: benchmark name -> (registered strategy, parameters)
STRATEGIES = {
    "random": ("random", {}),
    "typiclust": ("typiclust", {}),
    "probcover_purity": ("probcover", {"budget_coverage": None}),
    "probcover": ("probcover", {}),
}


def evaluate(idx, X_pool, y_pool, X_test, y_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    N_pool = X_pool / np.maximum(np.linalg.norm(X_pool, axis=1, keepdims=True), 1e-12)
    N_test = X_test / np.maximum(np.linalg.norm(X_test, axis=1, keepdims=True), 1e-12)
    k = min(20, max(1, len(idx) // 10))
    knn = KNeighborsClassifier(n_neighbors=k).fit(N_pool[idx], y_pool[idx])
    mu, sd = X_pool.mean(axis=0), X_pool.std(axis=0) + 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        lp = LogisticRegression(C=1.0, max_iter=5000).fit((X_pool[idx] - mu) / sd, y_pool[idx])
    return {
        "knn_acc": float((knn.predict(N_test) == y_test).mean()),
        "lp_acc": float((lp.predict((X_test - mu) / sd) == y_test).mean()),
        "n_classes": int(np.unique(y_pool[idx]).size),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100, 250])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "probcover_radius_digits.json")
    args = p.parse_args(argv)
    limit_threads(args.threads)

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from peal_sk.selection import make_selector

    X, y = load_digits(return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(
        X, y, test_size=500, stratify=y, random_state=0
    )
    runs = []
    for name, (strategy, params) in STRATEGIES.items():
        for budget in args.budgets:
            for seed in args.seeds:
                sel = make_selector(strategy, params, random_state=seed)
                idx = sel.select(X_pool, budget)
                run = {"strategy": name, "budget": budget, "seed": seed}
                run.update(evaluate(idx, X_pool, y_pool, X_test, y_test))
                for key in ("delta_", "purity_delta_", "coverage_"):
                    if hasattr(sel, key):
                        run[key] = getattr(sel, key)
                runs.append(run)
    summary = {}
    for name in STRATEGIES:
        for budget in args.budgets:
            rs = [r for r in runs if r["strategy"] == name and r["budget"] == budget]
            rand = {
                r["seed"]: r for r in runs if r["strategy"] == "random" and r["budget"] == budget
            }
            row = {}
            for key in ("knn_acc", "lp_acc"):
                v = 100 * np.array([r[key] for r in rs])
                d = 100 * np.array([r[key] - rand[r["seed"]][key] for r in rs])
                row[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1))}
                row[f"{key}_minus_random_pp"] = {
                    "mean": float(d.mean()),
                    "min": float(d.min()),
                    "max": float(d.max()),
                }
            if name.startswith("probcover"):
                row["coverage_mean"] = float(np.mean([r["coverage_"] for r in rs]))
                row["delta_mean"] = float(np.mean([r["delta_"] for r in rs]))
            summary.setdefault(name, {})[str(budget)] = row
            log(
                f"B={budget:>4} {name:<17} kNN {row['knn_acc']['mean']:5.1f} "
                f"({row['knn_acc_minus_random_pp']['mean']:+5.1f})  LP "
                f"{row['lp_acc']['mean']:5.1f} ({row['lp_acc_minus_random_pp']['mean']:+5.1f})"
                + (f"  coverage {row['coverage_mean']:.2f}" if "coverage_mean" in row else "")
            )
    write_json(
        args.out,
        {
            "meta": run_metadata("bench_probcover_radius.py"),
            "data": "sklearn.datasets.load_digits: 1,297 pool / 500 test (stratified, "
            "random_state=0), raw pixels",
            "strategies": {k: {"name": v[0], "params": v[1]} for k, v in STRATEGIES.items()},
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
