"""``peal-sk project ls-backend``: the project as a Label Studio ML backend.

Label Studio (1.23) calls an ML backend over HTTP: ``GET /health`` (1 s timeout),
``POST /setup`` (3 s; the labelling config, answered with the ``model_version``),
``POST /predict`` (the full tasks; ``{"results": [...]}``, one entry per task, in order)
and, through the webhook it creates at ``<url>/webhook``, the annotation events
(1 s timeout, never retried). This module answers them for a project, with the standard
library only (:class:`~http.server.ThreadingHTTPServer`; Label Studio's ``label-studio-ml``
SDK on PyPI is 1.0.9 of January 2023, pinning Flask 1.1.2 and Werkzeug 2.0.2).

predict
    Each task whose image is a project image gets the model's class (logistic regression on
    the cached embeddings, once two classes have labels) as a ``choices`` result, and a
    ``score`` that orders tasks by the project's strategy: ``1 - rank / n`` for the first
    ``rank_depth`` pool images the strategy picks (the cold-start strategy before two
    classes have labels), 0 for the others and for labelled images. Sorting the Data
    Manager by prediction score, descending, gives the strategy's order. The ranking is
    computed once per model version (``model_version`` names the strategy, the number of
    labels and the training), so scores of different requests compare.
webhooks
    A delivery is written to an inbox (``label-studio.sqlite`` in the project folder,
    ``synchronous=FULL``) and committed *before* the 200 answer; a worker thread then
    applies it. Each annotation is kept by its Label Studio id with its ``updated_at``, so
    a duplicate or a stale retry changes nothing; the image's label is then set through
    the project's import transaction (:meth:`State.import_rows`, the one ``project
    import`` uses; ``conflicts`` settles several annotators), or, when its last annotation
    was deleted, withdrawn (kept in the history). A kill after the answer loses nothing:
    the next start applies what the inbox holds. ``reconcile`` pulls every annotation
    through the REST API and makes the project match (for deliveries that were missed).

Security: the server binds 127.0.0.1 unless told otherwise; every request needs HTTP
Basic auth (Label Studio's ``auth_method: BASIC_AUTH``), compared in constant time;
bodies are limited to ``max_body`` bytes and JSON to :data:`._labelstudio.MAX_DEPTH`
levels; images are looked up among the project's own paths, never opened from a path a
request names; a failure answers a JSON error without traceback.
"""

# SPDX-License-Identifier: BSD-3-Clause

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote
from xml.etree import ElementTree

from ._common import ProjectError
from ._db import connect as db_connect
from ._db import now, transaction
from ._importing import CONFLICT_POLICIES
from ._labelstudio import MAX_DEPTH, PATH_KEYS, annotation_rows, check_depth

__all__ = ["INBOX_NAME", "Inbox", "LabelStudioBackend", "connect", "reconcile", "sync"]

INBOX_NAME = "label-studio.sqlite"
#: recorded as the ``source`` of every label that came through the backend
SOURCE = "label-studio"
#: largest request body accepted by default (bytes): 100 full tasks are ~100 kB
MAX_BODY_BYTES = 4 << 20
PASSWORD_ENV = "PEAL_SK_LS_PASSWORD"
#: hidden: seconds the worker waits before applying each inbox event (tests only)
DELAY_ENV = "PEAL_SK_TEST_LS_DELAY"
_ACTIONS = {
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
}
_RECONCILE = "PEAL_SK_RECONCILE"
_INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,
    received TEXT NOT NULL,
    body BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    ls_project INTEGER,
    task INTEGER,
    relpath TEXT,
    label TEXT,
    annotator TEXT,
    ground_truth INTEGER NOT NULL DEFAULT 0,
    updated TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dirty (relpath TEXT PRIMARY KEY, gen INTEGER NOT NULL);
