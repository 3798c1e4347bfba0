"""``peal-sk project``: exit codes, one-line errors, missing extras, progress, estimates.

Issue 25 (items 4 and 5) and issue 27 (item 5): data and state errors print one
``peal-sk: error:`` line and exit 1; the usage line and exit 2 are kept for command-line
errors; a missing extra names the ``pip install`` to run; long steps say what they do;
``train`` reports each model's own estimate.
"""

import importlib.util
import os

import pytest

pytest.importorskip("torch")

from test_project import CLASSES, TINY, all_images, cli, truth, write_csv  # noqa: E402

from peal_sk.__main__ import main  # noqa: E402
from peal_sk.project import _common  # noqa: E402


@pytest.fixture
def images(tmp_path):
    from test_project import write_image

    root = tmp_path / "images"
    for i in range(18):
        write_image(root / f"{CLASSES[i % 3]}_{i}.png", CLASSES[i % 3], i)
    return root


@pytest.fixture
def project(tmp_path, images, capsys):
    proj = tmp_path / "proj"
    assert cli("init", proj, "--images", images, "--classes", *CLASSES, *TINY) == 0
    capsys.readouterr()
    return proj


def one_line_error(capsys, exc, *fragments):
    """The command exited 1 with one ``peal-sk: error:`` line holding ``fragments``."""
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("peal-sk: error: "), err
    assert err.count("\n") == 1 and "usage:" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def label_all(project, images, tmp_path, capsys):
    paths = all_images(images)
    cli("import", project, write_csv(tmp_path / "l.csv", [[p, truth(p)] for p in paths]))
    capsys.readouterr()


# -- issue 27.5: damaged database, unwritable folder, --out a folder ------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_database_is_one_line_naming_the_file_and_the_remedy(project, capsys, damage):
    db = project / "project.sqlite"
    if damage == "garbage":
        db.write_bytes(b"this is not an SQLite file" * 100)
    else:
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\0" * (len(data) - 100))  # header kept, pages zeroed
    before = db.read_bytes()
    for command in (["status"], ["export", "--out", project / "x.csv"], ["propose"]):
        with pytest.raises(SystemExit) as exc:
            cli(command[0], project, *command[1:])
        one_line_error(capsys, exc, str(db), "damaged", "Restore project.sqlite", ".recover")
    assert db.read_bytes() == before  # the damaged file is left as it was


