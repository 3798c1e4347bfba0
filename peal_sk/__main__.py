"""Command line: ``peal-sk`` / ``python -m peal_sk``.

``peal-sk demo`` compares query strategies on scikit-learn's digits (1,797 8x8 images
that ship with scikit-learn, so nothing is downloaded), in the two settings peal_sk is
built for:

* **one-shot** (cold start, BiLAF paper): choose ``B`` images before any label exists
  with Random, k-centre, k-means, ActiveFT and BiLAF, label them, fit a classifier;
* **iterative** (PEAL): start from a few random labels and run query -> label -> refit
  cycles with Random, Entropy, Margin, Feature distance and the hybrid strategy.

It prints test accuracy (mean and spread over seeds) and can write the numbers as JSON.
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_demo"]

ONE_SHOT = ("random", "kcenter", "kmeans", "activeft", "bilaf")
ITERATIVE = ("random", "entropy", "margin", "featdist", "hybrid")


def _one_shot_strategy(name, budget, seed):
    from .selection import (
        ActiveFTSelector,
        BiLAFSelector,
        KCenterSelector,
        KMeansSelector,
        RandomSelector,
    )

    if name == "bilaf":
        # the paper's 0.1-0.5 % of the pool is meant for pools of 50k+; on 1.3k images
        # that is 1-7 cores, so use ~1/3 of the budget as cores (at least 10)
        return BiLAFSelector(n_cores=max(10, budget // 3), random_state=seed)
    return {
        "random": RandomSelector,
        "kcenter": KCenterSelector,
        "kmeans": KMeansSelector,
        "activeft": ActiveFTSelector,
    }[name](random_state=seed)


def _iterative_strategy(name):
    from .selection import (
        EntropySelector,
        FeatureDistanceSelector,
        HybridSelector,
        MarginSelector,
        RandomSelector,
    )

    return {
        "random": RandomSelector(),
        "entropy": EntropySelector(),
        "margin": MarginSelector(),
        "featdist": FeatureDistanceSelector("class_mean"),
        "hybrid": HybridSelector(),
    }[name]


def _model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # a Pipeline: feature-based strategies use the scaler's output as embeddings
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _load(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)


def run_demo(*, budgets=(20, 40, 80), cycles=6, step=10, n_initial=10, seeds=(0, 1, 2)):
    """Run both comparisons; return ``{"one_shot": ..., "iterative": ...}`` results.

    Parameters
    ----------
    budgets : sequence of int, default=(20, 40, 80)
        One-shot label budgets.
    cycles : int, default=6
        Query cycles of the iterative loop.
    step : int, default=10
        Labels per cycle.
    n_initial : int, default=10
        Random labels the iterative loop starts from.
    seeds : sequence of int, default=(0, 1, 2)
        One train/test split and strategy seed per value.

    Returns
    -------
    results : dict
        ``one_shot[strategy][budget]`` and ``iterative[strategy]`` (accuracy per cycle,
        from ``n_initial`` labels on) as lists over seeds.
    """
    from .learner import ActiveLearner

    one_shot = {s: {int(b): [] for b in budgets} for s in ONE_SHOT}
    iterative = {s: [] for s in ITERATIVE}
    for seed in seeds:
        X_train, X_test, y_train, y_test = _load(seed)
        for name in ONE_SHOT:
            for budget in budgets:
                selector = _one_shot_strategy(name, int(budget), seed)
                idx = selector.select(X_train, int(budget))
                model = _model().fit(X_train[idx], y_train[idx])
                one_shot[name][int(budget)].append(float(model.score(X_test, y_test)))
        rng = np.random.default_rng(seed)
        initial = rng.choice(len(X_train), size=n_initial, replace=False)
        for name in ITERATIVE:
            pool = np.setdiff1d(np.arange(len(X_train)), initial)
            learner = ActiveLearner(
                _model(),
                _iterative_strategy(name),
                X_train[initial],
                y_train[initial],
                random_state=seed,
            )
            curve = [float(learner.score(X_test, y_test))]
            for _ in range(cycles):
                idx, _ = learner.query(X_train[pool], n_instances=step)
                learner.teach(X_train[pool[idx]], y_train[pool[idx]])
                pool = np.delete(pool, idx)
                curve.append(float(learner.score(X_test, y_test)))
            iterative[name].append(curve)
    return {
        "dataset": "sklearn digits, 75/25 stratified split per seed",
        "model": "StandardScaler + LogisticRegression",
        "seeds": [int(s) for s in seeds],
        "one_shot": one_shot,
        "iterative": {"n_initial": n_initial, "step": step, "accuracy": iterative},
    }


def _fmt(values):
    v = np.asarray(values) * 100
    return f"{v.mean():5.1f} ± {v.std():3.1f}"


def _print_report(results, out=None):
    out = sys.stdout if out is None else out
    one_shot = results["one_shot"]
    budgets = list(next(iter(one_shot.values())))
    print(
        f"\nOne-shot selection (cold start, no labels): test accuracy %, "
        f"mean ± std over seeds {results['seeds']}",
        file=out,
    )
    print("strategy   " + "".join(f"{'B=' + str(b):>15}" for b in budgets), file=out)
    for name, per_budget in one_shot.items():
        print(f"{name:<10} " + "".join(f"{_fmt(per_budget[b]):>15}" for b in budgets), file=out)

    it = results["iterative"]
    curves = it["accuracy"]
    n_points = len(next(iter(curves.values()))[0])
    labels = [it["n_initial"] + i * it["step"] for i in range(n_points)]
    print(
        f"\nIterative (start: {it['n_initial']} random labels, {it['step']} per cycle): "
        "test accuracy % by number of labels",
        file=out,
    )
    print("strategy   " + "".join(f"{n:>8}" for n in labels), file=out)
    for name, runs in curves.items():
        mean = np.mean(np.asarray(runs) * 100, axis=0)
        print(f"{name:<10} " + "".join(f"{m:8.1f}" for m in mean), file=out)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="peal-sk",
        description="peal_sk: active-learning query strategies for vision foundation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="compare strategies on scikit-learn's digits (no download, about 10 s)",
        description=__doc__.split("\n\n")[1],
    )
    demo.add_argument(
        "--budgets",
        type=_positive_int,
        nargs="+",
        default=[20, 40, 80],
        help="one-shot label budgets (default: 20 40 80)",
    )
    demo.add_argument(
        "--cycles", type=_positive_int, default=6, help="iterative cycles (default: 6)"
    )
    demo.add_argument(
        "--step", type=_positive_int, default=10, help="labels per cycle (default: 10)"
    )
    demo.add_argument(
        "--initial",
        type=_positive_int,
        default=10,
        help="random labels the iterative loop starts from (default: 10)",
    )
    demo.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)"
    )
    demo.add_argument("--output", type=Path, help="also write the results as JSON here")
    demo.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return parser


def main(argv=None):
    """Entry point of the ``peal-sk`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.output is not None and args.output.exists() and not args.force:
        parser.error(f"--output {args.output} exists; pass --force to overwrite it")
    n_pool = 1347  # digits training split (75 % of 1,797)
    too_big = [b for b in args.budgets if b > n_pool]
    if too_big:
        parser.error(f"--budgets {too_big} exceed the pool of {n_pool} training images")
    if args.initial + args.cycles * args.step > n_pool:
        parser.error(
            f"--initial {args.initial} + --cycles {args.cycles} x --step {args.step} "
            f"exceeds the pool of {n_pool} training images"
        )
    t0 = time.perf_counter()
    results = run_demo(
        budgets=args.budgets,
        cycles=args.cycles,
        step=args.step,
        n_initial=args.initial,
        seeds=args.seeds,
    )
    results["wall_time_s"] = round(time.perf_counter() - t0, 1)
    _print_report(results)
    print(f"\n({results['wall_time_s']} s)")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