"""


def _log(msg):
    print(f"peal-sk project ls-backend: {msg}", file=sys.stderr, flush=True)


# -- the inbox: deliveries committed before they are answered --------------------------------
class Inbox:
    """The backend's own SQLite file in the project folder (events and annotations).

    Separate from ``project.sqlite`` so that a webhook's commit never waits behind a
    long project transaction (Label Studio gives it 1 s). One connection per thread.
    """

    def __init__(self, project_path):
        self.path = Path(project_path) / INBOX_NAME
        self._local = threading.local()
        self.con.executescript(_INBOX_SCHEMA)

    @property
    def con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            con = db_connect(self.path)  # the project's settings: WAL, synchronous=FULL
            self._local.con = con
        return con

    def write(self):
        return transaction(self.con)

    def receive(self, body):
        """Store a delivery durably; False when the same delivery was stored before."""
        digest = hashlib.sha256(body).hexdigest()
        with self.write() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO events (digest, received, body) VALUES (?, ?, ?)",
                (digest, now(), body),
            )
        return cur.rowcount == 1

    def pending(self):
        return self.con.execute("SELECT id, body FROM events WHERE done = 0 ORDER BY id").fetchall()

    def live(self, relpath):
        """``(id, label, annotator, ground_truth, updated)`` of an image's annotations."""
        return self.con.execute(
            "SELECT id, label, annotator, ground_truth, updated FROM annotations "
            "WHERE relpath = ? AND deleted = 0 AND label IS NOT NULL ORDER BY id",
            (relpath,),
        ).fetchall()


def _image_relpath(data, known):
    """The project relpath a task's data names, among ``known`` only (no file is read)."""
    if not isinstance(data, dict):
        return None
    for key in ("peal_sk_path", *PATH_KEYS):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 4096:
            continue
        if "?d=" in value:
            value = unquote(value.split("?d=", 1)[1])
        parts = PurePosixPath(value.replace("\\", "/")).parts
        for k in range(len(parts)):
            tail = "/".join(parts[k:])
            if tail in known:
                return tail
    return None


def _annotation_record(ann, task, known, ls_project):
    """The inbox row of one annotation: ``(id, project, task, relpath, label, who, gt, t)``."""
    if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
        raise ProjectError(f"an annotation without an integer id: {str(ann)[:80]}")
    task = task if isinstance(task, dict) else None
    data = None if task is None else task.get("data")
    rel = _image_relpath(data, known)
    label = info = None
    if rel is not None:
        rows = annotation_rows({"data": data, "annotations": [ann]}, f"annotation {ann['id']}")
        if rows:
            _, _, label, info = rows[0]
    info = info or {}
    return (
        ann["id"],
        ls_project,
        ann.get("task") if isinstance(ann.get("task"), int) else (task or {}).get("id"),
        rel,
        label,
        info.get("annotator"),
        int(bool(info.get("ground_truth"))),
        str(ann.get("updated_at") or ann.get("created_at") or ""),
    )


def _apply_event(con, body, known):
    """Apply one delivery to the annotations table; the relpaths it touched."""
    event = json.loads(body)
    action = event.get("action")
    project = event.get("project")
    ls_project = project.get("id") if isinstance(project, dict) else project
    touched = set()
    if action == "ANNOTATIONS_DELETED":
        ids = [a.get("id") for a in event.get("annotations") or [] if isinstance(a, dict)]
        for ann_id in ids:
            row = con.execute("SELECT relpath FROM annotations WHERE id = ?", (ann_id,)).fetchone()
            if row is None:  # deleted before its creation arrived: a tombstone
                con.execute("INSERT INTO annotations (id, deleted) VALUES (?, 1)", (ann_id,))
            else:
                con.execute("UPDATE annotations SET deleted = 1 WHERE id = ?", (ann_id,))
                touched.add(row[0])
        return touched
    if action == _RECONCILE:
        tasks = event["tasks"]
        pairs = [(a, t) for t in tasks for a in (t.get("annotations") or [])]
        seen = {a.get("id") for a, _ in pairs if isinstance(a, dict)}
        for ann_id, rel in con.execute(
            "SELECT id, relpath FROM annotations WHERE deleted = 0 AND "
            "(ls_project = ? OR ls_project IS NULL)",
            (ls_project,),
        ).fetchall():
            if ann_id not in seen:
                con.execute("UPDATE annotations SET deleted = 1 WHERE id = ?", (ann_id,))
                touched.add(rel)
        force = True
    else:
        anns, tasks = event.get("annotation"), event.get("task")
        anns = anns if isinstance(anns, list) else [anns]
        tasks = tasks if isinstance(tasks, list) else [tasks]
        by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
        pairs = [
            (a, by_id.get(a.get("task")) or (tasks[0] if len(tasks) == 1 else None))
            for a in anns
            if isinstance(a, dict)
        ]
        force = False
    for ann, task in pairs:
        rec = _annotation_record(ann, task, known, ls_project)
        if rec[3] is None and not force:
            _log(f"annotation {rec[0]}: its task's image is not an image of the project; ignored")
        old = con.execute(
            "SELECT relpath, updated, deleted FROM annotations WHERE id = ?", (rec[0],)
        ).fetchone()
        if old is not None and old[2] and not force:
            continue  # deleted: a late or repeated delivery does not revive it
        if old is not None and not force and (old[1] or "") > rec[7]:
            continue  # a stale retry: a newer version is applied
        con.execute(
            "INSERT OR REPLACE INTO annotations (id, ls_project, task, relpath, label, "
            "annotator, ground_truth, updated, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            rec,
        )
        touched.update(r for r in (rec[3], old and old[0]) if r)
    return touched


