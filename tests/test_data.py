"""Datasets, WebDataset shards, the readers, and the data-dependent prior (Eq. 8)."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fdrl.data import ShardStore, TrainStream, load_manifest, one_pass, select_shards, verify
from fdrl.datasets import DATASETS, dataset
from fdrl.errors import FdrlError
from fdrl.moments import Moments
from fdrl.prior_fit import fit_prior
from fdrl.shards import shard


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    shard("digits", "unused", out, shard_size=400)
    return out


def digits_array():
    src = dataset("digits").source("unused")
    return np.stack([src[i][0] for i in range(len(src))])


def numpy_moments():
    x = digits_array().reshape(1498, -1).astype(np.float64) / 127.5 - 1
    return x.mean(0), np.cov(x, rowvar=False, bias=True)


def test_shards_hold_every_image_losslessly(digits):
    m = load_manifest(digits)
    assert (m.count, m.shape, [s["count"] for s in m.shards]) == (1498, (1, 8, 8), [400] * 3 + [298])
    store = ShardStore(digits)
    images = digits_array()
    assert all(np.array_equal(store.get(i), images[i]) for i in (0, 399, 400, 1497))


def test_resharding_gives_identical_bytes(digits, tmp_path):
    shard("digits", "unused", tmp_path, shard_size=400, workers=2)
    for name in sorted(os.listdir(digits)):
        assert (tmp_path / name).read_bytes() == (digits / name).read_bytes(), name


def test_one_pass_with_2_ranks_and_2_workers_sees_every_index_once(digits):
    seen = [int(i) for rank in range(2) for idx, _ in one_pass(digits, rank, 2, workers=2, batch=64)
            for i in idx]
    assert sorted(seen) == list(range(1498))


def test_train_stream_is_the_same_global_batch_for_any_world_size(digits):
    store = ShardStore(digits)
    one = TrainStream(store, 8, rank=0, world_size=1, seed=3, flip=True, dequantization=0.03)
    two = [TrainStream(store, 8, rank=r, world_size=2, seed=3, flip=True, dequantization=0.03)
           for r in range(2)]
    for step in (0, 1, 250):  # 250 * 8 > 1498: the second epoch, reshuffled
        assert torch.equal(one.batch(step), torch.cat([s.batch(step) for s in two]))
    # One epoch visits every image once; the next visits them in another order.
    first = torch.cat([one.indices(t) for t in range(1498 // 8)])
    assert len(set(first.tolist())) == len(first)
    assert not torch.equal(one.indices(0), one.indices(225))


def test_train_stream_augments_and_scales(digits):
    store = ShardStore(digits)
    def stream(flip, dequantization):
        return TrainStream(store, 16, 0, 1, seed=1, flip=flip, dequantization=dequantization)

    plain = stream(flip=False, dequantization=0.0).batch(0)
    images = torch.from_numpy(digits_array()).float() / 127.5 - 1
    assert torch.equal(plain, images[stream(True, 0.03).indices(0)])
    noisy = stream(flip=False, dequantization=0.03).batch(0)
    assert abs((noisy - plain).std().item() - 0.03) < 0.003
    flipped = stream(flip=True, dequantization=0.0).batch(0)
    n_flipped = sum(not torch.equal(a, b) and torch.equal(a, b.flip(-1)) for a, b in zip(flipped, plain))
    assert 2 <= n_flipped <= 14


def test_global_batch_must_divide_among_ranks(digits):
    with pytest.raises(FdrlError, match="does not divide among 3"):
        TrainStream(ShardStore(digits), 8, rank=0, world_size=3, seed=0, flip=True,
                    dequantization=0.03)


def test_blocked_accumulation_equals_unblocked(digits):
    batches = [images for _, images in one_pass(digits, batch=300)]
    plain, blocked = Moments(64, torch.device("cpu")), Moments(64, torch.device("cpu"), block_rows=5)
    for b in batches:
        plain.add(b.flatten(1).double() / 127.5 - 1)
        blocked.add(b.flatten(1).double() / 127.5 - 1)
    torch.testing.assert_close(blocked.outer, plain.outer, rtol=1e-14, atol=0)


def test_fit_prior_in_one_process_matches_numpy(digits, tmp_path):
    prior = fit_prior([str(digits)], tmp_path / "prior.pt", moments_out=tmp_path / "m.pt", device="cpu")
    m = torch.load(tmp_path / "m.pt", weights_only=True)
    mean, cov = numpy_moments()
    np.testing.assert_allclose(m["mean"].numpy(), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m["covariance"].numpy(), cov, rtol=1e-10, atol=1e-12)
    assert prior.count == 1498 and prior.shape == (1, 8, 8)


def test_fit_prior_shows_its_images_per_second(digits, tmp_path, capsys, bar_states):
    fit_prior([str(digits)], tmp_path / "prior.pt", device="cpu")
    last = bar_states(capsys.readouterr().err, "img")[-1]
    assert last.startswith("fit-prior digits") and " 1498/1498 " in last


def test_fit_prior_with_two_gloo_processes_matches_numpy(digits, tmp_path, bar_states,
                                                         rank_stderr):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--log-dir", str(tmp_path / "logs"), "--redirects", "2",
         "-m", "fdrl", "fit-prior", "--shards", str(digits), "--out", str(tmp_path / "prior.pt"),
         "--moments-out", str(tmp_path / "m.pt"), "--device", "cpu", "--block-rows", "16"],
        capture_output=True, text=True, env=env, timeout=300)
    errs = [rank_stderr(tmp_path / "logs", rank) for rank in (0, 1)]
    assert proc.returncode == 0, proc.stderr[-3000:] + errs[0][-3000:]
    m = torch.load(tmp_path / "m.pt", weights_only=True)
    mean, cov = numpy_moments()
    np.testing.assert_allclose(m["mean"].numpy(), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m["covariance"].numpy(), cov, rtol=1e-10, atol=1e-12)
    assert " 800/800 " in bar_states(errs[0], "img")[-1]  # rank 0's shards 0 and 2
    assert bar_states(errs[1], "img") == []


def truncate(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(folder):
        data = (folder / name).read_bytes()
        (broken / name).write_bytes(data[: len(data) // 3] if name == "train-000002.tar" else data)
    return broken


def test_a_selection_of_shards_counts_what_its_manifest_lists(digits):
    whole = select_shards([str(digits)])
    assert whole.files is None and whole.count == 1498 and len(whole.file_names) == 4
    two = select_shards([str(digits / "train-000000.tar"), str(digits / "train-000003.tar")])
    assert two.count == 400 + 298 and two.file_names == ["train-000000.tar", "train-000003.tar"]
    two.check_count(698)
    for selection in (whole, two):  # each rank's share, as one_pass deals the shards
        for rank in range(3):
            read = sum(len(i) for i, _ in one_pass(digits, rank, 3, files=selection.files))
            assert selection.count_of_rank(rank, 3) == read
    with pytest.raises(FdrlError, match="read 697 images .* lists 698"):
        two.check_count(697)
    with pytest.raises(FdrlError, match="--shards takes one shard folder"):
        select_shards([str(digits / "train-000000.tar"), str(digits / "manifest.json")])


def test_a_truncated_shard_is_an_error_naming_it(digits, tmp_path):
    broken = truncate(digits, tmp_path)
    with pytest.raises(FdrlError, match="train-000002.tar"):
        verify(broken)
    with pytest.raises(FdrlError, match="train-000002.tar"):
        ShardStore(broken)
    with pytest.raises(FdrlError, match="train-000002.tar"):
        fit_prior([str(broken)], tmp_path / "prior.pt", device="cpu")
    assert not (tmp_path / "prior.pt").exists()


def test_shard_shows_its_images_per_second(tmp_path, capsys, bar_states):
    shard("digits_test", "unused", tmp_path, shard_size=200)
    last = bar_states(capsys.readouterr().err, "img")[-1]
    assert last.startswith("shard digits_test") and " 299/299 " in last


def test_digits_test_is_a_fixed_held_out_split_never_trained_on(digits, tmp_path):
    from sklearn.datasets import load_digits

    whole = load_digits()
    train, test = dataset("digits").source("unused"), dataset("digits_test").source("unused")
    assert (len(train), len(test)) == (1498, 299)  # every sixth image is held out
    assert [test[i][1] for i in range(299)] == list(whole.target[5::6])
    assert [train[i][1] for i in range(6)] == [*whole.target[:5], whole.target[6]]
    assert np.array_equal(test[1][0][0], np.round(whole.images[11] * 255 / 16).astype(np.uint8))
    m = shard("digits_test", "unused", tmp_path / "test", shard_size=200)
    assert [s["file"] for s in m["shards"]] == ["test-000000.tar", "test-000001.tar"]
    with pytest.raises(FdrlError, match="digits_test, a held-out split that is never used for "
                                        "fitting the prior; use the shards of digits"):
        fit_prior([str(tmp_path / "test")], tmp_path / "prior.pt", device="cpu")
    assert not (tmp_path / "prior.pt").exists()
    assert DATASETS["cifar10_test"].held_out_from == "cifar10"
    assert DATASETS["cat2dog_testB"].held_out_from == "cat2dog_trainB"
    assert not DATASETS["cat2dog_trainA"].held_out_from


def test_a_missing_dataset_fails_before_any_work(tmp_path):
    with pytest.raises(FdrlError, match=r"expected .*cifar-10-batches-py.*download=True"):
        shard("cifar10", tmp_path / "data", tmp_path / "out", 100)
    with pytest.raises(FdrlError, match="unknown dataset 'mnist'"):
        shard("mnist", tmp_path, tmp_path / "out", 100)
    assert not (tmp_path / "out").exists()


def synthetic(w, h):
    """A non-square RGB test card: a horizontal and a vertical ramp, and a red stripe along the
    left edge (a tenth of the width) that a squash keeps and a center crop of a wide image cuts."""
    from PIL import Image

    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    img = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    img[:, : w // 10] = (255, 0, 0)
    return Image.fromarray(img)


def pil_center_crop(img, size):
    """torchvision's CenterCrop on a PIL image: the offsets rounded half to even."""
    w, h = img.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    return img.crop((left, top, left + size, top + size))


