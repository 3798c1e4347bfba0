"""``peal-sk project ls-backend``: the project as a Label Studio ML backend (issue 26).

The backend runs on 127.0.0.1 (in a thread, or as a process for the kill -9 test); a fake
Label Studio REST server on 127.0.0.1 answers ``ls-reconcile``. The real Label Studio
server is driven in tests/test_labelstudio_server.py (its own CI environment).
"""

# ruff: noqa: F811 - the fixture project comes from test_project

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from test_project import CLASSES, TINY, cli, current_labels, db, truth, write_image  # noqa: E402

from peal_sk.project import Project  # noqa: E402
from peal_sk.project._labelstudio import label_config  # noqa: E402
from peal_sk.project._ls_backend import PASSWORD_ENV, LabelStudioBackend  # noqa: E402

PASSWORD = "s3cret-pw"
AUTH = "Basic " + base64.b64encode(f"peal-sk:{PASSWORD}".encode()).decode()
CONFIG = label_config(CLASSES)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, capsys):
    """A project of 120 small images (3 classes)."""
    images = tmp_path / "images"
    for i in range(120):
        write_image(images / f"{CLASSES[i % 3]}_{i}.png", CLASSES[i % 3], i)
    proj = tmp_path / "proj"
    cli("init", proj, "--images", images, "--classes", *CLASSES, *TINY)
    capsys.readouterr()
    return proj


def _names(project):
    return sorted(p.name for p in (project.parent / "images").iterdir())


def _tasks(project, names=None):
    names = _names(project) if names is None else names
    return [
        {"id": k, "data": {"image": f"/data/local-files/?d=images/{n}"}, "project": 1}
        for k, n in enumerate(names, start=1)
    ]


