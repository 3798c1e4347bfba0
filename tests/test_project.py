"""``peal-sk project``: the labelling loop on an image folder (SQLite state)."""

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from peal_sk.__main__ import main  # noqa: E402

CLASSES = ["red", "green", "blue"]
TINY = [
    "--backbone",
    "vit_small_patch14_dinov2",
    "--no-pretrained",
    "--img-size",
    "14",
    "--backbone-kwargs",
    '{"depth": 1, "embed_dim": 16, "num_heads": 2, "global_pool": "avg"}',
]


def write_image(path, cls, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, size=(16, 16, 3)).astype(np.uint8)
    a[..., CLASSES.index(cls)] += 180
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


@pytest.fixture
def images(tmp_path):
    """30 small PNGs of 3 classes (half in a sub-folder) and one corrupt PNG."""
    root = tmp_path / "images"
    for i in range(30):
        cls = CLASSES[i % 3]
        write_image(root / ("sub" if i % 2 else "") / f"{cls}_{i}.png", cls, i)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def project(tmp_path, images, capsys):
    proj = tmp_path / "proj"
    cli("init", proj, "--images", str(images), "--classes", *CLASSES, *TINY)
    capsys.readouterr()
    return proj


def cli(command, proj, *args):
    return main(["project", command, "--project", str(proj), *map(str, args)])


def truth(path):
    return os.path.basename(path).split("_")[0]


def write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def fill(batch_csv, skip=0):
    """Fill a batch CSV's label column with the true classes (leaving ``skip`` empty)."""
    rows = read_csv(batch_csv)
    for row in rows[skip:]:
        row["label"] = truth(row["path"])
    write_csv(batch_csv, [[r["path"], r["score"], r["label"]] for r in rows], rows[0].keys())
    return rows


def db(proj):
    con = sqlite3.connect(proj / "project.sqlite")
    con.row_factory = sqlite3.Row
    return con


def current_labels(proj):
    with db(proj) as con:
        return dict(
            con.execute(
                "SELECT i.relpath, l.label FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.superseded = 0"
            ).fetchall()
        )


def all_images(images):
    return sorted(p.relative_to(images).as_posix() for p in images.rglob("*_*.png"))


