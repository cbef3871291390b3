"""End to end through the `bench` CLI as a user runs it: a real (tiny) grid, resume, leaderboard, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.results import SCHEMA
from bench.run.cell import use_bf16

FAST_BF16 = use_bf16("auto", torch.device("cpu"))

GRID = """
name = "e2e"
[budget]
max_steps = 2
[train]
batch_size = 12
[eval]
recall_k = [1, 4]
[report]
metric = "recall_at_1"
equivalence = 0.5
[axes]
backbone = ["koch", "timm/resnet10t"]
loss = ["bce_l1", "contrastive", "triplet"]
seed = [0, 1]
[backbone.koch]
image_size = 65
embed_dim = 64
[backbone."timm/resnet10t"]
image_size = 32
[[exclude]]
backbone = "koch"
loss = ["contrastive", "triplet"]
[[exclude]]
backbone = "koch"
seed = 1
"""


def bench(*args, cwd):
    """The real console entry point in a subprocess, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def cli(capsys, monkeypatch):
    """The same entry point in-process (seconds cheaper than a fresh interpreter per call)."""
    from bench.cli import main

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        code = main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    (cwd / "grid.toml").write_text(GRID)
    return cwd, bench("run", "--grid", "grid.toml", cwd=cwd)


def rows(cwd: Path) -> list[dict]:
    return [json.loads(line) for line in (cwd / "results" / "e2e.jsonl").read_text().splitlines()]


def test_run_writes_one_ok_row_per_cell(ran):
    cwd, proc = ran
    assert proc.returncode == 0, proc.stderr
    got = rows(cwd)
    assert len(got) == 7 and len({r["cell_id"] for r in got}) == 7
    for r in got:
        assert r["status"] == "ok" and r["schema"] == SCHEMA
        assert r["train"]["steps"] == 2 and r["train"]["stopped_by"] == "max_steps"
        assert r["train"]["samples"] == 24  # 12 images a step: 6 pairs or 4 triplets
        assert 0.0 <= r["metrics"]["verification_roc_auc"] <= 1.0
        assert 0.0 <= r["metrics"]["recall_at_1"] <= r["metrics"]["recall_at_4"] <= 1.0
        assert r["split"]["n_test_classes"] == 4 and r["split"]["n_train_classes"] == 6
        # precision = "auto" by default: bf16 where this CPU has fast bf16, fp32 elsewhere
        assert r["env"]["versions"]["torch"] and r["env"]["precision"] == r["precision"] == ("bf16" if FAST_BF16 else "fp32")
        t = r["train"]
        assert t["gflops_per_image"] > 0 and t["images_per_second"] == pytest.approx(t["samples"] / t["seconds"])
        assert t["gflop_per_second"] == pytest.approx(t["gflops_per_image"] * t["images_per_second"])
    koch = next(r for r in got if r["config"]["backbone"] == "koch")
    assert koch["input"]["size"] == [65, 65] and koch["input"]["channels"] == 1 and koch["model"]["embed_dim"] == 64
    resnet = next(r for r in got if r["config"]["backbone"] == "timm/resnet10t")
    assert resnet["input"]["channels"] == 3 and resnet["input"]["from"] == [1, 8, 8]
    assert resnet["input"]["channel_conversion"] == "gray replicated to 3" and resnet["input"]["resize"]
    for r in got:
        assert r["metrics"]["distance"] == ("l1" if r["config"]["loss"] == "bce_l1" else "cosine")
        assert r["report"] == {"metric": "recall_at_1", "equivalence": 0.5} and "report" not in r["config"]  # the grid's [report], beside the identity


def test_leaderboard_markdown_has_one_line_per_configuration(ran):
    cwd, proc = ran
    text = (cwd / "results" / "e2e.md").read_text()
    assert text in proc.stdout and "Sorted by **recall_at_1**" in text  # the grid's [report] metric
    table = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("| #")]
    assert len(table) == 4  # koch·bce_l1 (1 seed) + resnet10t × 3 losses (2 seeds)
    assert sum(" ± " in l for l in table) == 3
    assert all(l.rstrip(" |").endswith("max_steps") for l in table)


def test_rerun_skips_done_cells(ran, cli):
    cwd, _ = ran
    before = (cwd / "results" / "e2e.jsonl").read_text()
    proc = cli("run", "--grid", "grid.toml", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stderr
    assert (cwd / "results" / "e2e.jsonl").read_text() == before


def test_leaderboard_command_and_metric_choice(ran, cli):
    cwd, _ = ran
    proc = cli("leaderboard", "results/e2e.jsonl", "--out", "board.md", cwd=cwd)  # the plain command: the rows' [report] metric
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "board.md").read_text() == (cwd / "results" / "e2e.md").read_text()  # what the run wrote, regenerated
    other = cli("leaderboard", "results/e2e.jsonl", "--metric", "verification_roc_auc", "--out", "auc.md", cwd=cwd)
    assert other.returncode == 0 and "Sorted by **verification_roc_auc**" in (cwd / "auc.md").read_text()  # --metric still decides
    lines = [l for l in (cwd / "board.md").read_text().splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("| ").split(" | ")]
    column = header.index("recall_at_1")  # by name: the key columns before it vary with the grid
    means = [float(l.strip("| ").split(" | ")[column].split("±")[0]) for l in lines[1:] if not l.startswith("| #")]
    expected = {}
    for r in rows(cwd):
        key = json.dumps({k: v for k, v in r["config"].items() if k != "seed"}, sort_keys=True)
        expected.setdefault(key, []).append(r["metrics"]["recall_at_1"])
    assert means == pytest.approx(sorted((sum(v) / len(v) for v in expected.values()), reverse=True), abs=5e-5)
    bad = cli("leaderboard", "results/e2e.jsonl", "--metric", "accuracy", cwd=cwd)
    assert bad.returncode == 2 and "'accuracy' is not a metric of these rows — use one of" in bad.stderr
    assert "recall_at_4" in bad.stderr and "verification_pairs" not in bad.stderr  # scores only


