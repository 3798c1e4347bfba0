"""A labelling project on a real image folder: propose, import, train, export.

:class:`Project` is a thin facade over the parts, each of which a reader can hold in
their head:

* :mod:`._db` / :mod:`._state` - the SQLite state: every query and transaction;
* :mod:`._scan` - the image folder: walk, check, hash, rescan;
* :mod:`._embed_cache` - frozen backbone embeddings, cached on disk;
* :mod:`._training` - logistic regression, its estimate, fine-tuning (no SQL);
* :mod:`._importing` / :mod:`._labelstudio` - reading label files, Label Studio formats;
* :mod:`._render` - batch sheets and label CSVs (no SQL, no model).

The images stay where they are and are referred to by their path relative to the image
folder. Files the project writes (batch sheets, models, exports, the embedding cache) are
written to a temporary name and renamed, and never replace a file that already exists
(an export does with ``force=True``).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from . import _embed_cache, _labelstudio, _render, _scan, _training
from ._common import (
    IMAGE_EXTENSIONS,
    TORCH_EXTRA,
    LabelConflictError,
    MissingExtraError,
    ProjectError,
    ReadOnlyProjectError,
    missing_modules,
    require_torch,
    write_atomic,
)
from ._db import DB_NAME, connect, create_schema, database_error, now
from ._importing import read_label_file, resolve
from ._state import State

__all__ = [
    "DEFAULT_STRATEGY_PARAMS",
    "IMAGE_EXTENSIONS",
    "LabelConflictError",
    "Project",
    "ProjectError",
    "ReadOnlyProjectError",
    "init_project",
    "setup_notes",
]

#: strategy parameters every new project starts with (``--param`` adds to them): BiLAF's
#: cores by k-centre, which needs no iterations and suits pools of any size
DEFAULT_STRATEGY_PARAMS = {"bilaf": {"core_selector": "kcenter"}}


def check_strategies(strategy, cold_start, strategy_params):
    """Validate a project's strategies against the registry; raise ``ProjectError``."""
    from ..selection import get_selector, list_selectors

    names = [info.name for info in list_selectors()]
    cold = [info.name for info in list_selectors(cold_start=True)]
    if strategy not in names:
        raise ProjectError(f"unknown strategy {strategy!r}; choose from {names}.")
    if cold_start not in cold:
        raise ProjectError(
            f"cold start {cold_start!r} is not a label-free strategy; choose from {cold}."
        )
    if not isinstance(strategy_params, dict):
        raise ProjectError(f"strategy parameters must be a mapping; got {strategy_params!r}.")
    for name, params in strategy_params.items():
        try:
            get_selector(name, **params)
        except (TypeError, ValueError) as exc:
            raise ProjectError(f"--param {name}: {exc}") from exc


def select(name, n_instances, seed, classifier, X_pool, X_lab=None, y=None, params=None):
    """Run the strategy ``name``: ``(indices into X_pool, scores)``.

    The one place that turns a strategy name into a selector (through the registry, as
    ``peal-sk simulate`` does) and gives it what it needs: the labelled embeddings go to
    every strategy once there are labels (those that do not use them ignore them).
    """
    from ..selection import make_selector

    selector = make_selector(name, params, n_instances=n_instances, random_state=seed)
    if X_lab is not None:
        return selector(classifier, X_pool, n_instances, X_labeled=X_lab, y_labeled=y)
    return selector(classifier, X_pool, n_instances)


