"""Label Studio files: malformed exports (issue 27), annotators, conflict policies and the
document root (issue 26). The real-server round trip is tests/test_labelstudio_server.py."""

# ruff: noqa: F811 - the fixtures images and project come from test_project

import csv
import json

import pytest

pytest.importorskip("torch")

from test_project import (  # noqa: E402
    all_images,
    cli,
    current_labels,
    db,
    images,  # noqa: F401 - fixture
    project,  # noqa: F401 - fixture
    truth,
    write_csv,
)


def _task(rel, *annotations, task_id=1):
    return {
        "id": task_id,
        "data": {"image": rel if "?d=" in rel else f"/data/local-files/?d=images/{rel}"},
        **({"annotations": list(annotations)} if annotations else {}),
    }


def _ann(label, user=1, *, gt=False, updated="2026-01-01T00:00:00Z", ann_id=None):
    return {
        "id": ann_id or hash((label, str(user))) % 1000,
        "completed_by": user,
        "ground_truth": gt,
        "updated_at": updated,
        "result": [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ],
    }


def _import_fails(project, path, capsys, *args):
    with pytest.raises(SystemExit):
        cli("import", project, path, *args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert current_labels(project) == {}
    return err


# -- issue 27 item 3: malformed exports give one-line errors naming the task and the field --
@pytest.mark.parametrize(
    ("annotations", "field", "got"),
    [
        ("cat", "annotations must be a list", "got a string 'cat'"),
        ([{"result": "cat"}], "annotations[0].result must be a list", "got a string 'cat'"),
        (
            [{"result": [{"type": "choices", "value": None}]}],
            "annotations[0].result[0].value must be an object",
            "got null",
        ),
        (
            [{"result": [{"type": "choices", "value": {"choices": "red"}}]}],
            "annotations[0].result[0].value.choices must be a list",
            "got a string 'red'",
        ),
    ],
)
def test_malformed_annotations_name_task_and_field(
    project, images, tmp_path, capsys, annotations, field, got
):
    rel = all_images(images)[0]
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"id": 7, "data": {"image": rel}, "annotations": annotations}]))
    err = _import_fails(project, path, capsys)
    assert f"{path} task 7: {field}; {got}" in err


def test_huge_image_reference_is_refused_without_echoing_it(project, images, tmp_path, capsys):
    path = tmp_path / "a.json"
    ref = "/data/local-files/?d=" + "x" * 5_000_000
    path.write_text(json.dumps([_task(ref, _ann("red"))]))
    err = _import_fails(project, path, capsys)
    assert "task 1: data.image is 5000021 characters long (at most 4096)" in err
    assert "File name too long" not in err and len(err) < 500


def test_huge_label_is_refused_without_echoing_it(project, images, tmp_path, capsys):
    rel = all_images(images)[0]
    path = tmp_path / "a.json"
    path.write_text(json.dumps([_task(rel, _ann("r" * 5_000_000))]))
    err = _import_fails(project, path, capsys)
    assert "task 1: annotations[0].result[0].value.choices is 5000000 characters" in err
    assert len(err) < 500
    csv_path = write_csv(tmp_path / "a.csv", [[rel, "r" * 5_000_000]])
    err = _import_fails(project, csv_path, capsys)
    assert f"{csv_path} line 2: a cell is longer than 131072 characters" in err
    assert len(err) < 500
    csv_path = write_csv(tmp_path / "b.csv", [[rel, "r" * 100_000]])
    err = _import_fails(project, csv_path, capsys)
    assert f"{csv_path} line 2: the label is 100000 characters long (at most 1000)" in err
    assert len(err) < 500


