"""A stand-in for the Hugging Face hub on 127.0.0.1, for the weight-download tests.

It answers ``HEAD`` / ``GET /<repo_id>/resolve/<revision>/<filename>`` as the hub does for a
file (``X-Repo-Commit``, an ``ETag`` holding the file's sha256, ``Content-Length``, byte
ranges for resumed downloads, ``X-Error-Code: EntryNotFound`` for a missing file), which is
what ``huggingface_hub.hf_hub_download`` needs. Every request is logged, and the server can
be told to drop the connection in the middle of a file (then answer 503 until repaired),
as a network failure would.
"""

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


class FakeHub:
    """``with FakeHub({(repo_id, filename): bytes}) as hub: hub.url, hub.requests``."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []  # (method, path, Range header or None)
        self.drop_after = None  # bytes of a GET body sent before the connection drops
        self.down = False  # answer 503 (after a drop, until the test repairs the server)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                if hub.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                match = _PATH.match(self.path)
                data = None
                if match:
                    data = hub.files.get((match["repo"], match["file"]))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = self.headers.get("Range")
                if body and ranged:
                    start = int(re.match(r"bytes=(\d+)-", ranged).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                if hub.drop_after is not None and start == 0:
                    self.wfile.write(data[: hub.drop_after])
                    self.wfile.flush()
                    hub.down = True  # the link is gone: later requests fail too
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def gets(self):
        return [r for r in self.requests if r[0] == "GET"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
