"""FID: reference statistics, the four backends end to end and one process serving several
(Inception with seeded random weights made here), held-out real images, the float-versus-uint8
bench, and the clear errors. The Frechet distance itself: tests/test_frechet.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdrl.cli import main
from fdrl.datasets import dataset
from fdrl.errors import FdrlError
from fdrl.features import (CLEAN_FID_FILE, TORCHVISION_FILE, WEIGHT_FILES, load_extractor,
                           resolve_weights)
from fdrl.fid import fid, fid_ref, load_reference, write_reference
from fdrl.io import sha256
from fdrl.shards import shard


def digits_nhwc():
    src = dataset("digits").source("unused")
    return np.stack([src[i][0] for i in range(len(src))]).transpose(0, 2, 3, 1)


def write_chunk(path, images, seeds=None):
    np.savez(path, images=images, seeds=np.arange(len(images)) if seeds is None else seeds)
    return str(path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    shard("digits", "unused", out, shard_size=400)
    return out


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """Shards of 32 images: Inception at 299 x 299 takes about 0.35 s an image on 2 CPU cores."""
    out = tmp_path_factory.mktemp("small_digits")
    shard("digits", "unused", out, shard_size=32)
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    assert main(["train-classifier", "--out", str(path)]) == 0
    return path


# --- the classifier backend ------------------------------------------------------------------

def test_classifier_is_accurate(classifier):
    config = torch.load(classifier, weights_only=True)["config"]  # tested on the held-out digits_test
    assert config["test_accuracy"] > 0.95 and (config["train_size"], config["test_size"]) == (1498, 299)


def test_classifier_training_is_deterministic(tmp_path):
    # Two epochs twice, not the 30 of the fixture twice: the order of the batches and the
    # updates is what could differ, and it does so from the first epoch on.
    blobs = []
    for name in ("first.pt", "second.pt"):
        assert main(["train-classifier", "--epochs", "2", "--out", str(tmp_path / name)]) == 0
        blobs.append(torch.load(tmp_path / name, weights_only=True)["state_dict"])
    assert all(torch.equal(v, blobs[1][k]) for k, v in blobs[0].items())


def test_classifier_fid_end_to_end(digits, classifier, tmp_path):
    ref = tmp_path / "ref.npz"
    args = ["--backend", "classifier", "--weights", str(classifier), "--device", "cpu"]
    assert main(["fid-ref", "--shards", str(digits), "--out", str(ref), *args]) == 0
    r = load_reference(ref)
    assert (r["count"], r["mu"].shape, r["backend"]) == (1498, (64,), "classifier")
    assert r["sigma"].dtype == np.float64 and r["dataset"] == "digits"
    images = digits_nhwc()
    noise = np.random.default_rng(0).integers(0, 256, images[:500].shape, dtype=np.uint8)
    values = {}
    for name, imgs in (("self", images), ("half", images[:900]), ("noise", noise)):
        out = tmp_path / f"{name}.json"
        assert main(["fid", "--samples", write_chunk(tmp_path / f"{name}.npz", imgs), "--ref",
                     str(ref), "--out", str(out), *args]) == 0
        values[name] = json.loads(out.read_text())
    assert abs(values["self"]["fid"]) < 1e-6  # a set against itself
    assert values["half"]["fid"] < values["noise"]["fid"] / 50
    v = values["half"]
    assert v["feature_extractor"].startswith("classifier") and "Inception" not in v["feature_extractor"]
    assert (v["n_images"], v["reference"], v["weights_sha256"]) == (900, str(ref), sha256(classifier))


def test_held_out_real_images_score_against_the_training_reference(digits, classifier, tmp_path,
                                                                   capsys, bar_states):
    ref, held_out = tmp_path / "ref.npz", tmp_path / "digits_test"
    args = ["--backend", "classifier", "--weights", str(classifier), "--device", "cpu"]
    assert main(["fid-ref", "--shards", str(digits), "--out", str(ref), *args]) == 0
    shard("digits_test", "unused", held_out, shard_size=100)
    out = tmp_path / "real.json"
    capsys.readouterr()
    assert main(["fid", "--shards", str(held_out), "--ref", str(ref), "--out", str(out), *args]) == 0
    assert " 299/299 " in bar_states(capsys.readouterr().err, "img")[-1]  # the images, their rate
    real = json.loads(out.read_text())
    assert (real["n_images"], real["held_out"]["dataset"], real["reference_dataset"]) == (
        299, "digits_test", "digits")
    # Real digits no model saw are close to the training set, far closer than noise.
    noise = np.random.default_rng(0).integers(0, 256, (299, 8, 8, 1), dtype=np.uint8)
    assert main(["fid", "--samples", write_chunk(tmp_path / "noise.npz", noise), "--ref", str(ref),
                 "--out", str(tmp_path / "noise.json"), *args]) == 0
    assert 0 < real["fid"] < json.loads((tmp_path / "noise.json").read_text())["fid"] / 20
    # The reference's own images are not held out; samples and shards at once is ambiguous.
    with pytest.raises(FdrlError, match="not a held-out split .* digits_test, digits_blur_test, cifar10_test"):
        fid([ref], ["classifier"], [tmp_path / "self.json"], held_out=[str(digits)],
            weights={"classifier": classifier}, device="cpu")
    with pytest.raises(FdrlError, match="one of the two"):
        fid([ref], ["classifier"], [tmp_path / "both.json"], [str(tmp_path / "noise.npz")],
            [str(held_out)], weights={"classifier": classifier}, device="cpu")
    assert not (tmp_path / "self.json").exists() and not (tmp_path / "both.json").exists()


def test_fid_ref_and_fid_with_two_gloo_processes_match_one(digits, classifier, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    chunks = [write_chunk(tmp_path / f"c{i}.npz", digits_nhwc()[i * 301:(i + 1) * 301],
                          np.arange(i * 301, (i + 1) * 301)) for i in range(2)]
    common = ["--backend", "classifier", "--weights", str(classifier), "--device", "cpu"]
    # 41 images, fewer than the classifier's 64 features: their features are gathered from the
    # ranks (21 and 20) for the distance through rows.
    few = write_chunk(tmp_path / "few.npz", digits_nhwc()[700:741], np.arange(700, 741))
    for nproc in (1, 2):
        ref = str(tmp_path / f"ref{nproc}.npz")
        for verb in (["fid-ref", "--shards", str(digits), "--out", ref],
                     ["fid", "--samples", *chunks, "--ref", ref, "--out", str(tmp_path / f"fid{nproc}.json")],
                     ["fid", "--samples", few, "--ref", ref, "--out", str(tmp_path / f"few{nproc}.json")]):
            proc = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(nproc), "-m", "fdrl", *verb, *common],
                capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
    # Each process runs the network on other batches than the single process does, and the
    # float32 kernels (chosen by batch shape and CPU) may sum in another order: a feature can
    # differ in its last bits, about 1e-7 of the features' scale. The covariance inherits errors
    # of that order, relative to its largest entries (3.6e-5 relative, 1.8e-7 absolute on small
    # entries was seen on one machine); allow 1e-5 of the largest entry. A wrong split or a
    # missing all-reduce changes the covariance at the scale of its entries, far above that.
    one, two = load_reference(tmp_path / "ref1.npz"), load_reference(tmp_path / "ref2.npz")
    assert one["count"] == two["count"] == 1498
    scale = np.abs(one["sigma"]).max()
    np.testing.assert_allclose(two["sigma"], one["sigma"], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(two["mu"], one["mu"], rtol=0, atol=1e-5 * np.abs(one["mu"]).max())
    fids = [json.loads((tmp_path / f"fid{n}.json").read_text()) for n in (1, 2)]
    assert fids[0]["n_images"] == fids[1]["n_images"] == 602
    assert fids[1]["fid"] == pytest.approx(fids[0]["fid"], rel=1e-4)
    fews = [json.loads((tmp_path / f"few{n}.json").read_text()) for n in (1, 2)]
    assert fews[0]["n_images"] == fews[1]["n_images"] == 41
    assert fews[1]["fid"] == pytest.approx(fews[0]["fid"], rel=1e-4)


def test_only_a_scored_set_of_fewer_images_than_features_keeps_them(digits, classifier, tmp_path,
                                                                    monkeypatch):
    from fdrl import fid as fid_module

    kept, moments = [], fid_module.Moments
    monkeypatch.setattr(fid_module, "Moments",
                        lambda *a, **k: kept.append(k.get("keep_rows")) or moments(*a, **k))
    ref, weights = tmp_path / "ref.npz", {"classifier": classifier}
    fid_ref([str(digits)], ["classifier"], [ref], weights, device="cpu")  # a reference: never
    for n in (40, 100):  # the classifier's features are 64-d
        chunk = write_chunk(tmp_path / f"{n}.npz", digits_nhwc()[:n])
        fid([ref], ["classifier"], [tmp_path / f"{n}.json"], [chunk], weights=weights, device="cpu")
    assert kept == [False, True, False]


def test_the_quantization_bench_measures_floats_and_uint8(digits, classifier, tmp_path):
    from fdrl.config import load_config
    from fdrl.prior_fit import fit_prior
    from fdrl.train import train

    fit_prior([str(digits)], tmp_path / "prior.pt", device="cpu")
    sets = {"data": digits, "prior": "data", "prior_path": tmp_path / "prior.pt",
            "network": "mlp_digits", "steps": 2, "batch": 8, "flow_steps": 3, "sample_steps": 5}
    train(load_config(None, [f"{k}={v}" for k, v in sets.items()], run_dir=tmp_path / "run"),
          tmp_path / "run", device="cpu")
    fid_ref([str(digits)], ["classifier"], [tmp_path / "ref.npz"], {"classifier": classifier},
            device="cpu")
    proc = subprocess.run(
        [sys.executable, "bench/fid_quantization.py", "--run", str(tmp_path / "run"), "--ref",
         str(tmp_path / "ref.npz"), "--backend", "classifier", "--weights", str(classifier),
         "--seeds", "0-99", "--batch", "40", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n_images"] == 100 and result["fid_float"] > 0
    # Rounding to uint8 moves each pixel by at most half a level of 255.
    assert abs(result["relative_change"]) < 0.01
    assert result["fid_uint8"] == pytest.approx(result["fid_float"] * (1 + result["relative_change"]))


# --- the Inception backends, with seeded random weights made here -----------------------------

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 16 images, 2048 features
def test_every_backend_end_to_end_in_one_process_as_in_one_each(small_digits, classifier,
                                                                 random_weights, tmp_path):
    backends = ["torchvision-inception", "pytorch-fid", "clean-fid", "classifier"]
    refs = [str(tmp_path / f"ref_{b}.npz") for b in backends]
    outs = [str(tmp_path / f"fid_{b}.json") for b in backends]
    args = ["--weights", str(random_weights), "--weights", f"classifier={classifier}",
            "--device", "cpu", "--batch", "16"]
    shards = str(small_digits / "train-000000.tar")  # 32 images
    assert main(["fid-ref", "--shards", shards, "--backend", *backends, "--out", *refs, *args]) == 0
    chunk = write_chunk(tmp_path / "chunk.npz", digits_nhwc()[100:116])
    assert main(["fid", "--samples", chunk, "--backend", *backends, "--ref", *refs, "--out", *outs,
                 *args]) == 0
    for backend, ref, out in zip(backends, refs, outs):
        result, r = json.loads(Path(out).read_text()), load_reference(ref)
        weights = classifier if backend == "classifier" else random_weights / WEIGHT_FILES[backend]
        assert result["backend"] == r["backend"] == backend and result["weights"] == str(weights)
        assert result["weights_sha256"] == r["weights_sha256"] == sha256(weights)
        assert (result["n_images"], result["reference_n_images"], result["reference"]) == (16, 32, ref)
        assert np.isfinite(result["fid"]) and result["fid"] > 0
        dim = 64 if backend == "classifier" else 2048
        assert r["mu"].shape == (dim,) and r["sigma"].shape == (dim, dim) and r["count"] == 32
        if backend != "classifier":
            assert result["weights_kind"] == "random"
            assert "RANDOM weights, seed 0" in result["feature_extractor"]
    # A backend alone sees the same batches: the same statistics and FID as among the others.
    alone = ["--backend", "clean-fid", "--weights", str(random_weights), "--device", "cpu",
             "--batch", "16"]
    assert main(["fid-ref", "--shards", shards, "--out", str(tmp_path / "ref.npz"), *alone]) == 0
    assert main(["fid", "--samples", chunk, "--ref", str(tmp_path / "ref.npz"), "--out",
                 str(tmp_path / "fid.json"), *alone]) == 0
    one, among = load_reference(tmp_path / "ref.npz"), load_reference(refs[2])
    np.testing.assert_allclose(one["sigma"], among["sigma"], rtol=1e-12, atol=1e-15)
    assert json.loads((tmp_path / "fid.json").read_text())["fid"] == pytest.approx(
        json.loads(Path(outs[2]).read_text())["fid"], rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--backend", "classifier", "pytorch-fid", "--ref", "a.npz", "--out", "a.json", "b.json"],
     "--ref takes one path per --backend, in the same order; got 1 for classifier pytorch-fid"),
    (["--backend", "classifier", "--ref", "a.npz", "--out", "a.json", "b.json"],
     "--out takes one path per --backend, in the same order; got 2 for classifier$"),
    (["--backend", "classifier", "classifier", "--ref", "a.npz", "a.npz", "--out", "a", "b"],
     "names classifier more than once"),
    (["--backend", "classifier", "--weights", "a.pt", "--weights", "b.pt", "--ref", "a.npz",
      "--out", "a.json"], "at most one plain PATH .* --weights BACKEND=PATH"),
    (["--backend", "classifier", "--weights", "clean-fid=w", "--ref", "a.npz", "--out", "a.json"],
     "names clean-fid, which is not among --backend classifier"),
])
def test_paths_and_weights_that_do_not_pair_with_the_backends_are_refused(
        digits, classifier, tmp_path, monkeypatch, capsys, args, message):
    import re

    monkeypatch.chdir(tmp_path)
    fid_ref([str(digits)], ["classifier"], ["a.npz"], {"classifier": classifier}, device="cpu")
    chunk = write_chunk(tmp_path / "c.npz", digits_nhwc()[:8])
    capsys.readouterr()
    assert main(["fid", "--samples", chunk, "--device", "cpu", *args]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_inception_features_equal_the_libraries_own_image_pipelines(random_weights, tmp_path):
    """Our in-memory preprocessing gives the features the libraries compute from PNG files."""
    from cleanfid.fid import get_files_features
    from pytorch_fid.fid_score import get_activations

    images = digits_nhwc()[:4]
    files = []
    for i, img in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img[:, :, 0]).save(files[-1])
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    for backend in ("pytorch-fid", "torchvision-inception"):  # both are pytorch-fid's InceptionV3
        pt = load_extractor(backend, random_weights)
        theirs = get_activations(files, pt.model, batch_size=4, dims=2048, device="cpu",
                                 num_workers=0)
        np.testing.assert_allclose(pt(batch).numpy(), theirs, rtol=1e-5, atol=1e-6)
    clean = load_extractor("clean-fid", random_weights)
    theirs = get_files_features(files, model=clean.model, num_workers=0, batch_size=4, device="cpu",
                                mode="clean", verbose=False)
    np.testing.assert_allclose(clean(batch).numpy(), theirs, rtol=1e-5, atol=1e-6)


# --- clear errors -----------------------------------------------------------------------------

def test_missing_inception_weights_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FdrlError) as err:
        resolve_weights("pytorch-fid", None)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / WEIGHT_FILES["pytorch-fid"]) in str(err.value)
    assert "fdrl fetch-weights" in str(err.value)
    (tmp_path / "staged").mkdir()
    with pytest.raises(FdrlError, match=f"{tmp_path}/staged/{CLEAN_FID_FILE}.*fetch-weights"):
        resolve_weights("clean-fid", tmp_path / "staged")
    with pytest.raises(FdrlError, match=f"hub/checkpoints/{TORCHVISION_FILE}.*fetch-weights"):
        resolve_weights("torchvision-inception", None)
    with pytest.raises(FdrlError, match="train-classifier"):
        resolve_weights("classifier", None)


def test_missing_weights_through_the_command(small_digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = main(["fid-ref", "--shards", str(small_digits), "--backend", "pytorch-fid",
                 "--out", str(tmp_path / "ref.npz"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "fdrl fid-ref: error:" in err and "fetch-weights" in err
    assert not (tmp_path / "ref.npz").exists()


def test_fetch_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    from fdrl.features import fetch_weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FdrlError, match="machine with internet"):
        fetch_weights(tmp_path)


def test_a_reference_of_another_backend_or_extractor_is_refused(digits, classifier, tmp_path):
    ref = tmp_path / "ref.npz"
    fid_ref([str(digits)], ["classifier"], [ref], {"classifier": classifier}, device="cpu")
    chunk = write_chunk(tmp_path / "c.npz", digits_nhwc()[:64])
    with pytest.raises(FdrlError, match="made with backend classifier, not pytorch-fid"):
        fid([ref], ["pytorch-fid"], [tmp_path / "f.json"], [chunk], device="cpu")
    r = load_reference(ref)
    other = tmp_path / "other.npz"
    meta = {k: v for k, v in r.items() if k not in ("mu", "sigma", "count")}
    write_reference(other, r["mu"], r["sigma"], r["count"], {**meta, "weights_sha256": "0" * 64})
    with pytest.raises(FdrlError, match="another feature extractor"):
        fid([other], ["classifier"], [tmp_path / "f.json"], [chunk], weights={"classifier": classifier},
            device="cpu")
    write_reference(other, r["mu"], r["sigma"], r["count"], {**meta, "precision": "bf16"})
    with pytest.raises(FdrlError, match="precision 'bf16', here 'fp32'.*--precision"):
        fid([other], ["classifier"], [tmp_path / "f.json"], [chunk], weights={"classifier": classifier},
            device="cpu")
    assert not (tmp_path / "f.json").exists()


def test_bad_sample_chunks_are_refused_before_any_work(digits, classifier, tmp_path):
    ref = tmp_path / "ref.npz"
    fid_ref([str(digits)], ["classifier"], [ref], {"classifier": classifier}, device="cpu")
    images = digits_nhwc()[:32]
    cases = {
        "uint8": [write_chunk(tmp_path / "float.npz", images.astype(np.float32) / 255)],
        "twice": [write_chunk(tmp_path / "a.npz", images)] * 2,
        "was made from": [write_chunk(tmp_path / "rgb.npz", np.zeros((4, 32, 32, 3), np.uint8))],
        "seeds": [write_chunk(tmp_path / "seeds.npz", images, np.arange(3))],
    }
    for message, chunks in cases.items():
        with pytest.raises(FdrlError, match=message):
            fid([ref], ["classifier"], [tmp_path / "f.json"], chunks,
                weights={"classifier": classifier}, device="cpu")
