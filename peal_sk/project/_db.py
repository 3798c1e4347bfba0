"""The project database: SQLite (stdlib), WAL, foreign keys, one transaction per write.

Every write goes through :func:`transaction`, which opens with ``BEGIN IMMEDIATE`` (the
write lock is taken up front, so two commands never interleave their writes: the second
waits up to ``busy_timeout`` for the first) and commits only when the block finishes; an
exception, a crash or a kill in the middle leaves the database as it was before the block.
``synchronous=FULL`` makes a commit durable once the command reports it.

A project whose folder or database the user may not write is opened read-only
(``mode=ro``, no switch to WAL, which would be a write): the commands that only read
(``status``, ``export``) work, the others fail with :class:`ReadOnlyProjectError`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "connect",
    "create_schema",
    "database_error",
    "is_writable",
    "migrate",
    "now",
    "transaction",
]

DB_NAME = "project.sqlite"
SCHEMA_VERSION = 2
#: versions this code reads (older ones are migrated when the project is writable)
READABLE_VERSIONS = (1, 2)
#: milliseconds a command waits for another command's write lock before giving up
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    relpath TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('present', 'missing', 'corrupt')),
    error TEXT,
    added TEXT NOT NULL,
    sha256 TEXT
);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id),
    label TEXT NOT NULL,
    annotator TEXT NOT NULL,
    time TEXT NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1)),
    source TEXT
);
-- at most one current label per image
CREATE UNIQUE INDEX labels_current ON labels(image_id) WHERE superseded = 0;
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    strategy TEXT NOT NULL,
    config TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1))
);
CREATE TABLE batch_items (
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    score REAL,
    rank INTEGER NOT NULL,
    PRIMARY KEY (batch_id, image_id)
);
CREATE TABLE trainings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    n_labels INTEGER NOT NULL,
    estimate REAL,
    estimate_note TEXT,
    model TEXT NOT NULL,
    model_path TEXT NOT NULL
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    backbone_config TEXT NOT NULL UNIQUE,
    cache_path TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


def now():
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def database_error(db, exc):
    """A one-line explanation of an ``sqlite3.DatabaseError`` on the project file ``db``.

    A damaged file ("file is not a database", "database disk image is malformed") is named
    with what to do; other errors (disk, permissions) are reported as they are.
    """
    text = str(exc)
    if any(s in text for s in ("not a database", "malformed", "corrupt")):
        return (
            f"{db} is damaged and cannot be read ({text}); this command changed nothing. "
            f"Restore {DB_NAME} from a backup, or save what SQLite can still read with "
            f"`sqlite3 {db} .recover | sqlite3 recovered.sqlite` and put recovered.sqlite "
            f"in its place (keep the damaged file); the images themselves are untouched."
        )
    return f"could not use the project database {db}: {text} (sqlite3)"


def is_writable(path):
    """Whether this process may write the database ``path`` and its folder (WAL files)."""
    path = Path(path)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def connect(path, *, readonly=False):
    """Open the project database with the settings every command relies on.

    ``readonly``: open with ``mode=ro`` and change nothing (no WAL switch). A WAL
    database in a folder this process cannot write cannot be read through ``mode=ro``
    alone (SQLite needs its ``-shm`` file); it is then opened ``immutable``, which is
    safe because nobody without write access can change it through this process.
    """
    if readonly:
        uri = Path(path).resolve().as_uri()
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            con = sqlite3.connect(
                f"{uri}?{flags}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            con.row_factory = sqlite3.Row
            try:
                con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                con.close()
                if "immutable" in flags:
                    raise
                continue
            return con
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA foreign_keys = ON")
    return con


@contextlib.contextmanager
def transaction(con):
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def create_schema(con, meta):
    """Create the tables and store ``meta`` (str -> str) in one transaction."""
    with transaction(con):
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))


def migrate(con, version):
    """Bring a writable database of an older readable version to :data:`SCHEMA_VERSION`."""
    if version == SCHEMA_VERSION:
        return
    with transaction(con):
        current = con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if current == 1:  # 2: content hashes (rescan names changed and renamed images)
            con.execute("ALTER TABLE images ADD COLUMN sha256 TEXT")
            con.execute("INSERT INTO schema_version (version) VALUES (2)")
