"""``peal-sk project serve``: label the proposed batch in a browser (standard library only).

A :class:`~http.server.ThreadingHTTPServer` serves one page (``_serve_page.PAGE``) and a
small JSON API; every save goes through the project's transactional import (all or
nothing, history kept, conflicts reported), exactly like ``peal-sk project import``.

Security rules (each has a request-level test in ``tests/test_serve.py``):

* the server binds ``127.0.0.1`` unless told otherwise, and when it binds a loopback
  address it answers only requests whose ``Host`` is a loopback name (DNS rebinding);
* every request needs the random access token (:func:`secrets.token_urlsafe`) printed in
  the URL, like Jupyter's: as the ``token`` query parameter, the ``X-PEAL-Token`` header,
  ``Authorization: token ...``, or the cookie the page sets on its first load; requests
  that change state are POST and must carry the token in the header or the query (a
  cookie alone is refused, so another page in the same browser cannot post), with
  ``Content-Type: application/json`` and a body of at most ``MAX_BODY_BYTES`` (413);
* images are addressed by their row id in the project database, never by a path: only
  images of the project are served, and only when their resolved path (symlinks
  followed) lies under the resolved image folder;
* a malformed request gets a clear 4xx JSON error; an unexpected failure a 500 without
  traceback (the traceback goes to the server's stderr).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import socket
import sqlite3
import stat
import sys
import threading
import traceback
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ._common import default_annotator
from ._project import IMAGE_EXTENSIONS, Project, ProjectError
from ._serve_page import PAGE

__all__ = ["MAX_BODY_BYTES", "LabelServer", "add_serve_arguments", "serve_command"]

#: largest request body accepted (bytes); larger ones get 413
MAX_BODY_BYTES = 1 << 20
#: recorded as the ``source`` of every label saved through the page
SOURCE = "peal-sk project serve"
TOKEN_HEADER = "X-PEAL-Token"
#: seconds a connection may stay silent before it is dropped
REQUEST_TIMEOUT_S = 30
_THUMB = 256
_THUMB_CACHE = 512
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
#: image types a browser displays as they are; others are sent converted to PNG
_BROWSER_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
_ID = re.compile(r"[0-9]{1,18}")


class HTTPError(Exception):
    """An error answered with ``status`` and a JSON body ``{"error": message, ...}``."""

    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status = HTTPStatus(status)
        self.message = message
        self.extra = extra


def _import_records(project, records, *, relabel=False, annotator=None, source=SOURCE):
    """Import ``(relpath, label)`` pairs through the project's transactional import
    (:meth:`Project.import_records`, the same transaction as ``peal-sk project import``)."""
    records = [(str(p), str(lab)) for p, lab in records]
    return project.import_records(records, relabel=relabel, annotator=annotator, source=source)


def _is_loopback(host):
    if host in _LOOPBACK_NAMES:
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LabelServer(ThreadingHTTPServer):
    """The labelling page's HTTP server for the project folder ``project``.

    Parameters
    ----------
    project : str or path-like
        The project folder.
    host : str, default="127.0.0.1"
        Address to bind.
    port : int, default=0
        Port to bind (0: any free port; see :attr:`url`).
    token : str, default=None
        The access token (default: a new random one).
    annotator : str, default=None
        Recorded with every saved label (default: the OS user).
    max_body : int, default=MAX_BODY_BYTES
        Largest request body accepted, in bytes.
    log : file-like or None, default=None
        Where to log requests (the token redacted); errors always go to stderr.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        project,
        *,
        host="127.0.0.1",
        port=0,
        token=None,
        annotator=None,
        max_body=MAX_BODY_BYTES,
        log=None,
    ):
        self.project_path = Path(project)
        proj = Project(self.project_path)
        try:
            if getattr(proj, "readonly", False):
                raise ProjectError(
                    f"{self.project_path} is read-only for this user: the labelling page saves "
                    "labels into it; serve it as a user who may write it."
                )
            self.scan = proj.rescan()  # know the files added since the last command
            self.classes = list(proj.classes)
            self.root = proj.root
        finally:
            proj.close()
        self.project_id = hashlib.sha256(str(self.project_path.resolve()).encode()).hexdigest()[:16]
        self.token = token or secrets.token_urlsafe(32)
        self.annotator = annotator or default_annotator()
        self.max_body = int(max_body)
        self.log = log
        self.save_lock = threading.Lock()
        self.propose_lock = threading.Lock()
        self.suggest_lock = threading.Lock()
        self._suggestions = {}
        self._thumbs = {}
        self._thumbs_lock = threading.Lock()
        self.loopback = _is_loopback(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, int(port)), _Handler)

    @property
    def url(self):
        """The page's URL with the access token."""
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/?token={self.token}"

    @property
    def cookie_name(self):
        # cookies are not separated by port: one name per server
        return f"peal_sk_token_{self.server_address[1]}"

    @contextlib.contextmanager
    def open_project(self):
        """A connection of this thread (SQLite connections stay in their thread)."""
        proj = Project(self.project_path)
        try:
            yield proj
        finally:
            proj.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "peal-sk"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S

    # -- plumbing -----------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if self.server.log is not None:
            text = re.sub(r"token=[^&\s\"]+", "token=<redacted>", format % args)
            print(f"{self.address_string()} - {text}", file=self.server.log, flush=True)

    def log_error(self, format, *args):  # noqa: A002
        text = re.sub(r"token=[^&\s\"]+", "token=<redacted>", format % args)
        if self.server.log is not None:
            print(f"{self.address_string()} - {text}", file=self.server.log, flush=True)

    def _headers(self, status, ctype, length, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status, body, ctype, extra=()):
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, extra=()):
        body = json.dumps(obj, sort_keys=True).encode()
        self._send(status, body, "application/json; charset=utf-8", extra)

    def _error(self, err):
        extra = []
        if err.status == HTTPStatus.METHOD_NOT_ALLOWED:
            extra.append(("Allow", err.extra.pop("allow", "GET")))
        if err.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            self.close_connection = True
            extra.append(("Connection", "close"))
        self._json(err.status, {"error": err.message, **err.extra}, extra)

    # -- every method goes through _dispatch ----------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self):
        try:
            self._route()
        except HTTPError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except ProjectError as exc:
            conflicts = getattr(exc, "conflicts", None)
            if conflicts is not None:  # LabelConflictError: nothing was imported
                self._error(
                    HTTPError(
                        409, str(exc), conflicts=[_conflict(*c) for c in conflicts], imported=0
                    )
                )
            else:
                self._error(HTTPError(400, str(exc)))
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                self._error(
                    HTTPError(503, f"the project is busy with another command ({exc}); retry.")
                )
            else:
                self._internal(exc)
        except Exception as exc:  # noqa: BLE001 - answer 500 without traceback, log it
            self._internal(exc)

    def _internal(self, exc):
        print(
            f"peal-sk project serve: error answering {self.command} {urlsplit(self.path).path}:",
            file=sys.stderr,
        )
        traceback.print_exception(exc, file=sys.stderr)
        with contextlib.suppress(OSError):
            self._error(HTTPError(500, f"internal error ({type(exc).__name__}); see the log."))

    def _route(self):
        if not self.path.startswith("/"):
            raise HTTPError(400, "the request target must be a path starting with '/'.")
        url = urlsplit(self.path)
        try:
            self.query = parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
        except ValueError as exc:
            raise HTTPError(400, f"malformed query string: {exc}") from None
        self._check_host()
        self._check_token()
        path = url.path
        if path == "/":
            self._allow("GET", "HEAD")
            return self._page()
        if path == "/api/batch":
            self._allow("GET", "HEAD")
            return self._get_batch()
        if path == "/api/suggestions":
            self._allow("GET", "HEAD")
            return self._get_suggestions()
        if path == "/api/labels":
            self._allow("POST")
            return self._save(self._body())
        if path == "/api/propose":
            self._allow("POST")
            return self._propose(self._body())
        for prefix, full in (("/image/", True), ("/thumb/", False)):
            if path.startswith(prefix):
                ident = path[len(prefix) :]
                if not _ID.fullmatch(ident):
                    raise HTTPError(404, f"no such image: {path!r} (images are /image/<id>).")
                self._allow("GET", "HEAD")
                return self._image(int(ident), full=full)
        raise HTTPError(404, f"not found: {path!r}")

    def _allow(self, *methods):
        if self.command not in methods:
            raise HTTPError(
                405,
                f"{self.command} is not allowed here; use {' or '.join(methods)}.",
                allow=", ".join(methods),
            )

    def _check_host(self):
        if not self.server.loopback:
            return
        host = self.headers.get("Host")
        if host is None:
            return
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else name
        else:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        if name not in _LOOPBACK_NAMES and not _is_loopback(name):
            raise HTTPError(403, f"Host {host!r} refused: this server answers local names only.")

    def _check_token(self):
        expected = self.server.token.encode()
        given = []
        given += self.query.get("token", [])
        if self.headers.get(TOKEN_HEADER):
            given.append(self.headers[TOKEN_HEADER])
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("token "):
            given.append(auth[6:].strip())
        self.token_in_query = bool(self.query.get("token"))
        if self.command not in ("GET", "HEAD"):
            cookie_ok = False  # a cookie alone never authorises a change
        else:
            cookie_ok = self._cookie_token() is not None
            if cookie_ok:
                given.append(self._cookie_token())
        if not any(hmac.compare_digest(g.encode(), expected) for g in given if g.isascii()):
            where = (
                "in the URL (?token=...)"
                if self.command in ("GET", "HEAD")
                else (f"in the {TOKEN_HEADER} header")
            )
            raise HTTPError(
                403,
                f"missing or wrong access token: open the URL that `peal-sk project serve` "
                f"printed (the token must be {where}).",
            )

    def _cookie_token(self):
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(self.server.cookie_name)
        return None if morsel is None else morsel.value

    def _body(self):
        ctype = self.headers.get("Content-Type", "")
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "chunked bodies are not accepted; send Content-Length.")
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(411, "a POST needs a Content-Length header.")
        try:
            length = int(length)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {length!r}.") from None
        if length > self.server.max_body:
            if length <= 4 * self.server.max_body:  # read it so the client sees the 413
                with contextlib.suppress(OSError):
                    self.rfile.read(length)
            raise HTTPError(
                413, f"request body of {length} bytes; at most {self.server.max_body} accepted."
            )
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise HTTPError(415, f"Content-Type must be application/json; got {ctype!r}.")
        try:
            data = self.rfile.read(length)
        except OSError:
            raise HTTPError(400, "the request body could not be read.") from None
        if len(data) != length:
            raise HTTPError(400, f"incomplete body: {len(data)} of {length} bytes.")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}") from None

    # -- pages and API -----------------------------------------------------------------------
    def _page(self):
        nonce = secrets.token_urlsafe(16)
        config = {
            "token": self.server.token,
            "tokenHeader": TOKEN_HEADER,
            "project": self.server.project_path.resolve().name,
            "projectId": self.server.project_id,
            "classes": self.server.classes,
        }
        text = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
        body = PAGE.replace("__NONCE__", nonce).replace("__CONFIG__", text.replace("&", "\\u0026"))
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        extra = [("Content-Security-Policy", csp)]
        if self.token_in_query:
            extra.append(
                (
                    "Set-Cookie",
                    f"{self.server.cookie_name}={self.server.token}; HttpOnly; "
                    "SameSite=Strict; Path=/",
                )
            )
        self._send(200, body.encode(), "text/html; charset=utf-8", extra)

    def _batch_param(self, required=False):
        values = self.query.get("batch", [])
        if not values or values[0] == "":
            if required:
                raise HTTPError(400, "missing the batch parameter (?batch=<number>).")
            return None
        if not _ID.fullmatch(values[0]):
            raise HTTPError(400, f"batch must be a positive integer; got {values[0]!r}.")
        return int(values[0])

    def _get_batch(self):
        with self.server.open_project() as proj:
            self._json(200, _batch_state(proj, self._batch_param()))

    def _get_suggestions(self):
        batch = self._batch_param(required=True)
        with self.server.open_project() as proj:
            self._json(200, _suggestions(self.server, proj, batch))

    def _save(self, body):
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object {batch, labels: [...]}.")
        unknown = sorted(set(body) - {"batch", "labels"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {unknown}; expected batch and labels.")
        labels = body.get("labels")
        if not isinstance(labels, list) or not labels:
            raise HTTPError(400, "labels must be a non-empty list of {path, label, previous}.")
        batch = body.get("batch")
        if batch is not None and (type(batch) is not int or batch < 1):
            raise HTTPError(400, f"batch must be a positive integer; got {batch!r}.")
        records, previous = [], {}
        for k, item in enumerate(labels, start=1):
            if not isinstance(item, dict):
                raise HTTPError(400, f"labels[{k - 1}] must be an object; got {item!r}.")
            path, label, prev = item.get("path"), item.get("label"), item.get("previous")
            if not isinstance(path, str) or not path:
                raise HTTPError(400, f"labels[{k - 1}].path must be a non-empty string.")
            if label not in self.server.classes:
                raise HTTPError(
                    400,
                    f"labels[{k - 1}].label {label!r} is not a class of the project "
                    f"({', '.join(self.server.classes)}).",
                )
            if prev is not None and not isinstance(prev, str):
                raise HTTPError(400, f"labels[{k - 1}].previous must be a string or null.")
            if path in previous:
                raise HTTPError(400, f"{path!r} appears twice in labels.")
            records.append((path, label))
            previous[path] = prev
        with self.server.save_lock, self.server.open_project() as proj:
            current = _current_labels(proj, list(previous))
            unknown = [p for p in previous if p not in current]
            if unknown:
                raise HTTPError(
                    400,
                    f"{len(unknown)} path(s) are not images of the project: "
                    + "; ".join(unknown[:20]),
                )
            # a label the page did not know about (set elsewhere since it loaded) is a
            # conflict: nothing is imported, the page shows it and the user decides
            stale = [
                (path, current[path], label)
                for path, label in records
                if current[path] is not None
                and current[path] != label
                and current[path] != previous[path]
            ]
            if stale:
                raise HTTPError(
                    409,
                    f"nothing saved: {len(stale)} image(s) were labelled elsewhere since the "
                    "page loaded; the page now shows their saved labels; save again to "
                    "replace them.",
                    conflicts=[_conflict(*c) for c in stale],
                    imported=0,
                )
            relabel = any(
                current[path] is not None and current[path] != label for path, label in records
            )
            report = _import_records(
                proj, records, relabel=relabel, annotator=self.server.annotator, source=SOURCE
            )
            state = _batch_state(proj, batch) if batch is not None else None
        self._json(
            200,
            {
                "report": {
                    "new": report["new"],
                    "relabelled": report["relabelled"],
                    "unchanged": report["unchanged"],
                    "closed_batches": report.get("closed_batches", 0),
                    "conflicts": [_conflict(*c) for c in report["conflicts"]],
                    "conflicts_applied": relabel,
                },
                "state": state,
            },
        )

    def _propose(self, body):
        if not isinstance(body, dict) or set(body) - {"n"}:
            raise HTTPError(400, 'the body must be a JSON object {"n": <batch size>}.')
        n = body.get("n", 20)
        if type(n) is not int or not 1 <= n <= 100_000:
            raise HTTPError(400, f"n must be an integer from 1 to 100000; got {n!r}.")
        if not self.server.propose_lock.acquire(blocking=False):
            raise HTTPError(409, "a batch is being proposed already; wait for it.")
        try:
            with self.server.open_project() as proj:
                result = proj.propose(n)
                state = _batch_state(proj, result["batch"])
        finally:
            self.server.propose_lock.release()
        self._json(200, {"batch": result["batch"], "state": state})

    def _image(self, image_id, *, full):
        with self.server.open_project() as proj:
            row = proj.con.execute(
                "SELECT relpath, status, size, mtime_ns FROM images WHERE id = ?", (image_id,)
            ).fetchone()
        if row is None:
            raise HTTPError(404, f"no image {image_id} in the project.")
        if row["status"] != "present":
            raise HTTPError(404, f"image {row['relpath']} is {row['status']}.")
        root = os.path.realpath(self.server.root)
        real = os.path.realpath(os.path.join(root, row["relpath"]))
        if os.path.commonpath([root, real]) != root:
            raise HTTPError(403, f"image {image_id} resolves outside the image folder; refused.")
        ext = os.path.splitext(real)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            raise HTTPError(403, f"image {image_id} is not an image file; refused.")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(real, flags)
        except OSError:
            raise HTTPError(404, f"image {row['relpath']} cannot be opened.") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise HTTPError(403, f"image {image_id} is not a regular file; refused.")
            if full and ext in _BROWSER_TYPES:
                data, ctype = fh.read(), _BROWSER_TYPES[ext]
            else:
                key = (image_id, st.st_size, st.st_mtime_ns, full)
                with self.server._thumbs_lock:
                    cached = self.server._thumbs.get(key)
                if cached is None:
                    cached = _convert(fh, row["relpath"], thumbnail=not full)
                    with self.server._thumbs_lock:
                        if len(self.server._thumbs) >= _THUMB_CACHE:
                            self.server._thumbs.clear()
                        self.server._thumbs[key] = cached
                data, ctype = cached
        self._send(200, data, ctype)


def _convert(fh, rel, *, thumbnail):
    from PIL import Image

    try:
        with Image.open(fh) as im:
            if thumbnail:
                im.draft("RGB", (_THUMB, _THUMB))
            im = im.convert("RGB")
            if thumbnail:
                im.thumbnail((_THUMB, _THUMB))
            buf = io.BytesIO()
            if thumbnail:
                im.save(buf, format="JPEG", quality=85)
                return buf.getvalue(), "image/jpeg"
            im.save(buf, format="PNG")
            return buf.getvalue(), "image/png"
    except Exception as exc:  # noqa: BLE001 - any decoder error: the image is unusable
        raise HTTPError(
            422, f"image {rel} cannot be decoded ({type(exc).__name__}: {exc})."
        ) from None


def _conflict(path, saved, yours):
    return {"path": path, "saved": saved, "yours": yours}


def _current_labels(proj, paths):
    """``relpath -> current label or None`` for the project's images among ``paths``."""
    out = {}
    for start in range(0, len(paths), 500):
        chunk = paths[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = proj.con.execute(
            f"SELECT i.relpath, l.label FROM images i LEFT JOIN labels l "
            f"ON l.image_id = i.id AND l.superseded = 0 WHERE i.relpath IN ({marks})",
            chunk,
        ).fetchall()
        out.update({r["relpath"]: r["label"] for r in rows})
    return out


def _batch_state(proj, batch_id=None):
    """What the page shows: a batch's items with their current labels, and progress."""
    q = proj.con.execute
    open_ids = [r[0] for r in q("SELECT id FROM batches WHERE closed = 0 ORDER BY id")]
    pool = q(
        "SELECT COUNT(*) FROM images WHERE status = 'present' "
        "AND id NOT IN (SELECT image_id FROM labels WHERE superseded = 0) "
        "AND id NOT IN (SELECT bi.image_id FROM batch_items bi "
        "JOIN batches b ON b.id = bi.batch_id WHERE b.closed = 0)"
    ).fetchone()[0]
    state = {"open_batches": open_ids, "pool": pool, "batch": None, "items": []}
    if batch_id is None:
        row = q("SELECT MAX(id) FROM batches").fetchone()
        batch_id = open_ids[0] if open_ids else row[0]
        if batch_id is None:
            state["progress"] = {"labelled": 0, "total": 0}
            return state
    b = q(
        "SELECT id, created, strategy, config, closed FROM batches WHERE id = ?", (batch_id,)
    ).fetchone()
    if b is None:
        raise HTTPError(404, f"no batch {batch_id} in the project.")
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
        (batch_id,),
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


def _suggestions(server, proj, batch_id):
    """The model's label and confidence for a batch's images (cached per batch and model).

    The model is the latest ``peal-sk project train`` logistic regression when its
    backbone is the project's; otherwise, once two classes have labels, the logistic
    regression that ``propose`` fits on the current labels' embeddings.
    """
    q = proj.con.execute
    if q("SELECT 1 FROM batches WHERE id = ?", (batch_id,)).fetchone() is None:
        raise HTTPError(404, f"no batch {batch_id} in the project.")
    last = q("SELECT id, model, model_path, n_labels FROM trainings ORDER BY id DESC LIMIT 1")
    last = last.fetchone()
    key = (batch_id, None if last is None else last["id"])
    with server.suggest_lock:
        if key in server._suggestions:
            return server._suggestions[key]
        result = _compute_suggestions(proj, batch_id, last)
        server._suggestions[key] = result
        return result


def _logreg(proj):
    """The model ``propose`` fits on embeddings."""
    from ._training import logreg

    return logreg()


def _compute_suggestions(proj, batch_id, last):
    rows = proj.con.execute(
        "SELECT i.id, i.relpath, i.size, i.mtime_ns FROM batch_items bi "
        "JOIN images i ON i.id = bi.image_id WHERE bi.batch_id = ? AND i.status = 'present' "
        "ORDER BY bi.rank",
        (batch_id,),
    ).fetchall()
    try:
        model, source = None, None
        if last is not None and last["model"] == "logreg":
            import joblib

            payload = joblib.load(proj.path / last["model_path"])
            if payload.get("backbone") == proj.backbone:
                model = payload["model"]
                source = f"{last['model_path']} (trained on {last['n_labels']} labels)"
        if model is None:
            labelled = proj.labelled()
            y = [r["label"] for r in labelled]
            if len(set(y)) < 2:
                return {
                    "model": None,
                    "note": "no suggestions yet: they appear once two classes have labels",
                    "items": {},
                }
            model = _logreg(proj).fit(proj.embeddings(labelled), y)
            source = f"logistic regression on the {len(y)} labels when this batch was opened"
        if not rows:
            return {"model": source, "note": "", "items": {}}
        proba = model.predict_proba(proj.embeddings(rows))
    except Exception as exc:  # noqa: BLE001 - the page works without suggestions
        print(
            f"peal-sk project serve: no suggestions ({type(exc).__name__}: {exc})", file=sys.stderr
        )
        return {"model": None, "note": f"no suggestions ({type(exc).__name__}: {exc})", "items": {}}
    classes = [str(c) for c in model.classes_]
    items = {}
    for row, p in zip(rows, proba, strict=True):
        k = int(p.argmax())
        items[str(row["id"])] = {"label": classes[k], "confidence": float(p[k])}
    return {"model": source, "note": "", "items": items}


# -- the command line ------------------------------------------------------------------------
def add_serve_arguments(parser):
    """Add ``serve``'s options to its argparse sub-parser."""
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on (default: %(default)s; 0: any free port)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; anything else "
        "exposes the page, over plain HTTP, to whoever can reach it and has the token)",
    )
    parser.add_argument(
        "--annotator", default=None, help="recorded with every label (default: the OS user)"
    )
    parser.add_argument(
        "--open", action="store_true", help="open the page in the default web browser"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request (token hidden)")
    return parser


def serve_command(project, args):
    """``peal-sk project serve``: run the labelling page until Ctrl+C."""
    project.close()  # the server opens one connection per request thread
    if not 0 <= args.port <= 65535:
        raise ProjectError(f"--port must be from 0 to 65535; got {args.port}.")
    try:
        server = LabelServer(
            args.project,
            host=args.host,
            port=args.port,
            annotator=args.annotator,
            log=sys.stderr if args.verbose else None,
        )
    except OSError as exc:
        raise ProjectError(
            f"cannot listen on {args.host}:{args.port} ({exc}); pick another --port "
            "(0: any free one)."
        ) from exc
    if not server.loopback:
        print(
            f"warning: listening on {args.host}, not only this machine: anyone who can reach "
            "it and sees the token (plain HTTP) can label.",
            file=sys.stderr,
        )
    print(
        f"labelling page of {args.project} (annotator {server.annotator}); open this URL, "
        f"it holds the access token:\n    {server.url}\nCtrl+C stops the server.",
        flush=True,
    )
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped.")
    finally:
        server.server_close()
    return 0
