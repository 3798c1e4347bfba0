"""``peal-sk project`` under abuse: odd label files, read-only projects, a changing
folder, Label Studio round trips and kill -9 in every writing command (issue 16)."""

# ruff: noqa: F811 - the fixtures images and project come from test_project

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from test_project import (  # noqa: E402
    CLASSES,
    all_images,
    cli,
    current_labels,
    db,
    images,  # noqa: F401 - fixture
    project,  # noqa: F401 - fixture
    read_csv,
    truth,
    write_csv,
    write_image,
)

from peal_sk.project import LabelConflictError, Project, ReadOnlyProjectError  # noqa: E402


# -- label files --------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_import_detects_the_delimiter(project, images, tmp_path, delimiter):
    paths = all_images(images)[:4]
    text = f"path{delimiter}label\n" + "".join(f"{p}{delimiter}{truth(p)}\n" for p in paths)
    (tmp_path / "l.csv").write_text(text)
    assert cli("import", project, tmp_path / "l.csv") == 0
    assert current_labels(project) == {p: truth(p) for p in paths}


def test_unbalanced_quote_fails_naming_file_and_line(project, images, tmp_path, capsys):
    a, b, c = all_images(images)[:3]
    bad = tmp_path / "bad.csv"
    bad.write_text(f'path,label\n{a},red\n"{b},green\n{c},blue\n')
    with pytest.raises(SystemExit):
        cli("import", project, bad)
    err = capsys.readouterr().err
    assert f"{bad} line 3: cannot parse" in err and "unbalanced quote" in err
    assert current_labels(project) == {}


def test_one_column_file_fails_instead_of_importing_nothing(project, images, tmp_path, capsys):
    a = all_images(images)[0]
    (tmp_path / "one.csv").write_text(f"{a}\n")
    with pytest.raises(SystemExit):
        cli("import", project, tmp_path / "one.csv")
    assert "no row has a label column" in capsys.readouterr().err


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_byte_order_mark_decides_the_encoding(project, images, tmp_path, encoding):
    a, b = all_images(images)[:2]
    text = f"path\tlabel\n{a}\t{truth(a)}\n{b}\t{truth(b)}\n"
    (tmp_path / "l.tsv").write_bytes(text.encode(encoding))
    assert cli("import", project, tmp_path / "l.tsv") == 0
    assert current_labels(project) == {a: truth(a), b: truth(b)}


def test_wrong_encoding_names_file_and_encoding(project, images, tmp_path, capsys):
    a = all_images(images)[0]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"path,label\n{a},red\ncafé.png,red\n".encode("latin-1"))
    with pytest.raises(SystemExit):
        cli("import", project, latin)
    err = capsys.readouterr().err
    assert f"{latin} line 3: not UTF-8" in err and "Latin-1" in err and "UTF-8" in err
    no_bom = tmp_path / "u16.csv"
    no_bom.write_bytes(f"path,label\n{a},red\n".encode("utf-16-le"))
    with pytest.raises(SystemExit):
        cli("import", project, no_bom)
    assert "UTF-16 without a byte-order mark" in capsys.readouterr().err
    assert current_labels(project) == {}


def test_conflicting_import_is_all_or_nothing_through_the_api(project, images):
    a, b = all_images(images)[:2]
    proj = Project(project)
    try:
        proj.import_records([(a, "red")])
        with pytest.raises(LabelConflictError, match="nothing imported"):
            proj.import_records([(b, "blue"), (a, "green")])
    finally:
        proj.close()
    assert current_labels(project) == {a: "red"}


