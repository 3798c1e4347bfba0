"""The image folder: walk it, check and hash its files, bring the images table in line.

A rescan names every labelled image whose content changed under the same name and every
labelled image that is gone (their labels leave training and export but stay in the
history), and finds labelled images that were renamed (a missing labelled image and a
new unlabelled one with the same content hash): ``carry_renamed=True`` carries their
labels over (recorded as a new label whose ``source`` names the old path).
"""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import os
from pathlib import Path

from ._common import IMAGE_EXTENSIONS
from ._db import now

__all__ = ["check_image", "rescan", "walk"]


def check_image(path):
    """None when PIL decodes the whole file, else the error (truncation included)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder error means unreadable
        return f"{type(exc).__name__}: {exc}"
    return None


def file_hash(path):
    """SHA-256 of the file's bytes (hex), or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def walk(root, own):
    """``relpath -> (size, mtime_ns)`` of every image file under ``root``.

    Hidden files and folders and the project folder ``own`` (when inside) are skipped.
    """
    root, own = Path(root), Path(own).resolve()
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != own
        )
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue
            found[full.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


def _inspect(path):
    return check_image(path), file_hash(path)


def _known(con):
    rows = con.execute("SELECT id, relpath, size, mtime_ns, status, sha256 FROM images")
    return {r["relpath"]: r for r in rows}


def rescan(state, root, *, carry_renamed=False):
    """Bring ``state``'s images table in line with the folder ``root``, in one transaction.

    New files are added (and checked: a file PIL cannot decode is marked ``corrupt`` and
    never proposed), files gone are marked ``missing`` (their labels and history are
    kept; they are never proposed, trained on or exported), files that came back are
    ``present`` again, and files whose size or time changed are checked and hashed again
    (a file touched but with the same content is not reported).

    Returns
    -------
    report : dict
        ``added``, ``removed``, ``returned``, ``changed`` (lists of relpaths),
        ``corrupt`` (``(relpath, error)``), ``changed_labelled`` and ``removed_labelled``
        (``(relpath, label)``), ``renamed`` (``(old, new, label)`` found) and ``carried``
        (the same, applied because ``carry_renamed``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the image folder {root} of {state.path} is gone.")
    on_disk = walk(root, state.path)
    report = {
        "added": [],
        "removed": [],
        "returned": [],
        "changed": [],
        "corrupt": [],
        "changed_labelled": [],
        "removed_labelled": [],
        "renamed": [],
        "carried": [],
    }

    def needs_check(row, stat):
        return (
            row is None
            or row["status"] == "missing"
            or (row["size"], row["mtime_ns"]) != stat
            or row["sha256"] is None
        )

    # decode and hash new and changed files before taking the write lock (the slow part)
    known = _known(state.con)
    checked = {
        rel: (stat, *_inspect(root / rel))
        for rel, stat in on_disk.items()
        if needs_check(known.get(rel), stat)
    }
    with state.write("rescan"):
        known = _known(state.con)  # another command may have scanned meanwhile
        current = {
            r["image_id"]: r
            for r in state.con.execute(
                "SELECT id, image_id, label, annotator FROM labels WHERE superseded = 0"
            )
        }
        stamp = now()
        for rel, stat in sorted(on_disk.items()):
            row = known.get(rel)
            if not needs_check(row, stat):
                continue
            seen, error, digest = checked.get(rel, (None, None, None))
            if seen != stat:  # changed again since it was checked
                error, digest = _inspect(root / rel)
            status = "present" if error is None else "corrupt"
            if error is not None:
                report["corrupt"].append((rel, error))
            if row is None:
                report["added"].append(rel)
                state.con.execute(
                    "INSERT INTO images (relpath, size, mtime_ns, status, error, added, sha256) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rel, *stat, status, error, stamp, digest),
                )
                continue
            content_changed = row["sha256"] != digest and (
                row["sha256"] is not None or (row["size"], row["mtime_ns"]) != stat
            )
            if row["status"] == "missing":
                report["returned"].append(rel)
            elif content_changed:
                report["changed"].append(rel)
            if content_changed and row["id"] in current:
                report["changed_labelled"].append((rel, current[row["id"]]["label"]))
            state.con.execute(
                "UPDATE images SET size = ?, mtime_ns = ?, status = ?, error = ?, sha256 = ? "
                "WHERE id = ?",
                (*stat, status, error, digest, row["id"]),
            )
        for rel, row in known.items():
            if rel not in on_disk and row["status"] != "missing":
                report["removed"].append(rel)
                if row["id"] in current:
                    report["removed_labelled"].append((rel, current[row["id"]]["label"]))
                state.con.execute("UPDATE images SET status = 'missing' WHERE id = ?", (row["id"],))
        _renamed(state, current, report, carry_renamed)
        state.close_finished_batches()
        state._test_delay("rescan")
    return report


def _renamed(state, current, report, carry):
    """Missing labelled images whose content is now an unlabelled present image."""
    rows = state.con.execute("SELECT id, relpath, status, sha256 FROM images").fetchall()
    gone = {}
    for r in rows:
        if r["status"] == "missing" and r["id"] in current and r["sha256"]:
            gone.setdefault(r["sha256"], []).append((r["relpath"], current[r["id"]]))
    stamp = now()
    for r in rows:
        if r["status"] != "present" or r["id"] in current or r["sha256"] not in gone:
            continue
        olds = gone[r["sha256"]]
        if len({lab["label"] for _, lab in olds}) != 1:
            continue  # the same content had different labels: nothing to carry
        old, lab = olds[0]
        report["renamed"].append((old, r["relpath"], lab["label"]))
        if carry:
            state.con.execute(
                "INSERT INTO labels (image_id, label, annotator, time, source) "
                "VALUES (?, ?, ?, ?, ?)",
                (r["id"], lab["label"], lab["annotator"], stamp, f"rescan: carried from {old}"),
            )
            report["carried"].append((old, r["relpath"], lab["label"]))
