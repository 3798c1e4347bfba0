"""The HTTP side of ``peal-sk project serve``: routes, security checks, request parsing.

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
  traceback (the traceback goes to the server's stderr);
* a save is one transaction that checks everything first (the batch, the paths, labels
  changed since the page loaded) and commits last: an answer other than 200 means
  nothing was saved.

Requests are routed by the table ``_ROUTES``; the handler parses and answers them, and
the :class:`LabelServer` methods do the work through the project's ``State`` (all SQL
lives in ``_state.py``). Errors are told apart by type: ``LabelConflictError`` is 409,
``UnknownBatchError`` 404, ``ProjectBusyError`` 503, other ``ProjectError`` 400.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import hmac
import ipaddress
import json
import re
import secrets
import sys
import traceback
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from ._common import LabelConflictError, ProjectError
from ._serve_page import PAGE
from ._state import ProjectBusyError, UnknownBatchError

__all__ = ["MAX_BODY_BYTES", "TOKEN_HEADER", "HTTPError", "RequestHandler", "is_loopback"]

#: largest request body accepted (bytes); larger ones get 413
MAX_BODY_BYTES = 1 << 20
TOKEN_HEADER = "X-PEAL-Token"
#: seconds a connection may stay silent before it is dropped
REQUEST_TIMEOUT_S = 30
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_ID = re.compile(r"[0-9]{1,18}")
#: the largest batch number SQLite can hold (a larger one is refused before any work)
_MAX_BATCH = 2**63 - 1


class HTTPError(Exception):
    """An error answered with ``status`` and a JSON body ``{"error": message, ...}``."""

    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status = HTTPStatus(status)
        self.message = message
        self.extra = extra


def is_loopback(host):
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: path -> (allowed methods, handler method); ``/image/<id>`` and ``/thumb/<id>`` by prefix
_ROUTES = {
    "/": (("GET", "HEAD"), "_page"),
    "/api/batch": (("GET", "HEAD"), "_get_batch"),
    "/api/suggestions": (("GET", "HEAD"), "_get_suggestions"),
    "/api/labels": (("POST",), "_post_labels"),
    "/api/propose": (("POST",), "_post_propose"),
}
_PREFIX_ROUTES = {"/image/": "_get_image", "/thumb/": "_get_thumb"}


class RequestHandler(BaseHTTPRequestHandler):
    """Parses and answers one request; the work is done by the server (a ``LabelServer``)."""

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
        except LabelConflictError as exc:  # nothing was imported
            conflicts = [_conflict(*c) for c in exc.conflicts]
            self._error(HTTPError(409, str(exc), conflicts=conflicts, imported=0))
        except UnknownBatchError as exc:
            self._error(HTTPError(404, str(exc)))
        except ProjectBusyError as exc:
            self._error(HTTPError(503, str(exc)))
        except ProjectError as exc:
            self._error(HTTPError(400, str(exc)))
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
        if path in _ROUTES:
            methods, handler = _ROUTES[path]
            self._allow(*methods)
            return getattr(self, handler)()
        for prefix, handler in _PREFIX_ROUTES.items():
            if path.startswith(prefix):
                ident = path[len(prefix) :]
                if not _ID.fullmatch(ident):
                    raise HTTPError(404, f"no such image: {path!r} (images are /image/<id>).")
                self._allow("GET", "HEAD")
                return getattr(self, handler)(int(ident))
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
        if name not in _LOOPBACK_NAMES and not is_loopback(name):
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
        except RecursionError:
            raise HTTPError(
                400, "the body is not a label request: its JSON is nested too deeply."
            ) from None

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
        self._json(200, self.server.batch_state(self._batch_param()))

    def _get_suggestions(self):
        self._json(200, self.server.suggestions(self._batch_param(required=True)))

    def _get_image(self, image_id):
        self._send(200, *self.server.image(image_id, full=True))

    def _get_thumb(self, image_id):
        self._send(200, *self.server.image(image_id, full=False))

    def _post_labels(self):
        records, previous, batch = _label_request(self._body(), self.server.classes)
        report, state = self.server.save(records, previous, batch)
        conflicts = [_conflict(*c) for c in report["conflicts"]]
        self._json(
            200,
            {
                "report": {
                    "new": report["new"],
                    "relabelled": report["relabelled"],
                    "unchanged": report["unchanged"],
                    "closed_batches": report.get("closed_batches", 0),
                    "conflicts": conflicts,
                    "conflicts_applied": report["conflicts_applied"],
                },
                "state": state,
            },
        )

    def _post_propose(self):
        body = self._body()
        if not isinstance(body, dict) or set(body) - {"n"}:
            raise HTTPError(400, 'the body must be a JSON object {"n": <batch size>}.')
        n = body.get("n", 20)
        if type(n) is not int or not 1 <= n <= 100_000:
            raise HTTPError(400, f"n must be an integer from 1 to 100000; got {n!r}.")
        batch, state = self.server.propose(n)
        self._json(200, {"batch": batch, "state": state})


def _label_request(body, classes):
    """``(records, previous, batch)`` of a ``POST /api/labels`` body, or a 400."""
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object {batch, labels: [...]}.")
    unknown = sorted(set(body) - {"batch", "labels"})
    if unknown:
        raise HTTPError(400, f"unknown field(s) {unknown}; expected batch and labels.")
    labels = body.get("labels")
    if not isinstance(labels, list) or not labels:
        raise HTTPError(400, "labels must be a non-empty list of {path, label, previous}.")
    batch = body.get("batch")
    if batch is not None and (type(batch) is not int or not 1 <= batch <= _MAX_BATCH):
        raise HTTPError(
            400, f"batch must be a positive integer (at most {_MAX_BATCH}); got {batch!r}."
        )
    records, previous = [], {}
    for k, item in enumerate(labels):
        if not isinstance(item, dict):
            raise HTTPError(400, f"labels[{k}] must be an object; got {item!r}.")
        path, label, prev = item.get("path"), item.get("label"), item.get("previous")
        if not isinstance(path, str) or not path:
            raise HTTPError(400, f"labels[{k}].path must be a non-empty string.")
        if label not in classes:
            raise HTTPError(
                400,
                f"labels[{k}].label {label!r} is not a class of the project "
                f"({', '.join(classes)}).",
            )
        if prev is not None and not isinstance(prev, str):
            raise HTTPError(400, f"labels[{k}].previous must be a string or null.")
        if path in previous:
            raise HTTPError(400, f"{path!r} appears twice in labels.")
        records.append((path, label))
        previous[path] = prev
    return records, previous, batch


def _conflict(path, saved, yours):
    return {"path": path, "saved": saved, "yours": yours}
