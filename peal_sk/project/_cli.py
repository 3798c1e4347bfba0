"""``peal-sk project ...``: the labelling loop's sub-commands."""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from ._db import BUSY_TIMEOUT_MS
from ._project import COLD_START, STRATEGIES, Project, ProjectError, init_project

__all__ = ["add_project_parser", "run_project"]

DESCRIPTION = """\
A labelling loop on an image folder whose labels cannot be lost. The state (images,
labels with their history, proposed batches, trainings) is an SQLite database in the
--project folder; every command's writes are one transaction, so a crash or a kill leaves
the previous state, and two commands at once wait for each other.

  init     create a project for an image folder and a class list
  propose  write batch-<k>.csv (fill its label column) and batch-<k>.html (thumbnails)
  import   import a path,label CSV (a filled batch CSV, or any tool's export)
  status   labels per class, batches, a validation estimate, the learning curve
  train    fit and save a model on the labels so far
  export   write the labels as CSV
  sheet    write a batch's sheets again
  rescan   bring the project in line with a changed image folder (propose, status
           and train rescan first too)
  serve    label the open batch in a browser: a local page with a random access token

Before two classes have labels, propose uses the label-free --cold-start strategy
(default bilaf) on frozen backbone embeddings; afterwards --strategy (default entropy)
with logistic regression on those embeddings (cached in the project). Fine-tuning the
backbone (LoRA or linear probing with PEALClassifier) is `train --finetune lora`.
"""


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object; got {text}")
    return value


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def add_project_parser(sub):
    """Add ``project`` and its sub-commands to ``sub`` (an argparse subparsers object)."""
    project = sub.add_parser(
        "project",
        help="label a real image folder: propose, import, train, export (SQLite state)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = project.add_subparsers(dest="project_command", metavar="ACTION")
    commands.required = True

    def add(name, help_text):
        p = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
        )
        p.add_argument("--project", type=Path, required=True, help="the project's state folder")
        return p

    init = add("init", "create a project for an image folder (searched recursively)")
    init.add_argument("--images", type=Path, required=True, help="the image folder")
    init.add_argument("--classes", nargs="+", required=True, help="the class names")
    init.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="entropy",
        help="strategy once two classes have labels (default: %(default)s)",
    )
    init.add_argument(
        "--cold-start",
        choices=COLD_START,
        default="bilaf",
        help="label-free strategy used until then (default: %(default)s)",
    )
    init.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="frozen backbone for the embeddings and --finetune (default: %(default)s; "
        "see peal_sk.classifier.list_backbones())",
    )
    init.add_argument(
        "--img-size", type=_positive_int, default=224, help="input size (default: %(default)s)"
    )
    init.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pretrained weights, never downloaded (default: on)",
    )
    init.add_argument("--backbone-kwargs", type=_json_object, default=None, help=argparse.SUPPRESS)

    propose = add("propose", "propose the next batch of images to label")
    propose.add_argument(
        "--n", type=_positive_int, default=20, help="images in the batch (default: %(default)s)"
    )
    propose.add_argument(
        "--release-open",
        action="store_true",
        help="close the open batches first: their unlabelled images may be proposed again",
    )

    imp = add("import", "import labels from a CSV (path,label; all or nothing)")
    imp.add_argument("csv", type=Path, help="CSV with a path and a label column")
    imp.add_argument(
        "--relabel",
        action="store_true",
        help="apply labels that differ from the current ones (the old ones stay in history)",
    )
    imp.add_argument("--annotator", default=None, help="who labelled (default: the OS user)")

    status = add("status", "labels, batches, validation estimate, learning curve")
    status.add_argument(
        "--no-estimate", action="store_true", help="skip the cross-validated estimate"
    )

    train = add("train", "fit and save a model on the labels so far")
    train.add_argument(
        "--finetune",
        choices=["lora", "linear"],
        default=None,
        help="train PEALClassifier on the images (default: logistic regression on "
        "frozen embeddings)",
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=10, help="--finetune epochs (default: 10)"
    )
    train.add_argument(
        "--lr", type=float, default=1e-3, help="--finetune learning rate (default: 0.001)"
    )

    export = add("export", "write the labels as CSV (path,label,annotator,time)")
    export.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    export.add_argument("--force", action="store_true", help="replace an existing --out")
    export.add_argument(
        "--history", action="store_true", help="every label ever given, superseded ones too"
    )

    sheet = add(
        "sheet", "write a batch's CSV and HTML sheets again (the missing ones, unless --force)"
    )
    sheet.add_argument("--batch", type=_positive_int, required=True, help="the batch number")
    sheet.add_argument("--force", action="store_true", help="replace existing sheets")
    from ._serve import add_serve_arguments

    add_serve_arguments(add("serve", "label the open batch in a browser (a local web page)"))

    add("rescan", "add new images, mark removed ones missing, check changed ones")
    return project


def _warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def _print_scan(scan, verbose=False):
    parts = [f"{len(scan[k])} {k}" for k in ("added", "removed", "returned", "changed")]
    if verbose or any(scan[k] for k in ("added", "removed", "returned", "changed")):
        print("scan: " + ", ".join(parts))
    if scan["removed"]:
        _warn(
            f"{len(scan['removed'])} image(s) no longer in the folder (kept in history, "
            f"marked missing, never proposed): {', '.join(scan['removed'][:20])}"
        )
    if scan["corrupt"]:
        listed = "; ".join(f"{rel} ({err})" for rel, err in scan["corrupt"][:20])
        _warn(f"skipped {len(scan['corrupt'])} unreadable image(s), never proposed: {listed}")


