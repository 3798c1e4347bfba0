"""The project's state in SQL: every query and every write of labels, batches, trainings.

One :class:`State` per open project. Writes go through :func:`~._db.transaction` (all or
nothing); a project opened read-only refuses them with :class:`ReadOnlyProjectError`
before touching the database, and a write lock held by another command for longer than
the busy timeout raises :class:`ProjectBusyError` (told apart by SQLite's error code).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from ._common import (
    LabelConflictError,
    ProjectError,
    ReadOnlyProjectError,
    default_annotator,
    listing,
)
from ._db import (
    BUSY_TIMEOUT_MS,
    DB_NAME,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    connect,
    is_writable,
    migrate,
    now,
    transaction,
)

__all__ = [
    "IMPORT_DELAY_ENV",
    "ProjectBusyError",
    "StaleLabelsError",
    "State",
    "UnknownBatchError",
]

#: the largest row id SQLite stores (a larger number names no row)
_MAX_ID = 2**63 - 1
#: hidden: seconds to sleep after each row inside the import transaction (tests only)
IMPORT_DELAY_ENV = "PEAL_SK_TEST_IMPORT_DELAY"


#: SQLite's primary result codes of a lock held by another connection
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class ProjectBusyError(ProjectError):
    """Another command held the project's write lock for longer than the busy timeout."""


class UnknownBatchError(ProjectError, LookupError):
    """A batch number that the project does not have."""


class StaleLabelsError(LabelConflictError):
    """Labels given as unlabelled (or as another label) were changed meanwhile: nothing saved.

    ``conflicts`` lists ``(relpath, saved label, given label)``.
    """

    def __init__(self, conflicts):
        ProjectError.__init__(
            self,
            f"nothing saved: {len(conflicts)} image(s) were labelled elsewhere since the page "
            "loaded; the page now shows their saved labels; save again to replace them.",
        )
        self.conflicts = list(conflicts)


def _where(places):
    """``line(s) 3, 5`` / ``record(s) 1, 2`` from ``["line 3", "line 5"]``."""
    kind = places[0].split()[0]
    return f"{kind}(s) " + ", ".join(p.split(" ", 1)[1] for p in places)


