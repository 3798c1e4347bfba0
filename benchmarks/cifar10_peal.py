"""PEAL's claim on CIFAR-10: does LoRA fine-tuning inside the loop make active learning pay?

Setup (issue 24): EfficientNet-Lite0 with its ImageNet weights (the pretrained backbone
that installs offline) at 128 px; a seeded pool of CIFAR-10 training images (10,000 by
default, ``--pool 50000`` for all); the CIFAR-10 test split (10,000 images). Cycles: 20
labels (random, or TypiClust's picks on the pretrained embeddings with ``--start
typiclust``), +20 per cycle up to 100, then +50 up to 400: 11 fits. Every fit starts
from the pretrained weights (``PEALClassifier``, 50 epochs, Adam 1e-3, class-balanced
batches), as a linear probe (``finetune="linear"``) or with LoRA on the last
``--last-blocks`` stages. Strategies come from the registry (``featdist`` is PEAL's
``class_mean`` feature distance).

A cell is one (start, model, strategy, seed); each is written to ``OUT/cells/`` when it
finishes, and a rerun skips the finished ones, so the grid can run over several sessions.
The summary (``OUT/results.json``, ``OUT/table.md``, ``OUT/curves.png``) is rewritten
from the cells after each one: accuracy ± std per cycle, the labels each (model,
strategy) needs to reach random + linear probe's accuracy at 400 labels (PEAL's headline
form), and the mean time per cycle.

Usage::

    # the grid of the issue (hours of CPU): 5 seeds of random / entropy / featdist, 3 of
    # margin / hybrid / badge / dropquery, both models, both starts
    python benchmarks/cifar10_peal.py
    # a part of it
    python benchmarks/cifar10_peal.py --models linear lora --strategies random entropy \
        --seeds 0 1 --out benchmarks/results/cifar10_peal
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import cifar10_npz, run_metadata, write_json
from cifar10_iterative import CACHE, decode

from peal_sk.utils._io import write_atomic

SCHEDULE = (20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400)
#: seeds per strategy in the issue's grid
SEEDS = {"random": 5, "entropy": 5, "featdist": 5, "margin": 3, "hybrid": 3, "badge": 3,
         "dropquery": 3}  # fmt: skip


def arrays(data, n_pool, seed=0):
    """The pool (a seeded sample of the training split) and the whole test split, 32 px."""
    path = CACHE / f"cifar10-peal-pool{n_pool}-seed{seed}.npz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        with np.load(data, allow_pickle=False) as npz:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.permutation(len(npz["train_labels"]))[:n_pool])
            test = np.arange(len(npz["test_labels"]))
            out = {
                "X": decode(npz, "train", idx),
                "y": npz["train_labels"][idx],
                "X_test": decode(npz, "test", test),
                "y_test": npz["test_labels"][test],
            }
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
    with np.load(path) as f:
        return f["X"], f["y"], f["X_test"], f["y_test"]


def model(name, args, seed, cache_dir):
    from peal_sk.classifier import PEALClassifier

    kw = dict(
        img_size=args.img_size,
        max_epochs=args.epochs,
        random_state=seed,
        classes=np.arange(10),
        cache_dir=cache_dir,
    )
    if name == "linear":
        return PEALClassifier("efficientnet_lite0", finetune="linear", **kw)
    return PEALClassifier("efficientnet_lite0", lora_last_blocks=args.last_blocks, **kw)


def initial_labels(start, X, seed, args, cache_dir):
    rng = np.random.default_rng(seed)
    if start == "random":
        return rng.choice(len(X), SCHEDULE[0], replace=False)
    from peal_sk.selection import make_selector

    emb = model("linear", args, seed, cache_dir).transform(X)  # pretrained embeddings
    sel = make_selector("typiclust", n_instances=SCHEDULE[0], random_state=seed)
    return np.asarray(sel.select(emb, SCHEDULE[0]))


def run_cell(start, model_name, strategy, seed, data, args, cache_dir):
    """One learning curve: accuracy and times at each budget of SCHEDULE."""
    from peal_sk.selection import make_selector

    X, y, X_test, y_test = data
    labelled = list(initial_labels(start, X, seed, args, cache_dir))
    rows, clf = [], None
    for cycle, budget in enumerate(SCHEDULE):
        if cycle:
            n = budget - len(labelled)
            pool = np.setdiff1d(np.arange(len(X)), labelled)
            sel = make_selector(strategy, n_instances=n, random_state=seed * 1000 + cycle)
            t0 = time.perf_counter()
            picks = sel.select(
                X[pool], n, classifier=clf, X_labeled=X[labelled], y_labeled=y[labelled]
            )
            rows[-1]["query_s"] = time.perf_counter() - t0
            labelled += pool[np.asarray(picks)].tolist()
        clf = model(model_name, args, seed, cache_dir)
        t0 = time.perf_counter()
        clf.fit(X[labelled], y[labelled])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = float(np.mean(clf.predict(X_test) == y_test))
        rows.append(
            {
                "n_labels": len(labelled),
                "accuracy": acc,
                "fit_s": fit_s,
                "test_s": time.perf_counter() - t0,
            }
        )
        print(f"  {start}/{model_name}/{strategy}/seed {seed}: {len(labelled)} labels, {acc:.4f}")
    return {"start": start, "model": model_name, "strategy": strategy, "seed": seed,
            "rows": rows, "labelled": [int(i) for i in labelled]}  # fmt: skip


def summarise(cells):
    groups = {}
    for c in cells:
        groups.setdefault((c["start"], c["model"], c["strategy"]), []).append(c)
    summary = []
    for (start, model_name, strategy), group in sorted(groups.items()):
        acc = np.array([[r["accuracy"] for r in c["rows"]] for c in group])
        per_cycle = [
            np.mean([r["fit_s"] + r["test_s"] + r.get("query_s", 0.0) for r in c["rows"]])
            for c in group
        ]
        summary.append(
            {
                "start": start,
                "model": model_name,
                "strategy": strategy,
                "seeds": sorted(c["seed"] for c in group),
                "n_labels": list(SCHEDULE),
                "mean": acc.mean(0).tolist(),
                "std": acc.std(0).tolist(),
                "time_per_cycle_s": float(np.mean(per_cycle)),
            }  # fmt: skip
        )
    return summary


def _seconds(t):
    """Seconds for the table: one decimal below 10 s (a linear-probe cycle takes well under
    a second on the memoised features, which a rounded "0" hid)."""
    return f"{t:.1f}" if t < 10 else f"{t:.0f}"


def labels_to_reach(entry, target):
    for n, a in zip(entry["n_labels"], entry["mean"], strict=True):
        if a >= target:
            return n
    return None


def table(summary):
    ref = [
        s
        for s in summary
        if (s["start"], s["model"], s["strategy"]) == ("random", "linear", "random")
    ]
    target = ref[0]["mean"][-1] if ref else None
    head = "| start | model | strategy | seeds | " + " | ".join(f"{n}" for n in SCHEDULE)
    lines = [head + " | labels to reach target | s / cycle |",
             "|" + "---|" * (len(SCHEDULE) + 6)]  # fmt: skip
    for s in summary:
        cells = " | ".join(
            f"{100 * m:.1f} ± {100 * d:.1f}" for m, d in zip(s["mean"], s["std"], strict=True)
        )
        reach = labels_to_reach(s, target) if target is not None else None
        reach = "-" if target is None else (f"> {SCHEDULE[-1]}" if reach is None else str(reach))
        lines.append(
            f"| {s['start']} | {s['model']} | {s['strategy']} | {len(s['seeds'])} | {cells} | "
            f"{reach} | {s['time_per_cycle_s']:.1f} |"
        )
    note = f"Target: random + linear probe at {SCHEDULE[-1]} labels, " + (
        "not run yet." if target is None else f"{100 * target:.1f} %."
    )
    return "\n".join([note, "", *lines]) + "\n", target


#: budgets shown in the compact summary (the full table has all of SCHEDULE)
SHOWN = (20, 60, 100, 200, 300, 400)
REFERENCE = ("random", "linear", "random")  # (start, model, strategy) of the target


def _curve(cell):
    return [r["accuracy"] for r in cell["rows"]]


def per_seed_reach(cells):
    """Labels each cell needs to reach its own seed's random + linear 400-label accuracy.

    The target of seed s is the accuracy at 400 labels of the random-start, linear-probe,
    random-picks cell with seed s (paired: both cells start from the same 20 labels when
    the start is random). Cells whose seed has no reference cell are left out.
    """
    ref = {
        c["seed"]: _curve(c)[-1]
        for c in cells
        if (c["start"], c["model"], c["strategy"]) == REFERENCE
    }
    out = {}
    for c in cells:
        if c["seed"] not in ref:
            continue
        curve = {"n_labels": SCHEDULE, "mean": _curve(c)}
        out.setdefault((c["start"], c["model"], c["strategy"]), {})[c["seed"]] = labels_to_reach(
            curve, ref[c["seed"]]
        )
    return out


CELL_FIELDS = ("start", "model", "strategy")


def paired_differences(cells, field, reference, budgets=(100, 200, 400)):
    """Each cell minus the cell of the same seed that differs only in ``field``, which is
    ``reference`` there (LoRA minus linear probe; a strategy minus random picks).

    Returns ``{(start, model, strategy): array (n_seeds, len(budgets))}`` and the budgets.
    """
    by = {(*(c[f] for f in CELL_FIELDS), c["seed"]): _curve(c) for c in cells}
    i = CELL_FIELDS.index(field)
    rows = {}
    for key, curve in by.items():
        if key[i] == reference:
            continue
        other = by.get((*key[:i], reference, *key[i + 1 :]))
        if other is None:
            continue
        rows.setdefault(key[:3], []).append(
            [curve[SCHEDULE.index(b)] - other[SCHEDULE.index(b)] for b in budgets]
        )
    return {k: np.array(v) for k, v in sorted(rows.items())}, budgets


def _paired_json(cells, field, reference):
    diffs, budgets = paired_differences(cells, field, reference)
    return [
        {**dict(zip(CELL_FIELDS, k, strict=True)), "n_labels": list(budgets),
         "per_seed": d.tolist()}
        for k, d in diffs.items()
    ]  # fmt: skip


def _paired_table(cells, field, reference, columns, title):
    """Markdown lines of :func:`paired_differences`, one row per (start, model, strategy)."""
    diffs, budgets = paired_differences(cells, field, reference)
    if not diffs:
        return []
    lines = [
        "",
        f"{title} (accuracy points, mean and [min, max] over the seeds):",
        "",
        "| " + " | ".join((*columns, "seeds", *(f"{b} labels" for b in budgets))) + " |",
        "|" + "---|" * (len(columns) + 1 + len(budgets)),
    ]
    for key, d in diffs.items():
        cell = dict(zip(CELL_FIELDS, key, strict=True))
        lines.append(
            "| " + " | ".join(cell[c] for c in columns) + f" | {len(d)} | {_diff_cols(d)} |"
        )
    return lines


def _diff_cols(d):
    return " | ".join(
        f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        for m, lo, hi in zip(100 * d.mean(0), 100 * d.min(0), 100 * d.max(0), strict=True)
    )


def _pct(mean, std, n):
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def _reach(n):
    return f"> {SCHEDULE[-1]}" if n is None else str(n)


def summary_markdown(summary, cells, target):
    """The claim in Markdown (``summary.md``; the docs include it): every number from the cells."""
    ref = [s for s in summary if (s["start"], s["model"], s["strategy"]) == REFERENCE]
    if not ref:
        return "No random + linear probe cell yet: no target.\n"
    n_ref = len(ref[0]["seeds"])
    lines = [
        f"Target: random + linear probe at {SCHEDULE[-1]} labels, "
        f"**{_pct(ref[0]['mean'][-1], ref[0]['std'][-1], n_ref)} %** ({n_ref} seeds). "
        f"{len(cells)} cells (start, model, strategy, seed) of the grid have run.",
        "",
        "Accuracy % on the CIFAR-10 test split, mean ± std over the seeds:",
        "",
        "| start | model | strategy | seeds | "
        + " | ".join(map(str, SHOWN))
        + " | labels to reach the target | s / cycle |",
        "|" + "---|" * (len(SHOWN) + 6),
    ]
    for s in summary:
        n = len(s["seeds"])
        accs = " | ".join(
            _pct(s["mean"][SCHEDULE.index(b)], s["std"][SCHEDULE.index(b)], n) for b in SHOWN
        )
        lines.append(
            f"| {s['start']} | {s['model']} | {s['strategy']} | {n} | {accs} | "
            f"{_reach(labels_to_reach(s, target))} | {_seconds(s['time_per_cycle_s'])} |"
        )
    reach = per_seed_reach(cells)
    seeds = sorted({c["seed"] for c in cells})
    lines += [
        "",
        "Labels each seed needs to reach its own seed's random + linear 400-label accuracy "
        '("-": that cell has not run):',
        "",
        "| start | model | strategy | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|" + "---|" * (len(seeds) + 3),
    ]
    for (start, model_name, strategy), by_seed in sorted(reach.items()):
        row = " | ".join(_reach(by_seed[s]) if s in by_seed else "-" for s in seeds)
        lines.append(f"| {start} | {model_name} | {strategy} | {row} |")
    lines += _paired_table(
        cells, "model", "linear", ("start", "strategy"),
        "LoRA minus linear probe, same start, strategy and seed",
    )  # fmt: skip
    lines += _paired_table(
        cells, "strategy", "random", CELL_FIELDS,
        "Each strategy minus random picks, same start, model and seed",
    )  # fmt: skip
    lora = [s for s in summary if s["model"] == "lora"]
    # only rows with 3 seeds or more are ranked (one seed's curve says little), if any
    ranked = [s for s in lora if len(s["seeds"]) >= 3] or lora
    if ranked:

        def labels_or_inf(s):
            return labels_to_reach(s, target) or 10**9

        n_best = min(labels_or_inf(s) for s in ranked)
        # every row reaching the target with the fewest labels: a tie is named, not broken
        best = sorted(
            (s for s in ranked if labels_or_inf(s) == n_best), key=lambda s: -s["mean"][-1]
        )
        n_best = labels_to_reach(best[0], target)
        moonshot = n_best is not None and n_best <= 200
        names = ", ".join(
            f"{s['strategy']} picks from a {s['start']} start ({len(s['seeds'])} "
            f"seed{'s' if len(s['seeds']) > 1 else ''})"
            for s in best
        ) if n_best is not None else "no row reaching the target"  # fmt: skip
        lines += [
            "",
            f"Fewest labels for LoRA on the means, among the rows with "
            f"{'3 seeds or more' if ranked is not lora else 'any number of seeds'}: "
            f"**{_reach(n_best)}**, with {names}. Moonshot (<= 200 labels with the "
            f"best strategy): **{'met' if moonshot else 'not met'}** on the means.",
        ]
    return "\n".join(lines) + "\n"


def write_summary(out, args):
    """Rewrite table.md, summary.md, curves.png and results.json from OUT/cells."""
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    summary = summarise(cells)
    text, target = table(summary)
    write_atomic(out / "table.md", text)
    write_atomic(out / "summary.md", summary_markdown(summary, cells, target))
    plot(summary, out / "curves.png")
    reach = per_seed_reach(cells)
    write_json(
        out / "results.json",
        {
            "meta": run_metadata("cifar10_peal.py"),
            "args": vars(args),
            "target": target,
            "summary": summary,
            "per_seed_labels_to_reach": [
                {
                    "start": k[0],
                    "model": k[1],
                    "strategy": k[2],
                    "labels": {str(s): n for s, n in v.items()},
                }
                for k, v in sorted(reach.items())
            ],
            "lora_minus_linear": _paired_json(cells, "model", "linear"),
            "strategy_minus_random": _paired_json(cells, "strategy", "random"),
        },  # fmt: skip
    )


def plot(summary, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    # one panel per start; a colour per strategy, solid LoRA and dashed linear probe (25
    # curves in one panel repeated the 10 default colours and hid each other)
    starts = sorted({s["start"] for s in summary})
    strategies = sorted({s["strategy"] for s in summary})
    colours = dict(zip(strategies, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, len(starts), figsize=(6 * len(starts), 5), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, start in zip(axes[0], starts, strict=True):
        for s in (s for s in summary if s["start"] == start):
            m, d = 100 * np.array(s["mean"]), 100 * np.array(s["std"])
            style = "-" if s["model"] == "lora" else "--"
            colour = colours.get(s["strategy"])
            ax.plot(s["n_labels"], m, style, color=colour, marker="o", ms=3,
                    label=f"{s['model']} {s['strategy']} ({len(s['seeds'])})")  # fmt: skip
            ax.fill_between(s["n_labels"], m - d, m + d, color=colour, alpha=0.1)
        ax.set_xlabel("labels")
        ax.set_title(f"{start} start")
        ax.legend(fontsize=7, loc="lower right", title="model strategy (seeds)",
                  title_fontsize=7)  # fmt: skip
    axes[0][0].set_ylabel("test accuracy %")
    fig.suptitle("CIFAR-10, EfficientNet-Lite0 128 px: solid LoRA, dashed linear probe")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="cifar10-jpeg.npz")
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--last-blocks", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["linear", "lora"])
    parser.add_argument("--strategies", nargs="+", default=list(SEEDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds for every strategy (default: the issue's 5 or 3)")  # fmt: skip
    parser.add_argument("--starts", nargs="+", default=["random", "typiclust"])
    parser.add_argument("--out", default="benchmarks/results/cifar10_peal")
    parser.add_argument("--summary-only", action="store_true",
                        help="run no cell: rewrite the summary files from OUT/cells")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    cache_dir = CACHE / f"peal-store-{args.pool}"
    if args.summary_only:
        write_summary(out, args)
        return
    data = arrays(cifar10_npz(args.data), args.pool)
    grid = [
        (start, m, s, seed)
        for start in args.starts
        for seed in range(max(SEEDS.values()))
        for s in args.strategies
        for m in args.models
        if (seed in args.seeds if args.seeds is not None else seed < SEEDS.get(s, 3))
    ]
    for start, m, s, seed in grid:
        cell = out / "cells" / f"{start}-{m}-{s}-{seed}.json"
        if cell.exists():
            continue
        print(f"cell {cell.name}")
        t0 = time.perf_counter()
        result = run_cell(start, m, s, seed, data, args, cache_dir)
        result["wall_s"] = time.perf_counter() - t0
        write_atomic(cell, json.dumps(result, indent=1) + "\n")
        write_summary(out, args)


if __name__ == "__main__":
    main()
