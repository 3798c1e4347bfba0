"""Iterative active learning at low budgets on real CIFAR-10 features (issue 12, item 5).

Protocol: the whole 50,000-image CIFAR-10 training set is the pool, the 10,000 test
images the test set; frozen EfficientNet-Lite0 128 px fp32 features (1280-d, computed by
``benchmarks/cifar10_oneshot.py --precision fp32`` into ``benchmarks/.cache``) standardised
with the pool's mean and standard deviation. Each strategy starts from 10 labels chosen by
its cold start (random for the strategies that need a model; TypiClust and ProbCover their
own selection), then 10 labels per cycle up to 200, a ``LogisticRegression`` probe
refitted every cycle and scored on the test set; 5 seeds. Strategies come from the
registry (``get_selector(name, random_state=np.random.default_rng(seed))``, one generator
per run so that successive queries draw differently); names that are not
registered (yet) are skipped with a message.

Every (strategy, seed) run is cached as JSON under ``benchmarks/.cache/iterative_lowbudget``
so an interrupted run resumes; ``--no-cache`` recomputes.

Usage::

    python benchmarks/cifar10_iterative_lowbudget.py            # all strategies, 5 seeds
    python benchmarks/cifar10_iterative_lowbudget.py --strategies random dropquery \
        --param dropquery.p=0.25 --seeds 0 1

Writes ``benchmarks/results/cifar10_iterative_lowbudget.{json,md,png}``.
CIFAR-10: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009; the
shared copy is a JPEG re-encode.
"""

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _common import limit_threads, log, run_metadata

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.npz"
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
FEATURES = "cifar10_{split}_efficientnet_lite0_128px_fp32.npy"

STRATEGIES = [
    "random",
    "dropquery",
    "badge",
    "margin",
    "entropy",
    "featdist",
    "hybrid",
    "typiclust",
    "probcover",
]
LABELS = {
    "random": "Random",
    "entropy": "Entropy",
    "margin": "Margin",
    "featdist": "Feature distance",
    "hybrid": "Hybrid",
    "badge": "BADGE",
    "dropquery": "DropQuery",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
}


def load(args):
    """Pool-standardised float32 features and labels of both splits."""
    if not args.data.exists():
        raise SystemExit(
            f"CIFAR-10 not found at {args.data}; pass --data PATH to cifar10-jpeg.npz "
            "(default: ../shared/data/cifar10-jpeg.npz relative to the repository root)."
        )
    feats = {}
    for split in ("train", "test"):
        path = args.cache / FEATURES.format(split=split)
        if not path.exists():
            raise SystemExit(
                f"Features {path} not found; compute them first with "
                "`python benchmarks/cifar10_oneshot.py --precision fp32` (or pass --cache)."
            )
        feats[split] = np.load(path).astype(np.float32, copy=False)
    with np.load(args.data, allow_pickle=False) as d:
        y_train = d["train_labels"].astype(np.int64)
        y_test = d["test_labels"].astype(np.int64)
    mu = feats["train"].mean(axis=0, dtype=np.float64)
    sd = feats["train"].std(axis=0, dtype=np.float64) + 1e-6
    Z_train = ((feats["train"] - mu) / sd).astype(np.float32)
    Z_test = ((feats["test"] - mu) / sd).astype(np.float32)
    return Z_train, y_train, Z_test, y_test


def run_key(name, params, seed, args):
    spec = json.dumps(
        {
            "name": name,
            "params": params,
            "seed": seed,
            "initial": args.initial,
            "step": args.step,
            "final": args.final,
            "C": args.C,
            "rng": "generator per run",
            **({"cold_start": args.cold_start} if args.cold_start else {}),
        },
        sort_keys=True,
    )
    tag = hashlib.sha1(spec.encode()).hexdigest()[:10]
    return f"{name}-seed{seed}-{tag}.json", spec


def probe(args):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=args.C, max_iter=args.max_iter)


_COLD_STARTS = {}


