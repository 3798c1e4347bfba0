"""The ``peal-sk`` command line (``python -m peal_sk``) and the simulation engine."""

import csv
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from peal_sk.__main__ import main
from peal_sk.experiments import SimulationConfig, load_dataset, simulate

FAST = ["--seeds", "0", "--no-progress"]


def small_npz(tmp_path, n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, d)) + 2.0 * y[:, None]
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path


def test_simulate_iterative_writes_well_formed_outputs(tmp_path, capsys):
    data = small_npz(tmp_path)
    out = tmp_path / "res"
    args = ["simulate", "--dataset", str(data), "--initial", "6", "--step", "6"]
    assert main([*args, "--cycles", "2", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "labels to reach" in printed
    results = json.loads((out / "results.json").read_text())
    assert {c["strategy"] for c in results["cells"]} == {"random", "entropy", "margin", "featdist"}
    for cell in results["cells"]:
        assert cell["n_labels"] == [6, 12, 18]
        assert all(0.0 <= a <= 1.0 for a in cell["accuracy"])
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 3 and set(rows[0]) == {
        "mode",
        "model",
        "strategy",
        "seed",
        "n_labels",
        "accuracy",
    }
    accuracy_table, timing = (out / "table.md").read_text().split("\n\n", 1)
    assert accuracy_table.count("\n") == 1 + 4 and "| logreg | margin |" in accuracy_table
    assert "Mean seconds per cycle" in timing and timing.count("| logreg |") == 4
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_one_shot_and_reproducible(tmp_path):
    data = small_npz(tmp_path)
    config = SimulationConfig(
        dataset=str(data),
        mode="one-shot",
        strategies=["random", "kcenter", "bilaf"],
        seeds=[0, 1],
        budgets=[9, 18],
    )
    a = simulate(config, tmp_path / "a", progress=False)
    b = simulate(config, tmp_path / "b", progress=False)
    assert [c["accuracy"] for c in a["cells"]] == [c["accuracy"] for c in b["cells"]]
    assert all(c["n_labels"] == [9, 18] for c in a["cells"])
    assert "B=9" in a["table"] and "| logreg | bilaf |" in a["table"]


def test_resume_skips_finished_cells(tmp_path):
    data = small_npz(tmp_path)
    config = SimulationConfig(
        dataset=str(data),
        strategies=["random", "margin"],
        seeds=[0, 1],
        initial=6,
        step=6,
        cycles=2,
    )
    out = tmp_path / "res"
    first = simulate(config, out, progress=False)
    # "interrupt": drop one finished cell and the summaries, then run again
    (out / "cells" / "iterative-logreg-margin-seed1.json").unlink()
    (out / "results.json").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    logs = []
    second = simulate(config, out, progress=False, log=logs.append)
    assert any("resuming: 3 of 4 cells" in m for m in logs)
    for p in (out / "cells").iterdir():
        if p.name in mtimes:
            assert p.stat().st_mtime_ns == mtimes[p.name], f"{p.name} was redone"
    assert [c["accuracy"] for c in second["cells"]] == [c["accuracy"] for c in first["cells"]]


def test_other_configuration_is_not_mixed_in(tmp_path):
    data = small_npz(tmp_path)
    out = tmp_path / "res"
    base = dict(dataset=str(data), strategies=["random"], seeds=[0], initial=6, step=6, cycles=1)
    simulate(SimulationConfig(**base), out, progress=False)
    other = SimulationConfig(**{**base, "step": 3})
    with pytest.raises(FileExistsError, match="another configuration"):
        simulate(other, out, progress=False)
    result = simulate(other, out, force=True, progress=False)
    assert result["cells"][0]["n_labels"] == [6, 9]


@pytest.mark.parametrize(
    "args, message, code",
    [
        # command-line errors: the options alone are wrong; usage line, exit 2
        (["simulate", "--strategies", "oracle"], "unknown strategies ['oracle']", 2),
        (["simulate", "--mode", "one-shot", "--strategies", "entropy"], "unknown strategies", 2),
        (["simulate", "--step", "0"], "must be >= 1", 2),
        (["frobnicate"], "invalid choice", 2),
        # data errors: the dataset refuses the options; one line, exit 1
        (["simulate", "--dataset", "imagenet"], "unknown dataset 'imagenet'", 1),
        (["simulate", "--mode", "one-shot", "--budgets", "5000"], "exceed the 1347 training", 1),
        (["simulate", "--cycles", "200"], "exceed the 1347 training images", 1),
    ],
)
def test_bad_arguments(args, message, code, capsys, tmp_path):
    """Issue 25: data errors printed the usage line and exited 2 like command-line errors."""
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "x"), *FAST] if args[0] == "simulate" else args)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert message in err
    assert ("usage: peal-sk" in err) == (code == 2)
    if code == 1:
        assert err.startswith("peal-sk: error: ") and err.count("\n") == 1