# -- read-only projects ---------------------------------------------------------------------
def test_read_only_project(project, images, tmp_path, capsys, monkeypatch):
    paths = all_images(images)[:6]
    cli("import", project, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in paths]))
    for p in project.rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    project.chmod(0o555)
    before = (project / "project.sqlite").read_bytes()
    if os.access(project / "project.sqlite", os.W_OK):  # root ignores permissions
        monkeypatch.setattr("peal_sk.project._state.is_writable", lambda path: False)
    try:
        capsys.readouterr()
        assert cli("status", project, "--no-estimate") == 0
        out = capsys.readouterr().out
        assert "read-only project: not rescanned" in out and "6 labelled" in out
        assert cli("export", project, "--out", tmp_path / "e.csv") == 0
        assert {r["path"] for r in read_csv(tmp_path / "e.csv")} == set(paths)
        with pytest.raises(SystemExit):
            cli("import", project, tmp_path / "l.csv")
        err = capsys.readouterr().err
        assert "is read-only" in err and "`import` needs to write" in err
        for command in (["propose", "--n", "2"], ["train"], ["rescan"]):
            with pytest.raises(SystemExit):
                cli(command[0], project, *command[1:])
            assert f"`{command[0]}` needs to write" in capsys.readouterr().err
        assert (project / "project.sqlite").read_bytes() == before
    finally:
        for p in [project, *project.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_read_only_flag_refuses_writes_and_does_not_switch_to_wal(project, images):
    with db(project) as con:  # a project left in rollback-journal mode by another tool
        con.execute("PRAGMA journal_mode = DELETE")
    proj = Project(project, readonly=True)
    try:
        assert proj.status(estimate=False)["scan"] is None
        with pytest.raises(ReadOnlyProjectError, match="`rescan` needs to write"):
            proj.rescan()
        with pytest.raises(ReadOnlyProjectError):
            proj.import_records([(all_images(images)[0], "red")])
    finally:
        proj.close()
    with db(project) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# -- a changing folder ----------------------------------------------------------------------
def test_rescan_names_changed_and_removed_labelled_images(project, images, tmp_path, capsys):
    a, b, c, d = all_images(images)[:4]
    cli("import", project, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in (a, b, c)]))
    os.utime(images / c, ns=(1, 1))  # touched, same content: not reported
    write_image(images / a, "blue", 999)  # new content under the same name
    (images / b).unlink()
    capsys.readouterr()
    assert cli("rescan", project) == 0
    captured = capsys.readouterr()
    assert "0 added, 1 removed, 0 returned, 1 changed" in captured.out
    assert "labelled image(s) changed content under the same name" in captured.err
    assert f"{a} ({truth(a)})" in captured.err
    assert (
        "no longer trained on or exported" in captured.err and f"{b} ({truth(b)})" in captured.err
    )
    assert cli("export", project, "--out", tmp_path / "e.csv") == 0
    assert {r["path"] for r in read_csv(tmp_path / "e.csv")} == {a, c}
    assert cli("export", project, "--out", tmp_path / "h.csv", "--history") == 0
    history = {r["path"]: r["image_status"] for r in read_csv(tmp_path / "h.csv")}
    assert history == {a: "present", b: "missing", c: "present"}
    proj = Project(project)
    try:
        assert [r["relpath"] for r in proj.labelled()] == [a, c]  # what training sees
        assert proj.status(estimate=False)["labels_out_of_use"] == [(b, truth(b))]
    finally:
        proj.close()
    del d


def test_rescan_offers_and_carries_labels_of_renamed_images(project, images, tmp_path, capsys):
    a = all_images(images)[0]
    cli("import", project, write_csv(tmp_path / "l.csv", [[a, truth(a)]]))
    (images / "moved").mkdir()
    (images / a).rename(images / "moved" / "renamed.png")
    capsys.readouterr()
    assert cli("rescan", project) == 0
    err = capsys.readouterr().err
    assert f"{a} -> moved/renamed.png ({truth(a)})" in err and "--carry-renamed" in err
    assert current_labels(project) == {a: truth(a)}  # nothing carried without asking
    assert cli("rescan", project, "--carry-renamed") == 0
    assert "carried 1 label(s) to renamed image(s)" in capsys.readouterr().out
    assert current_labels(project) == {a: truth(a), "moved/renamed.png": truth(a)}
    with db(project) as con:
        source = con.execute("SELECT source FROM labels ORDER BY id DESC").fetchone()[0]
    assert source == f"rescan: carried from {a}"
    assert cli("export", project, "--out", tmp_path / "e.csv") == 0
    assert [r["path"] for r in read_csv(tmp_path / "e.csv")] == ["moved/renamed.png"]


