"""Corrupt, truncated, empty or foreign input files: each is one sentence on stderr naming the
file, a non-zero exit, and no output.

A table walks every file the pipeline reads (shards, their manifest, priors, checkpoints,
final.pt, sample chunks, FID references, the digits classifier, Inception weights) through
every way it can go wrong (truncated, a flipped byte, members swapped, the manifest edited, a
pickled payload, a wrong shape, empty), each under each verb that reads it.
"""

import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fdrl.classifier import train_classifier
from fdrl.cli import main
from fdrl.features import WEIGHT_FILES
from fdrl.priors import GaussianPrior
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard


class Payload:
    """A pickled object of a class: loading it would run code, so it must be refused."""


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Valid inputs: digits shards, their prior, a 2-step run, a chunk, a reference, a classifier."""
    root = tmp_path_factory.mktemp("made")
    shard("digits", "unused", root / "shards", shard_size=500)
    fit_prior([str(root / "shards")], root / "prior.pt", device="cpu")
    train_classifier(root / "classifier.pt", epochs=1)
    sets = {"data": root / "shards", "prior_path": root / "prior.pt", "network": "mlp_digits",
            "steps": 2, "batch": 8, "flow_steps": 2, "sample_steps": 2, "log_every": 1,
            "sample_every": 2, "checkpoint_every": 2}
    assert main(["train", "--out", str(root / "run"), "--device", "cpu",
                 *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]) == 0
    assert main(["sample", "--run", str(root / "run"), "--seeds", "0-15", "--device", "cpu",
                 "--out", str(root / "chunk.npz")]) == 0
    assert main(["fid-ref", "--shards", str(root / "shards"), "--backend", "classifier",
                 "--weights", str(root / "classifier.pt"), "--out", str(root / "ref.npz")]) == 0
    return root


# --- ways a file goes wrong --------------------------------------------------------------------

def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flipped(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def empty(path):
    path.write_bytes(b"")


def swapped_members(path):
    """Two members of a tar shard or an npz exchange their contents, names kept."""
    if path.suffix == ".tar":
        with tarfile.open(path) as t:
            members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
        (a, da), (b, db) = members[0], members[2]  # two images (each sample: .png and .cls)
        members[0], members[2] = (a, db), (b, da)
        with tarfile.open(path, "w") as t:
            for m, data in members:
                m.size = len(data)
                t.addfile(m, io.BytesIO(data))
    else:
        with np.load(path) as z:
            arrays = dict(z)
        arrays["images"], arrays["seeds"] = arrays["seeds"], arrays["images"]
        np.savez(path, **arrays)


def pickled(path):
    """A payload that only unpickling a class could load."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            arrays = dict(z)
        first = next(iter(arrays))
        arrays[first] = np.array([Payload()], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        torch.save({"x": Payload()}, path)


def edit_manifest(change):
    def edit(path):
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    edit.__name__ = change.__name__
    return edit


def count_off(m):
    m["count"] += 1


def checksum_off(m):
    m["shards"][0]["sha256"] = "0" * 64


def shape_off(m):
    m["shape"] = [3, 8, 8]


def one_shard_listed(m):
    m["shards"] = m["shards"][:1]


def wrong_shape(path):
    """The same kind of file, of other dimensions."""
    if path.name == "prior.pt":
        GaussianPrior.from_moments(torch.zeros(4), torch.eye(4), (1, 2, 2), 1).save(path)
    elif path.suffix == ".npz":
        with np.load(path) as z:
            arrays = dict(z)
        key = "images" if "images" in arrays else "mu"
        arrays[key] = arrays[key][:, :3] if key == "images" else arrays[key][:3]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:  # a state dict: one tensor cut short
        state = torch.load(path, weights_only=True)
        inner = state.get("state_dict", state.get("ema", state))
        name = next(k for k, v in inner.items() if v.dim() > 1)
        inner[name] = inner[name][:1]
        torch.save(state, path)


# --- the files, the verbs that read them -------------------------------------------------------

def verbs_of(kind, made, bad, out):
    """[(argv, output)] of every verb that reads a file of `kind`, reading `bad` instead."""
    cls = ["--backend", "classifier", "--weights", str(made / "classifier.pt")]
    train = ["train", "--device", "cpu", "--set", "network=mlp_digits", "--set", "steps=4",
             "--set", "batch=8", "--set", "flow_steps=2", "--set", "sample_steps=2"]
    shards = lambda folder: [  # noqa: E731
        (["fit-prior", "--shards", str(folder), "--out", str(out / "prior.pt")], out / "prior.pt"),
        ([*train, "--set", f"data={folder}", "--set", f"prior_path={made / 'prior.pt'}",
          "--out", str(out / "run")], out / "run"),
        (["fid-ref", "--shards", str(folder), *cls, "--out", str(out / "ref.npz")], out / "ref.npz")]
    return {
        "shard": lambda: shards(bad.parent),
        "manifest": lambda: shards(bad.parent),
        "prior": lambda: [([*train, "--set", f"data={made / 'shards'}", "--set",
                            f"prior_path={bad}", "--out", str(out / "run")], out / "run")],
        "checkpoint": lambda: [([*train, "--set", f"data={made / 'shards'}", "--set",
                                 f"prior_path={made / 'prior.pt'}", "--set", "checkpoint_every=2",
                                 "--out", str(bad.parent.parent)], bad.parent.parent / "final.pt")],
        "final": lambda: [(["sample", "--run", str(bad.parent), "--seeds", "0-3", "--out",
                            str(out / "chunk.npz")], out / "chunk.npz")],
        "chunk": lambda: [
            (["fid", "--samples", str(bad), "--ref", str(made / "ref.npz"), *cls, "--out",
              str(out / "fid.json")], out / "fid.json"),
            (["classify", "--samples", str(bad), "--classifier", str(made / "classifier.pt"),
              "--out", str(out / "classes.json")], out / "classes.json")],
        "reference": lambda: [(["fid", "--samples", str(made / "chunk.npz"), "--ref", str(bad),
                                *cls, "--out", str(out / "fid.json")], out / "fid.json")],
        "classifier": lambda: [(["fid-ref", "--shards", str(made / "shards"), "--backend",
                                 "classifier", "--weights", str(bad), "--out",
                                 str(out / "ref.npz")], out / "ref.npz")],
        "pytorch-fid weights": lambda: [(["fid-ref", "--shards", str(made / "shards"), "--backend",
                                          "pytorch-fid", "--weights", str(bad), "--out",
                                          str(out / "ref.npz")], out / "ref.npz")],
        "clean-fid weights": lambda: [(["fid-ref", "--shards", str(made / "shards"), "--backend",
                                        "clean-fid", "--weights", str(bad.parent), "--out",
                                        str(out / "ref.npz")], out / "ref.npz")],
    }[kind]()


def place(kind, made, weights, tmp):
    """A copy of a valid file of `kind` in `tmp` (with what must sit beside it); its path."""
    if kind in ("shard", "manifest"):
        folder = shutil.copytree(made / "shards", tmp / "shards")
        return folder / ("train-000001.tar" if kind == "shard" else "manifest.json")
    if kind in ("checkpoint", "final"):
        run = tmp / "victim"
        name = "checkpoints/step-000002.pt" if kind == "checkpoint" else "final.pt"
        (run / name).parent.mkdir(parents=True)
        shutil.copy(made / "run" / name, run / name)
        return run / name
    source = {"prior": made / "prior.pt", "chunk": made / "chunk.npz",
              "reference": made / "ref.npz", "classifier": made / "classifier.pt",
              "pytorch-fid weights": weights / WEIGHT_FILES["pytorch-fid"],
              "clean-fid weights": weights / WEIGHT_FILES["clean-fid"]}[kind]
    (tmp / "in").mkdir()
    return Path(shutil.copy(source, tmp / "in" / source.name))


TORCH_FILE = [truncated, flipped, empty, pickled, wrong_shape]
TABLE = {
    "shard": [truncated, flipped, empty, swapped_members],
    "manifest": [truncated, empty, *map(edit_manifest, (count_off, checksum_off, shape_off,
                                                         one_shard_listed))],
    "prior": TORCH_FILE,
    "checkpoint": TORCH_FILE,
    "final": TORCH_FILE,
    "chunk": [truncated, flipped, empty, swapped_members, pickled, wrong_shape],
    "reference": [truncated, flipped, empty, pickled, wrong_shape],
    "classifier": TORCH_FILE,
    "pytorch-fid weights": TORCH_FILE,
    "clean-fid weights": [truncated, flipped, empty],
}
CASES = [pytest.param(kind, how, id=f"{kind}-{how.__name__}") for kind, hows in TABLE.items()
         for how in hows]


def files(folder, bad):
    """What is in `folder` besides `bad` and run locks (an empty lock file is left by design: a
    lock file removed on release would race with a process that just opened it)."""
    return sorted(p for p in folder.rglob("*") if p != bad and p.name != ".lock")


@pytest.mark.parametrize("kind, how", CASES)
def test_a_bad_file_is_one_sentence_under_every_verb_that_reads_it(kind, how, made, random_weights,
                                                                   tmp_path, capsys):
    bad = place(kind, made, random_weights, tmp_path)
    how(bad)
    out = tmp_path / "out"
    for argv, output in verbs_of(kind, made, bad, out):
        before = files(tmp_path, bad)
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"fdrl {argv[0]}: error: "), err
        named = (str(bad), bad.name) if kind not in ("manifest", "clean-fid weights") else \
            (str(bad.parent), bad.name)
        assert any(n in err for n in named), err
        assert not output.exists() and files(tmp_path, bad) == before, f"{argv[0]} left output"