def test_image_folder_skips_unreadable_files_by_name(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "imgs" / "dogs" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "imgs" / "dogs" / "notes.txt").write_text("ignored: not an image suffix")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*broken\.png"):
        data = load_dataset(tmp_path / "imgs", seed=0, test_size=0.25)
    assert len(data.y_train) + len(data.y_test) == 12
    assert list(data.classes) == ["cats", "dogs"]
    assert data.skipped and "broken.png" in data.skipped[0]


def test_image_folder_with_a_tiny_backbone(tmp_path):
    """The whole loop on images: frozen embeddings of a tiny ViT, then logreg."""
    pytest.importorskip("torch")
    from PIL import Image

    rng = np.random.default_rng(1)
    for k, label in enumerate(("a", "b")):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(10):
            arr = np.full((14, 14, 3), 60 + 120 * k, np.uint8) + rng.integers(0, 30, (14, 14, 3))
            Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    config = SimulationConfig(
        dataset=str(tmp_path / "imgs"),
        mode="one-shot",
        strategies=["random", "kcenter"],
        seeds=[0],
        budgets=[4],
        features="backbone",
        backbone="vit_small_patch14_dinov2",
        pretrained=False,
        img_size=14,
        backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2, "global_pool": "avg"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = simulate(config, tmp_path / "res", progress=False)
    assert len(res["cells"]) == 2
    assert list((tmp_path / "res" / "cache").glob("embeddings-*.npy"))


def test_demo_and_help(tmp_path, capsys):
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "one-shot" in out and "iterative" in out and "labels to reach" in out
    assert main([]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "peal_sk", "simulate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--budgets" in proc.stdout and "--force" in proc.stdout and "--models" in proc.stdout


def test_linear_probe_vs_lora_at_equal_budgets(tmp_path):
    """models=["linear", "lora"]: PEALClassifier on the images, retrained every cycle."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    y = np.arange(40) % 2
    X = np.where(y[:, None, None, None] == 1, 170, 60) + rng.integers(0, 40, (40, 14, 14, 3))
    path = tmp_path / "imgs.npz"
    np.savez(path, X=X.astype(np.uint8), y=y)
    config = SimulationConfig(
        dataset=str(path),
        strategies=["entropy"],
        models=["linear", "lora"],
        seeds=[0],
        initial=4,
        step=4,
        cycles=1,
        epochs=2,
        backbone="vit_small_patch14_dinov2",
        pretrained=False,
        img_size=14,
        backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2, "global_pool": "avg"},
    )
    res = simulate(config, tmp_path / "res", progress=False)
    assert {c["model"] for c in res["cells"]} == {"linear", "lora"}
    assert all(c["n_labels"] == [4, 8] for c in res["cells"])
    assert "| linear | entropy |" in res["table"] and "| lora | entropy |" in res["table"]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.zeros((30, 4)), "y": np.arange(29) % 2}, "X has 30 samples but y has 29"),
        ({"X": np.zeros((30, 4)), "y": np.arange(31) % 2}, "X has 30 samples but y has 31"),
        (
            {
                "X_train": np.zeros((30, 4)),
                "y_train": np.arange(30) % 2,
                "X_test": np.zeros((10, 4)),
                "y_test": np.arange(12) % 2,
            },
            "X_test has 10 samples but y_test has 12",
        ),
    ],
)
def test_npz_with_mismatched_lengths_is_a_clear_error(arrays, message, tmp_path, capsys):
    """Issue 16: X and y of different lengths were truncated or crashed with IndexError."""
    np.savez(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--dataset", str(tmp_path / "bad.npz"), "--out", str(out), *FAST])
    assert exc.value.code == 1  # a data error
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_failed_validation_writes_nothing_and_rerun_works(tmp_path, capsys):
    """Issue 16: a run refused by validation left config.json and blocked the rerun."""
    data, out = small_npz(tmp_path), tmp_path / "out"
    base = ["simulate", "--dataset", str(data), "--out", str(out), "--initial", "6"]
    with pytest.raises(SystemExit):
        main([*base, "--step", "6", "--cycles", "100", "--strategies", "random", *FAST])
    assert "exceed the 90 training" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--step", "6", "--cycles", "1", "--strategies", "random", *FAST]) == 0


def test_iterative_queries_draw_afresh_every_cycle(tmp_path, monkeypatch):
    """Regression: the strategy of an iterative run was seeded with the run's int seed, so
    every cycle drew the same positions of the shrinking pool (a class-sorted pool then
    labelled a few classes only). The learner now seeds each query from its own stream."""
    from peal_sk.learner import ActiveLearner

    positions = []
    original = ActiveLearner.query

    def spy(self, X_pool, *args, **kwargs):
        idx, X_query = original(self, X_pool, *args, **kwargs)
        positions.append(np.sort(idx).tolist())
        return idx, X_query

    monkeypatch.setattr(ActiveLearner, "query", spy)
    config = SimulationConfig(strategies=["random"], seeds=[0], initial=10, step=5, cycles=3)
    first = simulate(config, tmp_path / "a", progress=False)
    assert len(positions) == 3
    # with the bug, each cycle's positions were the previous ones shifted by the few rows
    # removed from the pool (e.g. [360, 411, ...] then [359, 410, ...])
    pairs = zip(positions[:-1], positions[1:], strict=True)
    shifts = [np.abs(np.subtract(a, b)).max() for a, b in pairs]
    assert max(shifts) > 3 * config.step, positions
    again = simulate(config, tmp_path / "b", progress=False)  # still reproducible
    assert [c["accuracy"] for c in first["cells"]] == [c["accuracy"] for c in again["cells"]]


# -- issue 27: values that used to give silent wrong numbers ----------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--targets", "50"], "got 50.0 (did you mean 0.5?)"),
        (["--targets", "0"], "targets are accuracies as fractions in (0, 1]"),
        (["--targets", "0.8", "0.8"], "targets lists 0.8 more than once"),
        (["--seeds", "0", "0"], "seeds lists 0 more than once"),
        (["--strategies", "random", "random"], "strategies lists 'random' more than once"),
    ],
    ids=["percent-target", "zero-target", "target-twice", "seed-twice", "strategy-twice"],
)
def test_repeated_or_out_of_range_values_are_refused(extra, message, tmp_path, capsys):
    data, out = small_npz(tmp_path), tmp_path / "out"
    base = ["simulate", "--dataset", str(data), "--out", str(out), "--initial", "6", "--step", "6"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--cycles", "1", *FAST, *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_targets_are_fractions_and_the_column_says_percent(tmp_path):
    data = small_npz(tmp_path)
    config = SimulationConfig(
        dataset=str(data), strategies=["random"], seeds=[0], initial=6, step=6, cycles=1
    )
    results = simulate(config, tmp_path / "out", targets=[0.5], progress=False, log=print)
    assert "labels to reach 50.0 %" in results["table"]
    assert results["targets"] == [0.5]


def test_truncated_jpeg_and_png_are_both_skipped_with_a_warning(tmp_path):
    """Issue 27: a half-truncated JPEG passed Pillow's verify() and stopped the run later."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            # large enough that half the file cuts the JPEG's compressed data, not its header
            arr = rng.integers(0, 255, size=(96, 96, 3), dtype=np.uint8)
            Image.fromarray(arr).save(
                tmp_path / "imgs" / label / f"{i}.{'jpg' if i % 2 else 'png'}"
            )
    for name in ("1.jpg", "2.png"):
        path = tmp_path / "imgs" / "dogs" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable") as record:
        data = load_dataset(tmp_path / "imgs", seed=0, test_size=0.25)
    message = str(record[0].message)
    assert "1.jpg" in message and "2.png" in message
    assert len(data.y_train) + len(data.y_test) == 10
    kept = [*data.X_train, *data.X_test]
    assert not any(p.endswith(("dogs/1.jpg", "dogs/2.png")) for p in kept)


def test_one_list_of_image_extensions():
    """Issue 28: embed accepted .ppm and project did not; one list serves all three."""
    from peal_sk.distributed import _shards
    from peal_sk.experiments import _data
    from peal_sk.project import _common
    from peal_sk.utils._image_files import IMAGE_EXTENSIONS

    assert ".ppm" in IMAGE_EXTENSIONS
    assert _shards.IMAGE_EXTENSIONS is _data.IMAGE_EXTENSIONS is _common.IMAGE_EXTENSIONS
    assert _common.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS


def test_embed_help_shows_no_default_for_the_required_out(capsys):
    """Issue 25: ``peal-sk embed --help`` showed ``(default: None)`` for the required --out."""
    with pytest.raises(SystemExit) as exc:
        main(["embed", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    out_line = next(line for line in help_text.splitlines() if line.strip().startswith("--out"))
    assert "output folder" in out_line and "default" not in out_line


def test_simulate_progress_lines_without_a_terminal(tmp_path, capsys):
    """Issue 25: in a log (stderr not a terminal) simulate writes one line per finished
    cell, as with --no-progress, instead of a bar's carriage-return updates."""
    args = ["simulate", "--strategies", "random", "--cycles", "1", "--seeds", "0"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "done logreg/random/seed 0: final accuracy" in captured.out
    assert "%|" not in captured.err and "\r" not in captured.err