def test_schema_1_project_is_migrated(project, images, tmp_path):
    with db(project) as con:  # what a project made by the previous version looks like
        con.execute("UPDATE schema_version SET version = 1")
        con.execute("ALTER TABLE images DROP COLUMN sha256")
    proj = Project(project)
    try:
        assert proj.rescan()["changed"] == []  # hashes filled in, nothing reported
    finally:
        proj.close()
    with db(project) as con:
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
        assert con.execute("SELECT COUNT(*) FROM images WHERE sha256 IS NULL").fetchone()[0] == 0


# -- Label Studio ---------------------------------------------------------------------------
def _annotate(tasks, labels):
    """What Label Studio's JSON export holds after labelling ``tasks`` with ``labels``
    (the structure of https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks)."""
    out = []
    for k, (task, label) in enumerate(zip(tasks, labels, strict=True), start=1):
        result = [
            {
                "id": f"r{k}",
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "origin": "manual",
                "value": {"choices": [label]},
            }
        ]
        out.append(
            {
                "id": k,
                "data": task["data"],
                "annotations": [
                    {
                        "id": 100 + k,
                        "completed_by": 1,
                        "result": result,
                        "was_cancelled": False,
                        "ground_truth": False,
                        "created_at": "2024-01-01T00:00:00.000000Z",
                        "updated_at": "2024-01-01T00:00:00.000000Z",
                        "lead_time": 1.5,
                        "task": k,
                    }
                ],
                "predictions": task.get("predictions", []),
                "meta": {},
                "created_at": "2024-01-01T00:00:00.000000Z",
                "project": 1,
            }
        )
    return out


def _json_min(annotated):
    """Label Studio's JSON-MIN export: data fields flattened, one key per control tag."""
    return [
        {
            **t["data"],
            "id": t["id"],
            "choice": t["annotations"][0]["result"][0]["value"]["choices"][0],
            "annotator": "alice@example.com",
            "annotation_id": t["annotations"][0]["id"],
            "created_at": "2024-01-01T00:00:00.000000Z",
            "updated_at": "2024-01-01T00:00:00.000000Z",
            "lead_time": 1.5,
        }
        for t in annotated
    ]