class State:
    """The open database of the project folder ``path`` and its settings (``meta``)."""

    def __init__(self, path, *, readonly=None):
        self.path = Path(path)
        db = self.path / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(
                f"no project in {self.path} ({DB_NAME} not found); create one with "
                "`peal-sk project init`."
            )
        self.readonly = not is_writable(db) if readonly is None else bool(readonly)
        self.con = connect(db, readonly=self.readonly)
        version = self.con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version not in READABLE_VERSIONS:
            raise ProjectError(
                f"{db} has schema version {version}; this peal_sk reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}."
            )
        if not self.readonly:
            migrate(self.con, version)
        self.version = SCHEMA_VERSION if not self.readonly else version
        self.meta = dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def close(self):
        self.con.close()

    @contextlib.contextmanager
    def write(self, action):
        """The transaction of a write; refused with a clear message when read-only.

        Inside an open transaction (a caller that checks and writes as one unit, like
        the labelling page's save) the write joins it: everything commits or rolls back
        together, when the outer block ends.
        """
        self.require_writable(action)
        if self.con.in_transaction:
            yield self.con
            return
        try:
            with transaction(self.con):
                yield self.con
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BUSY_CODES:
                raise
            raise ProjectBusyError(
                f"{self.path} is busy: another peal-sk command held it for more than "
                f"{BUSY_TIMEOUT_MS // 1000} s; nothing was changed, try again."
            ) from exc

    def require_writable(self, action):
        """Raise :class:`ReadOnlyProjectError` naming ``action`` when read-only."""
        if self.readonly:
            raise ReadOnlyProjectError(
                f"{self.path} is read-only for this user (no write permission on "
                f"{self.path / DB_NAME} or its folder): `{action}` needs to write. The "
                "read-only commands (status, export) work."
            )

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

    def next_batch_seed(self):
        return int(self.con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM batches").fetchone()[0])

    def batch(self, batch):
        """``(strategy, config dict, items [(id, relpath, size, mtime_ns, score)])``."""
        row = self.con.execute(
            "SELECT strategy, config FROM batches WHERE id = ?", (int(batch),)
        ).fetchone()
        if row is None:
            raise ProjectError(f"no batch {batch} in {self.path}.")
        items = self.con.execute(
            "SELECT i.id, i.relpath, i.size, i.mtime_ns, bi.score FROM batch_items bi "
            "JOIN images i ON i.id = bi.image_id WHERE bi.batch_id = ? ORDER BY bi.rank",
            (int(batch),),
        ).fetchall()
        return row["strategy"], json.loads(row["config"]), items

    def latest_open_batch(self):
        row = self.con.execute("SELECT MAX(id) FROM batches WHERE closed = 0").fetchone()
        return row[0]

    def status_counts(self):
        q = self.con.execute
        per_class = dict(
            q(
                "SELECT l.label, COUNT(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.superseded = 0 AND i.status = 'present' GROUP BY l.label"
            ).fetchall()
        )
        by_status = dict(q("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        missing_labelled = [
            tuple(r)
            for r in q(
                "SELECT i.relpath, l.label FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.superseded = 0 AND i.status != 'present' ORDER BY i.relpath"
            )
        ]
        batches = q(
            "SELECT b.id, b.created, b.strategy, b.closed, COUNT(bi.image_id) AS n FROM batches b "
            "LEFT JOIN batch_items bi ON bi.batch_id = b.id GROUP BY b.id ORDER BY b.id"
        ).fetchall()
        return {
            "per_class": per_class,
            "by_status": by_status,
            "labels_out_of_use": missing_labelled,
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
        }

    def n_trainings(self):
        return int(self.con.execute("SELECT COUNT(*) FROM trainings").fetchone()[0])

    def last_model_path(self):
        last = self.con.execute(
            "SELECT model_path FROM trainings ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if last is None else self.path / last[0]

    def export_rows(self, *, history=False):
        """Current labels of present images, or (``history``) every label ever given."""
        if history:
            return self.con.execute(
                "SELECT i.relpath, l.label, l.annotator, l.time, l.superseded, i.status "
                "FROM labels l JOIN images i ON i.id = l.image_id ORDER BY i.relpath, l.id"
            ).fetchall()
        return self.con.execute(
            "SELECT i.relpath, l.label, l.annotator, l.time FROM labels l "
            "JOIN images i ON i.id = l.image_id WHERE l.superseded = 0 AND i.status = 'present' "
            "ORDER BY i.relpath, l.id"
        ).fetchall()

    # -- the labelling page (``project serve``) -----------------------------------------
    def require_batch(self, batch):
        """Raise :class:`UnknownBatchError` unless batch number ``batch`` exists."""
        if (
            not 1 <= batch <= _MAX_ID
            or self.con.execute("SELECT 1 FROM batches WHERE id = ?", (batch,)).fetchone() is None
        ):
            raise UnknownBatchError(f"no batch {batch} in the project.")

    def current_labels(self, paths):
        """``relpath -> current label or None`` for the project's images among ``paths``."""
        out = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(
                f"SELECT i.relpath, l.label FROM images i LEFT JOIN labels l "
                f"ON l.image_id = i.id AND l.superseded = 0 WHERE i.relpath IN ({marks})",
                chunk,
            ).fetchall()
            out.update({r["relpath"]: r["label"] for r in rows})
        return out

    def image(self, image_id):
        """The row ``(relpath, status, size, mtime_ns)`` of image ``image_id``, or None."""
        if not 1 <= image_id <= _MAX_ID:
            return None
        return self.con.execute(
            "SELECT relpath, status, size, mtime_ns FROM images WHERE id = ?", (image_id,)
        ).fetchone()

    def last_training(self):
        """The latest training row ``(id, model, model_path, n_labels)``, or None."""
        return self.con.execute(
            "SELECT id, model, model_path, n_labels FROM trainings ORDER BY id DESC LIMIT 1"
        ).fetchone()

    def batch_images(self, batch):
        """The present images of ``batch`` in rank order: rows (id, relpath, size, mtime_ns)."""
        return self.con.execute(
            "SELECT i.id, i.relpath, i.size, i.mtime_ns FROM batch_items bi "
            "JOIN images i ON i.id = bi.image_id WHERE bi.batch_id = ? "
            "AND i.status = 'present' ORDER BY bi.rank",
            (batch,),
        ).fetchall()

    def page_state(self, batch=None):
        """What the page shows: a batch's items with their current labels, and progress.

        ``batch`` None: the oldest open batch, else the latest one.
        """
        q = self.con.execute
        open_ids = [r[0] for r in q("SELECT id FROM batches WHERE closed = 0 ORDER BY id")]
        pool = q(
            "SELECT COUNT(*) FROM images WHERE status = 'present' "
            "AND id NOT IN (SELECT image_id FROM labels WHERE superseded = 0) "
            "AND id NOT IN (SELECT bi.image_id FROM batch_items bi "
            "JOIN batches b ON b.id = bi.batch_id WHERE b.closed = 0)"
        ).fetchone()[0]
        state = {"open_batches": open_ids, "pool": pool, "batch": None, "items": []}
        if batch is None:
            row = q("SELECT MAX(id) FROM batches").fetchone()
            batch = open_ids[0] if open_ids else row[0]
            if batch is None:
                state["progress"] = {"labelled": 0, "total": 0}
                return state
        self.require_batch(batch)
        b = q(
            "SELECT id, created, strategy, config, closed FROM batches WHERE id = ?", (batch,)
        ).fetchone()
        config = json.loads(b["config"])
        state["batch"] = {
            "id": b["id"],
            "created": b["created"],
            "strategy": b["strategy"],
            "phase": config.get("phase"),
            "closed": bool(b["closed"]),
            "n": config.get("n_instances"),
        }
        rows = q(
            "SELECT i.id, i.relpath, i.status, bi.score, l.label FROM batch_items bi "
            "JOIN images i ON i.id = bi.image_id "
            "LEFT JOIN labels l ON l.image_id = i.id AND l.superseded = 0 "
            "WHERE bi.batch_id = ? ORDER BY bi.rank",
            (batch,),
        ).fetchall()
        state["items"] = [
            {
                "id": r["id"],
                "path": r["relpath"],
                "status": r["status"],
                "score": r["score"],
                "label": r["label"],
            }
            for r in rows
        ]
        present = [r for r in rows if r["status"] == "present"]
        state["progress"] = {
            "labelled": sum(r["label"] is not None for r in present),
            "total": len(present),
        }
        return state

    # -- writes -------------------------------------------------------------------------
    def close_finished_batches(self):
        """Close open batches with no present, unlabelled image left (inside a transaction)."""
        cur = self.con.execute(
            "UPDATE batches SET closed = 1 WHERE closed = 0 AND NOT EXISTS ("
            " SELECT 1 FROM batch_items bi JOIN images i ON i.id = bi.image_id"
            " WHERE bi.batch_id = batches.id AND i.status = 'present' AND bi.image_id NOT IN"
            " (SELECT image_id FROM labels WHERE superseded = 0))"
        )
        return cur.rowcount

    def record_batch(self, strategy, config, picks, *, release_open=False):
        """Record a batch of ``picks`` ``[(image row, score)]`` in one transaction.

        Returns ``(batch id, kept picks, dropped relpaths, released batches)``: images
        labelled or proposed by another command meanwhile are dropped.
        """
        with self.write("propose"):
            released = 0
            if release_open:
                released = self.con.execute(
                    "UPDATE batches SET closed = 1 WHERE closed = 0"
                ).rowcount
            eligible = {r["id"] for r in self.pool()}  # another command may have run
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
                    (batch, row["id"], sc if sc == sc and abs(sc) != float("inf") else None, k)
                    for k, (row, sc) in enumerate(picks)
                ],
            )
            self._test_delay("propose")
        return batch, picks, dropped, released

    def record_training(self, n_labels, estimate, note, kind, model_path):
        with self.write("train"):
            self._test_delay("train")
            self.con.execute(
                "INSERT INTO trainings (time, n_labels, estimate, estimate_note, model, "
                "model_path) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    now(),
                    n_labels,
                    estimate,
                    note,
                    kind,
                    str(Path(model_path).relative_to(self.path)),
                ),
            )

    def record_embedding_cache(self, ident, cache_path):
        if self.readonly:
            return
        with self.write("embed"):
            self.con.execute(
                "INSERT OR IGNORE INTO embeddings (backbone_config, cache_path, created) "
                "VALUES (?, ?, ?)",
                (ident, str(Path(cache_path).relative_to(self.path)), now()),
            )

    def import_rows(self, rows, *, classes, resolve, relabel, annotator, source, what):
        """The one transactional import of labels: all or nothing.

        ``rows`` are ``(where, path, label)`` (``where``: ``"line 3"``, ``"record 2"``);
        ``resolve(value, known relpaths)`` maps a path cell to a project relpath.
        """
        annotator = annotator or default_annotator()
        report = {"new": 0, "unchanged": 0, "relabelled": 0, "conflicts": [], "skipped_empty": 0}
        with self.write("import"):
            ids = dict(self.con.execute("SELECT relpath, id FROM images").fetchall())
            status = dict(self.con.execute("SELECT relpath, status FROM images").fetchall())
            unknown_labels, unknown_paths, unscanned, gone, wanted = {}, [], [], [], {}
            root = Path(self.meta["image_root"])
            for where, value, label in rows:
                if not label:
                    report["skipped_empty"] += 1
                    continue
                if label not in classes:
                    unknown_labels.setdefault(label, []).append(where)
                rel = resolve(value, ids)
                if rel not in ids:
                    on_disk = not rel.startswith("..") and (root / rel).is_file()
                    (unscanned if on_disk else unknown_paths).append(f"{where}: {value}")
                    continue
                if status[rel] == "missing":
                    gone.append(f"{where}: {value}")
                    continue
                wanted.setdefault(rel, []).append((where, label))
            errors = []
            if unknown_labels:
                listed = "; ".join(
                    f"{lab!r} on {_where(places)}" for lab, places in sorted(unknown_labels.items())
                )
                errors.append(f"unknown class name(s) (classes: {', '.join(classes)}): {listed}")
            if unknown_paths:
                errors.append(
                    f"{len(unknown_paths)} path(s) not in the project (image folder "
                    f"{root}): {listing(unknown_paths)}"
                )
            if unscanned:
                errors.append(
                    f"{len(unscanned)} image(s) added to the folder since the last scan: "
                    f"{listing(unscanned)}; run `peal-sk project rescan --project "
                    f"{self.path}` first, then import again"
                )
            if gone:
                errors.append(
                    f"{len(gone)} image(s) no longer in the folder (marked missing by the "
                    f"last scan): {listing(gone)}"
                )
            clashes = [
                f"{rel} (" + ", ".join(f"{n}: {lab}" for n, lab in seen) + ")"
                for rel, seen in wanted.items()
                if len({lab for _, lab in seen}) > 1
            ]
            if clashes:
                errors.append(f"different labels for the same image: {listing(clashes)}")
            if errors:
                raise ProjectError(f"nothing imported from {what}:\n  " + "\n  ".join(errors))
            stamp = now()
            for k, (rel, seen) in enumerate(sorted(wanted.items())):
                self._test_delay("import", f"import row {k + 1}/{len(wanted)}")
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
            report["closed_batches"] = self.close_finished_batches()
        return report

    @staticmethod
    def _test_delay(command, message=None):
        """Tests only: sleep inside the open transaction so a test can kill the process."""
        delay = float(os.environ.get(IMPORT_DELAY_ENV, "0") or 0)
        if delay:
            print(message or f"{command} in transaction", file=sys.stderr, flush=True)
            time.sleep(delay)
