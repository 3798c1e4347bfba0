"""``peal-sk simulate`` at scale: pool and test splits, per-cycle times, resuming at any cycle."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from peal_sk.__main__ import main
from peal_sk.experiments import SimulationConfig, _simulate, load_dataset, simulate

FAST = ["--seeds", "0", "--no-progress"]
# digits, logistic regression, random and entropy: two cells of 4 cycles (0 to 3)
SMALL = dict(strategies=["random", "entropy"], seeds=[0], initial=10, step=5, cycles=3)
CYCLES_PER_CELL = SMALL["cycles"] + 1


def quiet(message):
    pass


def outcome(results):
    """Everything a run decides: labels, picks and accuracies of every cell."""
    return [
        (c["model"], c["strategy"], c["seed"], c["n_labels"], c["labeled"], c["accuracy"])
        for c in results["cells"]
    ]


@pytest.fixture(autouse=True)
def no_plot(monkeypatch):
    """curves.png (tested in test_cli.py) would double the time of these runs."""
    monkeypatch.setattr(_simulate, "_plot", lambda *args: None)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_simulate, "_plot", lambda *args: None)
        return simulate(SimulationConfig(**SMALL), out, progress=False, log=quiet)


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", range(1, 2 * CYCLES_PER_CELL))
def test_resume_after_an_interruption_at_any_cycle(
    kill_after, uninterrupted, tmp_path, monkeypatch
):
    """Stopped right after the checkpoint of any cycle of either cell, the resumed run
    ends with the uninterrupted run's picks and accuracies."""
    saved = []
    original = _simulate._save_checkpoint

    def save_then_die(path, state):
        original(path, state)
        saved.append(path.name)
        if len(saved) == kill_after:
            raise Killed

    monkeypatch.setattr(_simulate, "_save_checkpoint", save_then_die)
    config = SimulationConfig(**SMALL)
    out = tmp_path / "res"
    with pytest.raises(Killed):
        simulate(config, out, progress=False, log=quiet)
    checkpoint = out / "cells" / saved[-1]
    assert checkpoint.exists() and not (out / "results.json").exists()
    finished = json.loads(checkpoint.read_text())
    cycle = len(finished["accuracy"]) - 1
    assert cycle == (kill_after - 1) % CYCLES_PER_CELL
    assert len(finished["labeled"]) == SMALL["initial"] + cycle * SMALL["step"]

    monkeypatch.setattr(_simulate, "_save_checkpoint", original)
    logs = []
    resumed = simulate(config, out, progress=False, log=logs.append)
    assert any("continue from their last finished cycle" in m for m in logs), logs
    assert outcome(resumed) == outcome(uninterrupted)
    assert not list((out / "cells").glob("*.checkpoint.json"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_resume_after_kill_9(uninterrupted, tmp_path):
    """A real ``kill -9`` in the middle of the entropy cell (no cleanup code runs)."""
    out = tmp_path / "res"
    script = textwrap.dedent(
        f"""
        import os, signal
        from peal_sk.experiments import SimulationConfig, simulate, _simulate

        original = _simulate._save_checkpoint

        def save_then_die(path, state):
            original(path, state)
            if state["strategy"] == "entropy" and len(state["accuracy"]) == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        _simulate._save_checkpoint = save_then_die
        simulate(SimulationConfig(**{SMALL!r}), {str(out)!r}, progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == [
        "iterative-logreg-entropy-seed0.checkpoint.json",
        "iterative-logreg-random-seed0.json",
    ]
    resumed = simulate(SimulationConfig(**SMALL), out, progress=False, log=quiet)
    assert outcome(resumed) == outcome(uninterrupted)


def test_one_shot_resumes_at_the_next_budget(tmp_path, monkeypatch):
    config = SimulationConfig(mode="one-shot", strategies=["kcenter"], seeds=[0], budgets=[20, 40])
    whole = simulate(config, tmp_path / "a", progress=False, log=quiet)
    original = _simulate._save_checkpoint

    def save_then_die(path, state):
        original(path, state)
        raise Killed

    monkeypatch.setattr(_simulate, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        simulate(config, tmp_path / "b", progress=False, log=quiet)
    monkeypatch.setattr(_simulate, "_save_checkpoint", original)
    resumed = simulate(config, tmp_path / "b", progress=False, log=quiet)
    assert [c["accuracy"] for c in resumed["cells"]] == [c["accuracy"] for c in whole["cells"]]


def test_a_checkpoint_of_something_else_is_not_trusted(uninterrupted, tmp_path):
    out = tmp_path / "res"
    config = SimulationConfig(**SMALL)
    simulate(config, out, progress=False, log=quiet)
    (out / "cells" / "iterative-logreg-entropy-seed0.json").unlink()
    bad = out / "cells" / "iterative-logreg-entropy-seed0.checkpoint.json"
    bad.write_text(json.dumps({"model": "logreg", "strategy": "random", "seed": 0}))
    logs = []
    again = simulate(config, out, progress=False, log=logs.append)
    assert any("not a checkpoint of cell" in m for m in logs), logs
    assert outcome(again) == outcome(uninterrupted)
    assert not bad.exists()


def test_cycle_draws_depend_on_seed_and_cycle_only():
    seeds = {_simulate._cycle_seed(s, c) for s in range(3) for c in range(5)}
    assert len(seeds) == 15
    assert _simulate._cycle_seed(1, 4) == _simulate._cycle_seed(1, 4)


def test_per_cycle_times(uninterrupted):
    """fit / pool inference / selection / test times per cycle, aligned with n_labels;
    random never calls the model, entropy does in every query."""
    for cell in uninterrupted["cells"]:
        timing = cell["timing"]
        assert set(timing) == {"fit_s", "inference_s", "selection_s", "score_s"}
        assert all(len(v) == len(cell["n_labels"]) for v in timing.values())
        assert all(t >= 0 for v in timing.values() for t in v)
        assert timing["inference_s"][0] == timing["selection_s"][0] == 0  # the initial fit
        assert all(t > 0 for t in timing["fit_s"])
        queried = timing["inference_s"][1:]
        assert all(t > 0 for t in queried) if cell["strategy"] == "entropy" else queried == [0] * 3
    timing_table = uninterrupted["table"].split("\n\n", 1)[1]
    assert "| model | strategy | fit s | pool inference s | selection s | test s |" in timing_table
    assert "| logreg | entropy |" in timing_table and "| logreg | random |" in timing_table


def test_inference_clock_counts_outermost_calls_and_leaves_the_model_as_it_was(monkeypatch):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from peal_sk.learner import ActiveLearner
    from peal_sk.selection import FeatureDistanceSelector

    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))

    def query(learner):
        return learner.query(X[100:], n_instances=5, random_state=3)[0]

    learner = ActiveLearner(pipe, FeatureDistanceSelector(), X[:40], y[:40])
    plain = query(learner)
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    with _simulate._timed_inference(pipe) as clock:
        # featdist embeds the pool and the labelled samples through pipe[:-1].transform
        # (the scaler's transform) and predicts the pool's classes with pipe.predict_proba,
        # which calls the scaler's transform inside: one timed call each, 1 tick each
        timed = query(learner)
        pipe.predict_proba(X[:3])
    assert clock.seconds == 4.0
    assert list(timed) == list(plain)
    assert not {"transform", "predict_proba"} & (set(vars(pipe)) | set(vars(pipe[0])))
    assert not hasattr(pipe, "transform")  # still the Pipeline's answer


def test_pool_size_and_test_split_on_a_split_dataset():
    whole = load_dataset("digits", seed=1)
    pool = load_dataset("digits", seed=1, pool_size=300)
    assert len(pool.y_train) == 300 and pool.features_train.shape == (300, 64)
    # the test split does not depend on the pool size, and the pool holds no test image
    np.testing.assert_array_equal(pool.X_test, whole.X_test)
    train_rows = {row.tobytes() for row in whole.X_train}
    assert {row.tobytes() for row in pool.X_train} <= train_rows
    assert np.bincount(pool.y_train).min() >= 29  # stratified: 10 classes, about 30 each
    assert len(load_dataset("digits", seed=1, test_size=100).y_test) == 100


def test_own_test_split_used_whole_or_subsampled(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.arange(300, dtype=float)
    X = np.column_stack([ids, rng.normal(size=300)])  # column 0 names each sample
    y = np.arange(300) % 3
    path = tmp_path / "own.npz"
    np.savez(path, X_train=X[:200], y_train=y[:200], X_test=X[200:], y_test=y[200:])
    data = load_dataset(path, seed=0)
    assert data.own_test_split and len(data.y_test) == 100 and len(data.y_train) == 200
    small = load_dataset(path, seed=0, test_size=30, pool_size=60)
    assert len(small.y_test) == 30 and np.bincount(small.y_test).tolist() == [10, 10, 10]
    assert set(small.X_test[:, 0]) <= set(ids[200:]) and set(small.X_train[:, 0]) <= set(ids[:200])
    assert list(small.X_test[:, 0]) == sorted(small.X_test[:, 0])  # dataset order kept
    assert len(load_dataset(path, seed=0, test_size=0.5).y_test) == 50


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool_size=2000), "pool_size=2000 exceeds the 1347 training samples of digits"),
        (dict(pool_size=5), "pool_size=5 keeps 5 of the 1347 training samples"),
    ],
)
def test_bad_sizes_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pool-size", "5000"], "pool_size=5000 exceeds the 1347 training samples"),
        (["--pool-size", "40", "--cycles", "8"], "exceed the 40 training images of digits "),
        (["--test-size", "1.5"], "test_size must be a fraction in (0, 1)"),
        (["--pool-size", "0"], "must be >= 1"),
    ],
)
def test_bad_sizes_on_the_command_line(args, message, tmp_path, capsys):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *args, "--out", str(out), *FAST])
    # sizes that the dataset cannot hold are data errors (exit 1); malformed values are
    # command-line errors (exit 2, with the usage line)
    data_error = "exceed" in message
    assert exc.value.code == (1 if data_error else 2)
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_pool_size_on_the_command_line(tmp_path):
    out = tmp_path / "res"
    args = ["simulate", "--pool-size", "200", "--test-size", "300", "--strategies", "random"]
    assert main([*args, "--cycles", "2", "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["pool_size"] == 200 and results["config"]["test_size"] == 300
    (cell,) = results["cells"]
    assert max(cell["labeled"]) < 200 and len(set(cell["labeled"])) == 30


def test_results_of_the_previous_engine_are_not_mixed_in(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"digest": "0123456789abcdef", "config": {}}))
    config = SimulationConfig(**SMALL)
    with pytest.raises(FileExistsError, match="earlier version of the simulation engine"):
        simulate(config, out, progress=False, log=quiet)
    simulate(config, out, force=True, progress=False, log=quiet)


def test_progress_bar_counts_cycles(tmp_path, capsys):
    pytest.importorskip("tqdm")
    simulate(SimulationConfig(**SMALL), tmp_path / "res", progress=True, log=quiet)
    err = capsys.readouterr().err
    assert f"{2 * CYCLES_PER_CELL}/{2 * CYCLES_PER_CELL}" in err and "cycle" in err


@pytest.mark.parametrize("model", ["linear", "lora"])
def test_peal_cells_resume_to_the_same_numbers(model, tmp_path, monkeypatch):
    """PEALClassifier refits from its seeded initial state, whatever its caches hold: a
    cell resumed after cycle 1 (a new model, caches empty) ends as the uninterrupted one
    (caches filled by earlier fits and queries), and its pool inference is timed."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    y = np.arange(40) % 2
    X = np.where(y[:, None, None, None] == 1, 170, 60) + rng.integers(0, 40, (40, 14, 14, 3))
    path = tmp_path / "imgs.npz"
    np.savez(path, X=X.astype(np.uint8), y=y)
    config = SimulationConfig(
        dataset=str(path),
        strategies=["entropy"],
        models=[model],
        seeds=[0],
        initial=4,
        step=4,
        cycles=2,
        epochs=2,
        backbone="vit_small_patch14_dinov2",
        pretrained=False,
        img_size=14,
        backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2, "global_pool": "avg"},
    )
    from peal_sk.classifier._store import clear_stores  # the frozen outputs kept in memory

    clear_stores()
    whole = simulate(config, tmp_path / "a", progress=False, log=quiet)
    original = _simulate._save_checkpoint

    def save_then_die(path, state):
        original(path, state)
        if len(state["accuracy"]) == 2:
            raise Killed

    monkeypatch.setattr(_simulate, "_save_checkpoint", save_then_die)
    clear_stores()
    with pytest.raises(Killed):
        simulate(config, tmp_path / "b", progress=False, log=quiet)
    monkeypatch.setattr(_simulate, "_save_checkpoint", original)
    clear_stores()  # as in a new process: the resumed fit recomputes what the pool passes kept
    resumed = simulate(config, tmp_path / "b", progress=False, log=quiet)
    assert outcome(resumed) == outcome(whole)
    assert all(t > 0 for t in whole["cells"][0]["timing"]["inference_s"][1:])
    if model == "linear":  # the frozen backbone's outputs, kept on disk across the kill
        assert list((tmp_path / "b" / "cache" / "features").rglob("*.keys.npy"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seeds=[0, -1]), r"seeds must be >= 0 \(they seed NumPy generators\); got \[-1\]"),
        (dict(pool_size=0), "pool_size must be an int >= 1 or None; got 0"),
        (dict(test_size=0.0), r"test_size must be a fraction in \(0, 1\)"),
        (dict(test_size=True), "test_size must be"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**kwargs).validate()


def test_inference_clock_skips_passthrough_steps():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    pipe = Pipeline(
        [("none", "passthrough"), ("scale", StandardScaler()), ("lr", LogisticRegression())]
    ).fit(X[:200], y[:200])
    with _simulate._timed_inference(pipe) as clock:
        proba = pipe.predict_proba(X[:50])
    assert proba.shape == (50, 10) and clock.seconds > 0
    assert "predict_proba" not in vars(pipe) and "transform" not in vars(pipe["scale"])
