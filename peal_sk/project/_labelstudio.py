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

__all__ = [
    "LABEL_KEYS",
    "MAX_DEPTH",
    "MAX_LABEL_CHARS",
    "MAX_REF_CHARS",
    "PATH_KEYS",
    "check_document_root",
    "label_config",
    "local_files_url",
    "rows_from_json",
    "tasks",
]

FROM_NAME, TO_NAME = "choice", "image"
#: names of the column (CSV header, JSON-MIN key, task data field) that holds the image
#: path or reference; the one list for every reader (case-insensitive in CSV headers)
PATH_KEYS = (
    "path",
    "relpath",
    "image",
    "img",
    "file",
    "filename",
    "filepath",
    "file_path",
    "url",
)
#: names of the column / JSON-MIN key that holds the class (a Label Studio control's name)
LABEL_KEYS = ("label", "class", "choice", "category", "annotation", "target", "sentiment")
#: JSON-MIN / CSV export keys that are Label Studio's bookkeeping, never a control
_EXPORT_META_KEYS = frozenset(
    ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement")
)
#: limits on what an export may hold (a Label Studio export of choices is ~9 levels deep)
MAX_DEPTH = 32
MAX_REF_CHARS = 4096
MAX_LABEL_CHARS = 1000
_SHOWN = 60


def local_files_url(path, document_root):
    """``/data/local-files/?d=<path relative to document_root>`` for an image file."""
    rel = Path(os.path.relpath(Path(path).resolve(), Path(document_root).resolve())).as_posix()
    if rel.startswith(".."):
        raise ProjectError(
            f"{path} is not under the Label Studio document root {document_root}; choose "
            "a --document-root that holds the image folder."
        )
    return "/data/local-files/?d=" + quote(rel)


def check_document_root(root, document_root=None):
    """Label Studio's document root for images under ``root``: ``(document root, storage)``.

    Label Studio serves ``/data/local-files/?d=<path>`` only through a *Local files*
    storage whose absolute path lies strictly under
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``: it refuses a storage equal to the root
    ("Please add a subdirectory"). The storage is the image folder, so the default
    root is its parent, and a root equal to the image folder is refused with the reason.
    """
    storage = Path(root).resolve()
    if storage.parent == storage:  # the image folder is the file system's root
        raise ProjectError(
            f"the image folder {storage} has no parent to serve it from; move the images "
            "into a sub-folder."
        )
    doc = storage.parent if document_root is None else Path(document_root).resolve()
    if doc == storage:
        raise ProjectError(
            f"--document-root {document_root} is the image folder itself: Label Studio "
            "refuses a Local files storage equal to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
            '("Please add a subdirectory"), so no image would show. Use a folder above it, '
            f"e.g. its parent {storage.parent} (the default)."
        )
    if not storage.is_relative_to(doc):
        raise ProjectError(
            f"the image folder {storage} is not under --document-root {document_root}; "
            f"choose a folder that holds it, e.g. its parent {storage.parent} (the default)."
        )
    return doc, storage


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


def short(value, n=_SHOWN):
    """``value`` as a one-line excerpt of at most ``n`` characters (and its length)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= n and "\n" not in text:
        return repr(text) if isinstance(value, str) else text
    flat = text[:n].replace("\n", " ")
    return f"{flat!r}... ({len(text)} characters)"


def check_cell(where, field, value, limit):
    """Refuse a cell longer than ``limit`` characters, without echoing it whole."""
    if len(value) > limit:
        raise ProjectError(
            f"{where}: {field} is {len(value)} characters long (at most {limit}): "
            f"{short(value)}. Is the right file or column imported?"
        )
    return value


def label_value(value, where="", field="label"):
    """A class name from a JSON-MIN / CSV cell: a string or ``{"choices": [...]}``."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return check_cell(where, field, value.strip(), MAX_LABEL_CHARS)
    if isinstance(value, dict) and "choices" in value:
        value = value["choices"]
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return check_cell(where, field, value[0].strip(), MAX_LABEL_CHARS)
        if not value:
            return ""
        if not all(isinstance(v, str) for v in value):
            raise ProjectError(f"{where}: {field} must hold class names; got {short(value)}.")
        # several choices: reported as an unknown class
        return check_cell(where, field, " + ".join(value), MAX_LABEL_CHARS)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ProjectError(f"{where}: {field} must be a class name; got {short(value)}.")
    return check_cell(where, field, str(value).strip(), MAX_LABEL_CHARS)


def _image_ref(data, where, field="data"):
    for key in ("peal_sk_path", *PATH_KEYS):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return check_cell(where, f"{field}.{key}", value.strip(), MAX_REF_CHARS)
    raise ProjectError(
        f"{where}: no image reference in {field} (one of {', '.join(PATH_KEYS)}); got keys "
        f"{short(sorted(map(str, data)))}."
    )


