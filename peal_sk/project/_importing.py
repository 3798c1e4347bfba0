"""Reading label files: CSV / TSV (any delimiter, UTF-8 or a byte-order mark's encoding)
and Label Studio's JSON, JSON-MIN and CSV exports; mapping their paths to the project's.

A file that cannot be read fails loudly, naming the file and the line (an unbalanced
quote, a missing label column) or the encoding to use; nothing is imported then.
"""

# SPDX-License-Identifier: BSD-3-Clause

import codecs
import csv
import io
import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote

from ._common import ProjectError
from ._labelstudio import (
    LABEL_KEYS,
    MAX_DEPTH,
    MAX_REF_CHARS,
    PATH_KEYS,
    check_cell,
    label_value,
    rows_from_json,
    short,
)

__all__ = [
    "CONFLICT_POLICIES",
    "LABEL_COLUMNS",
    "PATH_COLUMNS",
    "choose_labels",
    "read_label_file",
    "resolve",
]

#: header names recognised in an imported CSV (case-insensitive): the same names as in
#: Label Studio's exports, defined once in :mod:`._labelstudio`
PATH_COLUMNS, LABEL_COLUMNS = PATH_KEYS, LABEL_KEYS
#: optional columns carried into the label records (Label Studio's CSV export has them)
_ANNOTATOR_COLUMN, _TIME_COLUMNS = "annotator", ("updated_at", "created_at")
#: how an import settles one image given different labels (``--conflicts``)
CONFLICT_POLICIES = ("refuse", "ground-truth", "majority", "latest")
_DELIMITERS = (",", ";", "\t", "|")
_BOMS = (  # longest first: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(path, raw):
    """Text of a label file: UTF-8, or the encoding its byte-order mark names."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ProjectError(
                    f"{path}: starts with a {encoding.upper()} byte-order mark but is not "
                    f"valid {encoding.upper()} ({exc.reason} at byte {exc.start}); save it "
                    "again as UTF-8."
                ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = (
            "it looks like UTF-16 without a byte-order mark"
            if raw[:200].count(b"\x00") > 10
            else "it may be Latin-1 / Windows-1252 (what some spreadsheet programs write)"
        )
        raise ProjectError(
            f"{path} line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
            f'{exc.start}; {hint}). Save it as UTF-8 ("CSV UTF-8" in spreadsheet '
            "programs), or as UTF-16 / UTF-8 with a byte-order mark, and import again."
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ProjectError(
            f"{path} line {line}: holds NUL bytes; it looks like UTF-16 without a byte-order "
            "mark. Save it as UTF-8 (or UTF-16 with a byte-order mark) and import again."
        )
    return text


def _delimiter(text):
    """The delimiter of the first non-empty line: the most frequent of , ; TAB | outside
    quotes (``,`` when none occurs: a one-column file)."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    counts, quoted = dict.fromkeys(_DELIMITERS, 0), False
    for ch in first:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_rows(path, text):
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, start = [], 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field limit" in str(exc):
                raise ProjectError(
                    f"{path} line {start}: a cell is longer than {csv.field_size_limit()} "
                    "characters; is the right file imported? Nothing imported."
                ) from None
            raise ProjectError(
                f"{path} line {start}: cannot parse ({exc}; an unbalanced quote?). Nothing "
                "imported."
            ) from None
        rows.append((start, row))
        start = reader.line_num + 1
    return delimiter, [(line, row) for line, row in rows if any(c.strip() for c in row)]


def _table_rows(path, text):
    """Rows ``(where, path, label, info)`` of a CSV / TSV with or without a header.

    ``info`` holds the ``annotator`` and ``time`` (``updated_at``) cells of a header that
    has them (Label Studio's CSV export does).
    """
    delimiter, rows = _csv_rows(path, text)
    shown = {"\t": "TAB"}.get(delimiter, delimiter)
    if not rows:
        raise ProjectError(f"{path} holds no rows.")
    header = [c.strip().lower() for c in rows[0][1]]
    extra = {}
    if any(h in PATH_COLUMNS for h in header):
        p_col = next(i for i, h in enumerate(header) if h in PATH_COLUMNS)
        l_col = next((i for i, h in enumerate(header) if h in LABEL_COLUMNS), None)
        if l_col is None:
            raise ProjectError(
                f"{path} line {rows[0][0]}: header {short(rows[0][1])} (delimiter {shown!r}) "
                f"has no label column (one of {', '.join(LABEL_COLUMNS)})."
            )
        if _ANNOTATOR_COLUMN in header:
            extra["annotator"] = header.index(_ANNOTATOR_COLUMN)
        time_col = next((c for c in _TIME_COLUMNS if c in header), None)
        if time_col is not None:
            extra["time"] = header.index(time_col)
        rows = rows[1:]
    else:
        p_col, l_col = 0, 1
    if rows and all(len(row) <= l_col for _, row in rows):
        raise ProjectError(
            f"{path}: no row has a label column (delimiter {shown!r}; first row, line "
            f"{rows[0][0]}: {short(rows[0][1])}). Expected path and label columns."
        )
    out = []
    for line, row in rows:
        where, loc = f"line {line}", f"{path} line {line}"
        if len(row) <= max(p_col, l_col):
            if len(row) > p_col and row[p_col].strip():
                out.append((where, _path_cell(row[p_col], loc), "", {}))  # no label: skipped
                continue
            raise ProjectError(f"{loc}: expected path and label; got {short(row)}.")
        info = {k: row[c].strip()[:200] or None for k, c in extra.items() if c < len(row)}
        label = label_value(row[l_col], loc, "the label")
        out.append((where, _path_cell(row[p_col], loc), label, info))
    return out


def _path_cell(value, loc):
    return check_cell(loc, "the path", value.strip(), MAX_REF_CHARS)


def read_label_file(path):
    """Rows ``(where, path, label)`` of a label file and the format it was read as.

    JSON (first character ``[`` or ``{``) is read as a Label Studio JSON or JSON-MIN
    export; anything else as a delimited table (Label Studio's CSV export included).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} not found.")
    text = decode(path, path.read_bytes())
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
        except RecursionError:
            raise ProjectError(
                f"{path}: JSON nested too deeply to read (more than Python's "
                f"{sys.getrecursionlimit()} levels; a Label Studio export of choices is about "
                f"9, at most {MAX_DEPTH} accepted). Not a Label Studio export?"
            ) from None
        return rows_from_json(data, path)
    return _table_rows(path, text), "CSV"


def resolve(value, known, root):
    """The project relpath of a path cell (relative to ``root``, absolute, ``file://``).

    A Label Studio local-files URL (``/data/local-files/?d=dir/img.jpg``) is relative to
    Label Studio's document root: its longest tail that is a project image wins.
    """
    if "?d=" in value:
        parts = Path(unquote(value.split("?d=", 1)[1])).as_posix().split("/")
        tails = ("/".join(parts[k:]) for k in range(len(parts)))
        return next((t for t in tails if t in known), value)
    if value.startswith("file://"):
        value = unquote(value[len("file://") :])
    if os.path.isabs(value):
        try:
            value = os.path.relpath(value, root)
        except ValueError:  # another drive on Windows
            return value
        if value.startswith(".."):
            # the root may be reached through a symlink: try the resolved path too
            value = os.path.relpath(os.path.realpath(value), os.path.realpath(root))
    return Path(os.path.normpath(value)).as_posix()


def _describe(where, label, info):
    who = (info or {}).get("annotator")
    return f"{where} ({who}): {short(label)}" if who else f"{where}: {short(label)}"


def _settle(seen, policy):
    """The rows of ``seen`` ``[(where, label, info)]`` whose label wins, or ``None``."""
    labels = {lab for _, lab, _ in seen}
    if len(labels) == 1:
        return seen
    if policy == "ground-truth":
        truth = [s for s in seen if (s[2] or {}).get("ground_truth")]
        return truth if len({lab for _, lab, _ in truth}) == 1 else None
    if policy == "majority":
        counts = {}
        for _, lab, _ in seen:
            counts[lab] = counts.get(lab, 0) + 1
        top = max(counts.values())
        best = [lab for lab, n in counts.items() if n == top]
        return [s for s in seen if s[1] == best[0]] if len(best) == 1 else None
    if policy == "latest":
        times = [(s[2] or {}).get("time") for s in seen]
        if not all(isinstance(t, str) and t for t in times):
            return None
        last = max(times)
        winners = [s for s, t in zip(seen, times, strict=True) if t == last]
        return winners if len({lab for _, lab, _ in winners}) == 1 else None
    return None  # refuse


_POLICY_NOTES = {
    "refuse": "pass --conflicts ground-truth, majority or latest to settle them",
    "ground-truth": "no single ground-truth label (mark one annotation as ground truth in "
    "Label Studio, or pass another --conflicts)",
    "majority": "no majority (a tie)",
    "latest": "no single latest annotation (times missing or equal)",
}


def choose_labels(wanted, policy="refuse"):
    """Settle each image's label from the rows that name it, by the conflict ``policy``.

    Parameters
    ----------
    wanted : dict
        ``{relpath: [(where, label, info), ...]}``; ``info`` may hold ``annotator``,
        ``ground_truth`` and ``time`` (what Label Studio's exports carry).
    policy : {"refuse", "ground-truth", "majority", "latest"}
        ``refuse``: different labels for one image are an error. ``ground-truth``: the
        label of the annotations marked ground truth. ``majority``: the most frequent
        label. ``latest``: the label of the most recently updated annotation. An image
        the policy cannot settle (no ground truth, a tie) is an error.

    Returns
    -------
    chosen : dict
        ``{relpath: (label, annotator or None)}``; the annotator names every annotator who
        gave the chosen label.
    errors : list of str
        One per unsettled image, naming each annotator and value.
    """
    if policy not in CONFLICT_POLICIES:
        raise ProjectError(
            f"conflicts must be one of {', '.join(CONFLICT_POLICIES)}; got {policy!r}."
        )
    chosen, errors = {}, []
    for rel, seen in wanted.items():
        seen = [(s[0], s[1], s[2] if len(s) > 2 else {}) for s in seen]
        winners = _settle(seen, policy)
        if winners is None:
            listed = ", ".join(_describe(*s) for s in seen)
            errors.append(f"{rel} ({listed}): {_POLICY_NOTES[policy]}")
            continue
        who = dict.fromkeys((info or {}).get("annotator") for _, _, info in winners)
        who = ", ".join(w for w in who if w)
        chosen[rel] = (winners[0][1], who or None)
    return chosen, errors
