"""FID: the Frechet distance against pytorch-fid and clean-fid, reference statistics, the four
backends end to end (Inception with seeded random weights made here), held-out real images, the
float-versus-uint8 bench, and the clear errors."""

import json
import os
import subprocess
import sys
import warnings
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
from fdrl.fid import fid, fid_ref, frechet_distance, load_reference, write_reference
from fdrl.io import sha256
from fdrl.moments import Moments
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


def features(n, d, shift, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift


# --- the Frechet distance --------------------------------------------------------------------

def test_frechet_distance_equals_pytorch_fid_and_clean_fid():
    from cleanfid.fid import fid_from_feats, frechet_distance as clean_fd
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = features(400, 32, 0.0, 1), features(300, 32, 0.3, 2)
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (f1, f2)]
    ours = frechet_distance(*stats[0], *stats[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # their sqrtm(disp=False)
        theirs = [calculate_frechet_distance(*stats[0], *stats[1]),
                  clean_fd(*stats[0], *stats[1]), fid_from_feats(f1, f2)]
    assert ours > 1
    np.testing.assert_allclose(theirs, ours, rtol=1e-12)
    # A few images in many features: singular covariances, where sqrtm is least accurate.
    few = [(f.mean(0), np.cov(f, rowvar=False))
           for f in (features(8, 64, 0.0, 3), features(20, 64, 0.3, 4))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their sqrtm: deprecation, singular matrix
        theirs = calculate_frechet_distance(*few[0], *few[1])
    assert frechet_distance(*few[0], *few[1]) == pytest.approx(theirs, rel=1e-6)


def test_equal_covariances_give_the_squared_distance_of_the_means():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    sigma = a @ a.T + np.eye(16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)
    assert abs(frechet_distance(mu1, sigma, mu1, sigma)) < 1e-9


def test_streamed_statistics_equal_numpy_mean_and_covariance():
    f = features(257, 24, 5.0, 3)
    stats = Moments(24, torch.device("cpu"))
    for batch in np.array_split(f, 5):
        stats.add(torch.from_numpy(batch).float())
    mean, cov = stats.mean_and_covariance(ddof=1)
    f32 = f.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-12)


MOMENTS_OF_GIVEN_ROWS = """
import sys, torch
from fdrl import distributed
from fdrl.moments import Moments

d = distributed.init("cpu")
rows = torch.load(sys.argv[1])
moments = Moments(rows.shape[1], d.device, block_rows=3)
for batch in rows[d.rank::d.world_size].split(7):
    moments.add(batch)
moments.all_reduce()
if d.is_main:
    torch.save(moments.mean_and_covariance(ddof=1), sys.argv[2])
distributed.shutdown()
"""


def test_moments_of_given_rows_are_the_same_over_one_or_two_gloo_processes(tmp_path):
    # Rows of multiples of 1/8 in [-4, 4]: every product and every partial sum is exact in
    # float64, so the reduction cannot depend on how the rows are split or summed, and the
    # results must agree bitwise. (Float32 features computed by a network are another matter:
    # see the end-to-end test below.)
    g = torch.Generator().manual_seed(0)
    torch.save(torch.randint(-32, 33, (301, 10), generator=g).float() / 8, tmp_path / "rows.pt")
    (tmp_path / "moments.py").write_text(MOMENTS_OF_GIVEN_ROWS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for nproc in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             str(nproc), str(tmp_path / "moments.py"), str(tmp_path / "rows.pt"),
             str(tmp_path / f"out{nproc}.pt")], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    (mean1, cov1), (mean2, cov2) = (torch.load(tmp_path / f"out{n}.pt") for n in (1, 2))
    assert torch.equal(mean1, mean2) and torch.equal(cov1, cov2)
    rows = torch.load(tmp_path / "rows.pt").double().numpy()
    np.testing.assert_allclose(cov1.numpy(), np.cov(rows, rowvar=False), rtol=1e-12, atol=1e-15)


# --- the classifier backend ------------------------------------------------------------------

def test_classifier_is_accurate_and_deterministic(classifier, tmp_path):
    blob = torch.load(classifier, weights_only=True)
    config = blob["config"]  # tested on the held-out digits_test
    assert config["test_accuracy"] > 0.95 and (config["train_size"], config["test_size"]) == (1498, 299)
    again = tmp_path / "again.pt"
    assert main(["train-classifier", "--out", str(again)]) == 0
    second = torch.load(again, weights_only=True)["state_dict"]
    assert all(torch.equal(v, second[k]) for k, v in blob["state_dict"].items())


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
        fid(ref, "classifier", tmp_path / "self.json", held_out=[str(digits)], weights=classifier,
            device="cpu")
    with pytest.raises(FdrlError, match="one of the two"):
        fid(ref, "classifier", tmp_path / "both.json", [str(tmp_path / "noise.npz")],
            [str(held_out)], weights=classifier, device="cpu")
    assert not (tmp_path / "self.json").exists() and not (tmp_path / "both.json").exists()


def test_fid_ref_and_fid_with_two_gloo_processes_match_one(digits, classifier, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    chunks = [write_chunk(tmp_path / f"c{i}.npz", digits_nhwc()[i * 301:(i + 1) * 301],
                          np.arange(i * 301, (i + 1) * 301)) for i in range(2)]
    common = ["--backend", "classifier", "--weights", str(classifier), "--device", "cpu"]
    for nproc in (1, 2):
        for verb in (["fid-ref", "--shards", str(digits), "--out", str(tmp_path / f"ref{nproc}.npz")],
                     ["fid", "--samples", *chunks, "--ref", str(tmp_path / f"ref{nproc}.npz"),
                      "--out", str(tmp_path / f"fid{nproc}.json")]):
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


def test_the_quantization_bench_measures_floats_and_uint8(digits, classifier, tmp_path):
    from fdrl.config import load_config
    from fdrl.prior_fit import fit_prior
    from fdrl.train import train

    fit_prior([str(digits)], tmp_path / "prior.pt", device="cpu")
    sets = {"data": digits, "prior": "data", "prior_path": tmp_path / "prior.pt",
            "network": "mlp_digits", "steps": 2, "batch": 8, "flow_steps": 3, "sample_steps": 5}
    train(load_config(None, [f"{k}={v}" for k, v in sets.items()], run_dir=tmp_path / "run"),
          tmp_path / "run", device="cpu")
    fid_ref([str(digits)], "classifier", tmp_path / "ref.npz", classifier, device="cpu")
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
@pytest.mark.parametrize("backend", ["torchvision-inception", "pytorch-fid", "clean-fid"])
def test_inception_backend_end_to_end_with_random_weights(backend, small_digits, random_weights, tmp_path):
    ref, out = tmp_path / "ref.npz", tmp_path / "fid.json"
    args = ["--backend", backend, "--weights", str(random_weights), "--device", "cpu", "--batch", "16"]
    shards = str(small_digits / "train-000000.tar")  # 32 images
    assert main(["fid-ref", "--shards", shards, "--out", str(ref), *args]) == 0
    chunk = write_chunk(tmp_path / "chunk.npz", digits_nhwc()[100:116])
    assert main(["fid", "--samples", chunk, "--ref", str(ref), "--out", str(out), *args]) == 0
    result = json.loads(out.read_text())
    weights = random_weights / WEIGHT_FILES[backend]
    assert result["backend"] == backend and result["weights"] == str(weights)
    assert result["weights_sha256"] == sha256(weights) and result["weights_kind"] == "random"
    assert "RANDOM weights, seed 0" in result["feature_extractor"]
    assert (result["n_images"], result["reference_n_images"], result["reference"]) == (16, 32, str(ref))
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    r = load_reference(ref)
    assert r["mu"].shape == (2048,) and r["sigma"].shape == (2048, 2048) and r["count"] == 32


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
    fid_ref([str(digits)], "classifier", ref, classifier, device="cpu")
    chunk = write_chunk(tmp_path / "c.npz", digits_nhwc()[:64])
    with pytest.raises(FdrlError, match="made with backend classifier, not pytorch-fid"):
        fid(ref, "pytorch-fid", tmp_path / "f.json", [chunk], device="cpu")
    r = load_reference(ref)
    other = tmp_path / "other.npz"
    meta = {k: v for k, v in r.items() if k not in ("mu", "sigma", "count")}
    write_reference(other, r["mu"], r["sigma"], r["count"], {**meta, "weights_sha256": "0" * 64})
    with pytest.raises(FdrlError, match="another feature extractor"):
        fid(other, "classifier", tmp_path / "f.json", [chunk], weights=classifier, device="cpu")
    write_reference(other, r["mu"], r["sigma"], r["count"], {**meta, "precision": "bf16"})
    with pytest.raises(FdrlError, match="precision 'bf16', here 'fp32'.*--precision"):
        fid(other, "classifier", tmp_path / "f.json", [chunk], weights=classifier, device="cpu")
    assert not (tmp_path / "f.json").exists()


def test_bad_sample_chunks_are_refused_before_any_work(digits, classifier, tmp_path):
    ref = tmp_path / "ref.npz"
    fid_ref([str(digits)], "classifier", ref, classifier, device="cpu")
    images = digits_nhwc()[:32]
    cases = {
        "uint8": [write_chunk(tmp_path / "float.npz", images.astype(np.float32) / 255)],
        "twice": [write_chunk(tmp_path / "a.npz", images)] * 2,
        "was made from": [write_chunk(tmp_path / "rgb.npz", np.zeros((4, 32, 32, 3), np.uint8))],
        "seeds": [write_chunk(tmp_path / "seeds.npz", images, np.arange(3))],
    }
    for message, chunks in cases.items():
        with pytest.raises(FdrlError, match=message):
            fid(ref, "classifier", tmp_path / "f.json", chunks, weights=classifier, device="cpu")
