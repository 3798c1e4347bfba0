"""A labelling project on a real image folder: propose, import, train, export.

The state lives in ``<project>/project.sqlite`` (see :mod:`peal_sk.project._db`); the
images stay where they are and are referred to by their path relative to the image
folder. Files the project writes (batch sheets, models, exports, the embedding cache) are
written to a temporary name and renamed, and never replace a file that already exists
(an export does with ``force=True``).
"""

# SPDX-License-Identifier: BSD-3-Clause

import base64
import contextlib
import csv
import getpass
import hashlib
import html
import io
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from ._db import DB_NAME, SCHEMA_VERSION, connect, create_schema, now, transaction

__all__ = [
    "COLD_START",
    "IMAGE_EXTENSIONS",
    "LabelConflictError",
    "STRATEGIES",
    "Project",
    "ProjectError",
    "init_project",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: strategies of ``propose`` once two classes have labels
STRATEGIES = ("entropy", "margin", "featdist", "random", "kcenter", "bilaf")
#: label-free strategies of ``propose`` before that (the cold start)
COLD_START = ("bilaf", "kcenter", "random")
#: header names recognised in an imported CSV (case-insensitive)
PATH_COLUMNS = ("path", "relpath", "image", "file", "filename", "filepath", "file_path", "img")
LABEL_COLUMNS = ("label", "class", "choice", "category", "annotation", "target")
#: hidden: seconds to sleep after each row inside the import transaction (tests only)
IMPORT_DELAY_ENV = "PEAL_SK_TEST_IMPORT_DELAY"
_MAX_LISTED = 20
_THUMB = 160


class ProjectError(ValueError):
    """A user error: bad input, a missing project, nothing to do."""


class LabelConflictError(ProjectError):
    """An import would change current labels without ``relabel``: nothing was imported.

    ``conflicts`` lists ``(relpath, current label, imported label)``.
    """

    def __init__(self, what, conflicts):
        self.conflicts = list(conflicts)
        listed = _listing(f"{rel}: {old} -> {new}" for rel, old, new in self.conflicts)
        super().__init__(
            f"nothing imported from {what}: {len(self.conflicts)} label(s) differ from the "
            f"current ones (pass --relabel / relabel=True to apply them; the old labels stay "
            f"in the history): {listed}"
        )


def _listing(items, n=_MAX_LISTED):
    items = list(items)
    shown = "; ".join(str(i) for i in items[:n])
    return shown + (f"; ... and {len(items) - n} more" if len(items) > n else "")


def _where(places):
    """``line(s) 3, 5`` / ``record(s) 1, 2`` from ``["line 3", "line 5"]``."""
    kind = places[0].split()[0]
    return f"{kind}(s) " + ", ".join(p.split(" ", 1)[1] for p in places)


def _default_annotator():
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (e.g. a container without passwd entry)
        return "unknown"


def _check_image(path):
    """None when PIL decodes the whole file, else the error (truncation included)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder error means unreadable
        return f"{type(exc).__name__}: {exc}"
    return None


def _claim(path):
    """Create ``path`` empty and exclusively (False when it exists)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def _write_atomic(path, data, *, overwrite):
    """Write bytes through a temporary file; never replace ``path`` unless ``overwrite``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    try:
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic, fails when path exists
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: exclusive create instead
            with open(path, "xb") as fh:
                fh.write(data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
):
    """Create a project in the folder ``project`` for the image folder ``images``.

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
    if strategy not in STRATEGIES:
        raise ProjectError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}.")
    if cold_start not in COLD_START:
        raise ProjectError(f"unknown cold start {cold_start!r}; choose from {list(COLD_START)}.")
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
    project.mkdir(parents=True, exist_ok=True)
    meta = {
        "image_root": str(images.resolve()),
        "classes": json.dumps(classes),
        "strategy": strategy,
        "cold_start": cold_start,
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
    con = connect(tmp)
    try:
        create_schema(con, meta)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
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


class Project:
    """An open labelling project (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The project folder (holding ``project.sqlite``).
    """

    def __init__(self, path):
        self.path = Path(path)
        db = self.path / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(
                f"no project in {self.path} ({DB_NAME} not found); create one with "
                "`peal-sk project init`."
            )
        self.con = connect(db)
        version = self.con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise ProjectError(
                f"{db} has schema version {version}; this peal_sk reads version {SCHEMA_VERSION}."
            )
        meta = dict(self.con.execute("SELECT key, value FROM meta").fetchall())
        self.root = Path(meta["image_root"])
        self.classes = json.loads(meta["classes"])
        self.strategy = meta["strategy"]
        self.cold_start = meta["cold_start"]
        self.backbone = json.loads(meta["backbone"])

    def close(self):
        self.con.close()

    # -- the image folder ---------------------------------------------------------------
    def _walk(self):
        """``relpath -> (size, mtime_ns)`` of every image file under the root."""
        found = {}
        own = self.path.resolve()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and (Path(dirpath) / d).resolve() != own
            )
            for name in filenames:
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except OSError:
                    continue
                found[full.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns)
        return found

    def rescan(self):
        """Bring the images table in line with the folder, in one transaction.

        New files are added (and checked: a file PIL cannot decode is marked ``corrupt``
        and never proposed), files gone are marked ``missing`` (their labels and history
        are kept; they are never proposed), files that came back are ``present`` again,
        and files whose size or time changed are checked again.

        Returns
        -------
        report : dict
            ``added``, ``removed``, ``returned``, ``changed`` (lists of relpaths) and
            ``corrupt`` (list of ``(relpath, error)`` found in this scan).
        """
        if not self.root.is_dir():
            raise FileNotFoundError(f"the image folder {self.root} of {self.path} is gone.")
        on_disk = self._walk()
        report = {"added": [], "removed": [], "returned": [], "changed": [], "corrupt": []}

        def known_images():
            rows = self.con.execute("SELECT id, relpath, size, mtime_ns, status FROM images")
            return {r["relpath"]: r for r in rows}

        # decode new and changed files before taking the write lock (the slow part)
        known = known_images()
        checked = {}
        for rel, stat in on_disk.items():
            row = known.get(rel)
            if row is None or row["status"] == "missing" or (row["size"], row["mtime_ns"]) != stat:
                checked[rel] = (stat, _check_image(self.root / rel))
        with transaction(self.con):
            known = known_images()  # another command may have scanned meanwhile
            stamp = now()
            for rel, (size, mtime) in sorted(on_disk.items()):
                row = known.get(rel)
                if row is not None and row["status"] != "missing":
                    if (row["size"], row["mtime_ns"]) == (size, mtime):
                        continue
                    report["changed"].append(rel)
                elif row is not None:
                    report["returned"].append(rel)
                stat, error = checked.get(rel, (None, None))
                if stat != (size, mtime):
                    error = _check_image(self.root / rel)
                status = "present" if error is None else "corrupt"
                if error is not None:
                    report["corrupt"].append((rel, error))
                if row is None:
                    report["added"].append(rel)
                    self.con.execute(
                        "INSERT INTO images (relpath, size, mtime_ns, status, error, added) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (rel, size, mtime, status, error, stamp),
                    )
                else:
                    self.con.execute(
                        "UPDATE images SET size = ?, mtime_ns = ?, status = ?, error = ? "
                        "WHERE id = ?",
                        (size, mtime, status, error, row["id"]),
                    )
            for rel, row in known.items():
                if rel not in on_disk and row["status"] != "missing":
                    report["removed"].append(rel)
                    self.con.execute(
                        "UPDATE images SET status = 'missing' WHERE id = ?", (row["id"],)
                    )
            self._close_finished_batches()
        return report

    def _close_finished_batches(self):
        """Close open batches with no present, unlabelled image left (inside a transaction)."""
        cur = self.con.execute(
            "UPDATE batches SET closed = 1 WHERE closed = 0 AND NOT EXISTS ("
            " SELECT 1 FROM batch_items bi JOIN images i ON i.id = bi.image_id"
            " WHERE bi.batch_id = batches.id AND i.status = 'present' AND bi.image_id NOT IN"
            " (SELECT image_id FROM labels WHERE superseded = 0))"
        )
        return cur.rowcount

    # -- queries ------------------------------------------------------------------------
    def labelled(self):
        """Current labels of present images: rows (id, relpath, size, mtime_ns, label)."""
        return self.con.execute(
            "SELECT i.id, i.relpath, i.size, i.mtime_ns, l.label FROM labels l "
            "JOIN images i ON i.id = l.image_id "
            "WHERE l.superseded = 0 AND i.status = 'present' ORDER BY i.relpath"
        ).fetchall()

    def pool(self, *, include_open=False):
        """Present, readable images with no label (and in no open batch)."""
        open_items = (
            ""
            if include_open
            else "AND id NOT IN (SELECT bi.image_id FROM batch_items bi "
            "JOIN batches b ON b.id = bi.batch_id WHERE b.closed = 0) "
        )
        return self.con.execute(
            "SELECT id, relpath, size, mtime_ns FROM images WHERE status = 'present' "
            "AND id NOT IN (SELECT image_id FROM labels WHERE superseded = 0) "
            f"{open_items}ORDER BY relpath"
        ).fetchall()

    # -- embeddings ---------------------------------------------------------------------
    def _cache_file(self):
        ident = json.dumps(self.backbone, sort_keys=True)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return ident, self.path / "cache" / f"embeddings-{digest}.npz"

    def embeddings(self, rows):
        """Frozen backbone embeddings of ``rows`` (with relpath, size, mtime_ns).

        Computed with :class:`~peal_sk.classifier.BackboneEmbedder` for the images not in
        the project's cache yet; the cache is one ``.npz`` per backbone configuration,
        keyed by relpath, size and modification time, so a changed folder only embeds
        what is new or changed.
        """
        ident, path = self._cache_file()
        keys = [f"{r['relpath']}|{r['size']}|{r['mtime_ns']}" for r in rows]
        store = {}
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    store = dict(zip(f["keys"].tolist(), f["emb"], strict=True))
            except (OSError, ValueError, KeyError, EOFError):
                store = {}  # unreadable cache (e.g. truncated by hand): recompute
        todo = [i for i, k in enumerate(keys) if k not in store]
        if todo:
            import importlib.util

            from ..classifier import BackboneEmbedder

            progress = sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None
            emb = BackboneEmbedder(
                self.backbone["backbone"],
                pretrained=self.backbone["pretrained"],
                img_size=self.backbone["img_size"],
                backbone_kwargs=self.backbone["backbone_kwargs"] or None,
                progress=progress,
            ).fit()
            new = emb.transform([str(self.root / rows[i]["relpath"]) for i in todo])
            store.update({keys[i]: vec for i, vec in zip(todo, new, strict=True)})
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            all_keys = sorted(store)
            np.savez(
                buf,
                keys=np.asarray(all_keys, dtype=str),
                emb=np.stack([store[k] for k in all_keys]).astype(np.float32),
            )
            _write_atomic(path, buf.getvalue(), overwrite=True)
            with transaction(self.con):
                self.con.execute(
                    "INSERT OR IGNORE INTO embeddings (backbone_config, cache_path, created) "
                    "VALUES (?, ?, ?)",
                    (ident, str(path.relative_to(self.path)), now()),
                )
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([store[k] for k in keys]).astype(np.float32)

    # -- models -------------------------------------------------------------------------
    @staticmethod
    def _logreg():
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    def estimate(self, labelled=None, X=None):
        """Cross-validated accuracy of logistic regression on the embeddings.

        Returns
        -------
        estimate : float or None
        note : str
            How it was computed, or why there is none.
        """
        labelled = self.labelled() if labelled is None else labelled
        y = np.asarray([r["label"] for r in labelled])
        counts = {c: int(np.sum(y == c)) for c in self.classes}
        short = [f"{c} ({n})" for c, n in counts.items() if n < 2]
        if short:
            return None, (
                "no estimate: cross-validation needs >= 2 labels of every class; too few "
                f"for {', '.join(short)}"
            )
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        X = self.embeddings(labelled) if X is None else X
        n_splits = min(5, min(counts.values()))
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
        score = float(np.mean(cross_val_score(self._logreg(), X, y, cv=cv)))
        return score, f"{n_splits}-fold CV accuracy of logreg on embeddings, {len(y)} labels"

    # -- propose ------------------------------------------------------------------------
    def _selector(self, name, n_instances, seed):
        from .. import selection as s

        if name == "bilaf":
            return s.BiLAFSelector(
                n_cores=max(1, n_instances // 3), core_selector="kcenter", random_state=seed
            )
        return {
            "random": lambda: s.RandomSelector(random_state=seed),
            "kcenter": lambda: s.KCenterSelector(random_state=seed),
            "entropy": lambda: s.EntropySelector(random_state=seed),
            "margin": lambda: s.MarginSelector(random_state=seed),
            "featdist": lambda: s.FeatureDistanceSelector("class_mean", random_state=seed),
        }[name]()

    def propose(self, n_instances, *, release_open=False):
        """Choose the next ``n_instances`` images to label and write the batch sheets.

        Before two classes have labels, the project's label-free ``cold_start`` strategy
        runs on the frozen embeddings of the pool; afterwards the configured strategy,
        with logistic regression fitted on the embeddings of the labelled images.

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
        scan = self.rescan()
        labelled, pool = self.labelled(), self.pool(include_open=release_open)
        if n_instances > len(pool):
            raise ProjectError(
                f"--n {n_instances} but only {len(pool)} images can be proposed (present, "
                "readable, unlabelled and in no open batch); ask for fewer, label the open "
                "batches, or pass --release-open to return their unlabelled images to the pool."
            )
        seed = int(self.con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM batches").fetchone()[0])
        y = [r["label"] for r in labelled]
        phase = "model" if len(set(y)) >= 2 else "cold start"
        strategy = self.strategy if phase == "model" else self.cold_start
        selector = self._selector(strategy, n_instances, seed)
        classifier, X_lab = None, None
        if phase == "model":
            X = self.embeddings([*pool, *labelled])
            X_pool, X_lab = X[: len(pool)], X[len(pool) :]
            classifier = self._logreg().fit(X_lab, y)
        else:
            X_pool = self.embeddings(pool)
        if strategy in ("featdist", "kcenter") and X_lab is not None:
            idx, scores = selector(classifier, X_pool, n_instances, X_labeled=X_lab, y_labeled=y)
        else:
            idx, scores = selector(classifier, X_pool, n_instances)
        config = {
            "phase": phase,
            "strategy": strategy,
            "n_instances": n_instances,
            "n_labels": len(y),
            "n_pool": len(pool),
            "random_state": seed,
            "model": "StandardScaler + LogisticRegression on embeddings"
            if phase == "model"
            else None,
            "backbone": self.backbone,
        }
        with transaction(self.con):
            released = 0
            if release_open:
                released = self.con.execute(
                    "UPDATE batches SET closed = 1 WHERE closed = 0"
                ).rowcount
            eligible = {r["id"] for r in self.pool()}  # another command may have run
            picks = [(pool[i], float(sc)) for i, sc in zip(idx, scores, strict=True)]
            dropped = [row["relpath"] for row, _ in picks if row["id"] not in eligible]
            picks = [(row, sc) for row, sc in picks if row["id"] in eligible]
            if not picks:
                raise ProjectError(
                    "every proposed image was labelled or proposed by another command "
                    "meanwhile; run propose again."
                )
            batch = self.con.execute(
                "INSERT INTO batches (created, strategy, config) VALUES (?, ?, ?)",
                (now(), strategy, json.dumps(config, sort_keys=True)),
            ).lastrowid
            self.con.executemany(
                "INSERT INTO batch_items (batch_id, image_id, score, rank) VALUES (?, ?, ?, ?)",
                [
                    (batch, row["id"], sc if np.isfinite(sc) else None, rank)
                    for rank, (row, sc) in enumerate(picks)
                ],
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
        row = self.con.execute(
            "SELECT strategy, config FROM batches WHERE id = ?", (int(batch),)
        ).fetchone()
        if row is None:
            raise ProjectError(f"no batch {batch} in {self.path}.")
        phase = json.loads(row["config"]).get("phase", "")
        items = self.con.execute(
            "SELECT i.relpath, bi.score FROM batch_items bi JOIN images i ON i.id = bi.image_id "
            "WHERE bi.batch_id = ? ORDER BY bi.rank",
            (int(batch),),
        ).fetchall()
        texts = self._sheets(batch, row["strategy"], phase, [tuple(r) for r in items])
        files = {}
        for kind, text in zip(("csv", "html"), texts, strict=True):
            path = self.path / f"batch-{batch}.{kind}"
            if orphans and path.exists():
                path.rename(path.with_name(f"{path.name}.orphan-{time.time_ns()}"))
            try:
                _write_atomic(path, text.encode(), overwrite=force)
            except FileExistsError:
                continue  # kept: it may hold labels being typed in
            files[kind] = path
        if not files:
            raise FileExistsError(
                f"batch-{batch}.csv and batch-{batch}.html exist in {self.path} (the CSV may "
                "hold your labels); they are never overwritten without --force."
            )
        return files

    def _sheets(self, batch, strategy, phase, items):
        def fmt(score, digits):
            return "" if score is None else f"{score:.{digits}g}"

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "score", "label"])
        for rel, score in items:
            writer.writerow([rel, fmt(score, 6), ""])
        cards = []
        for rank, (rel, score) in enumerate(items):
            cards.append(
                f'<figure><img alt="{html.escape(rel)}" src="{self._thumbnail(rel)}">'
                f"<figcaption>{rank + 1}. {html.escape(rel)}<br>score {fmt(score, 4)}"
                "</figcaption></figure>"
            )
        title = f"batch {batch}: {len(items)} images ({strategy}, {phase})"
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif}figure{display:inline-block;width:180px;margin:6px;"
            "vertical-align:top;font-size:12px;word-break:break-all}"
            "img{max-width:160px;max-height:160px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>classes: {html.escape(', '.join(self.classes))}. "
            f"Fill the label column of batch-{batch}.csv, then run "
            "<code>peal-sk project import</code>.</p>\n" + "\n".join(cards) + "\n</body></html>\n"
        )
        return buf.getvalue(), page

    def _thumbnail(self, rel):
        from PIL import Image

        try:
            with Image.open(self.root / rel) as im:
                im = im.convert("RGB")
                im.thumbnail((_THUMB, _THUMB))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=80)
        except Exception as exc:  # noqa: BLE001 - a sheet without one thumbnail is still useful
            warnings.warn(
                f"no thumbnail for {rel} in the contact sheet ({type(exc).__name__}: {exc})",
                stacklevel=2,
            )
            return ""
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    # -- import -------------------------------------------------------------------------
    def _read_csv(self, path):
        """Rows ``(line, path, label)`` of a CSV, with or without a header."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"CSV file {path} not found.")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader]
        rows = [(line, row) for line, row in rows if any(c.strip() for c in row)]
        if not rows:
            raise ProjectError(f"{path} holds no rows.")
        header = [c.strip().lower() for c in rows[0][1]]
        if any(h in PATH_COLUMNS for h in header):
            p_col = next(i for i, h in enumerate(header) if h in PATH_COLUMNS)
            l_col = next((i for i, h in enumerate(header) if h in LABEL_COLUMNS), None)
            if l_col is None:
                raise ProjectError(
                    f"{path}: header {rows[0][1]} has no label column (one of "
                    f"{', '.join(LABEL_COLUMNS)})."
                )
            rows = rows[1:]
        else:
            p_col, l_col = 0, 1
        out = []
        for line, row in rows:
            if len(row) <= max(p_col, l_col):
                if len(row) > p_col and row[p_col].strip():
                    out.append((line, row[p_col].strip(), ""))  # no label cell: skipped
                    continue
                raise ProjectError(f"{path} line {line}: expected path and label; got {row}.")
            out.append((line, row[p_col].strip(), row[l_col].strip()))
        return out

    def _relpath(self, value, known):
        """The project relpath of a CSV path cell (relative to the root, or absolute).

        A Label Studio local-files URL (``/data/local-files/?d=dir/img.jpg``) is relative
        to Label Studio's document root: its longest tail that is a project image wins.
        """
        if "?d=" in value:
            parts = Path(unquote(value.split("?d=", 1)[1])).as_posix().split("/")
            tails = ("/".join(parts[k:]) for k in range(len(parts)))
            return next((t for t in tails if t in known), value)
        if value.startswith("file://"):
            value = unquote(value[len("file://") :])
        if os.path.isabs(value):
            try:
                value = os.path.relpath(value, self.root)
            except ValueError:  # another drive on Windows
                return value
            if value.startswith(".."):
                # the root may be reached through a symlink: try the resolved path too
                value = os.path.relpath(os.path.realpath(value), os.path.realpath(self.root))
        return Path(os.path.normpath(value)).as_posix()

    def import_labels(self, csv_path, *, relabel=False, annotator=None):
        """Import ``path,label`` rows of a CSV, all or nothing, in one transaction.

        Rows with an empty label are skipped. Unknown class names, paths that are not
        images of the project, or labels that differ from the current ones (unless
        ``relabel=True``) raise :class:`ProjectError` listing them with their CSV line
        numbers, and nothing is imported. A label equal to the current one changes
        nothing (re-importing a CSV is a no-op); with ``relabel=True`` a different one
        supersedes the old label (kept in the history).

        Returns
        -------
        report : dict
            ``new``, ``unchanged``, ``relabelled`` (counts), ``conflicts`` (list of
            ``(relpath, old, new)``, applied), ``skipped_empty``, ``closed_batches``.
        """
        rows = [(f"line {line}", value, label) for line, value, label in self._read_csv(csv_path)]
        return self._import_rows(
            rows, relabel=relabel, annotator=annotator, source=str(csv_path), what=str(csv_path)
        )

    def import_records(self, records, *, relabel=False, annotator=None, source="records"):
        """Import in-memory ``(relpath, label)`` pairs like :meth:`import_labels`.

        The same transactional path as the CSV import: all or nothing, history kept,
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
            The same summary as :meth:`import_labels`.
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
        return self._import_rows(
            rows, relabel=relabel, annotator=annotator, source=str(source), what=str(source)
        )

    def _import_rows(self, rows, *, relabel, annotator, source, what):
        """The one transactional import: ``rows`` are ``(where, path, label)``."""
        annotator = annotator or _default_annotator()
        delay = float(os.environ.get(IMPORT_DELAY_ENV, "0") or 0)
        report = {"new": 0, "unchanged": 0, "relabelled": 0, "conflicts": [], "skipped_empty": 0}
        with transaction(self.con):
            ids = dict(self.con.execute("SELECT relpath, id FROM images").fetchall())
            unknown_labels, unknown_paths, unscanned, wanted = {}, [], [], {}
            for where, value, label in rows:
                if not label:
                    report["skipped_empty"] += 1
                    continue
                if label not in self.classes:
                    unknown_labels.setdefault(label, []).append(where)
                rel = self._relpath(value, ids)
                if rel not in ids:
                    on_disk = not rel.startswith("..") and (self.root / rel).is_file()
                    (unscanned if on_disk else unknown_paths).append(f"{where}: {value}")
                    continue
                wanted.setdefault(rel, []).append((where, label))
            errors = []
            if unknown_labels:
                listed = "; ".join(
                    f"{lab!r} on {_where(places)}" for lab, places in sorted(unknown_labels.items())
                )
                errors.append(
                    f"unknown class name(s) (classes: {', '.join(self.classes)}): {listed}"
                )
            if unknown_paths:
                errors.append(
                    f"{len(unknown_paths)} path(s) not in the project (image folder "
                    f"{self.root}): {_listing(unknown_paths)}"
                )
            if unscanned:
                errors.append(
                    f"{len(unscanned)} image(s) added to the folder since the last scan: "
                    f"{_listing(unscanned)}; run `peal-sk project rescan --project "
                    f"{self.path}` first, then import again"
                )
            clashes = [
                f"{rel} (" + ", ".join(f"{n}: {lab}" for n, lab in seen) + ")"
                for rel, seen in wanted.items()
                if len({lab for _, lab in seen}) > 1
            ]
            if clashes:
                errors.append(f"different labels for the same image: {_listing(clashes)}")
            if errors:
                raise ProjectError(f"nothing imported from {what}:\n  " + "\n  ".join(errors))
            stamp = now()
            for k, (rel, seen) in enumerate(sorted(wanted.items())):
                if delay:
                    print(f"import row {k + 1}/{len(wanted)}", file=sys.stderr, flush=True)
                    time.sleep(delay)
                label, image_id = seen[0][1], ids[rel]
                current = self.con.execute(
                    "SELECT id, label FROM labels WHERE image_id = ? AND superseded = 0",
                    (image_id,),
                ).fetchone()
                if current is not None and current["label"] == label:
                    report["unchanged"] += 1
                    continue
                if current is not None:
                    report["conflicts"].append((rel, current["label"], label))
                    if not relabel:
                        continue
                    self.con.execute(
                        "UPDATE labels SET superseded = 1 WHERE id = ?", (current["id"],)
                    )
                    report["relabelled"] += 1
                else:
                    report["new"] += 1
                self.con.execute(
                    "INSERT INTO labels (image_id, label, annotator, time, source) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (image_id, label, annotator, stamp, source),
                )
            if report["conflicts"] and not relabel:
                raise LabelConflictError(what, report["conflicts"])  # rolls everything back
            report["closed_batches"] = self._close_finished_batches()
        return report

    # -- status, train, export ------------------------------------------------------------
    def status(self, *, estimate=True):
        """Counts, batches, the validation estimate and the learning curve so far."""
        scan = self.rescan()
        q = self.con.execute
        per_class = dict(
            q(
                "SELECT l.label, COUNT(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.superseded = 0 AND i.status = 'present' GROUP BY l.label"
            ).fetchall()
        )
        by_status = dict(q("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        labelled = self.labelled()
        batches = q(
            "SELECT b.id, b.created, b.strategy, b.closed, COUNT(bi.image_id) AS n FROM batches b "
            "LEFT JOIN batch_items bi ON bi.batch_id = b.id GROUP BY b.id ORDER BY b.id"
        ).fetchall()
        result = {
            "image_root": str(self.root),
            "classes": self.classes,
            "per_class": {c: int(per_class.get(c, 0)) for c in self.classes},
            "labelled": len(labelled),
            "unlabelled": by_status.get("present", 0) - len(labelled),
            "missing": by_status.get("missing", 0),
            "corrupt": by_status.get("corrupt", 0),
            "corrupt_files": [
                (r["relpath"], r["error"])
                for r in q("SELECT relpath, error FROM images WHERE status = 'corrupt'")
            ],
            "batches": [dict(b) for b in batches],
            "curve": [
                dict(r)
                for r in q(
                    "SELECT time, n_labels, estimate, model, model_path FROM trainings ORDER BY id"
                )
            ],
            "scan": scan,
        }
        if estimate:
            result["estimate"], result["estimate_note"] = self.estimate(labelled)
        else:
            result["estimate"], result["estimate_note"] = None, "no estimate (--no-estimate)"
        return result

    def train(self, *, finetune=None, epochs=10, lr=1e-3):
        """Fit and save a model on the labels so far and record its estimate.

        ``finetune=None``: StandardScaler + LogisticRegression on the frozen embeddings,
        saved with joblib. ``"lora"`` / ``"linear"``: a
        :class:`~peal_sk.classifier.PEALClassifier` trained on the images, saved with
        ``save_adapters``. The recorded estimate is always the cross-validated accuracy
        of the logistic regression on embeddings (cheap, comparable from train to train).
        """
        scan = self.rescan()
        labelled = self.labelled()
        y = [r["label"] for r in labelled]
        if len(set(y)) < 2:
            raise ProjectError(
                f"training needs labels of at least 2 classes; got {len(y)} label(s) of "
                f"{len(set(y))} class(es)."
            )
        models = self.path / "models"
        models.mkdir(exist_ok=True)
        X = self.embeddings(labelled)
        estimate, note = self.estimate(labelled, X)
        n = 1 + int(self.con.execute("SELECT COUNT(*) FROM trainings").fetchone()[0])
        if finetune is None:
            import joblib

            model = self._logreg().fit(X, y)
            payload = {
                "model": model,
                "features": "frozen backbone embeddings (peal_sk.classifier.BackboneEmbedder)",
                "backbone": self.backbone,
                "classes": self.classes,
            }
            buf = io.BytesIO()
            joblib.dump(payload, buf)
            while not _claim(models / f"model-{n}-logreg.joblib"):
                n += 1
            path = models / f"model-{n}-logreg.joblib"
            _write_atomic(path, buf.getvalue(), overwrite=True)
            kind = "logreg"
        else:
            from ..classifier import PEALClassifier

            clf = PEALClassifier(
                self.backbone["backbone"],
                pretrained=self.backbone["pretrained"],
                img_size=self.backbone["img_size"],
                backbone_kwargs=self.backbone["backbone_kwargs"] or None,
                finetune=finetune,
                max_epochs=epochs,
                lr=lr,
                classes=self.classes,
                random_state=0,
            )
            clf.fit([str(self.root / r["relpath"]) for r in labelled], y)
            while True:
                path = models / f"model-{n}-{finetune}"
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    n += 1
            clf.save_adapters(path)
            kind = f"PEALClassifier(finetune={finetune!r})"
        with transaction(self.con):
            self.con.execute(
                "INSERT INTO trainings (time, n_labels, estimate, estimate_note, model, "
                "model_path) VALUES (?, ?, ?, ?, ?, ?)",
                (now(), len(y), estimate, note, kind, str(path.relative_to(self.path))),
            )
        return {
            "model_path": path,
            "model": kind,
            "n_labels": len(y),
            "estimate": estimate,
            "estimate_note": note,
            "scan": scan,
        }

    def export(self, out, *, force=False, history=False):
        """Write the labels as CSV ``path,label,annotator,time`` (``history``: every
        label ever given, with a ``superseded`` column).

        Returns
        -------
        result : dict
            ``out``, ``n_labels`` and ``model_path`` (the latest trained model or None).
        """
        out = Path(out)
        where = "" if history else "WHERE l.superseded = 0"
        rows = self.con.execute(
            "SELECT i.relpath, l.label, l.annotator, l.time, l.superseded FROM labels l "
            f"JOIN images i ON i.id = l.image_id {where} ORDER BY i.relpath, l.id"
        ).fetchall()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = ["path", "label", "annotator", "time"] + (["superseded"] if history else [])
        writer.writerow(header)
        for r in rows:
            writer.writerow(list(r)[: len(header)])
        try:
            _write_atomic(out, buf.getvalue().encode(), overwrite=force)
        except FileExistsError:
            raise FileExistsError(
                f"{out} exists; it is never overwritten without --force."
            ) from None
        last = self.con.execute(
            "SELECT model_path FROM trainings ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return {
            "out": out,
            "n_labels": len(rows),
            "model_path": None if last is None else self.path / last[0],
        }
