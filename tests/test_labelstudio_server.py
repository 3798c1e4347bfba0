"""Against a real Label Studio server (issue 26): the file round trip with default options
and the ML backend, driven through Label Studio's REST API.

Runs only with ``-m labelstudio`` (deselected from the main run) and only where
``PEAL_SK_LABEL_STUDIO`` names a ``label-studio`` executable (its own virtual
environment: ``label-studio==1.23.2 "sentry-sdk<3"``; ``.ci/run`` builds it). Without it
the tests skip, saying why; with ``PEAL_SK_REQUIRE_LABEL_STUDIO=1`` they fail instead.
One server is started for the module, on 127.0.0.1, with a temporary data folder.
"""

# ruff: noqa: F811 - the fixtures images and project come from test_project

import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.labelstudio
pytest.importorskip("torch")

from test_project import CLASSES, TINY, cli, current_labels, truth, write_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EMAIL, PASSWORD = "ci@example.com", "ci-password-123"
BACKEND_PASSWORD = "backend-pw-456"
STARTUP_S = 240


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A Label Studio server and an authenticated REST client (personal access token)."""

    def __init__(self, exe, tmp):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.docroot = tmp / "docroot"
        self.docroot.mkdir()
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(tmp / "ls-data"),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.docroot),
            "ML_BLOCK_LOCAL_IP": "false",  # the backend runs on 127.0.0.1
            "SSRF_PROTECTION_ENABLED": "false",  # so does its webhook
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
        self.log = open(tmp / "label-studio.log", "w")  # noqa: SIM115 - closed in stop()
        start = time.monotonic()
        self.proc = subprocess.Popen(
            [
                exe,
                "start",
                "--no-browser",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--username",
                EMAIL,
                "--password",
                PASSWORD,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        while time.monotonic() - start < STARTUP_S:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Label Studio exited: {(tmp / 'label-studio.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"Label Studio did not start in {STARTUP_S} s")
        self.startup_s = time.monotonic() - start
        print(f"Label Studio started in {self.startup_s:.0f} s", file=sys.stderr)
        self.pat = self._personal_access_token()
        self.access = self.post("/api/token/refresh", {"refresh": self.pat}, auth=False)["access"]

    def _personal_access_token(self):
        """Log in through the form (session + CSRF), then create a personal access token."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(self.url + "/user/login/").read()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": csrf, "email": EMAIL, "password": PASSWORD}
        ).encode()
        headers = {"Referer": self.url + "/user/login/"}
        opener.open(urllib.request.Request(self.url + "/user/login/", form, headers)).read()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        req = urllib.request.Request(
            self.url + "/api/token/",
            b"{}",
            {"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": self.url + "/"},
        )
        with opener.open(req) as resp:
            return json.loads(resp.read())["token"]

    def request(self, method, path, obj=None, *, auth=True, raw=False):
        data = None if obj is None else json.dumps(obj).encode()
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.access}"
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from None
        return body if raw else (json.loads(body) if body else None)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, obj=None, **kw):
        return self.request("POST", path, obj, **kw)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    exe = os.environ.get("PEAL_SK_LABEL_STUDIO")
    if not exe or not shutil.which(exe):
        message = (
            "Label Studio is not installed: set PEAL_SK_LABEL_STUDIO to a label-studio "
            "executable (pip install label-studio==1.23.2 'sentry-sdk<3' in its own venv)"
        )
        if os.environ.get("PEAL_SK_REQUIRE_LABEL_STUDIO"):
            pytest.fail(message)
        pytest.skip(message)
    server = LabelStudio(exe, tmp_path_factory.mktemp("ls"))
    yield server
    server.stop()


def _project(server, name, classes=CLASSES):
    """A peal-sk project on images under Label Studio's document root."""
    images = server.docroot / name
    for i in range(24):
        write_image(images / f"{classes[i % 3]}_{i}.png", classes[i % 3], i)
    proj = images.parent.parent / f"proj-{name}"
    cli("init", proj, "--images", images, "--classes", *classes, *TINY)
    warm = [f"{c}_{i}.png" for i, c in enumerate(classes)]
    (proj.parent / f"warm-{name}.csv").write_text(
        "path,label\n" + "".join(f"{n},{truth(n)}\n" for n in warm)
    )
    cli("import", proj, proj.parent / f"warm-{name}.csv")
    return proj, images


def _ls_project(server, tasks_file, images, title):
    config = tasks_file.with_name(f"{tasks_file.stem}.label-config.xml").read_text()
    ls_proj = server.post("/api/projects", {"title": title, "label_config": config})["id"]
    storage = {"project": ls_proj, "path": str(images), "title": "images", "use_blob_urls": False}
    server.post("/api/storages/localfiles", storage)
    server.post(f"/api/projects/{ls_proj}/import", json.loads(tasks_file.read_text()))
    tasks = server.get(f"/api/tasks?project={ls_proj}&page_size=100&fields=all")["tasks"]
    return ls_proj, tasks


def _annotate(server, task, label):
    result = [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]
    return server.post(f"/api/tasks/{task['id']}/annotations", {"result": result})


def _name(task):
    return task["data"]["peal_sk_path"]