def test_whole_loop(project, images, tmp_path, capsys):
    with db(project) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 31
    assert cli("propose", project, "--n", "6") == 0
    out = capsys.readouterr().out
    assert "batch 1: 6 images (cold start: bilaf)" in out
    rows = read_csv(project / "batch-1.csv")
    assert [list(r) for r in rows[:1]] == [["path", "score", "label"]]
    assert len(rows) == 6 and all(r["label"] == "" for r in rows)
    page = (project / "batch-1.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 6 and rows[0]["path"] in page

    fill(project / "batch-1.csv", skip=1)  # one left empty: skipped, batch stays open
    assert cli("import", project, project / "batch-1.csv") == 0
    assert "imported 5 new" in capsys.readouterr().out
    labels = current_labels(project)
    assert len(labels) == 5 and all(truth(p) == lab for p, lab in labels.items())

    assert cli("propose", project, "--n", "9") == 0
    capsys.readouterr()
    second = read_csv(project / "batch-2.csv")
    assert not {r["path"] for r in second} & {r["path"] for r in rows}  # open batch too
    fill(project / "batch-2.csv")
    fill(project / "batch-1.csv")
    assert cli("import", project, project / "batch-2.csv") == 0
    assert cli("import", project, project / "batch-1.csv") == 0
    out = capsys.readouterr().out
    assert "imported 1 new, 0 relabelled, 5 unchanged" in out and "1 batch(es) closed" in out

    assert cli("status", project) == 0
    out = capsys.readouterr().out
    assert "15 labelled, 15 unlabelled, 0 missing, 1 unreadable" in out
    assert "batches: 2 (0 open)" in out
    if min(list(map(truth, current_labels(project))).count(c) for c in CLASSES) >= 2:
        assert "validation estimate: " in out and "CV accuracy of logreg" in out
    else:
        assert "no estimate: cross-validation needs >= 2 labels of every class" in out
    assert "no training yet" in out

    assert cli("train", project) == 0
    out = capsys.readouterr().out
    model = project / "models" / "model-1-logreg.joblib"
    assert model.is_file() and str(model) in out

    assert cli("propose", project, "--n", "5") == 0
    assert "(model: entropy)" in capsys.readouterr().out
    third = {r["path"] for r in read_csv(project / "batch-3.csv")}
    assert len(third) == 5 and not third & set(current_labels(project))
    with db(project) as con:
        batch = con.execute("SELECT strategy, config, closed FROM batches WHERE id = 3").fetchone()
        assert batch["strategy"] == "entropy" and batch["closed"] == 0
        assert '"phase": "model"' in batch["config"]
        assert con.execute("SELECT COUNT(*) FROM batch_items WHERE batch_id = 3").fetchone()[0] == 5

    assert cli("status", project) == 0
    out = capsys.readouterr().out
    assert "learning curve (at each train):" in out and "models/model-1-logreg.joblib" in out

    out_csv = tmp_path / "labels.csv"
    assert cli("export", project, "--out", out_csv) == 0
    assert "model-1-logreg.joblib" in capsys.readouterr().out
    exported = read_csv(out_csv)
    assert list(exported[0]) == ["path", "label", "annotator", "time"]
    assert {r["path"]: r["label"] for r in exported} == current_labels(project)


def test_reimport_is_idempotent(project, images, tmp_path, capsys):
    rows = [[p, truth(p)] for p in all_images(images)[:8]]
    path = write_csv(tmp_path / "labels.csv", rows)
    assert cli("import", project, path) == 0
    assert "imported 8 new" in capsys.readouterr().out
    assert cli("import", project, path) == 0
    assert "imported 0 new, 0 relabelled, 8 unchanged" in capsys.readouterr().out
    with db(project) as con:
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 8


def test_conflict_reported_then_relabel_keeps_history(project, images, tmp_path, capsys):
    a, b = all_images(images)[:2]
    assert cli("import", project, write_csv(tmp_path / "one.csv", [[a, "red"], [b, "red"]])) == 0
    capsys.readouterr()
    c = all_images(images)[2]
    two = write_csv(tmp_path / "two.csv", [[a, "blue"], [b, "red"], [c, "green"]])
    assert cli("import", project, two) == 1
    err = capsys.readouterr().err
    assert f"{a}: red -> blue" in err and "nothing imported" in err and "--relabel" in err
    assert current_labels(project) == {a: "red", b: "red"}  # all or nothing: c not imported

    assert cli("import", project, two, "--relabel", "--annotator", "alice") == 0
    out = capsys.readouterr().out
    assert "1 new, 1 relabelled" in out and f"{a}: red -> blue" in out
    assert current_labels(project)[a] == "blue"
    with db(project) as con:
        history = con.execute(
            "SELECT label, annotator, superseded FROM labels l JOIN images i "
            "ON i.id = l.image_id WHERE i.relpath = ? ORDER BY l.id",
            (a,),
        ).fetchall()
    assert [tuple(h)[::2] for h in history] == [("red", 1), ("blue", 0)]
    assert history[1]["annotator"] == "alice"
    assert cli("export", project, "--out", tmp_path / "h.csv", "--history") == 0
    assert [r["label"] for r in read_csv(tmp_path / "h.csv") if r["path"] == a] == ["red", "blue"]


def test_unknown_class_lists_line_numbers_and_imports_nothing(project, images, tmp_path, capsys):
    paths = all_images(images)
    rows = [[paths[0], "red"], [paths[1], "cat"], [paths[2], "green"], [paths[3], "cat"]]
    rows.append([paths[4], "Dog"])
    with pytest.raises(SystemExit):
        cli("import", project, write_csv(tmp_path / "bad.csv", rows))
    err = capsys.readouterr().err
    assert "'cat' on line(s) 3, 5" in err and "'Dog' on line(s) 6" in err
    assert "nothing imported" in err
    assert current_labels(project) == {}


def test_unknown_path_imports_nothing_absolute_paths_work(project, images, tmp_path, capsys):
    paths = all_images(images)
    rows = [[paths[0], "red"], ["elsewhere/x.png", "red"], [str(tmp_path / "y.png"), "blue"]]
    with pytest.raises(SystemExit):
        cli("import", project, write_csv(tmp_path / "bad.csv", rows, header=None))
    err = capsys.readouterr().err
    assert "2 path(s) not in the project" in err
    assert "line 2: elsewhere/x.png" in err and "line 3:" in err
    assert current_labels(project) == {}
    good = [[str(images / paths[0]), truth(paths[0])], [paths[1], truth(paths[1])]]
    assert cli("import", project, write_csv(tmp_path / "good.csv", good, header=None)) == 0
    assert set(current_labels(project)) == {paths[0], paths[1]}


def test_corrupt_image_is_listed_and_never_proposed(tmp_path, images, capsys):
    proj = tmp_path / "p2"
    cli("init", proj, "--images", images, "--classes", *CLASSES, "--cold-start", "kcenter", *TINY)
    err = capsys.readouterr().err
    assert "warning: skipped 1 unreadable image(s)" in err and "broken.png" in err
    with pytest.raises(SystemExit):
        cli("propose", proj, "--n", "31")
    assert "--n 31 but only 30 images can be proposed" in capsys.readouterr().err
    assert cli("propose", proj, "--n", "30") == 0
    proposed = {r["path"] for r in read_csv(proj / "batch-1.csv")}
    assert proposed == set(all_images(images))
    cli("status", proj, "--no-estimate")
    captured = capsys.readouterr()
    assert "1 unreadable" in captured.out and "broken.png" in captured.err


def test_folder_changes(project, images, tmp_path, capsys):
    paths = all_images(images)
    labelled, unlabelled = paths[0], paths[1]
    cli("import", project, write_csv(tmp_path / "l.csv", [[labelled, truth(labelled)]]))
    (images / labelled).unlink()
    (images / unlabelled).unlink()
    write_image(images / "new" / "red_100.png", "red", 100)
    write_image(images / "new" / "blue_101.png", "blue", 101)
    capsys.readouterr()
    assert cli("rescan", project) == 0
    captured = capsys.readouterr()
    assert "scan: 2 added, 2 removed, 0 returned, 0 changed" in captured.out
    assert labelled in captured.err and unlabelled in captured.err
    assert cli("status", project, "--no-estimate") == 0
    assert "0 labelled, 30 unlabelled, 2 missing, 1 unreadable" in capsys.readouterr().out
    with db(project) as con:  # the label of the removed image is kept
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 1
    assert cli("propose", project, "--n", "30", "--release-open") == 0
    proposed = {r["path"] for r in read_csv(project / "batch-1.csv")}
    assert {"new/red_100.png", "new/blue_101.png"} <= proposed and not {
        labelled,
        unlabelled,
    } & proposed
    write_image(images / labelled, truth(labelled), 0)  # it comes back, label intact
    assert cli("rescan", project) == 0
    assert "1 returned" in capsys.readouterr().out
    assert current_labels(project) == {labelled: truth(labelled)}


def test_init_and_export_never_overwrite(project, images, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli("init", project, "--images", images, "--classes", "a", "b")
    assert "already holds a project" in capsys.readouterr().err
    out = tmp_path / "mine.csv"
    out.write_text("precious\n")
    with pytest.raises(SystemExit):
        cli("export", project, "--out", out)
    assert "never overwritten without --force" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert cli("export", project, "--out", out, "--force") == 0
    assert out.read_text() == "path,label,annotator,time\n"


def test_kill_during_import_leaves_previous_state(project, images, tmp_path):
    paths = all_images(images)
    first = write_csv(tmp_path / "first.csv", [[p, truth(p)] for p in paths[:3]])
    assert cli("import", project, first) == 0
    rows = [[p, truth(p)] for p in paths[3:15]]
    rows.append([paths[0], "blue"])  # a relabel in the same transaction
    big = write_csv(tmp_path / "big.csv", rows)
    env = dict(os.environ, PEAL_SK_TEST_IMPORT_DELAY="0.3")
    cmd = [sys.executable, "-m", "peal_sk", "project", "import", "--project", str(project)]
    proc = subprocess.Popen(
        [*cmd, str(big), "--relabel"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stderr:  # rows 1-3 are written inside the open transaction
            if line.startswith("import row 4/"):
                break
        else:
            pytest.fail(f"import ended early with {proc.wait()}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with db(project) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 3
    assert current_labels(project)[paths[0]] == truth(paths[0])
    assert cli("import", project, big, "--relabel") == 0  # redo it
    labels = current_labels(project)
    assert len(labels) == 15 and labels[paths[0]] == "blue"


def test_concurrent_commands(project, images, tmp_path, monkeypatch, capsys):
    """Another process mid-import and two threads at once: each waits its turn."""
    paths = all_images(images)
    csvs = [
        write_csv(tmp_path / f"c{k}.csv", [[p, truth(p)] for p in paths[k * 10 : k * 10 + 10]])
        for k in range(3)
    ]
    env = dict(os.environ, PEAL_SK_TEST_IMPORT_DELAY="0.05")
    cmd = [sys.executable, "-m", "peal_sk", "project", "import", "--project", str(project)]
    proc = subprocess.Popen([*cmd, str(csvs[2])], env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until it holds the write lock
        if line.startswith("import row 1/"):
            break
    monkeypatch.setenv("PEAL_SK_TEST_IMPORT_DELAY", "0.02")
    results, errors = [], []

    def run(*args):
        try:
            results.append(cli(*args))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("import", project, c)) for c in csvs[:2]]
    threads.append(threading.Thread(target=run, args=("status", project, "--no-estimate")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc.communicate()
    assert proc.returncode == 0
    assert errors == [] and results == [0, 0, 0]
    labels = current_labels(project)
    assert len(labels) == 30 and all(truth(p) == lab for p, lab in labels.items())
    with db(project) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 30


@pytest.mark.parametrize(
    "strategy, cold_start",
    [
        ("entropy", "random"),
        ("margin", "kcenter"),
        ("featdist", "bilaf"),
        ("kcenter", "bilaf"),
        ("random", "bilaf"),
        ("bilaf", "bilaf"),
    ],
)
def test_every_strategy(tmp_path, images, strategy, cold_start, capsys):
    proj = tmp_path / "p"
    args = ["--strategy", strategy, "--cold-start", cold_start, *TINY]
    cli("init", proj, "--images", images, "--classes", *CLASSES, *args)
    assert cli("propose", proj, "--n", "3") == 0
    assert f"(cold start: {cold_start})" in capsys.readouterr().out
    paths = all_images(images)[:9]
    cli("import", proj, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in paths]))
    assert cli("propose", proj, "--n", "4") == 0
    assert f"(model: {strategy})" in capsys.readouterr().out
    rows = read_csv(proj / "batch-2.csv")
    assert len(rows) == 4 and not {r["path"] for r in rows} & set(paths)
    first = {r["path"] for r in read_csv(proj / "batch-1.csv")} - set(paths)
    assert not {r["path"] for r in rows} & first  # batch 1 is still open


def test_sheet_release_open_and_label_studio_csv(project, images, tmp_path, capsys):
    assert cli("propose", project, "--n", "30") == 0
    with pytest.raises(SystemExit):
        cli("propose", project, "--n", "1")
    assert "only 0 images can be proposed" in capsys.readouterr().err

    (project / "batch-1.csv").unlink()
    assert cli("sheet", project, "--batch", "1") == 0
    assert len(read_csv(project / "batch-1.csv")) == 30
    with pytest.raises(SystemExit):
        cli("sheet", project, "--batch", "1")
    assert "never overwritten without --force" in capsys.readouterr().err

    # Label Studio's CSV export: an "image" URL relative to its document root, "choice"
    rel = all_images(images)[1]
    url = f"/data/local-files/?d=projects/images/{rel}"
    rows = [["1", url, truth(rel), "x"]]
    header = ("id", "image", "choice", "annotator")
    assert cli("import", project, write_csv(tmp_path / "ls.csv", rows, header)) == 0
    assert current_labels(project) == {rel: truth(rel)}

    assert cli("propose", project, "--n", "5", "--release-open") == 0
    assert "released 1 open batch(es)" in capsys.readouterr().out
    with db(project) as con:
        assert [tuple(r) for r in con.execute("SELECT id, closed FROM batches")] == [(1, 1), (2, 0)]
    assert rel not in {r["path"] for r in read_csv(project / "batch-2.csv")}


def test_status_estimate_and_finetuned_model(project, images, tmp_path, capsys):
    paths = [p for c in CLASSES for p in all_images(images) if truth(p) == c][::2]
    cli("import", project, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in paths]))
    capsys.readouterr()
    assert cli("status", project) == 0
    out = capsys.readouterr().out
    assert "labels per class: red 5, green 5, blue 5" in out
    assert "5-fold CV accuracy of logreg on embeddings, 15 labels" in out
    assert cli("train", project, "--finetune", "linear", "--epochs", "1") == 0
    model = project / "models" / "model-1-linear"
    assert (model / "peal_sk.json").is_file() and (model / "head.safetensors").is_file()
    from peal_sk.classifier import PEALClassifier

    clf = PEALClassifier.load_adapters(model)
    assert clf.predict([str(images / paths[0])])[0] in CLASSES
    capsys.readouterr()
    cli("status", project, "--no-estimate")
    assert "15 labels" in capsys.readouterr().out.split("learning curve (at each train):")[1]


def test_import_records_same_transactional_path(project, images):
    from peal_sk.project import LabelConflictError, Project, ProjectError

    a, b, c = all_images(images)[:3]
    proj = Project(project)
    try:
        r = proj.import_records([(a, "red"), (b, ""), (c, "blue")], annotator="bob", source="ui")
        assert (r["new"], r["skipped_empty"], r["conflicts"]) == (2, 1, [])
        with pytest.raises(ProjectError, match=r"'cat' on record\(s\) 2"):
            proj.import_records([(b, "red"), (b + "x", "cat")])
        with pytest.raises(LabelConflictError) as info:
            proj.import_records([(a, "green"), (b, "green")])
        assert info.value.conflicts == [(a, "red", "green")]
        assert current_labels(project) == {a: "red", c: "blue"}  # b not imported either
        r = proj.import_records([(a, "green")], relabel=True, source="ui")
        assert (r["relabelled"], r["conflicts"]) == (1, [(a, "red", "green")])
        with pytest.raises(ProjectError, match="record 1 must be a"):
            proj.import_records(["nope"])
    finally:
        proj.close()
    with db(project) as con:
        rows = con.execute("SELECT annotator, source FROM labels ORDER BY id").fetchall()
    assert [tuple(r) for r in rows][:2] == [("bob", "ui"), ("bob", "ui")]


def test_import_of_unscanned_image_says_rescan(project, images, tmp_path, capsys):
    write_image(images / "late" / "red_200.png", "red", 200)
    with pytest.raises(SystemExit):
        cli("import", project, write_csv(tmp_path / "l.csv", [["late/red_200.png", "red"]]))
    err = capsys.readouterr().err
    assert "added to the folder since the last scan" in err and "project rescan" in err
    assert cli("rescan", project) == 0
    assert cli("import", project, tmp_path / "l.csv") == 0
    assert current_labels(project) == {"late/red_200.png": "red"}
