"""``peal_sk.utils._io.write_atomic``: the one writer of results, shards and project files."""

import os

import numpy as np
import pytest

from peal_sk.utils._io import write_atomic


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_writes_bytes_text_and_callables(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "b.txt", "héllo\n")
    write_atomic(tmp_path / "c.npy", lambda fh: np.save(fh, np.arange(3)), fsync=True)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.arange(3))
    write_atomic(tmp_path / "b.txt", "replaced")  # overwrite=True replaces
    assert (tmp_path / "b.txt").read_text() == "replaced"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    write_atomic(path, "old")

    def half_then_fail(fh):
        fh.write(b"new but incomp")
        raise KeyboardInterrupt  # a killed run

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_no_overwrite_never_replaces(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a file system without hard links: exclusive create instead

        def no_link(src, dst):
            raise OSError("hard links not supported")

        monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "labels.csv"
    write_atomic(path, "first", overwrite=False)
    assert path.read_text() == "first"
    with pytest.raises(FileExistsError):
        write_atomic(path, "second", overwrite=False)
    assert path.read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_writers_that_take_a_file_name(tmp_path):
    path = tmp_path / "weights.npy"
    write_atomic(path, lambda name: np.save(name, np.arange(4)), by_name=True, fsync=True)
    np.testing.assert_array_equal(np.load(path), np.arange(4))

    def fail(name):
        with open(name, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail, by_name=True)
    np.testing.assert_array_equal(np.load(path), np.arange(4))
    with pytest.raises(TypeError, match="callable"):
        write_atomic(path, b"bytes", by_name=True)
    assert sorted(os.listdir(tmp_path)) == ["weights.npy"]  # no temporary file left
