"""``peal-sk project serve``: label the proposed batch in a browser (standard library only).

A :class:`~http.server.ThreadingHTTPServer` serves one page (``_serve_page.PAGE``) and a
small JSON API; every save goes through the project's transactional import (all or
nothing, history kept, conflicts reported), exactly like ``peal-sk project import``.

The HTTP side (routes, the security rules and request parsing) is in ``_serve_http.py``;
the :class:`LabelServer` methods here do the work through the project's ``State`` (all
SQL lives in ``_state.py``). A save is one transaction that checks everything first (the
batch, the paths, labels changed since the page loaded) and commits last: an answer
other than 200 means nothing was saved.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import hashlib
import io
import os
import secrets
import socket
import stat
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from ._common import ProjectError, default_annotator
from ._project import IMAGE_EXTENSIONS, Project
from ._serve_http import MAX_BODY_BYTES, HTTPError, RequestHandler, is_loopback
from ._state import StaleLabelsError

__all__ = ["MAX_BODY_BYTES", "LabelServer", "add_serve_arguments", "serve_command"]

#: recorded as the ``source`` of every label saved through the page
SOURCE = "peal-sk project serve"
_THUMB = 256
_THUMB_CACHE = 512
#: image types a browser displays as they are; others are sent converted to PNG
_BROWSER_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


def _import_records(project, records, *, relabel=False, annotator=None, source=SOURCE):
    """Import ``(relpath, label)`` pairs through the project's transactional import
    (:meth:`Project.import_records`, the same transaction as ``peal-sk project import``)."""
    records = [(str(p), str(lab)) for p, lab in records]
    return project.import_records(records, relabel=relabel, annotator=annotator, source=source)


class LabelServer(ThreadingHTTPServer):
    """The labelling page's HTTP server for the project folder ``project``.

    The server owns the project's state for the page: every read and write the API
    answers is a method here (one project connection per call, in the calling thread);
    the request handler only parses requests and writes responses.

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
        self.loopback = is_loopback(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, int(port)), RequestHandler)

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

    # -- what the API answers --------------------------------------------------------------
    def batch_state(self, batch=None):
        """The page's view of ``batch`` (default: the open one); see ``State.page_state``."""
        with self.open_project() as proj:
            return proj.state.page_state(batch)

    def save(self, records, previous, batch=None):
        """Save ``records`` ``[(relpath, label)]`` in one transaction; ``(report, state)``.

        ``previous`` maps each path to the label the page showed (None: unlabelled). The
        batch, the paths and the current labels are checked first, inside the same
        transaction as the import and the page state of ``batch``: a request that fails
        any check, or a label changed elsewhere since the page loaded
        (:class:`StaleLabelsError`), commits nothing.
        """
        with self.save_lock, self.open_project() as proj, proj.state.write("serve"):
            if batch is not None:
                proj.state.require_batch(batch)
            current = _current_labels(proj, list(previous))
            unknown = [p for p in previous if p not in current]
            if unknown:
                raise ProjectError(
                    f"{len(unknown)} path(s) are not images of the project: "
                    + "; ".join(unknown[:20])
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
                raise StaleLabelsError(stale)
            relabel = any(
                current[path] is not None and current[path] != label for path, label in records
            )
            report = _import_records(
                proj, records, relabel=relabel, annotator=self.annotator, source=SOURCE
            )
            report["conflicts_applied"] = relabel
            return report, proj.state.page_state(batch) if batch is not None else None

    def propose(self, n):
        """Propose a batch of ``n`` images; ``(batch id, its page state)``."""
        if not self.propose_lock.acquire(blocking=False):
            raise HTTPError(409, "a batch is being proposed already; wait for it.")
        try:
            with self.open_project() as proj:
                batch = proj.propose(n)["batch"]
                return batch, proj.state.page_state(batch)
        finally:
            self.propose_lock.release()

    def suggestions(self, batch):
        """The model's label and confidence for a batch's images (cached per batch and model).

        The model is the latest ``peal-sk project train`` logistic regression when its
        backbone is the project's; otherwise, once two classes have labels, the logistic
        regression that ``propose`` fits on the current labels' embeddings.
        """
        with self.open_project() as proj:
            proj.state.require_batch(batch)
            last = proj.state.last_training()
            key = (batch, None if last is None else last["id"])
            with self.suggest_lock:
                if key not in self._suggestions:
                    self._suggestions[key] = _compute_suggestions(proj, batch, last)
                return self._suggestions[key]

    def image(self, image_id, *, full):
        """``(bytes, content type)`` of image ``image_id``: the file, or a PNG / thumbnail."""
        with self.open_project() as proj:
            row = proj.state.image(image_id)
        if row is None:
            raise HTTPError(404, f"no image {image_id} in the project.")
        if row["status"] != "present":
            raise HTTPError(404, f"image {row['relpath']} is {row['status']}.")
        root = os.path.realpath(self.root)
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
                return fh.read(), _BROWSER_TYPES[ext]
            key = (image_id, st.st_size, st.st_mtime_ns, full)
            with self._thumbs_lock:
                cached = self._thumbs.get(key)
            if cached is None:
                cached = _convert(fh, row["relpath"], thumbnail=not full)
                with self._thumbs_lock:
                    if len(self._thumbs) >= _THUMB_CACHE:
                        self._thumbs.clear()
                    self._thumbs[key] = cached
            return cached


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


def _current_labels(proj, paths):
    """``relpath -> current label or None`` for the project's images among ``paths``."""
    return proj.state.current_labels(paths)


def _logreg(proj):
    """The model ``propose`` fits on embeddings."""
    from ._training import logreg

    return logreg()


def _compute_suggestions(proj, batch_id, last):
    rows = proj.state.batch_images(batch_id)
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
