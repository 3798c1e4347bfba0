"""The ``peal-sk`` command line (``python -m peal_sk``)."""

import json
import subprocess
import sys

import pytest

from peal_sk.__main__ import ITERATIVE, ONE_SHOT, main

SMALL = ["demo", "--budgets", "12", "--cycles", "1", "--step", "5", "--seeds", "0"]


def test_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "res" / "demo.json"
    assert main([*SMALL, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "One-shot selection" in printed and "Iterative" in printed
    results = json.loads(out.read_text())
    assert set(results["one_shot"]) == set(ONE_SHOT)
    for per_budget in results["one_shot"].values():
        (acc,) = per_budget["12"]
        assert 0.0 <= acc <= 1.0
    curves = results["iterative"]["accuracy"]
    assert set(curves) == set(ITERATIVE)
    assert all(len(c[0]) == 2 for c in curves.values())  # initial + 1 cycle
    # every strategy starts from the same random labels
    assert len({c[0][0] for c in curves.values()}) == 1


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "demo.json"
    out.write_text("precious")
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "--output", str(out)])
    assert exc.value.code == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "precious"


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--budgets", "5000"], "exceed the pool of 1347"),
        (["demo", "--budgets", "0"], "must be >= 1"),
        (["demo", "--cycles", "200", "--step", "10"], "exceeds the pool"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "peal_sk", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--budgets" in proc.stdout and "--force" in proc.stdout