def sync(project, inbox, *, conflicts="refuse", delay=0.0):
    """Apply the inbox's pending events, then bring the touched images' labels in line.

    Idempotent: run again after a crash at any point, it reaches the same labels.

    Returns
    -------
    result : dict
        ``events`` (applied), ``labels`` (new or changed), ``withdrawn`` and ``problems``
        (images left as they were, with the reason).
    """
    # images that can take a label: present and readable (labelled or not)
    known = {r["relpath"] for r in (*project.pool(include_open=True), *project.labelled())}
    n_events, problems = 0, []
    for event_id, body in inbox.pending():
        if delay:
            time.sleep(delay)
        with inbox.write() as con:
            if con.execute("SELECT done FROM events WHERE id = ?", (event_id,)).fetchone()[0]:
                continue  # another process applied it meanwhile
            try:
                touched, error = _apply_event(con, body, known), None
            except (ProjectError, ValueError, TypeError, AttributeError, KeyError) as exc:
                touched, error = set(), f"{type(exc).__name__}: {str(exc)[:300]}"
                problems.append((f"delivery {event_id}", f"not applied ({error})"))
                _log(f"delivery {event_id} not applied ({error})")
            con.executemany(
                "INSERT INTO dirty (relpath, gen) VALUES (?, 1) "
                "ON CONFLICT (relpath) DO UPDATE SET gen = gen + 1",
                [(r,) for r in sorted(touched)],
            )
            # an applied delivery keeps its digest (duplicates are still recognised), not its
            # body (a reconcile's is the whole export); a failed one keeps it for diagnosis
            con.execute(
                "UPDATE events SET done = 1, error = ?, body = CASE WHEN ? IS NULL THEN x'' "
                "ELSE body END WHERE id = ?",
                (error, error, event_id),
            )
        n_events += 1
    result = {"events": n_events, "labels": 0, "withdrawn": 0, "problems": problems}
    dirty = inbox.con.execute("SELECT relpath, gen FROM dirty ORDER BY relpath").fetchall()
    for rel, gen in dirty:
        live = inbox.live(rel)
        try:
            if live:
                rows = [
                    (
                        f"annotation {a}",
                        rel,
                        label,
                        {"annotator": who, "ground_truth": bool(gt), "time": t},
                    )
                    for a, label, who, gt, t in live
                ]
                report = project.state.import_rows(
                    rows,
                    classes=project.classes,
                    resolve=lambda value, known: value,
                    relabel=True,
                    annotator=SOURCE,
                    source=SOURCE,
                    what="Label Studio annotations",
                    conflicts=conflicts,
                )
                result["labels"] += report["new"] + report["relabelled"]
            else:
                result["withdrawn"] += project.state.withdraw_labels([rel], source=SOURCE)
        except ProjectError as exc:
            result["problems"].append((rel, str(exc).replace("\n", " ")))
            _log(f"{rel}: label left as it was: {str(exc).splitlines()[-1].strip()[:500]}")
        with inbox.write() as con:
            con.execute("DELETE FROM dirty WHERE relpath = ? AND gen = ?", (rel, gen))
    return result