def _kind(value):
    return {
        str: "a string",
        dict: "an object",
        list: "a list",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def _expect(value, kind, where, field):
    """``value`` when it is a ``kind`` (dict or list); else a one-line error."""
    if not isinstance(value, kind):
        want = "an object" if kind is dict else "a list"
        raise ProjectError(f"{where}: {field} must be {want}; got {_kind(value)} {short(value)}.")
    return value


def check_depth(data, path, limit=MAX_DEPTH):
    """Refuse JSON nested deeper than ``limit``, naming the task and the field."""
    stack = [(data, 0, None, "")]
    while stack:
        value, depth, task, field = stack.pop()
        if depth > limit:
            where = f"{path} {task}" if task else str(path)
            raise ProjectError(
                f"{where}: {field or 'the file'} is nested more than {limit} levels deep; a "
                "Label Studio export of choices is about 9. Not a Label Studio export?"
            )
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            items = ((f"[{k}]", v) for k, v in enumerate(value))
        else:
            continue
        for key, child in items:
            if depth == 0 and isinstance(value, list):  # a task
                name = child.get("id", key) if isinstance(child, dict) else key
                stack.append((child, 1, f"task {short(name, 20)}", ""))
                continue
            sub = f"{field}.{key}" if field and not str(key).startswith("[") else f"{field}{key}"
            stack.append((child, depth + 1, task, sub.lstrip(".")))


def _annotator(ann):
    """Label Studio's annotator of an annotation: the e-mail when known, else the user id."""
    user = ann.get("completed_by")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    name = ann.get("created_username")
    if isinstance(name, str):  # "First Last email, id"
        email = next((w.rstrip(",") for w in name.split() if "@" in w), None)
        if email:
            return email
    if isinstance(user, str) and user.strip():
        return user.strip()[:200]
    if isinstance(user, int) and not isinstance(user, bool):
        return f"label-studio user {user}"
    return None


def annotation_rows(task, where, loc=None):
    """``(where, image reference, label, info)`` of each annotation of a full JSON task.

    ``info`` holds ``annotator``, ``ground_truth``, ``time`` (``updated_at`` or
    ``created_at``) and ``annotation`` (Label Studio's id). Cancelled (skipped)
    annotations and annotations without a choice give no row. Errors name ``loc``
    (default: ``where``).
    """
    loc = where if loc is None else loc
    ref = _image_ref(_expect(task["data"], dict, loc, "data"), loc)
    key = "annotations" if "annotations" in task else "completions"
    anns = task.get(key)
    if anns is None:
        anns = []
    rows = []
    for a, ann in enumerate(_expect(anns, list, loc, key)):
        field = f"{key}[{a}]"
        _expect(ann, dict, loc, field)
        if ann.get("was_cancelled"):
            continue
        result = ann.get("result")
        for r, res in enumerate(
            _expect([] if result is None else result, list, loc, f"{field}.result")
        ):
            _expect(res, dict, loc, f"{field}.result[{r}]")
            if res.get("type") != "choices":
                continue
            value = _expect(res.get("value"), dict, loc, f"{field}.result[{r}].value")
            choices = value.get("choices", [])
            vfield = f"{field}.result[{r}].value.choices"
            label = label_value(_expect(choices, list, loc, vfield), loc, vfield)
            if label:
                info = {
                    "annotator": _annotator(ann),
                    "ground_truth": ann.get("ground_truth") is True,
                    "time": ann.get("updated_at") or ann.get("created_at"),
                    "annotation": ann.get("id"),
                }
                rows.append((where, ref, label, info))
    return rows


def _control_key(items, path):
    """The JSON-MIN key of the choice control: a known name, else the one key that is
    neither data nor Label Studio's bookkeeping; an error when that is ambiguous."""
    keys = dict.fromkeys(k for item in items for k in item)
    known = next((k for k in LABEL_KEYS if k in keys), None)
    if known is not None:
        return known
    candidates = [
        k
        for k in keys
        if k not in PATH_KEYS
        and k not in _EXPORT_META_KEYS
        and not str(k).startswith("peal_sk_")
        and all(
            isinstance(item.get(k), (str, list, type(None)))
            or (isinstance(item.get(k), dict) and "choices" in item[k])
            for item in items
        )
    ]
    if len(candidates) == 1:
        return candidates[0]
    hint = (
        f"which of {', '.join(map(repr, candidates))} is it?"
        if candidates
        else f"got keys {short(list(keys))}"
    )
    raise ProjectError(
        f"{path}: a JSON-MIN export, but no field holds the choice (the control's name, one "
        f"of {', '.join(LABEL_KEYS)}; {hint}). Name the <Choices> control 'choice' in the "
        "labelling config (peal-sk's config does), or export as JSON, which names it."
    )


def rows_from_json(data, path):
    """Rows ``(where, image reference, label, info)`` of a Label Studio JSON or JSON-MIN
    export, its shape checked first (one-line errors naming the task and the field).

    Returns
    -------
    rows : list of tuple
    kind : str
        ``"Label Studio JSON"`` or ``"Label Studio JSON-MIN"``.
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ProjectError(f"{path}: expected a JSON list of tasks; got {_kind(data)}.")
    check_depth(data, path)
    rows, kinds = [], set()
    for k, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise ProjectError(f"{path}: item {k} is {_kind(item)}, not a JSON object (a task).")
        where = f"task {short(item.get('id', k), 20)}"
        if "data" in item:  # full JSON export
            kinds.add("Label Studio JSON")
            loc = f"{path} {where}"
            found = annotation_rows(item, where, loc)
            rows.extend(found or [(where, _image_ref(item["data"], loc), "", {})])
        else:  # JSON-MIN: one flat object per annotation
            kinds.add("Label Studio JSON-MIN")
    if len(kinds) > 1:
        raise ProjectError(f"{path}: mixes full JSON tasks and JSON-MIN objects.")
    if kinds == {"Label Studio JSON-MIN"}:
        key = _control_key(data, path)
        for k, item in enumerate(data, start=1):
            where = f"task {short(item.get('id', k), 20)}"
            loc = f"{path} {where}"
            ref = _image_ref(item, loc, "the object")
            info = {"annotator": _annotator({"completed_by": item.get("annotator")})}
            info.update(ground_truth=False, time=item.get("updated_at"))
            rows.append((where, ref, label_value(item.get(key), loc, key), info))
    return rows, (kinds.pop() if kinds else "Label Studio JSON")
