"""The ROC a row keeps (downsampled, shape and AUC intact) and `bench plot`'s PNGs, on hand-made rows."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import ROOT
from PIL import Image
from sklearn.metrics import auc, roc_curve

from bench.cli import main
from bench.eval.verification import ROC_POINTS, downsample_roc, roc_metrics, verification_metrics
from bench.items import roc_items, write_items
from bench.report.names import line_names
from bench.report.plots import FIGURES, LOG_ROC, MAX_LINES, Line, figures, legend, mean_roc, roc_of
from bench.report.rows import items_loader
from bench.report.table import table
from bench.schema import as_rows

PNG = b"\x89PNG\r\n\x1a\n"
RESULTS = ROOT / "results"


# --- the ROC a row keeps ------------------------------------------------------------------------------------


def scores(seed: int, n: int, same_fraction: float, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < same_fraction
    dist = rng.normal(1.0, 0.5, n) - rng.uniform(0.1, 1.0) * same
    return same, (np.round(dist, decimals) if decimals is not None else dist)


@pytest.mark.parametrize("seed, n, same_fraction, decimals", [(0, 20_000, 0.3, None), (1, 50_000, 0.02, None), (2, 30_000, 0.5, 2), (3, 200_000, 0.001, None)])
def test_downsampled_roc_keeps_vertices_ends_and_area(seed, n, same_fraction, decimals):
    same, dist = scores(seed, n, same_fraction, decimals)
    fpr, tpr, _ = roc_curve(same, -dist)
    assert len(fpr) > ROC_POINTS  # the case that needs cutting
    kept = downsample_roc(fpr, tpr)
    f, t = np.array(kept["fpr"]), np.array(kept["tpr"])
    assert len(f) <= ROC_POINTS and (f[0], t[0]) == (fpr[0], tpr[0]) and (f[-1], t[-1]) == (fpr[-1], tpr[-1])
    vertices = {(float(f"{a:.6g}"), float(f"{b:.6g}")) for a, b in zip(fpr, tpr)}  # rounded as the row keeps them
    assert all((a, b) in vertices for a, b in zip(f, t))  # points of the curve, not made up
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)
    assert abs(auc(f, t) - auc(fpr, tpr)) < 1e-2
    assert abs(auc(f, t) - auc(fpr, tpr)) <= 0.5 / 99 + 1e-5  # the documented bound: half a linear grid step
    for far in (1e-3, 1e-2, 0.1):  # the low-FAR shape survives (the log part of the grid)
        assert t[f <= far].max() == pytest.approx(tpr[fpr <= far].max(), abs=0.03), far


def test_small_roc_is_kept_whole_and_rows_stay_small():
    fpr, tpr = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.75, 1.0])
    assert downsample_roc(fpr, tpr) == {"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 0.75, 1.0]}
    same, dist = scores(4, 100_000, 0.05)
    assert len(json.dumps(roc_metrics(same, dist, ())["verification_roc"])) < 8000


def test_roc_is_left_out_when_undefined_or_not_asked_for():
    same, dist = scores(5, 500, 0.3)
    assert "verification_roc" in roc_metrics(same, dist, ())
    assert "verification_roc" not in roc_metrics(same, dist, (), roc_points=0)
    assert "verification_roc" not in roc_metrics(np.ones(10, bool), dist[:10], ())  # one kind of pair: no curve
    x = torch.randn(6, 3)
    got = verification_metrics(x, torch.arange(6), "cosine", 100, 0)  # every image its own class
    assert math.isnan(got["verification_roc_auc"]) and "verification_roc" not in got
    got = verification_metrics(x, torch.tensor([0, 0, 1, 1, 2, 2]), "cosine", 100, 0)
    assert got["verification_roc"]["fpr"][0] == 0.0 and got["verification_roc"]["tpr"][-1] == 1.0


# --- figures --------------------------------------------------------------------------------------------------


def roc_points(quality: float) -> dict:
    fpr = np.linspace(0, 1, 50)
    return {"fpr": fpr.tolist(), "tpr": (fpr**quality).tolist()}


def row(backbone: str, loss: str, seed: int, value: float, *, status: str = "ok", roc_in_row: bool = False, curve: bool = True, lr: float = 1e-3) -> dict:
    metrics = {
        "verification_roc_auc": value,
        "verification_eer": 1 - value,
        "recall_at_1": value - 0.3,
        "recall_at_2": value - 0.2,
        "recall_at_4": value - 0.1,
        "recall_at_8": value,
    }
    out = {
        "schema": 2,
        "cell_id": f"{backbone}-{loss}-{seed}-{lr}",
        "status": status,
        "config": {"backbone": backbone, "loss": loss, "dataset": "toy", "seed": seed, "train": {"lr": lr}},
        "metrics": metrics,
        "train": {"steps": 10, "stopped_by": "max_steps"},
    }
    if status != "ok":
        return {**out, "metrics": {}, "error": "RuntimeError: boom"}
    roc = roc_points(1.2 - value)  # above the diagonal, higher for a higher value
    if roc_in_row:  # where bench/run/cell.py moves it
        out["roc"] = roc
    else:
        metrics["verification_roc"] = roc
    if curve:
        out["curve"] = [
            {
                "fraction": f,
                "steps": int(10 * f),
                "samples": int(100 * f),
                "seconds": f,
                "on": "val",
                "metrics": {"verification_roc_auc": value * (0.6 + 0.4 * f) + 0.01 * seed},
            }
            for f in (0.25, 0.5, 1.0)
        ]
    return out


ROWS = (
    [row("resnet", "triplet", s, 0.9 - 0.02 * s) for s in range(3)]
    + [row("koch", "bce_l1", s, 0.7 + 0.01 * s, roc_in_row=True, curve=False) for s in range(2)]
    + [row("lite", "contrastive", 0, 0.8), row("lite", "contrastive", 1, 0.0, status="error")]
)


def write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def plot(tmp_path, monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["plot", *map(str, args)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def check_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 2000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 500 <= width <= 3000 and 200 <= height <= 3000, (path, image.size)


def test_every_figure_is_a_png_in_the_default_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    write(tmp_path / "results" / "grid.jsonl", ROWS)
    code, out, err = plot(tmp_path, monkeypatch, capsys, "results/grid.jsonl")
    assert code == 0, err
    folder = tmp_path / "results" / "grid_plots"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{stem}.png" for stem in FIGURES)
    for stem in FIGURES:
        check_png(folder / f"{stem}.png")
    assert "grid_plots/roc.png" in out


def test_lines_are_ranked_like_the_leaderboard_and_read_the_roc_from_either_place():
    drawn, skipped = figures(ROWS, "verification_roc_auc")
    assert not skipped
    legend = [t.get_text() for t in drawn["roc"].axes[0].get_legend().get_texts()]
    assert legend[0].startswith("resnet · triplet (AUC 0.880, 3 seeds)") and legend[2].startswith("koch · bce_l1 (AUC 0.705, 2 seeds)")
    assert legend[-1] == "chance"
    bars = [t.get_text() for t in drawn["leaderboard"].axes[0].get_yticklabels()]
    assert bars == ["resnet · triplet (3 seeds)", "lite · contrastive (1 seed)", "koch · bce_l1 (2 seeds)"]
    curves = [t.get_text() for t in drawn["curves"].axes[0].get_legend().get_texts()]
    assert curves == ["resnet · triplet", "lite · contrastive"]  # koch has no curve
    drawn, skipped = figures(ROWS, "verification_eer")  # lower is better: the lowest mean on top
    bars = drawn["leaderboard"].axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()][0].startswith("resnet") and "lower is better" in bars.get_title()
    assert "curves" in skipped  # the curves were scored in verification_roc_auc only
    typed = as_rows(ROWS)
    assert roc_of(typed[3]) is not None and roc_of(typed[0]) is not None and roc_of(typed[0].with_(roc=None)) is None


def test_at_most_twelve_lines_the_best_ones():
    rows = [row("resnet", "triplet", 0, 0.5 + 0.01 * i, lr=i) for i in range(MAX_LINES + 5)]
    drawn, _ = figures(rows)
    for stem in ("roc", "recall_at_k", "curves"):
        labels = [t.get_text() for t in drawn[stem].axes[0].get_legend().get_texts() if t.get_text() != "chance"]
        assert len(labels) == MAX_LINES and labels[0].startswith(f"lr={MAX_LINES + 4}"), (stem, labels)
    assert "backbone=resnet, loss=triplet" in drawn["roc"].axes[0].get_title()  # what every line shares is said once


def test_labels_name_what_differs_and_leave_out_what_follows_from_it():
    rows = []
    for backbone, size in (("koch", 65), ("conv4", 28)):
        for freeze in ("none", "bn"):
            r = row(backbone, "triplet", 0, 0.5 + 0.1 * (freeze == "bn") + 0.2 * (backbone == "koch"))
            r["config"] |= {"backbone_args": {"image_size": size}, "model": {"freeze": freeze}}
            r["cell_id"] = f"{backbone}-{freeze}"
            rows.append(r)
    frame = table(rows)
    labels, subtitle = legend([Line(options, [], 0.0, 0.0) for _, options in frame.iterrows()])
    assert labels == ["koch · freeze bn", "koch", "conv4 · freeze bn", "conv4"]  # image_size follows from the backbone
    assert subtitle == "loss=triplet, dataset=toy"


LONG = "timm/efficientnet_lite0.ra_in1k_with_a_plugin_name_long_enough_to_fill_a_legend_line_"


def test_legends_keep_the_options_that_tell_the_drawn_lines_apart():
    """Lines with long backbone names that differ last in their augmentation and learning rate: every label drawn
    names both (wrapped, never cut), and an option every drawn line shares (the preprocessing of the 12 best) is
    said once in the title, not in each label — though the lines left out of the figure differ in it."""
    rows, values = [], {}
    for n, (backbone, augment, lr) in enumerate((b, a, lr) for b in "ab" for a in ("none", "koch") for lr in (1e-3, 1e-4, 3e-4)):
        for preprocess in ("caffe", "native"):
            value = (0.9 if preprocess == "caffe" else 0.5) - 0.01 * n  # every native line ranks below the caffe ones
            r = row(LONG + backbone, "triplet", 0, value, lr=lr)
            r["config"] |= {"model": {"preprocess": preprocess}, "train": {"augment": augment, "lr": lr}}
            r["cell_id"] = f"{n}-{preprocess}"
            rows.append(r)
            values[round(value, 6)] = (backbone, augment, lr)
    drawn, _ = figures(rows)
    roc = drawn["roc"].axes[0]
    labels = [t.get_text() for t in roc.get_legend().get_texts()][:-1]  # less "chance"
    assert len(labels) == MAX_LINES == len(set(labels)) and any("\n" in label for label in labels)  # long ones wrapped
    want = [
        f"{LONG[5:].replace('efficientnet_', '')}{b} · " + ("augment=koch · " if a == "koch" else "") + f"lr={lr}"
        for b, a, lr in (values[k] for k in sorted(values, reverse=True)[:MAX_LINES])
    ]
    assert [label.split(" (AUC")[0].replace("\n", " ") for label in labels] == want  # nothing cut, no preprocessing
    assert "preprocess=caffe" in roc.get_title()  # shared by the drawn lines: said once
    bars = [t.get_text().replace("\n", " ") for t in drawn["leaderboard"].axes[0].get_yticklabels()]
    assert len(bars) == 24 and sum("caffe" in b for b in bars) == 12  # the bars draw every line: there it tells them apart


def test_legends_and_mlflow_run_names_follow_one_rule():
    from bench.export.mlflow import run_names
    from bench.report.table import ranked

    for name, metric in (("seed_question", "few_shot_20way_1shot_accuracy"), ("product_question", "recall_at_1")):
        rows = [json.loads(line) for line in (RESULTS / f"{name}.jsonl").read_text().splitlines()]
        frame, _ = ranked(rows, metric)
        assert run_names(frame) == line_names(frame)
    assert "lite0 · triplet · frozen · caffe" in line_names(frame)


def test_the_roc_on_a_log_false_accept_axis():
    drawn, _ = figures(ROWS)
    assert drawn["roc"].axes[0].get_xscale() == "linear" and LOG_ROC not in drawn  # the default stays linear
    drawn, _ = figures(ROWS, log_fpr=True)
    axes = drawn["roc"].axes[0]
    assert axes.get_xscale() == "log" and 0 < axes.get_xlim()[0] < 0.1 and "log scale" in axes.get_xlabel()
    drawn, _ = figures(ROWS, both_fpr_scales=True)
    assert list(drawn)[:3] == ["leaderboard", "roc", LOG_ROC]
    assert (drawn["roc"].axes[0].get_xscale(), drawn[LOG_ROC].axes[0].get_xscale()) == ("linear", "log")
    same = lambda f: [t.get_text() for t in f.axes[0].get_legend().get_texts()]
    assert same(drawn["roc"]) == same(drawn[LOG_ROC])


def test_mean_roc_averages_tpr_at_each_fpr():
    fpr, tpr = mean_roc([(np.array([0.0, 1.0]), np.array([0.0, 1.0])), (np.array([0.0, 0.5, 1.0]), np.array([0.5, 1.0, 1.0]))])
    assert fpr.tolist() == [0.0, 0.5, 1.0] and tpr.tolist() == [0.25, 0.75, 1.0]
    one = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.5, 1.0]))
    assert mean_roc([one]) is one  # one seed: its vertical step kept


def roc_in_items(path: Path, rows: list[dict]) -> list[dict]:
    """`rows` as bench run writes them now: each ROC in the cell's items file beside the results file `path`, none in the row."""
    out = []
    for r in rows:
        roc = r.get("roc") or r["metrics"].get("verification_roc")
        r = {**{k: v for k, v in r.items() if k != "roc"}, "metrics": {k: v for k, v in r["metrics"].items() if k != "verification_roc"}}
        out.append({**r, "items": write_items(path, r["cell_id"], roc_items(roc))} if roc else r)
    return out


