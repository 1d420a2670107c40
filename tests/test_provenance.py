"""Provenance: training checks its shards before reading them, records the SHA-256 of its data
and prior, refuses to resume on other data or another prior, and FID refuses a reference of
other data than the samples' run trained on."""

import json
import shutil

import pytest
import torch

from fdrl.cli import main
from fdrl.data import manifest_sha256
from fdrl.io import sha256
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    shard("digits", "unused", root / "digits", shard_size=500)
    shard("digits_blur", "unused", root / "blur", shard_size=500)
    fit_prior([str(root / "digits")], root / "prior.pt", device="cpu")
    fit_prior([str(root / "blur")], root / "other_prior.pt", device="cpu")
    # A prior of the first shard only: of the same data, but another prior.
    fit_prior([str(root / "digits" / "train-000000.tar")], root / "subset_prior.pt", device="cpu")
    return root


def train(data, out, shards=None, prior=None, steps=2):
    sets = {"data": shards or data / "digits", "prior_path": prior or data / "prior.pt",
            "network": "mlp_digits", "steps": steps, "batch": 8, "flow_steps": 2,
            "sample_steps": 2, "log_every": 1, "sample_every": 2, "checkpoint_every": 2}
    return main(["train", "--out", str(out), "--device", "cpu",
                 *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))])


def copy_shards(data, tmp_path):
    return shutil.copytree(data / "digits", tmp_path / "shards")


def test_training_refuses_shards_that_do_not_match_their_manifest(data, tmp_path, capsys):
    shards = copy_shards(data, tmp_path)
    a, b = shards / "train-000000.tar", shards / "train-000001.tar"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())  # two shards swapped
    b.write_bytes(a_bytes)
    assert train(data, tmp_path / "run", shards) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-000000.tar" in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_manifest_whose_count_disagrees_with_its_shards_is_refused(data, tmp_path, capsys):
    shards = copy_shards(data, tmp_path)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]  # lists 1 of the shards, keeps the count
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert train(data, tmp_path / "run", shards) == 1
    err = capsys.readouterr().err
    assert "says 1498 images but its shards list 500" in err and err.count("\n") == 1, err


def test_a_prior_records_its_shards_and_training_refuses_one_of_other_data(data, tmp_path, capsys):
    from fdrl.priors import GaussianPrior

    assert GaussianPrior.load(data / "prior.pt").manifest_sha256 == manifest_sha256(data / "digits")
    # The blurred digits' prior, given to a run on the sharp digits (the same image shape).
    assert train(data, tmp_path / "run", prior=data / "other_prior.pt") == 1
    err = capsys.readouterr().err
    assert "was fitted on other shards than the run's data" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_runs_record_their_data_and_prior_and_refuse_to_resume_on_others(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(data, run, steps=2) == 0
    final = torch.load(run / "final.pt", weights_only=True)
    assert final["provenance"] == {"data_manifest_sha256": manifest_sha256(data / "digits"),
                                   "prior_sha256": sha256(data / "prior.pt")}
    capsys.readouterr()
    assert train(data, run, prior=data / "subset_prior.pt", steps=4) == 1
    err = capsys.readouterr().err
    assert "trained on other data or from another prior (prior_sha256" in err and err.count("\n") == 1
    # The same data at another path resumes: the manifest, not the path, names the data.
    assert train(data, run, shards=copy_shards(data, tmp_path), steps=4) == 0


def test_fid_refuses_a_reference_of_other_data(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(data, run, steps=2) == 0
    classifier = tmp_path / "c.pt"
    assert main(["train-classifier", "--epochs", "1", "--out", str(classifier)]) == 0
    chunk = tmp_path / "c.npz"
    assert main(["sample", "--run", str(run), "--seeds", "0-7", "--out", str(chunk), "--device", "cpu"]) == 0
    for name, shards in (("own", data / "digits"), ("blur", data / "blur")):
        assert main(["fid-ref", "--shards", str(shards), "--backend", "classifier", "--weights",
                     str(classifier), "--out", str(tmp_path / f"{name}.npz")]) == 0
    capsys.readouterr()
    out = tmp_path / "fid.json"
    args = ["fid", "--samples", str(chunk), "--backend", "classifier", "--weights", str(classifier)]
    assert main([*args, "--ref", str(tmp_path / "blur.npz"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "was made from digits_blur, but the samples' run" in err and err.count("\n") == 1, err
    assert not out.exists()
    assert main([*args, "--ref", str(tmp_path / "own.npz"), "--out", str(out)]) == 0
