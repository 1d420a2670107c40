"""Table 1 and its figures: rows from FID results, the paper's numbers beside ours, the figures
drawn from real sample chunks, and the nearest-neighbour search of Figs. 12-13."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fdrl.errors import FdrlError
from fdrl.figures import fig4, fig5, nearest_neighbours
from fdrl.tables import LITERATURE, PAPER_FDRL, PAPER_FDRL_BACKEND, TABLE1_COLUMNS, table1


def fid_result(path, run, dataset, prior, pairing, steps, fid, backend="torchvision-inception",
               spectral_norm=False):
    info = {"run": run, "dataset": dataset, "prior": prior, "pairing": pairing, "train_steps": 7,
            "flow_steps": 100, "steps": steps, "config_hash": f"hash-{run}",
            "spectral_norm": spectral_norm}
    path.write_text(json.dumps({"fid": fid, "backend": backend, "feature_extractor": "features",
                                "n_images": 50, "run": info}))
    return str(path)


def test_rows_carry_the_paper_numbers_beside_ours(tmp_path):
    inputs = [
        fid_result(tmp_path / "a.json", "c_lsif", "cifar10", "data", "lsif-pearson", 120, 21.5),
        fid_result(tmp_path / "b.json", "c_up_kl", "cifar10", "uniform", "lr-kl", 110, 33.0),
        fid_result(tmp_path / "c.json", "d_js", "digits", "data", "lr-js", 120, 9.0),
        fid_result(tmp_path / "d.json", "c_lsif", "cifar10", "data", "lsif-pearson", 0, 80.0),
        fid_result(tmp_path / "e.json", "c_lsif", "cifar10", "data", "lsif-pearson", 120, 19.0,
                   backend="clean-fid"),
        fid_result(tmp_path / "f.json", "c_lsif_sn", "cifar10", "data", "lsif-pearson", 120, 23.0,
                   spectral_norm=True),
    ]
    rows = table1(inputs)
    assert all(tuple(r) == TABLE1_COLUMNS for r in rows)
    cited, ours = rows[:-6], rows[-6:]
    assert len(cited) == sum((c is not None) + (a is not None) for *_, c, a in LITERATURE)
    assert all("cited" in r["method"] and r["fid"] == "" and r["run"] == "" for r in cited)
    assert {(r["method"].split()[0], r["dataset"]): r["paper_fid"] for r in cited}[("DDPM", "cifar10")] == 3.17
    assert [(r["method"], r["loss"], r["divergence"], r["fid"], r["paper_fid"]) for r in ours] == [
        ("FDRL-DDP", "LSIF", "Pearson chi^2", "21.50", 22.28),
        ("FDRL-UP", "LR", "KL", "33.00", 31.99),
        ("FDRL-DDP", "LR", "JS", "9.00", ""),  # no paper number for the digits
        ("prior samples, no flow", "LSIF", "Pearson chi^2", "80.00", ""),
        # Another feature extractor than the paper's: its FID is not comparable with 22.28.
        ("FDRL-DDP", "LSIF", "Pearson chi^2", "19.00", ""),
        # The released config's spectral norm, beside the paper's number it may reproduce.
        ("FDRL-DDP + spectral norm (ablation)", "LSIF", "Pearson chi^2", "23.00", 22.28),
    ]
    assert ours[0]["run"] == "c_lsif" and ours[0]["config_hash"] == "hash-c_lsif"
    assert ours[1]["flow_steps"] == 110 and ours[1]["train_steps"] == 7


def test_held_out_real_images_get_a_row_of_their_own(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps({
        "fid": 3.25, "backend": "classifier", "feature_extractor": "features", "n_images": 299,
        "held_out": {"dataset": "digits_test"}, "reference_dataset": "digits"}))
    row = table1([str(tmp_path / "h.json")])[-1]
    assert (row["method"], row["dataset"], row["fid"], row["n_samples"]) == (
        "real images of digits_test (held out, no model)", "digits", "3.25", 299)
    assert row["paper_fid"] == row["run"] == row["prior"] == ""


def test_the_paper_fdrl_rows_are_table1s_eight():
    assert len(PAPER_FDRL) == 8 and PAPER_FDRL_BACKEND == "torchvision-inception"
    assert {k[0] for k in PAPER_FDRL} == {"cifar10", "celeba"}
    assert PAPER_FDRL[("celeba", "data", "lr-kl")] == 18.09


def test_a_result_without_a_run_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"fid": 1.0, "backend": "classifier"}))
    with pytest.raises(FdrlError, match="names neither a run nor held-out images"):
        table1([str(tmp_path / "x.json")])
    proc = subprocess.run([sys.executable, "-m", "fdrl", "table", "table1", "--out",
                           str(tmp_path / "t.csv")], capture_output=True, text=True)
    assert proc.returncode != 0 and "FID results" in proc.stderr
    assert not (tmp_path / "t.csv").exists()


def test_results_that_are_missing_not_json_or_of_an_unknown_pairing_are_refused(tmp_path):
    with pytest.raises(FdrlError, match="no result at .*: run `fdrl fid` for it first"):
        table1([str(tmp_path / "missing.json")])
    (tmp_path / "bad.json").write_text("{ not json")
    with pytest.raises(FdrlError, match="is not a JSON result of `fdrl fid`"):
        table1([str(tmp_path / "bad.json")])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(FdrlError, match="holds no JSON object"):
        table1([str(tmp_path / "list.json")])
    odd = fid_result(tmp_path / "odd.json", "d", "digits", "data", "lsif-kl", 120, 5.0)
    with pytest.raises(FdrlError, match="pairing 'lsif-kl', which FDRL does not have"):
        table1([odd])


def test_table1_through_the_command(tmp_path):
    inputs = [fid_result(tmp_path / "a.json", "d", "digits", "data", "lr-kl", 120, 5.0)]
    proc = subprocess.run([sys.executable, "-m", "fdrl", "table", "table1", "--out",
                           str(tmp_path / "t.csv"), *inputs], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["method"] == "FDRL-DDP" and rows[-1]["fid"] == "5.00"


def test_fig5_plots_one_run_a_panel_per_extractor_and_refuses_a_mix(tmp_path, monkeypatch):
    from fdrl import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.append(fig))
    same = [fid_result(tmp_path / f"{n}.json", "r", "digits", "data", "lr-kl", n, 10.0 + n)
            for n in (120, 0, 100)]
    other_features = [fid_result(tmp_path / f"c{n}.json", "r", "digits", "data", "lr-kl", n, n / 2,
                                 backend="clean-fid") for n in (0, 100)]
    for path in other_features:
        result = json.loads(Path(path).read_text())
        Path(path).write_text(json.dumps({**result, "feature_extractor": "other features"}))
    fig5(same + other_features, str(tmp_path / "fig5.png"))
    panels = drawn[0].axes
    assert [ax.get_ylabel() for ax in panels] == ["FID (features)", "FID (other features)"]
    assert [list(ax.lines[0].get_xydata()[:, 1]) for ax in panels] == [[10, 110, 130], [0, 50]]
    monkeypatch.undo()
    fig5(same, str(tmp_path / "fig5.png"))
    assert (tmp_path / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    other = fid_result(tmp_path / "o.json", "other", "digits", "data", "lr-kl", 50, 1.0)
    with pytest.raises(FdrlError, match="one run"):
        fig5([*same, other], str(tmp_path / "bad.png"))
    with pytest.raises(FdrlError, match="second FID at flow length 0"):
        fig5([*same, same[1]], str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()


def test_fig4_draws_a_chunk(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", images=images, seeds=np.arange(10))
    fig4([str(tmp_path / "c.npz")], str(tmp_path / "fig4.png"))
    assert (tmp_path / "fig4.png").read_bytes()[:4] == b"\x89PNG"


def test_nearest_neighbours_equal_brute_force_across_batches():
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 1, 8, 8), generator=gen, dtype=torch.uint8)
    queries = torch.cat([train[[5, 217]], torch.randint(0, 256, (3, 1, 8, 8), generator=gen,
                                                         dtype=torch.uint8)])
    embed = lambda x: x.flatten(1).double()  # noqa: E731
    dist, index = nearest_neighbours(queries, train.split(64), embed, k=4)
    full = torch.cdist(embed(queries), embed(train))
    expected = full.topk(4, largest=False)
    assert torch.equal(index, expected.indices) and torch.allclose(dist, expected.values)
    assert index[:2, 0].tolist() == [5, 217] and dist[:2, 0].tolist() == [0.0, 0.0]
