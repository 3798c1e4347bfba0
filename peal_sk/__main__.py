"""Command line: ``peal-sk`` / ``python -m peal_sk``.

``peal-sk simulate`` runs pool-based active learning on a labelled dataset (a built-in
name, a ``.npz`` of arrays or an image folder with one sub-folder per class) for several
strategies and seeds, and writes accuracy per cycle (JSON, CSV), the time of each
cycle's fit, pool inference and selection (JSON), a plot of the learning curves and a
markdown table of the labels each strategy needs to reach a target accuracy and of the
mean time per cycle. Every cycle is checkpointed, so a run
interrupted at any cycle resumes there with the same final numbers.

peal-sk demo is the no-download default: both settings peal_sk is built for, on
scikit-learn's digits, in about 35 s of CPU time (2 cores of an AMD EPYC):

* **one-shot** (cold start, BiLAF paper): choose ``B`` images before any label exists
  with Random, k-centre, k-means, ActiveFT and BiLAF, label them, fit a classifier;
* **iterative** (PEAL): start from a few random labels and run query -> label -> refit
  cycles with Random, Entropy, Margin, Feature distance and the hybrid strategy.

Exit status: 0 on success; 1 when the data or the state refuse the command (a missing
file, a result that would be replaced, a damaged project, a missing optional extra),
with a one-line ``peal-sk: error: ...`` message; 2 for a command-line error, with the
usage line; 130 when interrupted (Ctrl-C).
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

DEMO_ONE_SHOT = ["random", "kcenter", "kmeans", "activeft", "bilaf"]
DEMO_ITERATIVE = ["random", "entropy", "margin", "featdist", "hybrid"]


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _fraction_or_int(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return int(value) if value >= 1 and value.is_integer() else value


def build_parser():
    from .experiments import BUILTIN, MODELS, strategies_for_mode

    parser = argparse.ArgumentParser(
        prog="peal-sk",
        description="peal_sk: active-learning query strategies for vision foundation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="one-shot and iterative comparison on scikit-learn's digits (no download)",
        description=__doc__.split("\n\n")[2],
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("results/demo"),
        help="results folder (default: results/demo)",
    )
    demo.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)"
    )
    demo.add_argument(
        "--force", action="store_true", help="replace results of another configuration in --out"
    )

    sim = sub.add_parser(
        "simulate",
        help="simulate active learning on a labelled dataset",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sim.add_argument(
        "--dataset",
        default="digits",
        help=f"built-in name ({', '.join(BUILTIN)}), a .npz with X, y (or "
        "X_train, y_train, X_test, y_test), or an image folder with one "
        "sub-folder per class",
    )
    sim.add_argument(
        "--pool-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="unlabelled pool: a seeded, stratified subsample of N training images (None: "
        "all of them); never holds a test image",
    )
    sim.add_argument(
        "--test-size",
        type=_fraction_or_int,
        default=None,
        help="test images: a fraction (0-1) or number of the dataset split off for testing "
        "(None: 0.25); a .npz with X_test, y_test is tested on that split (None: all of it, "
        "else a seeded, stratified subsample of this size)",
    )
    sim.add_argument(
        "--mode",
        choices=["iterative", "one-shot"],
        default="iterative",
        help="iterative: query/label/refit cycles (PEAL); one-shot: select each "
        "budget before any label (BiLAF)",
    )
    sim.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        help=f"iterative: {', '.join(strategies_for_mode('iterative'))}; one-shot: "
        f"{', '.join(strategies_for_mode('one-shot'))} "
        f"(default: {' '.join(DEMO_ITERATIVE[:4])} / {' '.join(DEMO_ONE_SHOT)})",
    )
    sim.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="STRATEGY.NAME=VALUE",
        help="a parameter of a strategy, e.g. bilaf.n_cores=30 or bilaf.core_selector=kcenter "
        "(repeatable; values are JSON, else strings)",
    )
    sim.add_argument(
        "--models",
        nargs="+",
        default=["logreg"],
        choices=MODELS,
        help="logreg: logistic regression on features; linear / lora: "
        "PEALClassifier on the images (linear probing vs LoRA), retrained "
        "every cycle; give both to compare them at equal budgets",
    )
    sim.add_argument(
        "--features",
        choices=["raw", "backbone"],
        default="raw",
        help="features for logreg and one-shot selection: raw pixels / feature "
        "rows, or frozen embeddings of --backbone (cached in OUT/cache)",
    )
    sim.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="backbone for --features backbone and the linear / lora models "
        "(see peal_sk.classifier.list_backbones())",
    )
    sim.add_argument("--img-size", type=_positive_int, default=224)
    sim.add_argument(
        "--epochs",
        type=_positive_int,
        default=10,
        help="training epochs per cycle of the linear / lora models",
    )
    sim.add_argument("--lr", type=float, default=1e-3)
    sim.add_argument(
        "--lora-last-blocks",
        type=int,
        default=2,
        help="the lora model adapts the last K blocks (0: every block); 2 was the measured "
        "compromise of accuracy and time (docs: PEAL's loop)",
    )
    sim.add_argument(
        "--initial",
        type=_positive_int,
        default=10,
        help="random labels the iterative loop starts from",
    )
    sim.add_argument("--step", type=_positive_int, default=10, help="labels per cycle")
    sim.add_argument("--cycles", type=_positive_int, default=8, help="query cycles")
    sim.add_argument(
        "--budgets",
        type=_positive_int,
        nargs="+",
        default=[20, 40, 80],
        help="one-shot label budgets",
    )
    sim.add_argument(
        "--bilaf-cores",
        type=_fraction_or_int,
        default=None,
        help="BiLAF n_cores: an int, or a fraction of the pool (default: a third of each "
        "budget); the same as --param bilaf.n_cores=N",
    )
    sim.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="one train/test split and strategy seed per value",
    )
    sim.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=None,
        help="accuracies (0-1) for the 'labels needed' table (default: random's final accuracy)",
    )
    sim.add_argument(
        "--out", type=Path, default=None, help="results folder (default: results/<dataset>-<mode>)"
    )
    sim.add_argument(
        "--force", action="store_true", help="replace results of another configuration in --out"
    )
    sim.add_argument(
        "--no-progress",
        action="store_true",
        help="one line per finished cell instead of a progress bar (the default when "
        "stderr is not a terminal)",
    )

    from .project._cli import add_project_parser

    add_project_parser(sub)
    from .distributed._cli import add_embed_parser

    add_embed_parser(sub)
    return parser


#: exit status of a data or state error, and of a command-line error (argparse's own)
EXIT_ERROR, EXIT_USAGE = 1, 2


def _fail(parser, exc):
    """Print ``exc`` as one ``peal-sk: error:`` line and exit 1 (no usage line)."""
    parser.exit(EXIT_ERROR, f"{parser.prog}: error: {exc}\n")


def _report(results, out):
    print(f"\n{results['table']}")
    files = ["results.json", "results.csv", "table.md"]
    if results.get("plot"):
        files.append("curves.png")
    else:
        files.append("(no curves.png: pip install matplotlib, or peal-sk[plot])")
    print(f"wrote {out}/: {', '.join(files)} ({results['wall_time_s']} s)")


def main(argv=None):
    """Entry point of the ``peal-sk`` console script."""
    from .experiments import SimulationConfig, simulate
    from .experiments._simulate import check_targets
    from .selection import parse_selector_params

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "project":
            from .project._cli import run_project

            return run_project(args)
        if args.command == "embed":
            from .distributed._cli import run_embed

            return run_embed(args)
        if args.command == "demo":
            for mode, strategies in (("one-shot", DEMO_ONE_SHOT), ("iterative", DEMO_ITERATIVE)):
                config = SimulationConfig(
                    mode=mode, strategies=strategies, seeds=args.seeds, cycles=6
                )
                out = args.out / mode
                print(
                    f"== {mode}: digits, {', '.join(strategies)}; test accuracy % "
                    f"(mean ± std over seeds {args.seeds})"
                )
                results = simulate(
                    config, out, force=args.force, progress=False, log=lambda msg: None
                )
                _report(results, out)
            return 0
        strategies = args.strategies
        if strategies is None:
            strategies = DEMO_ITERATIVE[:4] if args.mode == "iterative" else DEMO_ONE_SHOT
        try:  # the options alone are wrong: a command-line error
            config = SimulationConfig(
                dataset=args.dataset,
                mode=args.mode,
                strategies=strategies,
                seeds=args.seeds,
                models=args.models,
                features=args.features,
                backbone=args.backbone,
                img_size=args.img_size,
                epochs=args.epochs,
                lr=args.lr,
                lora_last_blocks=args.lora_last_blocks,
                initial=args.initial,
                step=args.step,
                cycles=args.cycles,
                budgets=args.budgets,
                pool_size=args.pool_size,
                test_size=args.test_size,
                bilaf_cores=args.bilaf_cores,
                strategy_params=parse_selector_params(args.param),
            )
            config.validate()
            check_targets(args.targets)
        except ValueError as exc:
            parser.error(str(exc))
        out = args.out or Path("results") / f"{Path(str(args.dataset)).stem}-{args.mode}"
        # a bar on a terminal; in a log (not a terminal) or with --no-progress, one line
        # per finished cell, as `peal-sk project` does
        progress = not args.no_progress and sys.stderr.isatty()
        results = simulate(config, out, force=args.force, targets=args.targets, progress=progress)
        _report(results, out)
    except (ValueError, OSError, ImportError) as exc:
        # ProjectError and BackboneError are ValueErrors; FileExistsError and
        # FileNotFoundError are OSErrors; a missing extra is an ImportError
        _fail(parser, exc)
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