def test_init_in_a_folder_that_cannot_be_created(tmp_path, images, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        cli("init", blocker / "proj", "--images", images, "--classes", *CLASSES, *TINY)
    one_line_error(capsys, exc, "cannot create the project folder", "--project")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
def test_init_under_an_unwritable_folder(tmp_path, images, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            cli("init", locked / "proj", "--images", images, "--classes", *CLASSES, *TINY)
        one_line_error(capsys, exc, "--project folder you may write")
        with pytest.raises(SystemExit) as exc:
            cli("init", locked, "--images", images, "--classes", *CLASSES, *TINY)
        one_line_error(capsys, exc, "cannot write the project database")
    finally:
        locked.chmod(0o700)


def test_export_onto_a_folder_or_an_existing_file(project, tmp_path, capsys):
    folder = tmp_path / "out_dir"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for force in ([], ["--force"]):
        with pytest.raises(SystemExit) as exc:
            cli("export", project, "--out", folder, *force)
        one_line_error(capsys, exc, f"--out {folder} is a folder", "labels.csv")
    assert (folder / "keep.txt").read_text() == "mine"
    existing = tmp_path / "labels.csv"
    existing.write_text("mine")
    with pytest.raises(SystemExit) as exc:
        cli("export", project, "--out", existing)
    one_line_error(capsys, exc, "never overwritten without --force")
    with pytest.raises(SystemExit) as exc:
        cli("export", project, "--out", tmp_path / "no" / "such" / "labels.csv")
    one_line_error(capsys, exc, "cannot write --out")


def test_command_line_errors_keep_the_usage_line_and_exit_2(project, capsys):
    with pytest.raises(SystemExit) as exc:
        cli("propose", project, "--n", "0")
    assert exc.value.code == 2
    assert "usage: peal-sk project propose" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["project", "status"])  # --project missing
    assert exc.value.code == 2


def test_state_errors_exit_1(project, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli("status", tmp_path / "nothing_here")
    one_line_error(capsys, exc, "no project in", "peal-sk project init")
    with pytest.raises(SystemExit) as exc:
        cli("train", project)  # no labels yet
    one_line_error(capsys, exc, "at least 2 classes")


# -- issue 25.4: missing extras ----------------------------------------------------------
@pytest.fixture
def without_peft(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "peft" else real(name, *args, **kwargs)

    monkeypatch.setattr(_common.importlib.util, "find_spec", find_spec)


def test_init_names_the_missing_extra_and_commands_fail_in_one_line(
    tmp_path, images, capsys, without_peft
):
    proj = tmp_path / "proj"
    assert cli("init", proj, "--images", images, "--classes", *CLASSES, *TINY) == 0
    err = capsys.readouterr().err
    assert "need the [torch] extra" in err and "missing: peft" in err
    assert "pip install 'peal-sk[torch]'" in err
    for command in (["propose", "--n", "3"], ["train"]):
        with pytest.raises(SystemExit) as exc:
            cli(*command[:1], proj, *command[1:])
        one_line_error(capsys, exc, "needs the [torch] extra", "pip install 'peal-sk[torch]'")
    # what needs no torch still works, and status says why it has no estimate
    assert cli("status", proj) == 0
    assert "no estimate: " in capsys.readouterr().out


def test_init_on_a_complete_install_says_nothing_more(tmp_path, images, capsys):
    proj = tmp_path / "proj"
    assert cli("init", proj, "--images", images, "--classes", *CLASSES, *TINY) == 0
    assert "warning" not in capsys.readouterr().err


# -- issue 25.4: progress and each model's own estimate -----------------------------------
def test_long_steps_report_without_a_terminal(project, capsys):
    assert cli("propose", project, "--n", "3", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "embedding 18 image(s) with vit_small_patch14_dinov2 at 14 px (0 cached)" in err
    assert "embedded 18 image(s) in " in err
    assert "selecting 3 of 18 pool images with bilaf" in err and "selected in " in err
    assert "%|" not in err  # no bar
    assert cli("propose", project, "--n", "3", "--release-open") == 0
    assert "embedding" not in capsys.readouterr().err  # all cached: nothing to report


def test_progress_bar_when_asked(project, capsys):
    from peal_sk.project import Project

    proj = Project(project, progress=True)
    try:
        proj.propose(3)
    finally:
        proj.close()
    err = capsys.readouterr().err
    assert "embedding: 100%|" in err and "batch/s]" in err


def test_train_names_each_models_own_estimate(project, images, tmp_path, capsys):
    label_all(project, images, tmp_path, capsys)
    assert cli("train", project, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "estimate of logreg: " in out and "CV accuracy of logreg" in out
    assert "reference" not in out

    assert cli("train", project, "--finetune", "linear", "--epochs", "1") == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "estimate of PEALClassifier(finetune='linear'): not computed" in out
    assert "reference, logistic regression on frozen embeddings (not this model): " in out
    assert "fine-tuning linear on 18 labels, 1 epochs" in captured.err
    assert "epoch" in out  # skorch's epoch table

    assert cli("train", project, "--finetune", "linear", "--epochs", "1", "--holdout", "0.5") == 0
    out = capsys.readouterr().out
    assert "estimate of PEALClassifier(finetune='linear'): " in out
    assert "hold-out accuracy of PEALClassifier(finetune='linear') on 9 labels" in out

    assert cli("status", project, "--no-estimate") == 0
    rows = capsys.readouterr().out.split("learning curve (at each train):")[1].splitlines()[1:]
    assert "logreg:" in rows[0] and "%" in rows[0]
    assert "PEALClassifier(finetune='linear'):" in rows[1] and " n/a " in rows[1]
    assert "PEALClassifier(finetune='linear'):" in rows[2] and "%" in rows[2]


def test_holdout_is_checked_before_any_work(project, images, tmp_path, capsys):
    label_all(project, images, tmp_path, capsys)
    with pytest.raises(SystemExit) as exc:
        cli("train", project, "--holdout", "0.2")
    one_line_error(capsys, exc, "--holdout must be a fraction in (0, 1), with --finetune")
    with pytest.raises(SystemExit) as exc:
        cli("train", project, "--finetune", "linear", "--holdout", "0.05")
    one_line_error(capsys, exc, "cannot hold out 0.05 of 18 labels")
    assert not (project / "models").exists()


def test_init_says_when_the_pretrained_weights_will_be_downloaded(
    tmp_path, images, capsys, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    proj = tmp_path / "proj"
    args = ["--images", images, "--classes", *CLASSES, "--backbone", "dinov2_vits14"]
    assert cli("init", proj, *args) == 0
    err = capsys.readouterr().err
    assert "the pretrained weights of 'dinov2_vits14' are not on this machine" in err
    assert "downloaded on first use from the Hugging Face hub" in err