def test_each_datasets_preprocessing_is_the_papers():
    from PIL import Image

    bilinear = Image.BILINEAR  # torchvision's Resize default on PIL images (antialiased)
    card = synthetic(200, 150)
    celeba = synthetic(178, 218)  # CelebA's aligned images are 178 x 218
    expected = {
        # Appendix F: center-crop 140, then resize 64.
        "celeba": (celeba, pil_center_crop(celeba, 140).resize((64, 64), bilinear)),
        # "resize the image to 128x128 directly": squashed, the left stripe kept.
        "lsun_church": (card, card.resize((128, 128), bilinear)),
        # resize to 84x84 (squash), then center-crop 64.
        **{f"cat2dog_{s}": (card, pil_center_crop(card.resize((84, 84), bilinear), 64))
           for s in ("trainA", "trainB", "testA", "testB")},
        **{name: (synthetic(32, 32), synthetic(32, 32)) for name in ("cifar10", "cifar10_test")},
    }
    digits = {"digits", "digits_test", "digits_blur", "digits_blur_test"}  # no preprocessing
    assert set(expected) | digits == set(DATASETS)
    for name, (image, want) in expected.items():
        got = np.asarray(DATASETS[name].preprocess(image))
        assert got.shape == (*DATASETS[name].shape[1:], 3), name
        assert np.array_equal(got, np.asarray(want)), name
    squashed = np.asarray(DATASETS["lsun_church"].preprocess(card))
    assert (squashed[:, :10] == (255, 0, 0)).all()  # a crop of the wide card would cut the stripe
    assert str(DATASETS["lsun_church"].preprocess) == "Resize((128, 128))"


