"""``peal-sk project ...``: the labelling loop's sub-commands."""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from ..selection import parse_selector_params
from ._common import TORCH_EXTRA, MissingExtraError
from ._db import BUSY_TIMEOUT_MS, DB_NAME, database_error
from ._project import (
    LabelConflictError,
    Project,
    ProjectError,
    init_project,
    setup_notes,
)

__all__ = ["add_project_parser", "run_project"]

DESCRIPTION = """\
A labelling loop on an image folder whose labels cannot be lost. The state (images,
labels with their history, proposed batches, trainings) is an SQLite database in the
--project folder; every command's writes are one transaction, so a crash or a kill leaves
the previous state, and two commands at once wait for each other.

  init     create a project for an image folder and a class list
  propose  write batch-<k>.csv (fill its label column) and batch-<k>.html (thumbnails)
  import   import labels: a path,label CSV / TSV (a filled batch CSV, or any tool's
           export) or a Label Studio export (JSON, JSON-MIN, CSV); all or nothing
  status   labels per class, batches, a validation estimate, the learning curve
  train    fit and save a model on the labels so far
  export   write the labels as CSV, or the open batch as Label Studio tasks
  sheet    write a batch's sheets again
  rescan   bring the project in line with a changed image folder (propose, status
           and train rescan first too)
  serve    label the open batch in a browser: a local page with a random access token
  ls-backend    the project as a Label Studio ML backend (predictions, webhooks)
  ls-connect    connect it to a Label Studio project (REST API)
  ls-reconcile  pull a Label Studio project's annotations after missed webhooks

Before two classes have labels, propose uses the label-free --cold-start strategy
(default bilaf) on frozen backbone embeddings; afterwards --strategy (default entropy)
with logistic regression on those embeddings (cached in the project). Fine-tuning the
backbone (LoRA or linear probing with PEALClassifier) is `train --finetune lora`.

A project you may not write (read-only files or folder) is opened read-only: status
and export work, the other commands fail and say so.
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


def _add_no_progress(parser):
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (as when stderr is not a terminal): one line per long step",
    )


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
    from ..selection import list_selectors

    init.add_argument(
        "--strategy",
        default="entropy",
        help="strategy once two classes have labels (default: %(default)s; one of "
        f"{', '.join(i.name for i in list_selectors())})",
    )
    init.add_argument(
        "--cold-start",
        default="bilaf",
        help="label-free strategy used until then (default: %(default)s; one of "
        f"{', '.join(i.name for i in list_selectors(cold_start=True))})",
    )
    init.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="STRATEGY.NAME=VALUE",
        help="a strategy parameter kept in the project, e.g. bilaf.n_cores=10 (repeatable; "
        "the same option as peal-sk simulate)",
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
        help="pretrained weights: local ones, else downloaded once into the Hugging Face cache "
        "(HF_HUB_OFFLINE=1: never; default: on)",
    )
    init.add_argument("--backbone-kwargs", type=_json_object, default=None, help=argparse.SUPPRESS)

    propose = add("propose", "propose the next batch of images to label")
    propose.add_argument(
        "--n", type=_positive_int, default=20, help="images in the batch (default: %(default)s)"
    )
    propose.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="STRATEGY.NAME=VALUE",
        help="a strategy parameter for this batch only, e.g. bilaf.core_selector=activeft",
    )
    _add_no_progress(propose)
    propose.add_argument(
        "--release-open",
        action="store_true",
        help="close the open batches first: their unlabelled images may be proposed again",
    )

    imp = add(
        "import",
        "import labels from a CSV (path,label) or a Label Studio export; all or nothing: "
        "an unknown class or path, or a label differing from the current one without "
        "--relabel, imports nothing and exits 1",
    )
    imp.add_argument(
        "csv",
        type=Path,
        metavar="FILE",
        help="CSV / TSV with a path and a label column (delimiter detected; UTF-8, or "
        "UTF-16 / UTF-8 with a byte-order mark), or a Label Studio JSON / JSON-MIN / CSV "
        "export (detected)",
    )
    imp.add_argument(
        "--relabel",
        action="store_true",
        help="apply labels that differ from the current ones (the old ones stay in history)",
    )
    imp.add_argument(
        "--annotator",
        default=None,
        help="who labelled, for rows whose file names nobody (default: the OS user; a Label "
        "Studio export names each annotation's annotator)",
    )
    from ._importing import CONFLICT_POLICIES

    imp.add_argument(
        "--conflicts",
        choices=CONFLICT_POLICIES,
        default="refuse",
        help="different labels for one image (two annotators of a Label Studio task): "
        "refuse (nothing imported, each annotator and value listed), ground-truth (the "
        "annotation marked ground truth), majority, or latest (the last updated) "
        "(default: %(default)s)",
    )

    status = add("status", "labels, batches, validation estimate, learning curve")
    status.add_argument(
        "--no-estimate", action="store_true", help="skip the cross-validated estimate"
    )
    _add_no_progress(status)

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
    train.add_argument(
        "--holdout",
        type=float,
        default=None,
        metavar="FRACTION",
        help="--finetune: estimate the fine-tuned model on this fraction of the labels "
        "(stratified), trained once more on the rest; without it only the logistic "
        "regression is estimated, as a reference",
    )
    _add_no_progress(train)

    export = add(
        "export",
        "write the labels as CSV (path,label,annotator,time; images present in the folder), "
        "or with --format label-studio an open batch as Label Studio tasks",
    )
    export.add_argument("--out", type=Path, required=True, help="the file to write")
    export.add_argument("--force", action="store_true", help="replace an existing --out")
    export.add_argument(
        "--history",
        action="store_true",
        help="every label ever given, superseded ones and missing images' too (csv)",
    )
    export.add_argument(
        "--format",
        choices=["csv", "label-studio"],
        default="csv",
        help="csv: the labels; label-studio: tasks JSON of an open batch with the model's "
        "predictions as pre-annotations, plus <out stem>.label-config.xml "
        "(default: %(default)s)",
    )
    export.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="label-studio: the batch (default: the latest open one)",
    )
    _add_no_progress(export)
    export.add_argument(
        "--document-root",
        type=Path,
        default=None,
        help="label-studio: the folder Label Studio serves local files from "
        "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; default: the image folder's parent; the "
        "image folder itself is refused, Label Studio needs its storage below the root)",
    )

    sheet = add(
        "sheet", "write a batch's CSV and HTML sheets again (the missing ones, unless --force)"
    )
    sheet.add_argument("--batch", type=_positive_int, required=True, help="the batch number")
    sheet.add_argument("--force", action="store_true", help="replace existing sheets")
    from ._serve import add_serve_arguments

    add_serve_arguments(add("serve", "label the open batch in a browser (a local web page)"))

    from ._ls_backend import (
        add_backend_arguments,
        add_connect_arguments,
        add_reconcile_arguments,
    )

    add_backend_arguments(
        add(
            "ls-backend",
            "serve the project as a Label Studio ML backend: predictions scored by the "
            "strategy, labels from annotation webhooks (HTTP Basic auth; password from "
            "$PEAL_SK_LS_PASSWORD)",
        )
    )
    add_connect_arguments(
        add(
            "ls-connect",
            "connect a running ls-backend to a Label Studio project through its REST API "
            "(the ML backend with Basic auth, and the Authorization header on its webhook)",
        )
    )
    add_reconcile_arguments(
        add(
            "ls-reconcile",
            "pull every annotation of a Label Studio project through its REST API and make "
            "the project's Label Studio labels match (after missed webhooks)",
        )
    )

    rescan = add("rescan", "add new images, mark removed ones missing, check changed ones")
    rescan.add_argument(
        "--carry-renamed",
        action="store_true",
        help="give a new unlabelled image the label of a missing labelled image with the "
        "same content (a renamed or moved file); without it such pairs are only listed",
    )
    return project


def _warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def _print_scan(scan, verbose=False):
    if scan is None:
        print("read-only project: not rescanned")
        return
    parts = [f"{len(scan[k])} {k}" for k in ("added", "removed", "returned", "changed")]
    if verbose or any(scan[k] for k in ("added", "removed", "returned", "changed")):
        print("scan: " + ", ".join(parts))
    if scan["removed"]:
        _warn(
            f"{len(scan['removed'])} image(s) no longer in the folder (kept in history, "
            f"marked missing, never proposed): {', '.join(scan['removed'][:20])}"
        )
    if scan["removed_labelled"]:
        listed = "; ".join(f"{rel} ({lab})" for rel, lab in scan["removed_labelled"][:20])
        _warn(
            f"{len(scan['removed_labelled'])} labelled image(s) gone: their labels are kept "
            f"in the history but no longer trained on or exported: {listed}"
        )
    if scan["changed_labelled"]:
        listed = "; ".join(f"{rel} ({lab})" for rel, lab in scan["changed_labelled"][:20])
        _warn(
            f"{len(scan['changed_labelled'])} labelled image(s) changed content under the "
            f"same name; their labels are kept, check them (relabel with import --relabel): "
            f"{listed}"
        )
    if scan["carried"]:
        listed = "; ".join(f"{old} -> {new} ({lab})" for old, new, lab in scan["carried"][:20])
        print(f"carried {len(scan['carried'])} label(s) to renamed image(s): {listed}")
    elif scan["renamed"]:
        listed = "; ".join(f"{old} -> {new} ({lab})" for old, new, lab in scan["renamed"][:20])
        _warn(
            f"{len(scan['renamed'])} labelled image(s) appear renamed (same content): "
            f"{listed}; run `peal-sk project rescan --carry-renamed` to carry their labels over"
        )
    if scan["corrupt"]:
        listed = "; ".join(f"{rel} ({err})" for rel, err in scan["corrupt"][:20])
        _warn(f"skipped {len(scan['corrupt'])} unreadable image(s), never proposed: {listed}")


def run_project(args):
    """Run a ``peal-sk project`` command; returns the exit status.

    Errors of the data or the project's state raise :class:`ProjectError` (or another
    ``ValueError`` / ``OSError``) with a one-line message: ``peal-sk`` prints it and
    exits 1. A missing optional extra becomes a :class:`MissingExtraError` naming the
    ``pip install`` to run.
    """
    try:
        return _run(args)
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise ProjectError(
                f"{args.project} is busy: another peal-sk command held it for more than "
                f"{BUSY_TIMEOUT_MS // 1000} s ({exc}); nothing was changed, try again."
            ) from exc
        raise ProjectError(database_error(args.project / DB_NAME, exc)) from exc
    except ImportError as exc:
        name = getattr(exc, "name", None) or ""
        if name.split(".")[0] in TORCH_EXTRA:
            raise MissingExtraError(
                f"peal-sk project {args.project_command} needs the [torch] extra ({exc}); "
                "install it with: pip install 'peal-sk[torch]'"
            ) from exc
        raise MissingExtraError(f"peal-sk project {args.project_command}: {exc}") from exc


def _run(args):
    cmd = args.project_command
    if cmd == "init":
        project, scan = init_project(
            args.project,
            args.images,
            args.classes,
            strategy=args.strategy,
            cold_start=args.cold_start,
            strategy_params=parse_selector_params(args.param),
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
        for note in setup_notes(args.backbone, args.pretrained):
            _warn(note)
        project.close()
        return 0
    readonly = True if cmd == "export" and args.format == "csv" else None
    progress = None if not getattr(args, "no_progress", False) else False
    project = Project(args.project, readonly=readonly, progress=progress)
    try:
        return _COMMANDS[cmd](project, args)
    finally:
        project.close()


def _propose(project, args):
    r = project.propose(
        args.n, release_open=args.release_open, strategy_params=parse_selector_params(args.param)
    )
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
    try:
        r = project.import_labels(
            args.csv, relabel=args.relabel, annotator=args.annotator, conflicts=args.conflicts
        )
    except LabelConflictError as exc:
        print(
            f"error: nothing imported from {args.csv}: {len(exc.conflicts)} label(s) differ "
            "from the current ones (pass --relabel to apply them; the old labels stay in the "
            "history):",
            file=sys.stderr,
        )
        for rel, old, new in exc.conflicts:
            print(f"  {rel}: {old} -> {new}", file=sys.stderr)
        return 1
    print(
        f"{r['format']}: imported {r['new']} new, {r['relabelled']} relabelled, "
        f"{r['unchanged']} unchanged, "
        f"{r['skipped_empty']} empty label(s) skipped; {r['closed_batches']} batch(es) closed"
    )
    if r["conflicts"]:
        print(f"{len(r['conflicts'])} label(s) changed (old ones kept in history):")
        for rel, old, new in r["conflicts"]:
            print(f"  {rel}: {old} -> {new}")
    return 0


def _status(project, args):
    s = project.status(estimate=not args.no_estimate)
    _print_scan(s["scan"])
    print(f"project for {s['image_root']}")
    print(
        f"images: {s['labelled']} labelled, {s['unlabelled']} unlabelled, "
        f"{s['missing']} missing, {s['corrupt']} unreadable"
    )
    if s["labels_out_of_use"]:
        listed = "; ".join(f"{rel} ({lab})" for rel, lab in s["labels_out_of_use"][:20])
        _warn(
            f"{len(s['labels_out_of_use'])} label(s) of missing or unreadable images, kept in "
            f"the history but not trained on or exported: {listed}"
        )
    if s["corrupt_files"]:
        listed = "; ".join(f"{rel} ({err})" for rel, err in s["corrupt_files"][:20])
        _warn(f"{s['corrupt']} unreadable image(s), never proposed: {listed}")
    print("labels per class: " + ", ".join(f"{c} {n}" for c, n in s["per_class"].items()))
    if s["per_annotator"]:
        print(
            "labels per annotator: " + ", ".join(f"{a} {n}" for a, n in s["per_annotator"].items())
        )
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
            print(
                f"  {t['time']}  {t['n_labels']:>6} labels  {est:>8}  {t['model']}: "
                f"{t['model_path']}"
            )
    else:
        print("learning curve: no training yet (peal-sk project train)")
    return 0


def _train(project, args):
    r = project.train(finetune=args.finetune, epochs=args.epochs, lr=args.lr, holdout=args.holdout)
    _print_scan(r["scan"])
    print(f"trained {r['model']} on {r['n_labels']} labels: {r['model_path']}")
    print(f"estimate of {r['model']}: {_percent(r['estimate'], r['estimate_note'])}")
    if r["reference_note"] is not None:
        print(
            "reference, logistic regression on frozen embeddings (not this model): "
            f"{_percent(r['reference_estimate'], r['reference_note'])}"
        )
    return 0


def _percent(value, note):
    return note if value is None else f"{100 * value:.1f} % ({note})"


def _export(project, args):
    if args.format == "label-studio":
        r = project.export_label_studio(
            args.out, batch=args.batch, document_root=args.document_root, force=args.force
        )
        pre = (
            "with the model's predictions as pre-annotations"
            if r["predictions"]
            else ("without predictions (no model before two classes have labels)")
        )
        print(
            f"wrote {r['n_tasks']} Label Studio tasks of batch {r['batch']} to {r['out']} "
            f"({pre})\n  labelling config: {r['config']}\n  start Label Studio with "
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={r['document_root']}\n"
            f"  add a Local files storage with the absolute path {r['storage']} (Settings > "
            "Cloud Storage > Add Source Storage > Local files; do not sync it, import the "
            "tasks file)\n"
            f"  then: peal-sk project import --project {args.project} <the JSON export>"
        )
        return 0
    r = project.export(args.out, force=args.force, history=args.history)
    print(f"wrote {r['n_labels']} labels to {r['out']}")
    print(f"model: {r['model_path'] or 'none trained yet (peal-sk project train)'}")
    return 0


def _sheet(project, args):
    files = project.write_sheets(args.batch, force=args.force)
    print("wrote " + " and ".join(str(p) for p in files.values()))
    return 0


def _rescan(project, args):
    _print_scan(project.rescan(carry_renamed=args.carry_renamed), verbose=True)
    return 0


def _serve(project, args):
    from ._serve import serve_command

    return serve_command(project, args)


def _ls_backend(project, args):
    from ._ls_backend import backend_command

    return backend_command(project, args)


def _ls_connect(project, args):
    from ._ls_backend import connect_command

    return connect_command(project, args)


def _ls_reconcile(project, args):
    from ._ls_backend import reconcile_command

    return reconcile_command(project, args)


_COMMANDS = {
    "propose": _propose,
    "import": _import,
    "status": _status,
    "train": _train,
    "export": _export,
    "sheet": _sheet,
    "rescan": _rescan,
    "serve": _serve,
    "ls-backend": _ls_backend,
    "ls-connect": _ls_connect,
    "ls-reconcile": _ls_reconcile,
}