def test_json_nested_100000_deep_is_a_one_line_error(project, images, tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    err = _import_fails(project, path, capsys)
    assert f"{path}: JSON nested too deeply to read" in err
    # deep but readable: the task and the field are named
    path.write_text(
        json.dumps([{"id": 3, "data": {"image": "x", "deep": [[[[[[[[1]]]]]]]] * 1}}]).replace(
            "[1]", "[" * 40 + "1" + "]" * 40
        )
    )
    err = _import_fails(project, path, capsys)
    assert f"{path} task 3: data.deep" in err and "nested more than 32 levels" in err


def test_json_min_with_a_custom_control_name(project, images, tmp_path, capsys):
    """A <Choices name="my_class"> control: JSON-MIN has "my_class": "red". It is found (the
    one non-data, non-bookkeeping field); with two candidates the error names both."""
    paths = all_images(images)[:3]
    rows = [
        {
            "image": f"/data/local-files/?d=images/{p}",
            "id": k,
            "my_class": truth(p),
            "annotator": "ann@example.com",
            "annotation_id": k,
            "lead_time": 1.0,
        }
        for k, p in enumerate(paths, start=1)
    ]
    (tmp_path / "min.json").write_text(json.dumps(rows))
    assert cli("import", project, tmp_path / "min.json") == 0
    assert "Label Studio JSON-MIN: imported 3 new" in capsys.readouterr().out
    assert current_labels(project) == {p: truth(p) for p in paths}
    for row in rows:
        row["other_tag"] = "x"
    (tmp_path / "min2.json").write_text(json.dumps(rows))
    with pytest.raises(SystemExit):
        cli("import", project, tmp_path / "min2.json")
    err = capsys.readouterr().err
    assert "no field holds the choice" in err and "'my_class', 'other_tag'" in err


# -- issue 26 items 2-3: annotators and conflict policies --------------------------------------
def test_label_studio_annotator_is_recorded_and_shown(project, images, tmp_path, capsys):
    a, b = all_images(images)[:2]
    ann = _ann(truth(a), {"id": 4, "email": "alice@example.com"})
    ann2 = {**_ann(truth(b), 5), "created_username": " bob@example.com, 5"}
    (tmp_path / "e.json").write_text(json.dumps([_task(a, ann), _task(b, ann2, task_id=2)]))
    assert cli("import", project, tmp_path / "e.json") == 0
    with db(project) as con:
        who = dict(
            con.execute(
                "SELECT i.relpath, l.annotator FROM labels l JOIN images i ON i.id = l.image_id"
            ).fetchall()
        )
    assert who == {a: "alice@example.com", b: "bob@example.com"}
    capsys.readouterr()
    assert cli("status", project, "--no-estimate") == 0
    assert "labels per annotator: alice@example.com 1, bob@example.com 1" in capsys.readouterr().out
    assert cli("export", project, "--out", tmp_path / "out.csv") == 0
    with open(tmp_path / "out.csv", newline="") as fh:
        assert {r["path"]: r["annotator"] for r in csv.DictReader(fh)} == who


def _two_annotators(tmp_path, rel, other):
    anns = [
        _ann(truth(rel), 1, updated="2026-01-02T00:00:00Z", ann_id=1),
        _ann(other, 2, gt=True, updated="2026-01-01T00:00:00Z", ann_id=2),
        _ann(truth(rel), 3, updated="2026-01-01T00:00:00Z", ann_id=3),
    ]
    path = tmp_path / "c.json"
    path.write_text(json.dumps([_task(rel, *anns)]))
    return path


def test_conflict_refused_naming_each_annotator_and_value(project, images, tmp_path, capsys):
    rel = all_images(images)[0]
    other = "blue" if truth(rel) != "blue" else "red"
    err = _import_fails(project, _two_annotators(tmp_path, rel, other), capsys)
    assert (
        f"{rel} (task 1 (label-studio user 1): '{truth(rel)}', task 1 (label-studio user 2): "
        f"'{other}', task 1 (label-studio user 3): '{truth(rel)}'): pass --conflicts" in err
    )


@pytest.mark.parametrize(
    ("policy", "winner", "who"),
    [
        ("ground-truth", "other", "label-studio user 2"),
        ("majority", "truth", "label-studio user 1, label-studio user 3"),
        ("latest", "truth", "label-studio user 1"),
    ],
)
def test_conflict_policies(project, images, tmp_path, policy, winner, who):
    rel = all_images(images)[0]
    other = "blue" if truth(rel) != "blue" else "red"
    path = _two_annotators(tmp_path, rel, other)
    assert cli("import", project, path, "--conflicts", policy) == 0
    expected = other if winner == "other" else truth(rel)
    assert current_labels(project) == {rel: expected}
    with db(project) as con:
        assert con.execute("SELECT annotator FROM labels").fetchone()[0] == who


def test_conflict_policy_that_cannot_settle(project, images, tmp_path, capsys):
    rel = all_images(images)[0]
    other = "blue" if truth(rel) != "blue" else "red"
    path = tmp_path / "tie.json"
    path.write_text(json.dumps([_task(rel, _ann(truth(rel), 1), _ann(other, 2))]))
    assert "no majority (a tie)" in _import_fails(project, path, capsys, "--conflicts", "majority")
    assert "no single ground-truth" in _import_fails(
        project, path, capsys, "--conflicts", "ground-truth"
    )


# -- issue 26 item 1: a document root Label Studio accepts -------------------------------------
def test_default_document_root_is_the_image_folders_parent(project, images, tmp_path, capsys):
    assert cli("propose", project, "--n", "2") == 0
    capsys.readouterr()
    assert cli("export", project, "--format", "label-studio", "--out", tmp_path / "t.json") == 0
    out = capsys.readouterr().out
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={images.resolve().parent}" in out
    assert f"Local files storage with the absolute path {images.resolve()}" in out
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=images/") for t in tasks)
    with pytest.raises(SystemExit):
        cli(
            "export",
            project,
            "--format",
            "label-studio",
            "--out",
            tmp_path / "u.json",
            "--document-root",
            images,
        )
    err = capsys.readouterr().err
    assert "is the image folder itself" in err and "Please add a subdirectory" in err