def cold_start(name, selector, Z, seed, n, forced=None):
    """The first labels: the strategy's own cold start when it has one, else random.

    ``forced``: a registered cold-start strategy whose selection (``random_state=seed``,
    computed once per seed) starts every strategy instead.
    """
    from peal_sk.base import get_selector_tags
    from peal_sk.selection import get_selector

    if forced is not None:
        key = (forced, seed, n)
        if key not in _COLD_STARTS:
            first = get_selector(forced, random_state=seed).select(Z, n)
            _COLD_STARTS[key] = np.asarray(first, dtype=np.intp)
        return _COLD_STARTS[key].copy(), forced
    if name != "random" and get_selector_tags(selector).cold_start:
        return np.asarray(selector.select(Z, n), dtype=np.intp), "own"
    return np.random.default_rng(seed).choice(len(Z), n, replace=False), "random"


def run_one(name, params, seed, Z, y, Z_test, y_test, args):
    from sklearn.exceptions import ConvergenceWarning

    from peal_sk.selection import get_selector

    # a Generator, not the int: an int seeds every query alike, so random sampling would
    # draw the same pool positions each cycle (and the pool is sorted by class)
    selector = get_selector(name, **params, random_state=np.random.default_rng(seed))
    t0 = time.perf_counter()
    labelled, how = cold_start(name, selector, Z, seed, args.initial, args.cold_start)
    times = [time.perf_counter() - t0]
    curve, n_labels, extras = [], [], []
    while True:
        clf = probe(args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Z[labelled], y[labelled])
        curve.append(float((clf.predict(Z_test) == y_test).mean()))
        n_labels.append(int(len(labelled)))
        log(f"  {name} seed {seed}: {n_labels[-1]} labels, acc {100 * curve[-1]:.2f}")
        if len(labelled) >= args.final:
            break
        mask = np.ones(len(Z), dtype=bool)
        mask[labelled] = False
        pool = np.flatnonzero(mask)
        t0 = time.perf_counter()
        idx = selector.select(
            Z[pool], args.step, classifier=clf, X_labeled=Z[labelled], y_labeled=y[labelled]
        )
        times.append(time.perf_counter() - t0)
        extra = {}
        for attr in ("n_candidates_", "threshold_"):
            if hasattr(selector, attr):
                extra[attr.rstrip("_")] = int(getattr(selector, attr))
        if hasattr(selector, "mismatch_"):
            m = np.asarray(selector.mismatch_)
            extra["pool_fraction_any_flip"] = float((m > 0).mean())
            extra["pool_fraction_majority_flip"] = float((m > selector.n_passes // 2).mean())
        extras.append(extra)
        labelled = np.concatenate([labelled, pool[idx]])
    return {
        "strategy": name,
        "params": params,
        "seed": seed,
        "cold_start": how,
        "n_labels": n_labels,
        "accuracy": curve,
        "selection_seconds": times,
        "extras": extras,
        "labelled": labelled.tolist(),
        "class_counts_final": np.bincount(y[labelled], minlength=10).tolist(),
    }


def flip_probe(Z, y, seed, args):
    """How many clean predictions input dropout flips, for a probe trained without it."""
    from peal_sk.selection import dropquery_scores

    rng = np.random.default_rng(seed)
    out = []
    for n in (20, 100, 200):
        idx = rng.choice(len(Z), n, replace=False)
        clf = probe(args).fit(Z[idx], y[idx])
        for p in (0.1, 0.25, 0.5, 0.75):
            s = dropquery_scores(Z, clf.coef_, clf.intercept_, n_passes=3, p=p, random_state=seed)
            out.append(
                {
                    "n_labels": n,
                    "p": p,
                    "any_flip": float((s > 0).mean()),
                    "majority_flip": float((s >= 2 / 3).mean()),
                    "per_pass_flip": float(s.mean()),
                }
            )
            log(f"  flips: {n} labels p={p}: per pass {100 * s.mean():.1f} %")
    return out


def labels_to_reach(n_labels, mean_curve, target):
    hit = np.flatnonzero(np.asarray(mean_curve) >= target - 1e-12)
    return int(n_labels[hit[0]]) if hit.size else None


def summarise(runs, names):
    summary = {}
    for label in names:
        rs = [r for r in runs if r["label"] == label]
        if not rs:
            continue
        acc = np.array([r["accuracy"] for r in rs])
        summary[label] = {
            "n_labels": rs[0]["n_labels"],
            "mean": acc.mean(axis=0).tolist(),
            "std": (acc.std(axis=0, ddof=1) if len(rs) > 1 else 0 * acc[0]).tolist(),
            "seeds": [r["seed"] for r in rs],
            "mean_selection_seconds": float(
                np.mean([np.mean(r["selection_seconds"][1:]) for r in rs])
            ),
        }
    if "random" in summary:
        target = summary["random"]["mean"][-1]
        rnd = {r["seed"]: np.array(r["accuracy"]) for r in runs if r["label"] == "random"}
        for label, s in summary.items():
            s["labels_to_reach_random_final"] = labels_to_reach(s["n_labels"], s["mean"], target)
            diffs = [
                np.array(r["accuracy"]) - rnd[r["seed"]]
                for r in runs
                if r["label"] == label and r["seed"] in rnd
            ]
            if diffs:
                d = np.array(diffs)
                s["paired_diff_vs_random"] = {
                    "mean": d.mean(axis=0).tolist(),
                    "min": d.min(axis=0).tolist(),
                    "max": d.max(axis=0).tolist(),
                }
    return summary


def markdown(summary, meta):
    lines = [
        "# CIFAR-10 iterative active learning at low budgets",
        "",
        f"Command: `{meta['command']}`",
        "",
        meta["protocol"],
        "",
    ]
    if not summary:
        return "\n".join(lines)
    any_s = next(iter(summary.values()))
    cols = [
        i for i, n in enumerate(any_s["n_labels"]) if n in (10, 20, 30, 50, 80, 100, 120, 150, 200)
    ]
    head = " | ".join(str(any_s["n_labels"][i]) for i in cols)
    final = any_s["n_labels"][-1]
    lines += [
        f"Mean test accuracy (%) by number of labels ({len(any_s['seeds'])} seeds):",
        "",
        f"| strategy | {head} | {final}: mean ± std | Δ vs random at {final} (min, max) "
        f"| labels to reach random's {final}-label accuracy | s / query |",
        "|---" * (len(cols) + 5) + "|",
    ]
    target = summary.get("random", {}).get("mean", [None])[-1]
    for label, s in summary.items():
        vals = " | ".join(f"{100 * s['mean'][i]:.1f}" for i in cols)
        pd = s.get("paired_diff_vs_random")
        diff = (
            f"{100 * pd['mean'][-1]:+.1f} ({100 * pd['min'][-1]:+.1f}, {100 * pd['max'][-1]:+.1f})"
            if pd
            else "-"
        )
        reach = s.get("labels_to_reach_random_final")
        reach = f"> {final}" if reach is None else str(reach)
        lines.append(
            f"| {label} | {vals} | {100 * s['mean'][-1]:.1f} ± {100 * s['std'][-1]:.1f} | "
            f"{diff} | {reach} | {s['mean_selection_seconds']:.2f} |"
        )
    if target is not None:
        lines += ["", f"Random's mean accuracy at {final} labels: {100 * target:.2f} %."]
    if meta.get("flip_probe"):
        lines += [
            "",
            "DropQuery's input dropout on a probe trained without dropout (3 passes, whole "
            "pool; fraction of the pool):",
            "",
            "| probe labels | p | flipped per pass | >= 1 of 3 passes flip | >= 2 of 3 flip |",
            "|---|---|---|---|---|",
        ]
        for r in meta["flip_probe"]:
            lines.append(
                f"| {r['n_labels']} | {r['p']} | {100 * r['per_pass_flip']:.1f} % | "
                f"{100 * r['any_flip']:.1f} % | {100 * r['majority_flip']:.1f} % |"
            )
    return "\n".join(lines) + "\n"


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, s in summary.items():
        n, m, sd = np.array(s["n_labels"]), 100 * np.array(s["mean"]), 100 * np.array(s["std"])
        style = "k--" if label == "random" else "-"
        ax.plot(n, m, style, label=label, lw=2 if label == "random" else 1.3)
        ax.fill_between(n, m - sd, m + sd, alpha=0.08)
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("CIFAR-10, Lite0 128 px features, logistic-regression probe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="cifar10-jpeg.npz (labels)")
    p.add_argument("--cache", type=Path, default=CACHE, help="folder of the cached features")
    p.add_argument("--strategies", nargs="+", default=STRATEGIES)
    p.add_argument(
        "--param",
        action="append",
        default=[],
        help="STRATEGY.PARAMETER=VALUE (e.g. dropquery.p=0.25); becomes part of its label",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--initial", type=int, default=10)
    p.add_argument("--step", type=int, default=10)
    p.add_argument("--final", type=int, default=200)
    p.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the probe")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-flip-probe", action="store_true")
    p.add_argument(
        "--cold-start",
        help="a registered cold-start strategy (e.g. typiclust) that chooses the first labels "
        "of every strategy instead of its own cold start; becomes part of the labels",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "cifar10_iterative_lowbudget")
    args = p.parse_args(argv)

    from peal_sk.selection import list_selectors, parse_selector_params

    limit_threads(args.threads)
    params = parse_selector_params(args.param)
    known = {info.name for info in list_selectors()}
    cold = {info.name for info in list_selectors(cold_start=True)}
    if args.cold_start is not None and args.cold_start not in cold:
        p.error(f"--cold-start {args.cold_start!r} is not a cold-start strategy: {sorted(cold)}")
    names = []
    for name in args.strategies:
        if name not in known:
            log(f"skipping {name!r}: not registered in this peal_sk (registered: {sorted(known)})")
            continue
        names.append(name)
    t_start = time.perf_counter()
    Z, y, Z_test, y_test = load(args)
    log(f"features: pool {Z.shape}, test {Z_test.shape}")
    run_dir = args.cache / "iterative_lowbudget"
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = {}
    for name in names:
        sp = params.get(name, {})
        labels[name] = name + "".join(f" {k}={v}" for k, v in sorted(sp.items()))
        if args.cold_start:
            labels[name] += f" ({args.cold_start} start)"
    # with --cold-start, plain random (its own random start) is the reference the other
    # curves are compared with, as in the main run (cached there, cheap otherwise)
    jobs = [(name, params.get(name, {}), labels[name], args) for name in names]
    if args.cold_start:
        plain = argparse.Namespace(**{**vars(args), "cold_start": None})
        jobs.append(("random", {}, "random", plain))
    runs = []
    for seed in args.seeds:  # seeds outermost: a partial run has every strategy
        for name, sp, label, job_args in jobs:
            fname, spec = run_key(name, sp, seed, job_args)
            path = run_dir / fname
            if path.exists() and not args.no_cache:
                rec = json.loads(path.read_text())
                log(f"{label} seed {seed}: cached, final acc {100 * rec['accuracy'][-1]:.2f}")
            else:
                t0 = time.perf_counter()
                rec = run_one(name, sp, seed, Z, y, Z_test, y_test, job_args)
                rec["wall_seconds"] = time.perf_counter() - t0
                rec["spec"] = spec
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(rec))
                tmp.replace(path)
                log(
                    f"{label} seed {seed}: final acc {100 * rec['accuracy'][-1]:.2f} "
                    f"({rec['wall_seconds']:.0f} s)"
                )
            rec["label"] = label
            runs.append(rec)
    labels = [label for _, _, label, _ in jobs]
    flips = [] if args.no_flip_probe else flip_probe(Z, y, args.seeds[0], args)
    summary = summarise(runs, labels)
    meta = run_metadata("cifar10_iterative_lowbudget.py")
    try:
        from threadpoolctl import threadpool_info

        meta["blas"] = [
            {k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info()
        ]
    except ImportError:
        pass
    meta["protocol"] = (
        f"Pool: the 50,000 CIFAR-10 training images; test: the 10,000 test images. Frozen "
        f"EfficientNet-Lite0 128 px fp32 features (1280-d) standardised with the pool's "
        f"mean/std. {args.initial} initial labels from "
        + (
            f"{args.cold_start} (every strategy)"
            if args.cold_start
            else "each strategy's cold start (random for the model-based ones)"
        )
        + f", +{args.step} per cycle to {args.final}; probe "
        f"LogisticRegression(C={args.C}, lbfgs, max_iter={args.max_iter}) refitted each "
        f"cycle; seeds {args.seeds}; {args.threads} thread(s)."
    )
    meta["flip_probe"] = flips
    meta["wall_seconds_this_invocation"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "meta": meta,
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "labelled"} for r in runs],
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = markdown(summary, meta)
    args.out.with_suffix(".md").write_text(md)
    if summary:
        plot(summary, args.out.with_suffix(".png"))
    log(md)


if __name__ == "__main__":
    main()