def test_bad_grid_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "bad.toml").write_text(GRID.replace('"triplet"]', '"triplett"]'))
    proc = bench("run", "--grid", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown loss 'triplett': did you mean triplet" in lines[0] and "bad.toml" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_dataset_root_fails_before_writing(tmp_path, cli):
    grid = GRID.replace("seed = [0, 1]", 'seed = [0]\ndataset = ["folder"]') + f'\n[dataset.folder]\nroot = "{tmp_path / "nope"}"\n'
    (tmp_path / "g.toml").write_text(grid)
    proc = cli("run", "--grid", "g.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    assert not (tmp_path / "results" / "e2e.jsonl").exists()


def test_validate_prints_cells_and_ls_lists_plugins(tmp_path, cli):
    (tmp_path / "grid.toml").write_text(GRID)
    proc = cli("validate", "grid.toml", cwd=tmp_path)
    assert proc.returncode == 0 and "7 cells (5 excluded)" in proc.stdout
    freeze = GRID.replace("seed = [0, 1]", 'seed = [0, 1]\n"model.freeze" = ["none", "bn"]')
    (tmp_path / "freeze.toml").write_text(freeze)
    proc = cli("validate", "freeze.toml", cwd=tmp_path)
    assert proc.returncode == 0 and "model.freeze" in proc.stdout  # every axis that varies is a column
    wide = freeze.replace(
        "seed = [0, 1]",
        'seed = [0, 1]\n"train.weight_decay" = [0.0, 0.0001]\n"eval.distance" = ["cosine", "euclidean"]\n"train.schedule" = ["constant", "cosine"]',
    )
    (tmp_path / "wide.toml").write_text(wide)
    proc = cli("validate", "wide.toml", cwd=tmp_path)
    for name in ("backbone_args.image_size", "backbone_args.embed_dim", "train.weight_decay", "eval.distance", "train.schedule"):
        assert name in proc.stdout, name  # whole option names, never "backbone_ar…"
    proc = cli("ls", "backbones", "timm/resnet1*", cwd=tmp_path)
    assert proc.returncode == 0 and "timm/resnet10t" in proc.stdout and "timm/resnet18" in proc.stdout
    proc = cli("ls", "losses", cwd=tmp_path)
    assert all(n in proc.stdout for n in ("bce_l1", "contrastive", "triplet", "pml/<name>"))
    proc = cli("ls", "datasets", "zzz*", cwd=tmp_path)
    assert proc.returncode == 2


def test_validate_runs_the_checks_run_makes_before_training(tmp_path, cli):
    # A missing dataset root and a batch too small for the loss pass the grid parser but not `bench run`.
    grid = GRID.replace("seed = [0, 1]", 'seed = [0]\ndataset = ["folder"]') + f'\n[dataset.folder]\nroot = "{tmp_path / "nope"}"\n'
    (tmp_path / "g.toml").write_text(grid)
    proc = cli("validate", "g.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    (tmp_path / "small.toml").write_text(GRID.replace("batch_size = 12", "batch_size = 2"))
    proc = cli("validate", "small.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "too small for" in proc.stderr


def test_validate_predicts_a_nan_metric_that_run_reports_with_the_same_reason(tmp_path, cli):
    grid = """
name = "nan"
[budget]
max_steps = 2
[split]
test_fraction = 0.4
[eval]
n_way = 20
episodes = 20
[axes]
backbone = ["conv4"]
loss = ["triplet"]
dataset = ["digits"]
seed = [0]
[backbone.conv4]
image_size = 16
"""
    (tmp_path / "g.toml").write_text(grid)
    proc = cli("validate", "g.toml", cwd=tmp_path)
    assert proc.returncode == 0
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "few_shot_20way_1shot_accuracy will be NaN in 1 of 1 cells whatever they learn" in said and "eval.n_way" in said
    proc = cli("run", "--grid", "g.toml", "--metric", "few_shot_20way_1shot_accuracy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "results" / "nan.jsonl").read_text().splitlines()[0])
    note = row["metrics"]["few_shot_note"]
    assert note in said  # the same reason, word for word
    board = " ".join((tmp_path / "results" / "nan.md").read_text().split())
    assert f"*few_shot_20way_1shot_accuracy is NaN on every line of this table*: {note}" in board