def test_shards_of_another_preprocessing_are_refused(digits, tmp_path):
    import json
    import shutil

    for name, value in (("older", None), ("other", "Resize(16)")):
        folder = tmp_path / name
        shutil.copytree(digits, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["preprocess"] == "none"
        manifest.pop("preprocess")
        if value:
            manifest["preprocess"] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(FdrlError, match=r"(older fdrl|preprocessed as Resize\(16\)).*"
                                            r"preprocesses digits as none.*`fdrl shard`"):
            ShardStore(folder)


def jpeg(rng, w, h):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_cat2dog_layout_is_squashed_and_cropped(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cat2dog" / "trainA"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(jpeg(rng, 120 + 10 * i, 100))
    m = shard("cat2dog_trainA", tmp_path / "data", tmp_path / "out", 2)
    assert m["shape"] == [3, 64, 64] and m["count"] == 3
    assert m["preprocess"] == "Resize((84, 84)), CenterCrop(64)"
    assert ShardStore(tmp_path / "out").get(2).shape == (3, 64, 64)


def test_lsun_lmdb_is_squashed(tmp_path):
    import lmdb

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    env = lmdb.open(str(tmp_path / "data" / "church_outdoor_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(3):
            txn.put(f"key{i}".encode(), jpeg(rng, 200, 150))
    env.close()
    m = shard("lsun_church", tmp_path / "data", tmp_path / "out", 10)
    assert m["shape"] == [3, 128, 128] and m["count"] == 3
    assert m["preprocess"] == "Resize((128, 128))"