@pytest.fixture
def backend(project):
    servers = []

    def start(**kwargs):
        server = LabelStudioBackend(project, port=0, password=PASSWORD, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(url, path, obj=None, *, auth=AUTH, raw=None, headers=None):
    data = raw if raw is not None else None if obj is None else json.dumps(obj).encode()
    head = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    req = urllib.request.Request(url + path, data=data, headers={**head, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers


def hook(ann_id, task, label, *, user=1, updated="2026-01-01T00:00:00Z", action=None):
    return {
        "action": action or "ANNOTATION_CREATED",
        "project": {"id": 1},
        "task": task,
        "annotation": {
            "id": ann_id,
            "task": task["id"],
            "completed_by": user,
            "updated_at": updated,
            "was_cancelled": False,
            "result": [
                {
                    "from_name": "choice",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [label]},
                }
            ],
        },
    }


def wait_for(predicate, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def label_rows(project):
    with db(project) as con:
        return [
            tuple(r)
            for r in con.execute(
                "SELECT i.relpath, l.label, l.annotator, l.superseded, l.source FROM labels l "
                "JOIN images i ON i.id = l.image_id ORDER BY l.id"
            )
        ]


# -- protocol and security -------------------------------------------------------------------
def test_auth_limits_and_setup(backend, project):
    server = backend(max_body=4096)
    assert server.server_address[0] == "127.0.0.1"
    status, body, headers = call(server.url, "/health", auth=None)
    assert status == 401 and "Basic" in headers["WWW-Authenticate"]
    wrong = "Basic " + base64.b64encode(b"peal-sk:wrong").decode()
    assert call(server.url, "/health", auth=wrong)[0] == 401
    assert call(server.url, "/webhook", {"action": "ANNOTATION_CREATED"}, auth=None)[0] == 401
    assert call(server.url, "/health")[:2] == (
        200,
        {"status": "UP", "model_class": "peal-sk project"},
    )
    # setup checks the labelling config's choices against the project's classes
    status, body, _ = call(server.url, "/setup", {"schema": CONFIG, "project": "1.1"})
    assert status == 200 and body["model_version"].startswith("peal-sk bilaf (cold start)")
    status, body, _ = call(server.url, "/setup", {"schema": label_config(["red", "cat"])})
    assert status == 400 and "missing: ['green', 'blue']" in body["error"]
    assert "not in the project: ['cat']" in body["error"]
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><View/>'
    assert call(server.url, "/setup", {"schema": bomb})[0] == 400
    # size and depth limits; no file path from a request is read
    assert call(server.url, "/webhook", raw=b"{" + b" " * 5000 + b"}")[0] == 413
    assert call(server.url, "/predict", raw=b"[" * 2000 + b"]" * 2000)[0] == 400
    status, body, _ = call(
        server.url,
        "/predict",
        {"tasks": [{"id": 1, "data": {"image": "/etc/passwd"}}], "label_config": CONFIG},
    )
    assert status == 200 and body["results"][0]["result"] == [] and body["results"][0]["score"] == 0
    assert call(server.url, "/nothing")[0] == 404


def test_100_tasks_scored_by_the_strategy_within_10_s(backend, project, tmp_path):
    names = _names(project)
    warm = [n for c in CLASSES for n in [n for n in names if truth(n) == c][:2]]  # 2 a class
    cli("import", project, _csv(tmp_path, warm))
    proj = Project(project)
    proj.embeddings(proj.pool() + proj.labelled())  # the embeddings cache is filled
    proj.close()
    start = time.perf_counter()
    server = backend()  # computes the model and the ranking of the pool
    tasks = [t for t in _tasks(project) if t["data"]["image"].rsplit("/", 1)[1] not in warm]
    tasks = tasks[:100]
    status, body, _ = call(server.url, "/predict", {"tasks": tasks, "label_config": CONFIG})
    elapsed = time.perf_counter() - start
    assert status == 200 and len(body["results"]) == 100
    assert elapsed <= 10, f"100 tasks scored in {elapsed:.1f} s"
    print(f"100 tasks scored in {elapsed:.2f} s (start + predict, cached embeddings)")
    version = body["results"][0]["model_version"]
    assert version.startswith("peal-sk entropy (model), 6 labels")
    for res in body["results"]:
        assert res["model_version"] == version and 0 < res["score"] <= 1
        (choice,) = res["result"]
        assert choice["from_name"] == "choice" and choice["to_name"] == "image"
        assert choice["value"]["choices"][0] in CLASSES
    # the score orders tasks as the strategy ranks them: descending entropy of the model
    from peal_sk.project._training import logreg

    proj = Project(project)
    labelled, pool = proj.labelled(), proj.pool(include_open=True)
    X_lab, X_pool = proj.embeddings(labelled), proj.embeddings(pool)
    proj.close()
    proba = logreg().fit(X_lab, [r["label"] for r in labelled]).predict_proba(X_pool)
    entropy = {r["relpath"]: -(p * np.log(p)).sum() for r, p in zip(pool, proba, strict=True)}
    by_score = [
        t["data"]["image"].rsplit("/", 1)[1]
        for t, _ in sorted(
            zip(tasks, body["results"], strict=False), key=lambda tr: -tr[1]["score"]
        )
    ]
    ent = [entropy[n] for n in by_score]
    assert all(a >= b - 1e-9 for a, b in zip(ent, ent[1:], strict=False))
    # labelled images score 0: nothing to learn from them
    status, body, _ = call(
        server.url, "/predict", {"tasks": _tasks(project, warm[:1]), "label_config": CONFIG}
    )
    assert body["results"][0]["score"] == 0.0


def _csv(tmp_path, names):
    path = tmp_path / "warm.csv"
    path.write_text("path,label\n" + "".join(f"{n},{truth(n)}\n" for n in names))
    return path


# -- webhooks --------------------------------------------------------------------------------
def test_webhooks_land_exactly_once_under_retries_and_duplicates(backend, project):
    server = backend()
    tasks = _tasks(project)[:4]
    a, b, c, d = (t["data"]["image"].rsplit("/", 1)[1] for t in tasks)
    other = {n: next(x for x in CLASSES if x != truth(n)) for n in (a, b, c, d)}
    deliveries = [
        hook(10 + k, t, truth(n)) for k, (t, n) in enumerate(zip(tasks, (a, b, c, d), strict=False))
    ]
    for delivery in deliveries * 3:  # every delivery three times (retries, duplicates)
        assert call(server.url, "/webhook", delivery)[0] == 200
    bulk = {  # the same annotations once more, as Label Studio's bulk event
        "action": "ANNOTATIONS_CREATED",
        "project": {"id": 1},
        "annotation": [d_["annotation"] for d_ in deliveries],
        "task": tasks,
    }
    assert call(server.url, "/webhook", bulk)[0] == 200
    assert wait_for(lambda: len(current_labels(project)) == 4)
    time.sleep(0.5)
    assert sorted(label_rows(project)) == sorted(
        (n, truth(n), "label-studio user 1", 0, "label-studio") for n in (a, b, c, d)
    )
    # an update relabels (history kept); its stale retry afterwards changes nothing
    updated = hook(
        10, tasks[0], other[a], updated="2026-01-02T00:00:00Z", action="ANNOTATION_UPDATED"
    )
    stale = hook(10, tasks[0], truth(a), action="ANNOTATION_UPDATED")  # older updated_at
    sent = (updated, updated, deliveries[0], stale)
    answers = [call(server.url, "/webhook", d)[1]["status"] for d in sent]
    # the first delivery was applied long ago (its body dropped, its digest kept)
    assert answers == ["stored", "duplicate", "duplicate", "stored"]
    assert wait_for(lambda: current_labels(project)[a] == other[a])
    # deleted annotations carry their ids only; the label is withdrawn, kept in history
    gone = {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": 11}]}
    for delivery in (gone, gone, deliveries[1]):  # a late creation does not revive it
        assert call(server.url, "/webhook", delivery)[0] == 200
    assert wait_for(lambda: b not in current_labels(project))
    # a second annotator disagreeing: refused by default, the image keeps its label
    assert call(server.url, "/webhook", hook(20, tasks[2], other[c], user=2))[0] == 200
    # unrelated actions are answered and ignored
    assert call(server.url, "/webhook", {"action": "PROJECT_UPDATED"})[1]["status"] == "ignored"
    time.sleep(1)
    assert current_labels(project) == {a: other[a], c: truth(c), d: truth(d)}
    rows = label_rows(project)
    assert len(rows) == 5  # a twice (relabelled), b once (withdrawn), c, d once
    assert sum(r[0] == a for r in rows) == 2 and sum(r[0] == b for r in rows) == 1


def _start_process(project, env_extra=()):
    env = {**os.environ, PASSWORD_ENV: PASSWORD, **dict(env_extra)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peal_sk",
            "project",
            "ls-backend",
            "--project",
            str(project),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()
    return proc, line.split("listening on ", 1)[1].split()[0]


def test_kill_9_after_the_answer_loses_no_label(project):
    """The delivery is committed before the 200: killed before applying it (the worker is
    slowed down), the backend applies it at the next start."""
    tasks = _tasks(project)[:3]
    proc, url = _start_process(project, {"PEAL_SK_TEST_LS_DELAY": "30"})
    try:
        for k, task in enumerate(tasks):
            name = task["data"]["image"].rsplit("/", 1)[1]
            assert call(url, "/webhook", hook(50 + k, task, truth(name)))[0] == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert current_labels(project) == {}  # answered, not applied yet
    proc, url = _start_process(project)
    try:
        names = [t["data"]["image"].rsplit("/", 1)[1] for t in tasks]
        assert wait_for(lambda: len(current_labels(project)) == 3)
        assert current_labels(project) == {n: truth(n) for n in names}
        assert len(label_rows(project)) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- reconcile -------------------------------------------------------------------------------
class _FakeLabelStudio(ThreadingHTTPServer):
    """Label Studio's REST API as ls-reconcile uses it: the token refresh and the export."""

    def __init__(self, tasks):
        self.tasks, self.requests, self.ml, self.hooks = tasks, [], [], []
        super().__init__(("127.0.0.1", 0), _FakeHandler)


class _FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, None))
        if self.path == "/api/token/refresh" and body["refresh"] == "a.b.c":
            return self._send({"access": "ACCESS"})
        if self.headers.get("Authorization") != "Bearer ACCESS":
            return self._send({"detail": "no"}, 401)
        if self.path == "/api/ml":  # as Label Studio does: health and setup, then a webhook
            self.server.ml.append({**body, "id": 7, "state": self._check_backend(body)})
            self.server.hooks.append({"id": 9, "url": body["url"] + "/webhook", "headers": {}})
            return self._send(self.server.ml[-1], 201)
        self._send({"detail": "not found"}, 404)

    @staticmethod
    def _check_backend(body):
        basic = f"{body['basic_auth_user']}:{body['basic_auth_pass']}"
        auth = "Basic " + base64.b64encode(basic.encode()).decode()
        ok = call(body["url"], "/health", auth=auth)[0] == 200
        ok = ok and call(body["url"], "/setup", {"schema": CONFIG}, auth=auth)[0] == 200
        return "CO" if ok else "ER"

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer ACCESS":
            return self._send({"detail": "no"}, 401)
        if self.path == "/api/ml/7":
            self.server.ml[0].update(body, state=self._check_backend(body))
            return self._send(self.server.ml[0])
        hook_ = next(h for h in self.server.hooks if self.path == f"/api/webhooks/{h['id']}/")
        hook_.update(body)
        self._send(hook_)

    def do_GET(self):
        self.server.requests.append(("GET", self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Bearer ACCESS":
            return self._send({"detail": "no"}, 401)
        if self.path.startswith("/api/projects/1/export?exportType=JSON"):
            return self._send(self.server.tasks)
        if self.path == "/api/ml?project=1":
            return self._send(self.server.ml)
        if self.path == "/api/webhooks/?project=1":
            return self._send(self.server.hooks)
        self._send({"detail": "not found"}, 404)


def test_reconcile_after_downtime_matches_label_studio(backend, project, monkeypatch, capsys):
    server = backend()
    tasks = _tasks(project)[:5]
    names = [t["data"]["image"].rsplit("/", 1)[1] for t in tasks]
    other = {n: next(x for x in CLASSES if x != truth(n)) for n in names}
    for k in range(3):  # annotations 0-2 delivered while the backend ran
        assert call(server.url, "/webhook", hook(100 + k, tasks[k], truth(names[k])))[0] == 200
    assert wait_for(lambda: len(current_labels(project)) == 3)
    server.shutdown()
    # meanwhile in Label Studio (deliveries missed): 0 relabelled, 1 deleted, 3 and 4 new
    anns = {
        0: hook(100, tasks[0], other[names[0]], updated="2026-02-01T00:00:00Z")["annotation"],
        2: hook(102, tasks[2], truth(names[2]))["annotation"],
        3: hook(103, tasks[3], truth(names[3]), user=3)["annotation"],
        4: hook(104, tasks[4], truth(names[4]))["annotation"],
    }
    exported = [{**t, "annotations": [anns[k]] if k in anns else []} for k, t in enumerate(tasks)]
    fake = _FakeLabelStudio(exported)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "a.b.c")
        url = f"http://127.0.0.1:{fake.server_address[1]}"
        assert cli("ls-reconcile", project, "--url", url, "--ls-project", "1") == 0
        out = capsys.readouterr().out
        assert "pulled 4 annotation(s) of 5 task(s): 3 label(s) new or changed, 1 withdrawn" in out
        expected = {names[0]: other[names[0]], **{names[k]: truth(names[k]) for k in (2, 3, 4)}}
        assert current_labels(project) == expected
        assert cli("ls-reconcile", project, "--url", url, "--ls-project", "1") == 0
        assert "0 label(s) new or changed, 0 withdrawn" in capsys.readouterr().out
        assert current_labels(project) == expected
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong.key.x")
        with pytest.raises(SystemExit):
            cli("ls-reconcile", project, "--url", url, "--ls-project", "1")
        assert "cannot read the annotations of Label Studio project 1" in capsys.readouterr().err
    finally:
        fake.shutdown()
        fake.server_close()


def test_retrain_every_n_labels_gives_a_new_model_version(backend, project, tmp_path):
    names = _names(project)
    warm = [n for c in CLASSES for n in [n for n in names if truth(n) == c][:2]]
    cli("import", project, _csv(tmp_path, warm))
    server = backend(retrain_every=3)
    first = call(server.url, "/setup", {"schema": CONFIG})[1]["model_version"]
    assert "training" not in first
    tasks = [t for t in _tasks(project) if t["data"]["image"].rsplit("/", 1)[1] not in warm][:3]
    for k, task in enumerate(tasks):
        name = task["data"]["image"].rsplit("/", 1)[1]
        assert call(server.url, "/webhook", hook(300 + k, task, truth(name)))[0] == 200

    def version():
        return call(server.url, "/setup", {"schema": CONFIG})[1]["model_version"]

    assert wait_for(lambda: "training 1" in version(), timeout=60)
    assert version().startswith("peal-sk entropy (model), 9 labels, training 1")
    status, body, _ = call(server.url, "/predict", {"tasks": tasks, "label_config": CONFIG})
    assert all(r["model_version"] == version() for r in body["results"])


def test_connect_sets_basic_auth_and_the_webhook_header(backend, project, monkeypatch, capsys):
    """ls-connect adds the backend (the fake Label Studio calls /health and /setup with the
    credentials, as the real one does) and puts the Authorization header on its webhook."""
    server = backend()
    fake = _FakeLabelStudio([])
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{fake.server_address[1]}"
        args = ["--url", url, "--ls-project", "1", "--backend-url", server.url]
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "a.b.c")
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        with pytest.raises(SystemExit):
            cli("ls-connect", project, *args)
        assert "could not connect the backend" in capsys.readouterr().err
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        assert cli("ls-connect", project, *args) == 0
        assert "(ML backend 7, webhook 9 with the Authorization header)" in capsys.readouterr().out
        assert [m["state"] for m in fake.ml] == ["CO"]  # the same backend, updated
        (hook_,) = {h["id"]: h for h in fake.hooks}.values()
        task = _tasks(project)[0]
        name = task["data"]["image"].rsplit("/", 1)[1]
        delivery = hook(1, task, truth(name))
        assert (
            call(server.url, "/webhook", delivery, auth=hook_["headers"]["Authorization"])[0] == 200
        )
        assert wait_for(lambda: current_labels(project) == {name: truth(name)})
    finally:
        fake.shutdown()
        fake.server_close()