def test_label_studio_round_trip(project, images, tmp_path, capsys):
    """Export a batch as tasks, label them as Label Studio would, import each export format.

    Label Studio itself (a Django server) is not installed in CI: the exports are built in
    Label Studio's documented formats.
    """
    warm = [next(p for p in all_images(images) if truth(p) == c) for c in CLASSES[:2]]
    cli("import", project, write_csv(tmp_path / "w.csv", [[p, truth(p)] for p in warm]))
    assert cli("propose", project, "--n", "6") == 0
    capsys.readouterr()
    out = tmp_path / "tasks.json"
    doc_root = images.parent
    assert (
        cli(
            "export", project, "--format", "label-studio", "--out", out, "--document-root", doc_root
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "6 Label Studio tasks of batch 1" in printed and "LOCAL_FILES_DOCUMENT_ROOT" in printed
    tasks = json.loads(out.read_text())
    batch = [r["path"] for r in read_csv(project / "batch-1.csv")]
    assert [t["data"]["peal_sk_path"] for t in tasks] == batch
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d=images/{batch[0]}"
    pred = tasks[0]["predictions"][0]
    assert pred["model_version"].startswith("peal_sk logreg") and 0 < pred["score"] <= 1
    assert pred["result"][0]["from_name"] == "choice" and pred["result"][0]["to_name"] == "image"
    assert pred["result"][0]["type"] == "choices"
    assert pred["result"][0]["value"]["choices"][0] in CLASSES
    config = (tmp_path / "tasks.label-config.xml").read_text()
    assert '<Image name="image" value="$image"/>' in config
    assert '<Choices name="choice" toName="image"' in config
    assert all(f'<Choice value="{c}"/>' in config for c in CLASSES)

    labels = [truth(p) for p in batch]
    annotated = _annotate(tasks, labels)
    annotated[-1]["annotations"][0]["was_cancelled"] = True  # skipped task: not imported
    (tmp_path / "export.json").write_text(json.dumps(annotated))
    assert cli("import", project, tmp_path / "export.json") == 0
    assert "Label Studio JSON: imported 5 new" in capsys.readouterr().out
    assert {p: current_labels(project)[p] for p in batch[:5]} == dict(
        zip(batch[:5], labels[:5], strict=True)
    )

    (tmp_path / "min.json").write_text(json.dumps(_json_min(_annotate(tasks, labels))))
    assert cli("import", project, tmp_path / "min.json") == 0
    assert "Label Studio JSON-MIN: imported 1 new, 0 relabelled, 5 unchanged" in (
        capsys.readouterr().out
    )
    rows = _json_min(_annotate(tasks, labels))
    rows[0]["choice"] = "blue" if labels[0] != "blue" else "red"
    with open(tmp_path / "ls.csv", "w", newline="") as fh:  # Label Studio's CSV export
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli("import", project, tmp_path / "ls.csv") == 1  # a conflict: nothing imported
    assert "nothing imported" in capsys.readouterr().err
    assert cli("import", project, tmp_path / "ls.csv", "--relabel") == 0
    assert current_labels(project)[batch[0]] == rows[0]["choice"]


def test_label_studio_export_cold_start_and_errors(project, images, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli("export", project, "--format", "label-studio", "--out", tmp_path / "t.json")
    assert "no open batch" in capsys.readouterr().err
    assert cli("propose", project, "--n", "3") == 0
    assert cli("export", project, "--format", "label-studio", "--out", tmp_path / "t.json") == 0
    assert "without predictions" in capsys.readouterr().out
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert all("predictions" not in t for t in tasks)
    assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    with pytest.raises(SystemExit):
        cli("export", project, "--format", "label-studio", "--out", tmp_path / "t.json")
    assert "never overwritten without --force" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('[{"data": {"image": "x"}, "annotations": [}')
    with pytest.raises(SystemExit):
        cli("import", project, tmp_path / "bad.json")
    assert f"{tmp_path / 'bad.json'} line 1: not valid JSON" in capsys.readouterr().err


# -- kill -9 in every writing command -------------------------------------------------------
def _kill_when(project, argv, marker):
    env = dict(os.environ, PEAL_SK_TEST_IMPORT_DELAY="30")
    cmd = [sys.executable, "-m", "peal_sk", "project", argv[0], "--project", str(project)]
    proc = subprocess.Popen([*cmd, *argv[1:]], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith(marker):
                break
        else:
            pytest.fail(f"{argv[0]} ended early with {proc.wait()}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with db(project) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kill_during_rescan_leaves_previous_state(project, images):
    write_image(images / "late" / "red_300.png", "red", 300)
    (images / all_images(images)[0]).unlink()
    _kill_when(project, ["rescan"], "rescan in transaction")
    with db(project) as con:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 31
        assert (
            con.execute("SELECT COUNT(*) FROM images WHERE status = 'missing'").fetchone()[0] == 0
        )
    assert cli("rescan", project) == 0
    with db(project) as con:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 32


def test_kill_during_propose_leaves_previous_state(project, images):
    _kill_when(project, ["propose", "--n", "4"], "propose in transaction")
    with db(project) as con:
        assert con.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM batch_items").fetchone()[0] == 0
    assert not (project / "batch-1.csv").exists()
    assert cli("propose", project, "--n", "4") == 0
    assert len(read_csv(project / "batch-1.csv")) == 4


def test_kill_during_train_leaves_previous_state(project, images, tmp_path):
    paths = all_images(images)[:9]
    cli("import", project, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in paths]))
    _kill_when(project, ["train"], "train in transaction")
    with db(project) as con:
        assert con.execute("SELECT COUNT(*) FROM trainings").fetchone()[0] == 0
    assert cli("train", project) == 0  # the unrecorded model file is not replaced
    with db(project) as con:
        assert con.execute("SELECT model_path FROM trainings").fetchone()[0] == (
            "models/model-2-logreg.joblib"
        )
