"""Corrupt, truncated, empty or foreign input files: each is one sentence on stderr naming the
file and the fix, a non-zero exit, and no output."""

import pytest
import torch

from fdrl.cli import main
from fdrl.priors import GaussianPrior


class Payload:
    """A pickled object of a class: loading it would run code, so it must be refused."""


def tiny_prior(path):
    GaussianPrior(torch.zeros(4), torch.eye(4), (1, 2, 2), 1).save(path)
    return path


def corrupt(kind, path):
    """Writes a file of `kind` at `path`: truncated, flipped, empty, text, or a pickled object."""
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickled object":  # weights_only refuses classes it does not know
        torch.save({"x": Payload()}, path)
    else:
        data = bytearray(tiny_prior(path).read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 2]
        else:  # a flipped byte inside the zip's central directory
            data[-30] ^= 0xFF
        path.write_bytes(bytes(data))
    return path


KINDS = ["truncated", "flipped", "empty", "text", "pickled object"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_prior_is_one_sentence(kind, tmp_path, capsys):
    prior = corrupt(kind, tmp_path / "prior.pt")
    out = tmp_path / "fig.png"
    assert main(["figure", "fig11", "--out", str(out), str(prior)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(prior) in err and "fdrl fit-prior" in err, err
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_final_pt_is_one_sentence(kind, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    corrupt(kind, tmp_path / "run" / "final.pt")
    out = tmp_path / "chunk.npz"
    assert main(["sample", "--run", str(tmp_path / "run"), "--seeds", "0-3", "--out", str(out),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "final.pt" in err and "fdrl train" in err, err
    assert not out.exists()


def test_an_empty_dataset_folder_and_a_file_as_shard_folder(tmp_path, capsys):
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert main(["shard", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "shards")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete or corrupt" in err and "download=True" in err, err
    assert not (tmp_path / "shards").exists()
    (tmp_path / "afile").write_text("")
    assert main(["shard", "--dataset", "digits", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "afile")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_manifest_whose_shape_was_edited_is_refused(tmp_path, capsys):
    import json

    from fdrl.shards import shard

    shard("digits", "unused", tmp_path / "shards", shard_size=1000)
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    manifest["shape"] = [3, 8, 8]
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()  # shard's progress bar
    out = tmp_path / "prior.pt"
    assert main(["fit-prior", "--shards", str(tmp_path / "shards"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "says images of shape (3, 8, 8), but digits's are (1, 8, 8)" in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_a_batch_of_zero_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sample", "--run", str(tmp_path), "--seeds", "0-3", "--batch", "0", "--out",
              str(tmp_path / "c.npz")])
    assert exit.value.code == 2 and "--batch: must be positive" in capsys.readouterr().err
