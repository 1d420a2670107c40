"""`fdrl translate` (Sec. 6.5, Table 4, Fig. 7): a flow from the given source images, image i a
function of source image i and seed i alone; the blurred digits of the demo's translation task;
Table 4 from FID and classifier results."""

import json

import numpy as np
import pytest

from fdrl.chunks import read_chunks, read_labels
from fdrl.cli import main
from fdrl.config import load_config
from fdrl.data import ShardStore, shard_labels
from fdrl.datasets import blur_digits, dataset
from fdrl.errors import FdrlError
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard
from fdrl.tables import table4
from fdrl.train import train
from fdrl.translation import translate

from test_sampling import assert_same_images


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run trained with the blurred digits as its prior, one with the data prior, and the
    shards of the held-out blurred digits."""
    root = tmp_path_factory.mktemp("translation")
    for name in ("digits", "digits_blur", "digits_blur_test", "digits_test"):
        shard(name, "unused", root / name, shard_size=1000)
    fit_prior([str(root / "digits")], root / "prior.pt", device="cpu")
    common = {"data": root / "digits", "network": "mlp_digits", "steps": 3, "batch": 8,
              "flow_steps": 3, "sample_steps": 6, "log_every": 1, "sample_every": 3,
              "checkpoint_every": 3, "flip": False}
    for name, prior in (("source_run", {"prior": "source", "source": root / "digits_blur"}),
                        ("data_run", {"prior": "data", "prior_path": root / "prior.pt"})):
        sets = [f"{k}={v}" for k, v in {**common, **prior}.items()]
        train(load_config(None, sets, run_dir=root / name), root / name, device="cpu")
    return root


def test_the_blur_keeps_each_digit_and_its_ink_range():
    sharp = np.zeros((1, 8, 8))
    sharp[0, 2:6, 3:5] = 16
    blurred = blur_digits(sharp)
    assert blurred.min() >= 0 and blurred.max() <= 16
    assert blurred[0, 0, 0] < blurred[0, 3, 3] and blurred[0, 3, 1] > 0  # ink spreads, stays centred
    test = dataset("digits_blur_test").source("unused")
    assert len(test) == len(dataset("digits_test").source("unused")) == 299
    assert dataset("digits_blur_test").held_out_from == "digits_blur"
    assert [test[i][1] for i in range(5)] == [dataset("digits_test").source("")[i][1] for i in range(5)]


def test_zero_flow_steps_give_back_the_source_images_with_their_labels(runs, tmp_path):
    translate(runs / "source_run", runs / "digits_blur_test", tmp_path / "c.npz", steps=0,
              device="cpu")
    images, seeds, info = read_chunks([str(tmp_path / "c.npz")])
    store = ShardStore(runs / "digits_blur_test")
    source = np.stack([store.get(i) for i in range(len(store))]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(images, source)  # neither flipped nor dequantized
    np.testing.assert_array_equal(seeds, np.arange(299))
    np.testing.assert_array_equal(read_labels([str(tmp_path / "c.npz")]),
                                  shard_labels(runs / "digits_blur_test"))
    assert info["translation"]["source_dataset"] == "digits_blur_test" and info["steps"] == 0


def test_a_translated_image_depends_on_its_source_image_and_seed_alone(runs, tmp_path, device):
    run, source = runs / "source_run", runs / "digits_blur_test"
    for name, seeds, batch in (("all", range(12), 12), ("small", range(12), 5),
                               ("a", range(7), 256), ("b", range(7, 12), 256)):
        translate(run, source, tmp_path / f"{name}.npz", list(seeds), batch=batch,
                  device=device.type)
    whole = read_chunks([str(tmp_path / "all.npz")])[0]
    assert_same_images(read_chunks([str(tmp_path / "small.npz")])[0], whole)
    assert_same_images(read_chunks([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])[0], whole)
    assert not np.array_equal(whole[0], whole[1])


def test_bad_translations_are_one_sentence(runs, tmp_path, capsys):
    cases = {
        "trained with the data prior": ["--run", str(runs / "data_run"), "--source",
                                        str(runs / "digits_blur_test")],
        "held-out split of it": ["--run", str(runs / "source_run"), "--source",
                                 str(runs / "digits_test")],
        "names image 299": ["--run", str(runs / "source_run"), "--source",
                            str(runs / "digits_blur_test"), "--images", "298-400"],
        "runs backwards": ["--run", str(runs / "source_run"), "--source",
                           str(runs / "digits_blur_test"), "--images", "5-1"],
    }
    for message, args in cases.items():
        out = tmp_path / "out.npz"
        assert main(["translate", *args, "--out", str(out), "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def _fid(path, fid, backend, **origin):
    path.write_text(json.dumps({"fid": fid, "backend": backend, "feature_extractor": "x",
                                "n_images": 299, "reference_dataset": "digits_test", **origin}))
    return str(path)


def test_table4_puts_translation_beside_its_baseline_and_the_cited_rows(tmp_path):
    run = {"run": "r", "config_hash": "abc", "train_steps": 3, "steps": 110, "dataset": "digits",
           "prior": "source", "pairing": "lsif-pearson",
           "translation": {"source_dataset": "digits_blur_test"}}
    inputs = [_fid(tmp_path / "t.json", 18.0, "classifier", run=run),
              _fid(tmp_path / "u.json", 518.5, "classifier",
                   held_out={"dataset": "digits_blur_test"})]
    for name, result in {"labels": {"run": run, "accuracy": 0.9},
                         "real": {"dataset": "digits_test", "accuracy": 0.97},
                         "blur": {"dataset": "digits_blur_test", "accuracy": 0.6}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**result, "classes": [], "n_images": 299}))
        inputs.append(str(tmp_path / f"{name}.json"))
    rows = table4(inputs)
    assert [r["paper_fid"] for r in rows[:2]] == [108.10, 51.79]
    fdrl, baseline = rows[2:]
    assert (fdrl["method"], fdrl["fid"], fdrl["labels_kept"], fdrl["target_accuracy"]) == (
        "FDRL translation", "18.00", "0.9000", "0.9700")
    assert fdrl["paper_fid"] == ""  # digits, not Cat2dog
    assert (baseline["source"], baseline["fid"], baseline["labels_kept"]) == ("digits_blur_test", "518.50", "0.6000")
    with pytest.raises(FdrlError, match="FID results"):
        table4(inputs[2:])