# -- predictions ---------------------------------------------------------------------------
def parse_label_config(config, classes):
    """``(choices control name, image name)`` of a labelling config whose choices are the
    project's ``classes``; :class:`ProjectError` naming the difference otherwise."""
    if not isinstance(config, str) or not config.strip():
        raise ProjectError("the labelling config is missing.")
    if "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise ProjectError("the labelling config may not declare a DOCTYPE or entities.")
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise ProjectError(f"the labelling config is not valid XML ({exc}).") from None
    controls = [el for el in root.iter() if el.tag == "Choices"]
    if len(controls) != 1:
        raise ProjectError(
            f"the labelling config has {len(controls)} <Choices> controls; the project "
            "needs exactly one (peal-sk project export --format label-studio writes it)."
        )
    control = controls[0]
    values = [el.get("value") for el in control.iter() if el.tag == "Choice"]
    missing = [c for c in classes if c not in values]
    extra = [v for v in values if v not in classes]
    if missing or extra:
        raise ProjectError(
            f"the labelling config's choices {values} are not the project's classes "
            f"{classes} (missing: {missing}, not in the project: {extra})."
        )
    return control.get("name", "choice"), control.get("toName", "image")


class Ranker:
    """The model and the strategy's ranking of the pool, computed once per model version
    (per training: a new ``project train``, by the backend or by hand, makes a new one)."""

    def __init__(self, rank_depth=1000):
        self.rank_depth = int(rank_depth)
        self.current = None  # (training id, version, scores {relpath: score}, predictions)

    @staticmethod
    def training(project):
        return project.state.n_trainings()  # trainings are never deleted: a version key

    def refresh(self, project, *, force=False):
        """Compute the version of the latest training, unless it is the current one.
        The requests meanwhile are answered by the previous version."""
        key = self.training(project)
        if force or self.current is None or self.current[0] != key:
            self.current = (key, *self._compute(project, key))
        return self.current

    def get(self):
        """``(model_version, scores, predictions {relpath: (label, proba)})``."""
        if self.current is None:
            raise HTTPError(503, "the backend is still computing its first ranking.")
        return self.current[1:]

    def _compute(self, project, training):
        from . import _training
        from ._project import select

        labelled, pool = project.labelled(), project.pool(include_open=True)
        y = [r["label"] for r in labelled]
        phase = "model" if len(set(y)) >= 2 else "cold start"
        strategy = project.strategy if phase == "model" else project.cold_start
        X = project.embeddings([*pool, *labelled]) if pool or labelled else None
        X_pool, X_lab = (None, None) if X is None else (X[: len(pool)], X[len(pool) :])
        clf, predictions = None, {}
        if phase == "model":
            clf = _training.logreg().fit(X_lab, y)
            proba = clf.predict_proba(X)
            best = proba.argmax(axis=1)
            classes = [str(c) for c in clf.classes_]
            rows = [*pool, *labelled]
            predictions = {
                r["relpath"]: (classes[k], float(proba[i, k]))
                for i, (r, k) in enumerate(zip(rows, best, strict=True))
            }
        scores = {}
        n = min(len(pool), self.rank_depth)
        if n:
            params = project.strategy_params.get(strategy)
            lab = (X_lab, y) if clf is not None else (None, None)
            idx, _ = select(strategy, n, len(y), clf, X_pool, *lab, params)
            scores = {pool[i]["relpath"]: 1.0 - rank / n for rank, i in enumerate(idx)}
        version = (
            f"peal-sk {strategy} ({phase}), {len(y)} labels"
            + (f", training {training}" if training else "")
            + (", logreg on " if clf is not None else ", ")
            + f"{project.backbone['backbone']} embeddings"
        )
        return version, scores, predictions


# -- the HTTP server -----------------------------------------------------------------------
class HTTPError(Exception):
    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.message, self.headers = HTTPStatus(status), message, headers