def init_project(
    project,
    images,
    classes,
    *,
    strategy="entropy",
    cold_start="bilaf",
    backbone="efficientnet_lite0",
    img_size=224,
    pretrained=True,
    backbone_kwargs=None,
    strategy_params=None,
):
    """Create a project in the folder ``project`` for the image folder ``images``.

    ``strategy`` and ``cold_start`` are registered strategy names
    (:func:`peal_sk.selection.list_selectors`; the cold start must be label-free), and
    ``strategy_params`` (``{"bilaf": {"n_cores": 30}}``) is added to
    :data:`DEFAULT_STRATEGY_PARAMS` and kept in the project.

    Returns
    -------
    project : Project
    scan : dict
        What the first scan found (see :meth:`Project.rescan`).
    """
    project, images = Path(project), Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {images} does not exist or is not a folder.")
    classes = [str(c).strip() for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(classes):
        raise ProjectError(f"--classes needs at least 2 distinct non-empty names; got {classes}.")
    params = {k: dict(v) for k, v in DEFAULT_STRATEGY_PARAMS.items()}
    for name, values in (strategy_params or {}).items():
        params.setdefault(name, {}).update(values)
    check_strategies(strategy, cold_start, params)
    if int(img_size) < 1:
        raise ProjectError(f"img_size must be >= 1; got {img_size}.")
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ProjectError(f"backbone_kwargs must be a JSON object; got {backbone_kwargs!r}.")
    db = project / DB_NAME
    if db.exists():
        raise FileExistsError(
            f"{project} already holds a project ({db}); it is never replaced. Use another "
            "--project folder, or delete that one yourself."
        )
    try:
        project.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(
            f"cannot create the project folder {project}: {exc.strerror or exc}; choose a "
            "--project folder you may write."
        ) from None
    meta = {
        "image_root": str(images.resolve()),
        "classes": json.dumps(classes),
        "strategy": strategy,
        "cold_start": cold_start,
        "strategy_params": json.dumps(params, sort_keys=True),
        "backbone": json.dumps(
            {
                "backbone": backbone,
                "pretrained": bool(pretrained),
                "img_size": int(img_size),
                "backbone_kwargs": backbone_kwargs or {},
            },
            sort_keys=True,
        ),
        "created": now(),
    }
    # build the database under a temporary name, then link it into place: a second init
    # racing this one fails instead of replacing it
    tmp = project / f".{DB_NAME}.{os.getpid()}.tmp"
    try:
        con = connect(tmp)
        try:
            create_schema(con, meta)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    except (OSError, sqlite3.Error) as exc:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{tmp}{suffix}")
        raise ProjectError(
            f"cannot write the project database in {project} ({exc}); choose a --project "
            "folder you may write."
        ) from None
    try:
        try:
            os.link(tmp, db)  # atomic, fails when db exists
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system
            if db.exists():
                raise FileExistsError(db) from None
            os.replace(tmp, db)
    except FileExistsError:
        raise FileExistsError(f"{project} already holds a project ({db}).") from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{tmp}{suffix}")
    proj = Project(project)
    return proj, proj.rescan()


def setup_notes(backbone, pretrained=True):
    """What this machine lacks for a project's commands, as lines to show at ``init``.

    Embedding the images (``propose``, the estimate of ``status``, ``train``) needs the
    ``[torch]`` extra; the strategies themselves run on the embeddings with the core
    install. With torch present, the backbone's pretrained weights are looked up too
    (without network): missing ones are downloaded on first use, which needs the hub.
    """
    missing = missing_modules(TORCH_EXTRA)
    if missing:
        return [
            "propose, train and the estimate of status embed the images with "
            f"{backbone!r} and need the [torch] extra, which is not installed (missing: "
            f"{', '.join(missing)}): pip install 'peal-sk[torch]' (import, export, sheet "
            "and serve work without it)"
        ]
    if not pretrained:
        return []
    from ..classifier import list_backbones

    entry = {b["name"]: b for b in list_backbones()}.get(backbone)
    if entry is None or entry["offline"]:
        return []
    return [f"the pretrained weights of {backbone!r} are not on this machine: {entry['install']}"]


class Project:
    """An open labelling project (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The project folder (holding ``project.sqlite``).
    readonly : bool or None, default=None
        Open without writing anything (``status`` and ``export`` work; writing methods
        raise :class:`ReadOnlyProjectError`). ``None``: read-only exactly when this
        process may not write the database or its folder.
    progress : bool or None, default=None
        Progress bars while embedding (tqdm, on stderr). ``None``: when stderr is a
        terminal. Without bars, the long steps report with one line each through ``log``.
    log : callable or None, default=None
        Called with a line of text at the start and end of long steps (embedding,
        fine-tuning); None prints to stderr.
    """

    def __init__(self, path, *, readonly=None, progress=None, log=None):
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.log = log if log is not None else (lambda line: print(line, file=sys.stderr))
        try:
            self.state = State(path, readonly=readonly)
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            raise ProjectError(database_error(Path(path) / DB_NAME, exc)) from None
        self.path, self.con, self.readonly = self.state.path, self.state.con, self.state.readonly
        meta = self.state.meta
        self.root = Path(meta["image_root"])
        self.classes = json.loads(meta["classes"])
        self.strategy = meta["strategy"]
        self.cold_start = meta["cold_start"]
        # projects made before strategy parameters existed ran BiLAF with these
        self.strategy_params = json.loads(
            meta.get("strategy_params") or json.dumps(DEFAULT_STRATEGY_PARAMS)
        )
        self.backbone = json.loads(meta["backbone"])

    def close(self):
        self.state.close()

    # -- the image folder ---------------------------------------------------------------
    def rescan(self, *, carry_renamed=False):
        """Bring the images table in line with the folder (see :func:`._scan.rescan`)."""
        return _scan.rescan(self.state, self.root, carry_renamed=carry_renamed)

    def _scan_unless_readonly(self):
        return None if self.readonly else self.rescan()

    def labelled(self):
        """Current labels of present images: rows (id, relpath, size, mtime_ns, label)."""
        return self.state.labelled()

    def pool(self, *, include_open=False):
        """Present, readable images with no label (and in no open batch)."""
        return self.state.pool(include_open=include_open)

    # -- embeddings and models ----------------------------------------------------------
    def embeddings(self, rows):
        """Frozen backbone embeddings of ``rows`` (cached; see :mod:`._embed_cache`)."""
        return _embed_cache.embeddings(
            rows,
            project_path=self.path,
            root=self.root,
            backbone=self.backbone,
            persist=not self.readonly,
            on_new_cache=self.state.record_embedding_cache,
            progress=self.progress,
            log=self.log,
        )

    def estimate(self, labelled=None, X=None):
        """Cross-validated accuracy of logistic regression on the embeddings.

        Returns
        -------
        estimate : float or None
        note : str
            How it was computed, or why there is none.
        """
        labelled = self.labelled() if labelled is None else labelled
        y = [r["label"] for r in labelled]
        try:
            return _training.estimate(
                y, self.classes, lambda: self.embeddings(labelled) if X is None else X
            )
        except MissingExtraError as exc:
            return None, f"no estimate: {exc}"

    # -- propose ------------------------------------------------------------------------
    def propose(self, n_instances, *, release_open=False, strategy_params=None):
        """Choose the next ``n_instances`` images to label and write the batch sheets.

        Before two classes have labels, the project's label-free ``cold_start`` strategy
        runs on the frozen embeddings of the pool; afterwards the configured strategy,
        with logistic regression fitted on the embeddings of the labelled images.
        ``strategy_params`` overrides the project's strategy parameters for this batch
        (recorded in the batch's configuration).

        Returns
        -------
        result : dict
            ``batch`` (id), ``csv``, ``html`` (paths), ``strategy``, ``phase``, ``items``
            (list of ``(relpath, score)``), ``scan`` and ``dropped`` (images labelled or
            proposed by another command meanwhile, left out).
        """
        n_instances = int(n_instances)
        if n_instances < 1:
            raise ProjectError(f"--n must be >= 1; got {n_instances}.")
        params = {k: dict(v) for k, v in self.strategy_params.items()}
        for name, values in (strategy_params or {}).items():
            params.setdefault(name, {}).update(values)
        check_strategies(self.strategy, self.cold_start, params)
        self.state.require_writable("propose")
        require_torch("propose (embedding the images)")
        scan = self.rescan()
        labelled, pool = self.labelled(), self.pool(include_open=release_open)
        if n_instances > len(pool):
            raise ProjectError(
                f"--n {n_instances} but only {len(pool)} images can be proposed (present, "
                "readable, unlabelled and in no open batch); ask for fewer, label the open "
                "batches, or pass --release-open to return their unlabelled images to the pool."
            )
        seed = self.state.next_batch_seed()
        y = [r["label"] for r in labelled]
        phase = "model" if len(set(y)) >= 2 else "cold start"
        strategy = self.strategy if phase == "model" else self.cold_start
        classifier, X_lab = None, None
        if phase == "model":
            X = self.embeddings([*pool, *labelled])
            X_pool, X_lab = X[: len(pool)], X[len(pool) :]
            classifier = _training.logreg().fit(X_lab, y)
        else:
            X_pool = self.embeddings(pool)
        t0 = time.perf_counter()
        self.log(f"selecting {n_instances} of {len(pool)} pool images with {strategy}")
        idx, scores = select(
            strategy, n_instances, seed, classifier, X_pool, X_lab, y, params.get(strategy)
        )
        self.log(f"selected in {time.perf_counter() - t0:.1f} s")
        config = {
            "phase": phase,
            "strategy": strategy,
            "strategy_params": params.get(strategy, {}),
            "n_instances": n_instances,
            "n_labels": len(y),
            "n_pool": len(pool),
            "random_state": seed,
            "model": "StandardScaler + LogisticRegression on embeddings"
            if phase == "model"
            else None,
            "backbone": self.backbone,
        }
        picks = [(pool[i], float(sc)) for i, sc in zip(idx, scores, strict=True)]
        batch, picks, dropped, released = self.state.record_batch(
            strategy, config, picks, release_open=release_open
        )
        # the sheets are written after the commit: a crash in between loses no label and
        # `peal-sk project sheet --batch K` writes them again
        files = self.write_sheets(batch, orphans=True)
        return {
            "batch": batch,
            **files,
            "strategy": strategy,
            "phase": phase,
            "items": [(row["relpath"], sc) for row, sc in picks],
            "scan": scan,
            "dropped": dropped,
            "released": released,
        }

    def write_sheets(self, batch, *, force=False, orphans=False):
        """Write ``batch-<k>.csv`` and ``batch-<k>.html`` of a recorded batch.

        Existing files are kept unless ``force`` (the CSV may hold labels being typed
        in): only missing ones are written, and an error is raised when both exist. With
        ``orphans``, files left by a propose that crashed before its commit are renamed
        ``*.orphan-<time>`` first.

        Returns
        -------
        files : dict
            The paths written: ``csv`` and / or ``html``.
        """
        strategy, config, rows = self.state.batch(batch)
        items = [(r["relpath"], r["score"]) for r in rows]
        texts = {
            "csv": _render.batch_csv(items),
            "html": _render.batch_html(
                batch,
                strategy,
                config.get("phase", ""),
                items,
                classes=self.classes,
                root=self.root,
            ),
        }
        files = {}
        for kind, text in texts.items():
            path = self.path / f"batch-{batch}.{kind}"
            if orphans and path.exists():
                path.rename(path.with_name(f"{path.name}.orphan-{time.time_ns()}"))
            try:
                write_atomic(path, text.encode(), overwrite=force)
            except FileExistsError:
                continue  # kept: it may hold labels being typed in
            files[kind] = path
        if not files:
            raise FileExistsError(
                f"batch-{batch}.csv and batch-{batch}.html exist in {self.path} (the CSV may "
                "hold your labels); they are never overwritten without --force."
            )
        return files

    # -- import -------------------------------------------------------------------------
    def import_labels(self, csv_path, *, relabel=False, annotator=None, conflicts="refuse"):
        """Import labels from a file, all or nothing, in one transaction.

        The file is a ``path,label`` CSV / TSV (with or without a header; the delimiter
        is detected; UTF-8, or UTF-16 / UTF-8 with a byte-order mark) or a Label Studio
        export (JSON, JSON-MIN or CSV; choice annotations). Rows with an empty label are
        skipped. Unknown class names, paths that are not images of the project, or labels
        that differ from the current ones (unless ``relabel=True``, which supersedes the
        old label, kept in the history) raise :class:`ProjectError` listing them with their
        line numbers, and nothing is imported. A label equal to the current one changes
        nothing (re-importing a file is a no-op).

        Each label records its annotator: Label Studio's (the e-mail or user id its export
        names), else ``annotator`` (default: the OS user). Different labels for one image
        (two annotators of a Label Studio task) are settled by ``conflicts``: ``"refuse"``
        (an error naming each annotator and value; nothing imported), ``"ground-truth"``,
        ``"majority"`` or ``"latest"`` (see :func:`._importing.choose_labels`).

        Returns
        -------
        report : dict
            ``new``, ``unchanged``, ``relabelled`` (counts), ``conflicts`` (list of
            ``(relpath, old, new)``, applied), ``skipped_empty``, ``closed_batches`` and
            ``format`` (how the file was read).
        """
        self.state.require_writable("import")
        rows, kind = read_label_file(csv_path)
        report = self._import_rows(rows, relabel, annotator, str(csv_path), conflicts)
        return {**report, "format": kind}

    def import_records(self, records, *, relabel=False, annotator=None, source="records"):
        """Import in-memory ``(relpath, label)`` pairs like :meth:`import_labels`.

        The same transactional path as the file import: all or nothing, history kept,
        empty labels skipped, conflicts with current labels refused (raising
        :class:`LabelConflictError`, nothing imported) unless ``relabel=True``. Errors
        name the records by their position (``record 1`` is the first).

        Parameters
        ----------
        records : iterable of (str, str)
            Image path (relative to the image folder, or absolute) and class name.
        relabel : bool, default=False
            Apply labels that differ from the current ones (the old ones stay in history).
        annotator : str, default=None
            Who labelled (default: the OS user).
        source : str, default="records"
            Recorded with each label (where it came from, e.g. ``"serve"``).

        Returns
        -------
        report : dict
            The same summary as :meth:`import_labels` (without ``format``).
        """
        rows = []
        for k, record in enumerate(records, start=1):
            try:
                value, label = record
            except (TypeError, ValueError):
                raise ProjectError(
                    f"record {k} must be a (path, label) pair; got {record!r}."
                ) from None
            rows.append((f"record {k}", str(value).strip(), str(label).strip()))
        return self._import_rows(rows, relabel, annotator, str(source))

    def _import_rows(self, rows, relabel, annotator, source, conflicts="refuse"):
        return self.state.import_rows(
            rows,
            classes=self.classes,
            resolve=lambda value, known: resolve(value, known, self.root),
            relabel=relabel,
            annotator=annotator,
            source=source,
            what=source,
            conflicts=conflicts,
        )

    # -- status, train, export ----------------------------------------------------------
    def status(self, *, estimate=True):
        """Counts, batches, the validation estimate and the learning curve so far.

        A read-only project is not rescanned (``scan`` is None) and computes missing
        embeddings without caching them.
        """
        scan = self._scan_unless_readonly()
        counts = self.state.status_counts()
        labelled = self.labelled()
        by_status = counts["by_status"]
        result = {
            "image_root": str(self.root),
            "classes": self.classes,
            "per_class": {c: int(counts["per_class"].get(c, 0)) for c in self.classes},
            "per_annotator": self.state.annotator_counts(),
            "labelled": len(labelled),
            "unlabelled": by_status.get("present", 0) - len(labelled),
            "missing": by_status.get("missing", 0),
            "corrupt": by_status.get("corrupt", 0),
            "corrupt_files": counts["corrupt_files"],
            "labels_out_of_use": counts["labels_out_of_use"],
            "batches": counts["batches"],
            "curve": counts["curve"],
            "scan": scan,
            "readonly": self.readonly,
        }
        if estimate:
            result["estimate"], result["estimate_note"] = self.estimate(labelled)
        else:
            result["estimate"], result["estimate_note"] = None, "no estimate (--no-estimate)"
        return result

    def train(self, *, finetune=None, epochs=10, lr=1e-3, holdout=None):
        """Fit and save a model on the labels so far and record its own estimate.

        ``finetune=None``: StandardScaler + LogisticRegression on the frozen embeddings,
        saved with joblib; its estimate is its cross-validated accuracy. ``"lora"`` /
        ``"linear"``: a :class:`~peal_sk.classifier.PEALClassifier` trained on the images,
        saved with ``save_adapters``. Cross-validating a fine-tuning would repeat it five
        times, so its estimate is made only on request: ``holdout`` (a fraction in
        (0, 1)) trains it once more on a stratified, seeded ``1 - holdout`` of the labels
        and scores it on the rest; without it the fine-tuned model has no estimate. The
        logistic regression's estimate is then returned as ``reference_estimate``, named
        as such, and never recorded as the fine-tuned model's. Labels of missing or
        unreadable images are never trained on.

        Returns
        -------
        result : dict
            ``model_path``, ``model``, ``n_labels``, ``estimate`` / ``estimate_note`` (the
            saved model's own, ``estimate`` None when not computed), ``reference_estimate``
            / ``reference_note`` (the logistic regression's, for a fine-tuned model) and
            ``scan``.
        """
        if holdout is not None and (finetune is None or not 0 < float(holdout) < 1):
            raise ProjectError(
                f"--holdout must be a fraction in (0, 1), with --finetune; got "
                f"holdout={holdout!r}, finetune={finetune!r} (logistic regression is "
                "cross-validated anyway)."
            )
        self.state.require_writable("train")
        require_torch("train (embedding the images)")
        scan = self.rescan()
        labelled = self.labelled()
        y = [r["label"] for r in labelled]
        if len(set(y)) < 2:
            raise ProjectError(
                f"training needs labels of at least 2 classes; got {len(y)} label(s) of "
                f"{len(set(y))} class(es)."
            )
        split = None
        if holdout is not None:
            split = _training.holdout_split(y, float(holdout))
        X = self.embeddings(labelled)
        estimate, note = self.estimate(labelled, X)
        n = 1 + self.state.n_trainings()
        models = self.path / "models"
        result = {"reference_estimate": None, "reference_note": None}
        if finetune is None:
            path, kind = _training.fit_logreg(
                models, n, X, y, backbone=self.backbone, classes=self.classes
            )
        else:
            result = {"reference_estimate": estimate, "reference_note": note}
            paths = [str(self.root / r["relpath"]) for r in labelled]
            options = dict(
                backbone=self.backbone,
                classes=self.classes,
                finetune=finetune,
                epochs=epochs,
                lr=lr,
                verbose=1,
                log=self.log,
            )
            estimate, note = (
                None,
                (
                    "not computed for a fine-tuned model (train --holdout 0.2 estimates it on "
                    "held-out labels)"
                ),
            )
            if split is not None:
                estimate, note = _training.holdout_estimate(paths, y, split, **options)
            path, kind = _training.fit_finetuned(models, n, paths, y, **options)
        self.state.record_training(len(y), estimate, note, kind, path)
        return {
            "model_path": path,
            "model": kind,
            "n_labels": len(y),
            "estimate": estimate,
            "estimate_note": note,
            **result,
            "scan": scan,
        }

    def export(self, out, *, force=False, history=False):
        """Write the labels as CSV ``path,label,annotator,time``.

        Only labels of images present in the folder are exported; ``history`` writes
        every label ever given (missing images' too) with ``superseded`` and
        ``image_status`` columns. Works on a read-only project.

        Returns
        -------
        result : dict
            ``out``, ``n_labels`` and ``model_path`` (the latest trained model or None).
        """
        out = Path(out)
        rows = self.state.export_rows(history=history)
        self._write_out(out, _render.labels_csv(rows, history=history), force)
        return {"out": out, "n_labels": len(rows), "model_path": self.state.last_model_path()}

    def export_label_studio(self, out, *, batch=None, document_root=None, force=False):
        """Write an open batch as Label Studio tasks JSON and its labelling config XML.

        Parameters
        ----------
        out : path-like
            The tasks file (``.json``); the config is written next to it as
            ``<stem>.label-config.xml``.
        batch : int, default=None
            The batch (default: the latest open one).
        document_root : path-like, default=None
            Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (default: the
            image folder's parent); image URLs are ``/data/local-files/?d=<path under
            it>``. The image folder itself is refused: Label Studio needs a *Local
            files* storage strictly under its document root.
        force : bool, default=False
            Replace existing files.

        Returns
        -------
        result : dict
            ``out``, ``config`` (paths), ``batch``, ``n_tasks``, ``predictions``
            (whether pre-annotations were written: once two classes have labels),
            ``document_root`` and ``storage`` (the *Local files* storage path to add).
        """
        out = Path(out)
        document_root, storage = _labelstudio.check_document_root(self.root, document_root)
        batch = self.state.latest_open_batch() if batch is None else int(batch)
        if batch is None:
            raise ProjectError(
                f"no open batch in {self.path}; propose one first (peal-sk project propose)."
            )
        _, _, rows = self.state.batch(batch)
        items = [(r["relpath"], r["score"]) for r in rows]
        labelled = self.labelled()
        y = [r["label"] for r in labelled]
        predictions = model_version = None
        if len(set(y)) >= 2 and rows:
            X = self.embeddings([*rows, *labelled])
            labels, probas = _training.predict(X[len(rows) :], y, X[: len(rows)])
            predictions = list(zip(labels, probas, strict=True))
            model_version = (
                f"peal_sk logreg on {self.backbone['backbone']} embeddings, {len(y)} labels"
            )
        tasks = _labelstudio.tasks(
            items,
            root=self.root,
            document_root=document_root,
            predictions=predictions,
            model_version=model_version,
        )
        config = out.with_name(f"{out.stem}.label-config.xml")
        self._write_out(out, json.dumps(tasks, indent=1) + "\n", force)
        self._write_out(config, _labelstudio.label_config(self.classes), force)
        return {
            "out": out,
            "config": config,
            "batch": batch,
            "n_tasks": len(tasks),
            "predictions": predictions is not None,
            "document_root": document_root,
            "storage": storage,
        }

    @staticmethod
    def _write_out(out, text, force):
        if out.is_dir():
            raise ProjectError(
                f"--out {out} is a folder; give a file name, e.g. {out / 'labels.csv'} "
                "(a folder is never replaced, even with --force)."
            )
        try:
            write_atomic(out, text.encode(), overwrite=force)
        except FileExistsError:
            raise FileExistsError(
                f"{out} exists; it is never overwritten without --force."
            ) from None
        except OSError as exc:
            raise ProjectError(
                f"cannot write --out {out}: {exc.strerror or exc} ({exc.filename or out})."
            ) from None