def test_rows_whose_roc_is_in_their_items_file_draw_the_same_curves_and_mix_with_older_rows(tmp_path, monkeypatch, capsys):
    new = roc_in_items(tmp_path / "new.jsonl", ROWS)
    assert all("roc" not in r and "verification_roc" not in r["metrics"] for r in new) and sum("items" in r for r in new) == 6
    old, _ = figures(ROWS, both_fpr_scales=True)
    drawn, skipped = figures(new, both_fpr_scales=True, items=items_loader([tmp_path / "new.jsonl"]))
    assert not skipped
    for stem in ("roc", LOG_ROC):
        want, got = old[stem].axes[0].get_lines(), drawn[stem].axes[0].get_lines()
        assert [line.get_label() for line in got] == [line.get_label() for line in want] and len(got) == 4  # 3 lines + chance
        assert all(np.array_equal(a.get_xydata(), b.get_xydata()) for a, b in zip(want, got))
    assert "items files" in figures(new)[1]["roc"]  # without them there is no curve to draw, and the reason says where it is
    mixed = new[:3] + ROWS[3:]  # a file resumed across the change: older rows keep theirs inline
    drawn, _ = figures(mixed, items=items_loader([tmp_path / "new.jsonl"]))
    assert [line.get_label() for line in drawn["roc"].axes[0].get_lines()] == [line.get_label() for line in old["roc"].axes[0].get_lines()]
    write(tmp_path / "new.jsonl", new)
    code, _, err = plot(tmp_path, monkeypatch, capsys, "new.jsonl", "--out", "figs")  # `bench plot` reads the items files
    assert code == 0 and "roc.png" not in err, err
    check_png(tmp_path / "figs" / "roc.png")


