"""`precision = "auto"` (the default): bf16 autocast + channels_last where the CPU has fast bf16, fp32
elsewhere; `fp32` stays one setting away. bf16's cost in accuracy on a fixed tiny cell is bounded."""

import json

import pytest
import torch

from bench.cli import main
from bench.grid import parse_grid
from bench.run.cell import use_bf16

FAST_BF16 = use_bf16("auto", torch.device("cpu"))


def test_auto_is_the_default_and_fp32_one_setting_away():
    raw = {"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}}
    assert parse_grid(raw, "g.toml").cells[0].train.precision == "auto"
    assert parse_grid({**raw, "train": {"precision": "fp32"}}, "g.toml").cells[0].train.precision == "fp32"
    assert not use_bf16("fp32", torch.device("cpu")) and use_bf16("bf16", torch.device("cpu"))


@pytest.mark.skipif(not FAST_BF16, reason="no AMX / AVX512-BF16 here: bf16 would be emulated and slow")
def test_bf16_cell_metrics_stay_within_tolerance_of_fp32(tmp_path, monkeypatch):
    # Koch's CNN and a timm ResNet, trained 5 steps on digits with each precision, same seed and batches.
    # Stated tolerance: 0.05 absolute on ROC-AUC and recall@1 (bf16 keeps 8 bits of mantissa; over 5
    # steps the two runs drift apart a little, but must not change the answer).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text("""
name = "prec"
[budget]
max_steps = 5
[train]
batch_size = 24
[eval]
episodes = 50
n_way = 5
[axes]
backbone = ["koch", "timm/resnet10t"]
loss = ["contrastive"]
"train.precision" = ["fp32", "auto"]
[backbone.koch]
image_size = 65
embed_dim = 64
[backbone."timm/resnet10t"]
image_size = 32
""")
    assert main(["run", "--grid", "g.toml"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results" / "prec.jsonl").read_text().splitlines()]
    by = {(r["config"]["backbone"], r["precision"]): r for r in rows}
    assert set(by) == {(b, p) for b in ("koch", "timm/resnet10t") for p in ("fp32", "bf16")}
    for backbone in ("koch", "timm/resnet10t"):
        fp32, bf16 = by[(backbone, "fp32")]["metrics"], by[(backbone, "bf16")]["metrics"]
        for key in ("verification_roc_auc", "recall_at_1"):
            assert bf16[key] == pytest.approx(fp32[key], abs=0.05), (backbone, key)


def test_eval_precision_scores_the_same_weights_and_leaves_default_ids_alone(make_grid, tmp_path, monkeypatch):
    # eval.precision = "train" (the default) is absent from a row's config, so every cell id made before the option
    # existed still matches; "fp32" scores exactly what fp32 training's own precision scores (the same weights: a
    # steps budget), and "bf16" scores those weights in bf16 — scored another way, so another comparison group.
    raw = {"budget": {"max_steps": 1}, "axes": {"backbone": ["conv4"], "loss": ["triplet"]}}
    default = parse_grid(raw, "g.toml").cells[0]
    assert "precision" not in default.to_dict()["eval"]
    assert default.cell_id == parse_grid({**raw, "eval": {"precision": "train"}}, "g.toml").cells[0].cell_id
    assert default.cell_id != parse_grid({**raw, "eval": {"precision": "fp32"}}, "g.toml").cells[0].cell_id
    monkeypatch.chdir(tmp_path)
    grid = make_grid("ep", train={"precision": "fp32", "batch_size": 16}, axes={"loss": ["triplet"], "eval.precision": ["train", "fp32", "bf16"]})
    assert main(["run", "--grid", str(grid), "--results", "r.jsonl"]) == 0
    rows = {r["config"]["eval"].get("precision", "train"): r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert rows["train"]["metrics"] == rows["fp32"]["metrics"]
    assert rows["train"]["train"]["final_loss"] == rows["bf16"]["train"]["final_loss"]  # the same training
    assert rows["bf16"]["metrics"] != rows["fp32"]["metrics"]  # bf16 arithmetic moves the embeddings
    assert all(r["precision"] == "fp32" for r in rows.values())  # the row's precision is training's
    board = (tmp_path / "r.md").read_text()
    # "train" and "fp32" scored alike here yet are told apart by the option; bf16 arithmetic is not compared with fp32's
    assert board.count("| # |") == 3 and "### eval.precision = train" in board and "### eval.precision = bf16" in board