def run_project(args):
    """Run a ``peal-sk project`` command; returns the exit status."""
    try:
        return _run(args)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise ProjectError(
            f"{args.project} is busy: another peal-sk command held it for more than "
            f"{BUSY_TIMEOUT_MS // 1000} s ({exc}); nothing was changed, try again."
        ) from exc


def _run(args):
    cmd = args.project_command
    if cmd == "init":
        project, scan = init_project(
            args.project,
            args.images,
            args.classes,
            strategy=args.strategy,
            cold_start=args.cold_start,
            backbone=args.backbone,
            img_size=args.img_size,
            pretrained=args.pretrained,
            backbone_kwargs=args.backbone_kwargs,
        )
        n = len(scan["added"]) - len(scan["corrupt"])
        print(
            f"created project {args.project} for {project.root}: {n} images, classes "
            f"{', '.join(project.classes)}"
        )
        _print_scan(scan)
        project.close()
        return 0
    project = Project(args.project)
    try:
        return _COMMANDS[cmd](project, args)
    finally:
        project.close()


def _propose(project, args):
    r = project.propose(args.n, release_open=args.release_open)
    _print_scan(r["scan"])
    if r["released"]:
        print(f"released {r['released']} open batch(es)")
    if r["dropped"]:
        _warn(f"left out {len(r['dropped'])} image(s) labelled or proposed meanwhile")
    print(
        f"batch {r['batch']}: {len(r['items'])} images ({r['phase']}: {r['strategy']})\n"
        f"  fill the label column of {r['csv']}\n  thumbnails: {r['html']}\n"
        f"  then: peal-sk project import --project {args.project} {r['csv']}"
    )
    return 0


def _import(project, args):
    r = project.import_labels(args.csv, relabel=args.relabel, annotator=args.annotator)
    print(
        f"imported {r['new']} new, {r['relabelled']} relabelled, {r['unchanged']} unchanged, "
        f"{r['skipped_empty']} empty label(s) skipped; {r['closed_batches']} batch(es) closed"
    )
    if r["conflicts"]:
        applied = "applied" if args.relabel else "NOT applied (pass --relabel to apply)"
        print(f"{len(r['conflicts'])} conflict(s) with existing labels, {applied}:")
        for rel, old, new in r["conflicts"]:
            print(f"  {rel}: {old} -> {new}")
        return 0 if args.relabel else 1
    return 0


def _status(project, args):
    s = project.status(estimate=not args.no_estimate)
    _print_scan(s["scan"])
    print(f"project for {s['image_root']}")
    print(
        f"images: {s['labelled']} labelled, {s['unlabelled']} unlabelled, "
        f"{s['missing']} missing, {s['corrupt']} unreadable"
    )
    if s["corrupt_files"]:
        listed = "; ".join(f"{rel} ({err})" for rel, err in s["corrupt_files"][:20])
        _warn(f"{s['corrupt']} unreadable image(s), never proposed: {listed}")
    print("labels per class: " + ", ".join(f"{c} {n}" for c, n in s["per_class"].items()))
    open_batches = [b for b in s["batches"] if not b["closed"]]
    print(
        f"batches: {len(s['batches'])} ({len(open_batches)} open"
        + (": " + ", ".join(f"batch-{b['id']}" for b in open_batches) if open_batches else "")
        + ")"
    )
    if s["estimate"] is None:
        print(f"validation estimate: {s['estimate_note']}")
    else:
        print(f"validation estimate: {100 * s['estimate']:.1f} % ({s['estimate_note']})")
    if s["curve"]:
        print("learning curve (at each train):")
        for t in s["curve"]:
            est = "n/a" if t["estimate"] is None else f"{100 * t['estimate']:.1f} %"
            print(f"  {t['time']}  {t['n_labels']:>6} labels  {est:>8}  {t['model_path']}")
    else:
        print("learning curve: no training yet (peal-sk project train)")
    return 0


def _train(project, args):
    r = project.train(finetune=args.finetune, epochs=args.epochs, lr=args.lr)
    _print_scan(r["scan"])
    est = r["estimate_note"] if r["estimate"] is None else f"{100 * r['estimate']:.1f} %"
    print(f"trained {r['model']} on {r['n_labels']} labels: {r['model_path']}")
    print(f"validation estimate: {est}")
    return 0


def _export(project, args):
    r = project.export(args.out, force=args.force, history=args.history)
    print(f"wrote {r['n_labels']} labels to {r['out']}")
    print(f"model: {r['model_path'] or 'none trained yet (peal-sk project train)'}")
    return 0


def _sheet(project, args):
    files = project.write_sheets(args.batch, force=args.force)
    print("wrote " + " and ".join(str(p) for p in files.values()))
    return 0


def _rescan(project, args):
    _print_scan(project.rescan(), verbose=True)
    return 0


def _serve(project, args):
    from ._serve import serve_command

    return serve_command(project, args)


_COMMANDS = {
    "propose": _propose,
    "import": _import,
    "status": _status,
    "train": _train,
    "export": _export,
    "sheet": _sheet,
    "rescan": _rescan,
    "serve": _serve,
}
