"""Atomic writes: on failure neither the target nor a temporary file is left behind."""

import os
import socket
import subprocess
import sys

import pytest

from fdrl.io import atomic_path, write_text_atomic


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.csv"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_writer_removes_the_temp_files_that_dead_writers_left(tmp_path):
    target = tmp_path / "final.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".final.pt.{host}.{dead}.abc123.tmp"  # a writer killed mid-write
    live = tmp_path / f".final.pt.{host}.{os.getppid()}.def456.tmp"  # one still writing
    elsewhere = tmp_path / f".final.pt.other-node.{dead}.ghi789.tmp"  # another host's
    other_target = tmp_path / f".prior.pt.{host}.{dead}.jkl012.tmp"
    for path in (stale, live, elsewhere, other_target):
        path.write_text("partial")
    write_text_atomic(target, "done")
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (target, live, elsewhere, other_target))