def test_file_round_trip_with_default_options(label_studio, capsys):
    server = label_studio
    proj, images = _project(server, "roundtrip")
    assert cli("propose", proj, "--n", "6") == 0
    out = server.docroot.parent / "tasks.json"
    capsys.readouterr()
    assert cli("export", proj, "--format", "label-studio", "--out", out) == 0  # defaults
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={server.docroot.resolve()}" in (
        capsys.readouterr().out
    )
    ls_proj, tasks = _ls_project(server, out, images, "round trip")
    assert len(tasks) == 6
    assert all(t["predictions"] and t["predictions"][0]["score"] > 0 for t in tasks)
    png = server.get(tasks[0]["data"]["image"], raw=True)  # the image is served
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for task in tasks:
        _annotate(server, task, truth(_name(task)))
    expected = {_name(t): truth(_name(t)) for t in tasks}
    for kind, name in (("JSON", "e.json"), ("JSON_MIN", "e-min.json"), ("CSV", "e.csv")):
        body = server.get(f"/api/projects/{ls_proj}/export?exportType={kind}", raw=True)
        (out.parent / name).write_bytes(body)
        assert cli("import", proj, out.parent / name) == 0
        labels = current_labels(proj)
        assert {n: labels[n] for n in expected} == expected, kind
    printed = capsys.readouterr().out
    assert "Label Studio JSON: imported 6 new" in printed
    assert "Label Studio JSON-MIN: imported 0 new, 0 relabelled, 6 unchanged" in printed
    assert "CSV: imported 0 new, 0 relabelled, 6 unchanged" in printed
    assert cli("status", proj, "--no-estimate") == 0
    # Label Studio's JSON export names the annotator by user id (the first import's)
    assert "labels per annotator: label-studio user 1 6" in capsys.readouterr().out


def _start_backend(proj):
    env = {**os.environ, "PEAL_SK_LS_PASSWORD": BACKEND_PASSWORD}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peal_sk",
            "project",
            "ls-backend",
            "--project",
            str(proj),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line
    return proc, line.split("listening on ", 1)[1].split()[0]


def _wait(predicate, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_ml_backend(label_studio, monkeypatch, capsys):
    server = label_studio
    proj, images = _project(server, "backend")
    assert cli("propose", proj, "--n", "8") == 0
    out = server.docroot.parent / "backend-tasks.json"
    assert cli("export", proj, "--format", "label-studio", "--out", out) == 0
    ls_proj, tasks = _ls_project(server, out, images, "ml backend")
    # tasks without pre-annotations: the backend's predictions are what appears
    for task in tasks:
        for pred in task["predictions"]:
            server.request("DELETE", f"/api/predictions/{pred['id']}")
    proc, url = _start_backend(proj)
    try:
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.pat)
        monkeypatch.setenv("PEAL_SK_LS_PASSWORD", BACKEND_PASSWORD)
        args = ["--url", server.url, "--ls-project", str(ls_proj), "--backend-url", url]
        assert cli("ls-connect", proj, *args) == 0  # health and setup passed: connected
        (ml,) = server.get(f"/api/ml?project={ls_proj}")
        assert ml["state"] == "CO" and ml["auth_method"] == "BASIC_AUTH"
        (hook,) = [
            h
            for h in server.get(f"/api/webhooks/?project={ls_proj}")
            if h["url"] == url + "/webhook"
        ]
        assert hook["headers"]["Authorization"].startswith("Basic ")

        server.post(
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={ls_proj}",
            {"selectedItems": {"all": True, "excluded": []}},
        )
        tasks = server.get(f"/api/tasks?project={ls_proj}&page_size=100&fields=all")["tasks"]
        preds = [p for t in tasks for p in t["predictions"]]
        assert len(preds) == len(tasks) == 8
        assert all(p["model_version"].startswith("peal-sk entropy (model)") for p in preds)
        scores = sorted(p["score"] for p in preds)
        assert scores[-1] == 1.0 and len(set(scores)) == 8  # a strict order
        # annotate: the webhook brings the labels into the project database
        for task in tasks[:3]:
            _annotate(server, task, truth(_name(task)))
        names = [_name(t) for t in tasks[:3]]
        assert _wait(lambda: all(n in current_labels(proj) for n in names))
        assert {n: current_labels(proj)[n] for n in names} == {n: truth(n) for n in names}
        # a deleted annotation withdraws its label
        ann = server.get(f"/api/tasks/{tasks[0]['id']}/annotations")[0]
        server.request("DELETE", f"/api/annotations/{ann['id']}")
        assert _wait(lambda: names[0] not in current_labels(proj))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # downtime: an annotation whose webhook nobody received, then reconcile
    _annotate(server, tasks[3], truth(_name(tasks[3])))
    capsys.readouterr()
    assert cli("ls-reconcile", proj, "--url", server.url, "--ls-project", str(ls_proj)) == 0
    assert "1 label(s) new or changed, 0 withdrawn" in capsys.readouterr().out
    labels = current_labels(proj)
    assert {n: labels.get(n) for n in [_name(t) for t in tasks[:4]]} == {
        _name(tasks[0]): None,
        **{_name(t): truth(_name(t)) for t in tasks[1:4]},
    }
