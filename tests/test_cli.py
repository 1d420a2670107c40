"""`fdrl table table2|table3` through the real console entry point."""

import csv
import subprocess
import sys

import pytest

from fdrl.nets import RESNETS, build_network, count_parameters


def fdrl(*args):
    return subprocess.run([sys.executable, "-m", "fdrl", *args], capture_output=True, text=True)


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table2(tmp_path):
    out = tmp_path / "nested" / "table2.csv"
    proc = fdrl("table", "table2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read(out)
    assert list(rows[0]) == ["divergence", "f", "f_prime", "paired_loss", "max_abs_error"]
    assert [(r["divergence"], r["paired_loss"]) for r in rows] == [
        ("Pearson chi^2", "LSIF"), ("KL", "LR"), ("JS", "LR"), ("log D", "LR")]
    assert all(float(r["max_abs_error"]) < 1e-6 for r in rows)


def test_table3(tmp_path):
    out = tmp_path / "table3.csv"
    assert fdrl("table", "table3", "--out", str(out)).returncode == 0
    rows = read(out)
    assert list(rows[0]) == ["network", "image_size", "layers", "parameters"]
    assert {r["network"]: int(r["parameters"]) for r in rows} == {
        name: count_parameters(build_network(name)) for name, spec in RESNETS.items() if spec.in_table3}


@pytest.mark.parametrize("args", [["table", "table9", "--out", "x.csv"], ["table", "table2"], []])
def test_bad_arguments_exit_non_zero_with_a_message(args, tmp_path):
    proc = fdrl(*args)
    assert proc.returncode != 0 and "error" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_help_lists_the_verbs():
    proc = fdrl("--help")
    assert proc.returncode == 0 and "table" in proc.stdout