class LabelStudioBackend(ThreadingHTTPServer):
    """The ML backend's HTTP server for the project folder ``project``.

    Parameters
    ----------
    project : path-like
    host : str, default="127.0.0.1"
    port : int, default=9090
        0: any free port (see :attr:`url`).
    user : str, default="peal-sk"
    password : str
        HTTP Basic auth password Label Studio sends (``basic_auth_pass``).
    conflicts : {"refuse", "ground-truth", "majority", "latest"}, default="refuse"
        How several annotators' labels of one image are settled.
    retrain_every : int, default=0
        Train a new model (``project train``) after this many new labels, in the
        background; 0: never (the model of the start is kept).
    rank_depth : int, default=1000
        Pool images the strategy ranks per model version (the rest score 0).
    max_body : int, default=MAX_BODY_BYTES
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        project,
        *,
        host="127.0.0.1",
        port=9090,
        user="peal-sk",
        password,
        conflicts="refuse",
        retrain_every=0,
        rank_depth=1000,
        max_body=MAX_BODY_BYTES,
        log=None,
    ):
        from ._project import Project

        if conflicts not in CONFLICT_POLICIES:
            raise ProjectError(f"--conflicts must be one of {CONFLICT_POLICIES}; got {conflicts}")
        if not password:
            raise ProjectError("the backend needs a password (HTTP Basic auth).")
        for name, value, low in (
            ("retrain_every", retrain_every, 0),
            ("rank_depth", rank_depth, 1),
            ("max_body", max_body, 1024),
        ):
            if int(value) < low:
                raise ProjectError(f"--{name.replace('_', '-')} must be >= {low}; got {value}.")
        self.project_path = Path(project)
        probe = Project(self.project_path)  # fails early on a missing or read-only project
        try:
            probe.state.require_writable("ls-backend")
            self.classes = probe.classes
        finally:
            probe.close()
        self.inbox = Inbox(self.project_path)
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.conflicts, self.retrain_every = conflicts, int(retrain_every)
        self.max_body, self.log = int(max_body), log
        self.ranker = Ranker(rank_depth)
        warm = Project(self.project_path)
        try:  # before listening: Label Studio's setup call waits 3 s at most
            self.ranker.refresh(warm)
        finally:
            warm.close()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.new_labels = 0
        super().__init__((host, int(port)), _Handler)
        self.worker = threading.Thread(target=self._work, name="ls-backend-worker", daemon=True)
        self.worker.start()

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def shutdown(self):
        self.stopping.set()
        self.wake.set()
        super().shutdown()
        self.worker.join(timeout=30)

    def _work(self):
        """Apply the inbox (at the start, then after each delivery); retrain when due."""
        from ._project import Project

        delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        while not self.stopping.is_set():
            self.wake.clear()  # before reading the inbox: a delivery meanwhile wakes us again
            try:
                project = Project(self.project_path)
                try:
                    result = sync(project, self.inbox, conflicts=self.conflicts, delay=delay)
                    self.new_labels += result["labels"]
                    if self.retrain_every and self.new_labels >= self.retrain_every:
                        self.new_labels = 0
                        report = project.train()
                        _log(f"trained {report['model']} on {report['n_labels']} labels")
                    self.ranker.refresh(project)  # a new training: the next requests see it
                finally:
                    project.close()
            except Exception:  # noqa: BLE001 - the worker outlives one bad round
                _log("worker failed:\n" + traceback.format_exc())
            self.wake.wait(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_version = "peal-sk-ls-backend"
    timeout = 30

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if self.server.log is not None:
            print(f"{self.address_string()} {format % args}", file=self.server.log, flush=True)

    def _send(self, status, obj, headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        try:
            self._check_auth()
            route = _ROUTES.get((method, self.path.split("?", 1)[0].rstrip("/") or "/"))
            if route is None:
                raise HTTPError(404, f"no {method} {self.path[:100]} here.")
            body = self._body() if method == "POST" else None
            self._send(200, route(self, body))
        except HTTPError as err:
            self._send(err.status, {"error": err.message}, err.headers)
        except ProjectError as err:
            self._send(400, {"error": str(err)})
        except Exception:  # noqa: BLE001 - no traceback to the client
            _log("request failed:\n" + traceback.format_exc())
            self._send(500, {"error": "internal error; see the backend's log."})

    def _check_auth(self):
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), self.server.auth.encode()):
            raise HTTPError(
                401,
                "HTTP Basic auth required (the backend's user and password).",
                [("WWW-Authenticate", 'Basic realm="peal-sk ls-backend"')],
            )

    def _body(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            raise HTTPError(411, "send the body with a Content-Length.")
        try:
            length = int(length)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {length[:20]!r}.") from None
        if length > self.server.max_body:
            self.close_connection = True
            raise HTTPError(
                413, f"request body of {length} bytes; at most {self.server.max_body} accepted."
            )
        data = self.rfile.read(length)
        if len(data) != length:
            raise HTTPError(400, f"incomplete body: {len(data)} of {length} bytes.")
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise HTTPError(400, f"the body is not JSON ({str(exc)[:100]}).") from None
        try:
            check_depth(obj, "the body", MAX_DEPTH)
        except ProjectError as exc:
            raise HTTPError(400, str(exc)) from None
        if not isinstance(obj, dict):
            raise HTTPError(400, "the body must be a JSON object.")
        self._raw = data
        return obj

    # -- routes ------------------------------------------------------------------------
    def route_health(self, body):
        return {"status": "UP", "model_class": "peal-sk project"}

    def route_setup(self, body):
        parse_label_config(body.get("schema"), self.server.classes)
        version, _, _ = self.server.ranker.get()
        return {"model_version": version}

    def route_predict(self, body):
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise HTTPError(400, "predict needs a list of tasks.")
        from_name, to_name = parse_label_config(body.get("label_config"), self.server.classes)
        version, scores, predictions = self.server.ranker.get()
        known = set(scores) | set(predictions)
        labelled = self._labelled()
        known |= labelled
        results = []
        for task in tasks:
            rel = _image_relpath(task.get("data") if isinstance(task, dict) else None, known)
            result = []
            if rel in predictions:
                label, proba = predictions[rel]
                result = [
                    {
                        "from_name": from_name,
                        "to_name": to_name,
                        "type": "choices",
                        "value": {"choices": [label]},
                        "score": proba,
                    }
                ]
            score = 0.0 if rel in labelled else scores.get(rel, 0.0)
            results.append({"result": result, "score": score, "model_version": version})
        return {"results": results}

    def _labelled(self):
        from ._state import State

        state = State(self.server.project_path, readonly=True)
        try:
            return {r["relpath"] for r in state.labelled()}
        finally:
            state.close()

    def route_webhook(self, body):
        action = body.get("action")
        if action not in _ACTIONS:
            return {"status": "ignored", "action": str(action)[:60]}
        fresh = self.server.inbox.receive(self._raw)  # committed before the answer
        self.server.wake.set()
        return {"status": "stored" if fresh else "duplicate"}


_ROUTES = {
    ("GET", "/health"): _Handler.route_health,
    ("GET", "/"): _Handler.route_health,
    ("POST", "/setup"): _Handler.route_setup,
    ("POST", "/predict"): _Handler.route_predict,
    ("POST", "/webhook"): _Handler.route_webhook,
}


# -- reconcile -----------------------------------------------------------------------------
def _request(url, headers, data=None, timeout=60, method=None):
    from urllib.request import Request, urlopen

    if data is not None and not isinstance(data, bytes):
        data, headers = json.dumps(data).encode(), {**headers, "Content-Type": "application/json"}
    req = Request(url, data=data, headers=headers, method=method)
    with urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's Label Studio URL
        return json.loads(resp.read())


def _auth_headers(url, api_key):
    """``Authorization`` for a legacy token, or a personal access token (a JWT refresh
    token, exchanged at ``/api/token/refresh`` for an access token)."""
    if api_key.count(".") == 2:
        body = json.dumps({"refresh": api_key}).encode()
        access = _request(f"{url}/api/token/refresh", {"Content-Type": "application/json"}, body)[
            "access"
        ]
        return {"Authorization": f"Bearer {access}"}
    return {"Authorization": f"Token {api_key}"}


def reconcile(project, url, ls_project, api_key, *, conflicts="refuse"):
    """Make the project's Label Studio labels exactly the annotations Label Studio holds.

    Pulls every task of Label Studio project ``ls_project`` with its annotations
    (``GET /api/projects/<id>/export?exportType=JSON&download_all_tasks=true``), stores
    them in the inbox as one event, and applies it like a webhook delivery: new and
    changed annotations land, annotations the backend knew but Label Studio no longer
    has are withdrawn.

    Returns
    -------
    result : dict
        What :func:`sync` returns, plus ``tasks`` and ``annotations`` (pulled).
    """
    from urllib.error import URLError

    url = url.rstrip("/")
    try:
        headers = _auth_headers(url, api_key)
        tasks = _request(
            f"{url}/api/projects/{int(ls_project)}/export?exportType=JSON&download_all_tasks=true",
            headers,
        )
    except (URLError, OSError, KeyError, ValueError) as exc:
        raise ProjectError(
            f"cannot read the annotations of Label Studio project {ls_project} at {url} "
            f"({exc}); check the URL, the project id and the API key."
        ) from None
    if not isinstance(tasks, list):
        raise ProjectError(f"{url}: the export is not a list of tasks.")
    # every pull is a new event (its own nonce): it may remove what an earlier one added
    event = {"action": _RECONCILE, "project": {"id": int(ls_project)}, "tasks": tasks}
    event["nonce"] = secrets.token_hex(8)
    inbox = Inbox(project.path)
    inbox.receive(json.dumps(event).encode())
    result = sync(project, inbox, conflicts=conflicts)
    n_ann = sum(len(t.get("annotations") or []) for t in tasks)
    return {**result, "tasks": len(tasks), "annotations": n_ann}


def connect(url, ls_project, api_key, backend_url, *, user, password, title="peal-sk"):
    """Connect a running backend to Label Studio project ``ls_project`` through the REST API.

    Adds (or updates) the ML backend with HTTP Basic auth (``POST /api/ml``; Label Studio
    calls ``/health`` and ``/setup`` then), and gives the webhook Label Studio creates for
    it (``<backend_url>/webhook``, without credentials) the ``Authorization`` header.

    Returns
    -------
    result : dict
        ``ml_backend`` and ``webhook`` (Label Studio's ids).
    """
    from urllib.error import HTTPError as URLHTTPError
    from urllib.error import URLError

    url, backend_url = url.rstrip("/"), backend_url.rstrip("/")
    ml = {
        "url": backend_url,
        "project": int(ls_project),
        "title": title,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": user,
        "basic_auth_pass": password,
    }
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        headers = _auth_headers(url, api_key)
        known = _request(f"{url}/api/ml?project={int(ls_project)}", headers)
        same = [b for b in known if str(b.get("url", "")).rstrip("/") == backend_url]
        if same:
            backend = _request(f"{url}/api/ml/{same[0]['id']}", headers, ml, method="PATCH")
        else:
            backend = _request(f"{url}/api/ml", headers, ml)
        if backend.get("state") not in (None, "CO"):
            raise ProjectError(
                f"Label Studio could not connect the backend at {backend_url} (state "
                f"{backend.get('state')}: {str(backend.get('error_message'))[:300]}); check "
                f"that it runs, the user and ${PASSWORD_ENV}."
            )
        hooks = _request(f"{url}/api/webhooks/?project={int(ls_project)}", headers)
        hook = next((h for h in hooks if h.get("url") == backend_url + "/webhook"), None)
        body = {"headers": {"Authorization": basic}}
        if hook is None:
            body.update(
                project=int(ls_project),
                url=backend_url + "/webhook",
                send_payload=True,
                send_for_all_actions=True,
            )
            hook = _request(f"{url}/api/webhooks/", headers, body)
        else:
            hook = _request(f"{url}/api/webhooks/{hook['id']}/", headers, body, method="PATCH")
    except URLHTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        raise ProjectError(
            f"Label Studio at {url} refused ({exc.code}: {detail}); a backend on this "
            "machine needs ML_BLOCK_LOCAL_IP=false and SSRF_PROTECTION_ENABLED=false in "
            "Label Studio's environment."
        ) from None
    except (URLError, OSError, KeyError, ValueError) as exc:
        raise ProjectError(f"cannot reach Label Studio at {url} ({exc}).") from None
    return {"ml_backend": backend["id"], "webhook": hook["id"]}


# -- the command line ----------------------------------------------------------------------
def add_backend_arguments(parser):
    """``ls-backend``'s options."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=9090, help="port (default: %(default)s; 0: any free one)"
    )
    parser.add_argument(
        "--user", default="peal-sk", help="HTTP Basic auth user (default: %(default)s)"
    )
    parser.add_argument(
        "--conflicts",
        choices=CONFLICT_POLICIES,
        default="refuse",
        help="several annotators' different labels of one image: refuse (the image keeps "
        "its label, the log names each annotator), ground-truth, majority, latest "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--retrain-every",
        type=int,
        default=0,
        metavar="N",
        help="train a new model after every N new labels, in the background (default: 0, never)",
    )
    parser.add_argument(
        "--rank-depth",
        type=int,
        default=1000,
        help="pool images the strategy ranks per model version (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=MAX_BODY_BYTES,
        help="largest request body in bytes (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def add_reconcile_arguments(parser):
    """``ls-reconcile``'s options."""
    parser.add_argument("--url", required=True, help="Label Studio's URL")
    parser.add_argument(
        "--ls-project", type=int, required=True, help="the Label Studio project's id"
    )
    parser.add_argument(
        "--api-key-env",
        default="LABEL_STUDIO_API_KEY",
        help="environment variable holding the API key or personal access token "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--conflicts", choices=CONFLICT_POLICIES, default="refuse", help="as for ls-backend"
    )
    return parser


def backend_command(project, args):
    """``peal-sk project ls-backend``: serve until Ctrl+C."""
    project.close()
    if not 0 <= args.port <= 65535:
        raise ProjectError(f"--port must be from 0 to 65535; got {args.port}.")
    password = os.environ.get(PASSWORD_ENV)
    generated = not password
    password = password or secrets.token_urlsafe(18)
    try:
        server = LabelStudioBackend(
            args.project,
            host=args.host,
            port=args.port,
            user=args.user,
            password=password,
            conflicts=args.conflicts,
            retrain_every=args.retrain_every,
            rank_depth=args.rank_depth,
            max_body=args.max_body,
            log=sys.stderr if args.verbose else None,
        )
    except OSError as exc:
        raise ProjectError(f"cannot listen on {args.host}:{args.port} ({exc}).") from exc
    header = server.auth
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}, not only this machine: plain HTTP, so the "
            "password crosses the network readable; put it behind TLS.",
            file=sys.stderr,
        )
    print(
        f"Label Studio ML backend of {args.project} listening on {server.url}\n"
        f"  connect it in Label Studio (Settings > Model, or POST /api/ml) with URL "
        f"{server.url}, auth_method BASIC_AUTH, user {args.user!r}, password "
        + (
            f"{password!r} (generated; set {PASSWORD_ENV} to choose it)"
            if generated
            else f"from ${PASSWORD_ENV}"
        )
        + f"\n  then add the header Authorization: {header if generated else 'Basic ...'} to "
        f"the webhook Label Studio creates for {server.url}/webhook\nCtrl+C stops it.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped.")
    finally:
        server.server_close()
    return 0