def no_room_past(limit):
    """For a child process: the kernel refuses its writes past `limit` bytes a file (EFBIG), as a
    full disk (ENOSPC) or a quota (EDQUOT) would refuse them."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_file_size


@pytest.mark.parametrize("verb", ["sample", "train"])
def test_a_write_that_finds_no_room_is_one_sentence(verb, made, tmp_path):
    if verb == "sample":  # a 1.9 MB chunk
        argv = ["sample", "--run", str(made / "run"), "--seeds", "0-29999", "--out",
                str(tmp_path / "chunk.npz")]
    else:  # 3.4 MB checkpoints
        argv = ["train", "--config", str(made / "run" / "config.yaml"), "--set", "steps=4",
                "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "fdrl", *argv, "--device", "cpu"], text=True,
                          capture_output=True, preexec_fn=no_room_past(1 << 20), timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.fullmatch(rf"fdrl {verb}: error: could not write \S+(chunk.npz|step-000002.pt) "
                        r"\(File too large\); free space .* and run again", last), last
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert not [n for n in left if n.endswith((".tmp", ".npz", ".pt"))], left


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


@pytest.mark.parametrize("layout", ["folder", "lmdb"])
def test_a_file_that_is_not_an_image_stops_shard_with_one_sentence(layout, tmp_path, capsys):
    # The third image is not one, so a 2-image shard was written before the error.
    from PIL import Image

    images = []
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(np.full((90, 100, 3), 40 * i, np.uint8)).save(buf, format="PNG")
        images.append(buf.getvalue())
    images.append(b"not an image")
    if layout == "folder":
        folder, name, bad = tmp_path / "cat2dog" / "trainA", "cat2dog_trainA", "2.png"
        folder.mkdir(parents=True)
        for i, data in enumerate(images):
            (folder / f"{i}.png").write_bytes(data)
    else:
        import lmdb

        env = lmdb.open(str(tmp_path / "church_outdoor_train_lmdb"), map_size=1 << 24)
        with env.begin(write=True) as txn:
            for i, data in enumerate(images):
                txn.put(f"key{i}".encode(), data)
        env.close()
        name, bad = "lsun_church", "'key2'"
    out = tmp_path / "shards"
    assert main(["shard", "--dataset", name, "--data-root", str(tmp_path), "--out", str(out),
                 "--shard-size", "2"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("fdrl shard: error: ") and bad in err and "is not an image" in err, err
    assert not out.exists()


def test_a_batch_of_zero_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sample", "--run", str(tmp_path), "--seeds", "0-3", "--batch", "0", "--out",
              str(tmp_path / "c.npz")])
    assert exit.value.code == 2 and "--batch: must be positive" in capsys.readouterr().err
