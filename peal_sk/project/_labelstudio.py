"""Label Studio formats, both ways: tasks with pre-annotations out, exports in.

Out: a batch as Label Studio *tasks* JSON whose images Label Studio serves from local
storage (``/data/local-files/?d=<path relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>``),
the model's predicted class as a pre-annotation with its probability as ``score``, and the
labelling configuration (``<Choices name="choice" toName="image">``).

In: Label Studio's JSON export (tasks with ``annotations``), JSON-MIN (one flat object
per annotation: the task's data fields plus one key per control tag) and CSV (the same
columns as JSON-MIN; read by the CSV reader). Only choice annotations are read.
"""

# SPDX-License-Identifier: BSD-3-Clause

import json
import os
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ._common import ProjectError

__all__ = ["label_config", "local_files_url", "rows_from_json", "tasks"]

FROM_NAME, TO_NAME = "choice", "image"
#: keys of a JSON-MIN object / Label Studio CSV column that hold the image reference
IMAGE_KEYS = ("image", "img", "path", "relpath", "file", "filename", "filepath", "url")
#: keys that hold the chosen class in JSON-MIN (the control tag's name)
LABEL_KEYS = ("choice", "label", "class", "category", "annotation", "target", "sentiment")


def local_files_url(path, document_root):
    """``/data/local-files/?d=<path relative to document_root>`` for an image file."""
    rel = Path(os.path.relpath(Path(path).resolve(), Path(document_root).resolve())).as_posix()
    if rel.startswith(".."):
        raise ProjectError(
            f"{path} is not under the Label Studio document root {document_root}; choose "
            "a --document-root that holds the image folder."
        )
    return "/data/local-files/?d=" + quote(rel)


def label_config(classes):
    """The labelling configuration XML (one image, one single-choice control)."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def tasks(items, *, root, document_root, predictions=None, model_version=None):
    """Tasks JSON (a list) for ``items`` ``[(relpath, selection score)]``.

    ``predictions``: ``[(label, probability)]`` aligned with ``items``, written as
    pre-annotations of ``model_version``.
    """
    out = []
    for k, (rel, score) in enumerate(items):
        task = {
            "data": {
                "image": local_files_url(Path(root) / rel, document_root),
                "peal_sk_path": rel,
                "peal_sk_rank": k + 1,
                "peal_sk_selection_score": score,
            }
        }
        if predictions is not None:
            label, proba = predictions[k]
            task["predictions"] = [
                {
                    "model_version": model_version,
                    "score": float(proba),
                    "result": [
                        {
                            "from_name": FROM_NAME,
                            "to_name": TO_NAME,
                            "type": "choices",
                            "value": {"choices": [label]},
                        }
                    ],
                }
            ]
        out.append(task)
    return out


def label_value(value):
    """A class name from a JSON-MIN / CSV cell: a string or ``{"choices": [...]}``."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value.strip()
    if isinstance(value, dict) and "choices" in value:
        value = value["choices"]
    if isinstance(value, list):
        if len(value) == 1:
            return str(value[0]).strip()
        return "" if not value else " + ".join(map(str, value))  # reported as unknown
    return "" if value is None else str(value).strip()


def _image_ref(data, where):
    for key in ("peal_sk_path", *IMAGE_KEYS):
        if isinstance(data.get(key), str) and data[key].strip():
            return data[key].strip()
    raise ProjectError(
        f"{where}: no image reference (one of {', '.join(IMAGE_KEYS)}); got keys {sorted(data)}."
    )


def rows_from_json(data, path):
    """Rows ``(where, image reference, label)`` of a Label Studio JSON or JSON-MIN export.

    Returns
    -------
    rows : list of tuple
    kind : str
        ``"Label Studio JSON"`` or ``"Label Studio JSON-MIN"``.
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ProjectError(f"{path}: expected a JSON list of tasks; got {type(data).__name__}.")
    rows, kinds = [], set()
    for k, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise ProjectError(f"{path}: item {k} is not a JSON object.")
        where = f"task {item.get('id', k)}"
        if isinstance(item.get("data"), dict):  # full JSON export
            kinds.add("Label Studio JSON")
            ref = _image_ref(item["data"], f"{path} {where}")
            annotations = item.get("annotations", item.get("completions")) or []
            labels = [
                label_value(res.get("value", {}).get("choices", []))
                for ann in annotations
                if not ann.get("was_cancelled")
                for res in ann.get("result", [])
                if res.get("type") == "choices"
            ]
            labels = list(dict.fromkeys(lab for lab in labels if lab))
            rows.extend((where, ref, lab) for lab in labels or [""])
        else:  # JSON-MIN: one flat object per annotation
            kinds.add("Label Studio JSON-MIN")
            ref = _image_ref(item, f"{path} {where}")
            key = next((key for key in LABEL_KEYS if key in item), None)
            if key is None:
                key = next(
                    (k2 for k2, v in item.items() if isinstance(v, dict) and "choices" in v), None
                )
            rows.append((where, ref, "" if key is None else label_value(item[key])))
    if len(kinds) > 1:
        raise ProjectError(f"{path}: mixes full JSON tasks and JSON-MIN objects.")
    return rows, (kinds.pop() if kinds else "Label Studio JSON")