def add_connect_arguments(parser):
    """``ls-connect``'s options."""
    parser.add_argument("--url", required=True, help="Label Studio's URL")
    parser.add_argument(
        "--ls-project", type=int, required=True, help="the Label Studio project's id"
    )
    parser.add_argument(
        "--backend-url",
        default="http://127.0.0.1:9090",
        help="the running ls-backend's URL, as Label Studio reaches it (default: %(default)s)",
    )
    parser.add_argument("--user", default="peal-sk", help="the backend's user (default: peal-sk)")
    parser.add_argument(
        "--api-key-env",
        default="LABEL_STUDIO_API_KEY",
        help="environment variable holding the API key or personal access token "
        "(default: %(default)s)",
    )
    return parser


def connect_command(project, args):
    """``peal-sk project ls-connect``."""
    project.close()
    api_key, password = os.environ.get(args.api_key_env), os.environ.get(PASSWORD_ENV)
    if not api_key or not password:
        raise ProjectError(
            f"set {args.api_key_env} (a Label Studio personal access token) and "
            f"{PASSWORD_ENV} (the backend's password)."
        )
    r = connect(
        args.url, args.ls_project, api_key, args.backend_url, user=args.user, password=password
    )
    print(
        f"connected {args.backend_url} to Label Studio project {args.ls_project} (ML backend "
        f"{r['ml_backend']}, webhook {r['webhook']} with the Authorization header)"
    )
    return 0


def reconcile_command(project, args):
    """``peal-sk project ls-reconcile``."""
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        raise ProjectError(
            f"set {args.api_key_env} to a Label Studio API key or personal access token "
            "(Account & Settings > Personal Access Token)."
        )
    project.state.require_writable("ls-reconcile")
    r = reconcile(project, args.url, args.ls_project, api_key, conflicts=args.conflicts)
    print(
        f"pulled {r['annotations']} annotation(s) of {r['tasks']} task(s): {r['labels']} "
        f"label(s) new or changed, {r['withdrawn']} withdrawn"
    )
    for rel, why in r["problems"]:
        print(f"warning: {rel} left as it was: {why}", file=sys.stderr)
    return 1 if r["problems"] else 0