def test_figures_without_data_are_skipped_with_a_reason(tmp_path, monkeypatch, capsys):
    rows = [{**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "verification_roc"}} for r in ROWS if "roc" not in r]
    rows = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
    write(tmp_path / "old.jsonl", rows)
    code, _, err = plot(tmp_path, monkeypatch, capsys, "old.jsonl", "--out", "figs", "--log-fpr")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["leaderboard.png", "recall_at_k.png"]
    assert "roc.png: not drawn — no row carries an ROC" in err and "curves.png: not drawn" in err


def test_several_files_merge_and_a_later_row_supersedes(tmp_path, monkeypatch, capsys):
    write(tmp_path / "a.jsonl", ROWS)
    write(tmp_path / "b.jsonl", [row("lite", "contrastive", 1, 0.99)])  # the failed cell, rerun
    drawn, _ = figures([*ROWS, row("lite", "contrastive", 1, 0.99)])
    assert drawn["leaderboard"].axes[0].get_yticklabels()[0].get_text() == "lite · contrastive (2 seeds)"
    code, _, err = plot(tmp_path, monkeypatch, capsys, "a.jsonl", "b.jsonl", "--log-fpr")
    assert code == 0, err
    check_png(tmp_path / "a_plots" / "roc.png")


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        ("", ["missing.jsonl"], "missing.jsonl: no such results file"),
        ("failed", ["r.jsonl"], "r.jsonl: no ok rows, nothing to plot"),
        ("ok", ["r.jsonl", "--metric", "accuracy"], "--metric 'accuracy' is not a metric of these rows"),
        ("ok", ["r.jsonl", "--metric", "verification_roc"], "--metric 'verification_roc' is not a score"),
        ("ok", ["r.jsonl", "--out", "r.jsonl"], "r.jsonl: is not a folder — give a folder to --out"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, setup, args, expected):
    if setup:
        write(tmp_path / "r.jsonl", [row("a", "l", 0, 0.5, status="error")] if setup == "failed" else ROWS)
    code, _, err = plot(tmp_path, monkeypatch, capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r.jsonl"] if setup else [])


def test_missing_matplotlib_names_the_install(tmp_path, monkeypatch, capsys):
    write(tmp_path / "r.jsonl", ROWS)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, _, err = plot(tmp_path, monkeypatch, capsys, "r.jsonl")
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'metric-bench[plot]'" in err, err
    assert not (tmp_path / "r_plots").exists()


def test_lines_of_different_comparison_groups_never_share_a_figure(tmp_path, monkeypatch, capsys):
    """Two datasets are two comparison groups: each gets its own figures, titled with its group, holding only its
    own lines; the leaderboard links every one, and a redraw with one group removes the per-group files."""
    other = [{**r, "cell_id": r["cell_id"] + "-hard", "config": {**r["config"], "dataset": "hard"}} for r in ROWS[:5]]
    (tmp_path / "results").mkdir()
    write(tmp_path / "results" / "grid.jsonl", ROWS + other)
    code, out, err = plot(tmp_path, monkeypatch, capsys, "results/grid.jsonl")
    assert code == 0, err
    folder = tmp_path / "results" / "grid_plots"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}_group{n}.png" for s in FIGURES for n in (1, 2))
    assert "bench leaderboard results/grid.jsonl" in err  # the command that links them
    drawn, _ = figures(ROWS + other)
    for n, dataset, count in ((1, "toy", 3), (2, "hard", 2)):
        axes = drawn[f"leaderboard_group{n}"].axes[0]
        assert f"comparison group {n} of 2: dataset = {dataset}" in axes.get_title()
        assert len(axes.patches) == count  # its own lines' bars only
        assert len(drawn[f"roc_group{n}"].axes[0].get_legend().get_texts()) == count + 1  # + chance
    assert main(["leaderboard", "results/grid.jsonl"]) == 0
    text = (tmp_path / "results" / "grid.md").read_text()
    assert "grid_plots/leaderboard_group1.png" in text and "grid_plots/curves_group2.png" in text
    write(tmp_path / "results" / "grid.jsonl", ROWS)
    assert plot(tmp_path, monkeypatch, capsys, "results/grid.jsonl")[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{stem}.png" for stem in FIGURES)
