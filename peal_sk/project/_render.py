"""Files people read: the batch sheets (CSV to fill, HTML contact sheet) and label CSVs.

Pure functions of the rows they are given: no database, no model.
"""

# SPDX-License-Identifier: BSD-3-Clause

import base64
import csv
import html
import io
import warnings
from pathlib import Path

__all__ = ["batch_csv", "batch_html", "labels_csv", "thumbnail"]

_THUMB = 160


def _fmt(score, digits):
    return "" if score is None else f"{score:.{digits}g}"


def batch_csv(items):
    """``path,score,label`` with an empty label column; ``items`` are ``(relpath, score)``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "score", "label"])
    for rel, score in items:
        writer.writerow([rel, _fmt(score, 6), ""])
    return buf.getvalue()


def thumbnail(path, label=None):
    """A JPEG thumbnail of ``path`` as a ``data:`` URL ("" with a warning when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((_THUMB, _THUMB))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception as exc:  # noqa: BLE001 - a sheet without one thumbnail is still useful
        warnings.warn(
            f"no thumbnail for {label or path} in the contact sheet ({type(exc).__name__}: {exc})",
            stacklevel=2,
        )
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def batch_html(batch, strategy, phase, items, *, classes, root):
    """The contact sheet of a batch: thumbnails with rank, path and score."""
    cards = []
    for rank, (rel, score) in enumerate(items):
        cards.append(
            f'<figure><img alt="{html.escape(rel)}" src="{thumbnail(Path(root) / rel, rel)}">'
            f"<figcaption>{rank + 1}. {html.escape(rel)}<br>score {_fmt(score, 4)}"
            "</figcaption></figure>"
        )
    title = f"batch {batch}: {len(items)} images ({strategy}, {phase})"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif}figure{display:inline-block;width:180px;margin:6px;"
        "vertical-align:top;font-size:12px;word-break:break-all}"
        "img{max-width:160px;max-height:160px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>classes: {html.escape(', '.join(classes))}. "
        f"Fill the label column of batch-{batch}.csv, then run "
        "<code>peal-sk project import</code>.</p>\n" + "\n".join(cards) + "\n</body></html>\n"
    )


def labels_csv(rows, *, history=False):
    """``path,label,annotator,time`` (``history``: plus ``superseded`` and ``image_status``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["path", "label", "annotator", "time"]
    if history:
        header += ["superseded", "image_status"]
    writer.writerow(header)
    for r in rows:
        writer.writerow(list(r)[: len(header)])
    return buf.getvalue()
