"""Trust: the untrained baseline (`loss = "none"`), learning curves, selection on validation, the lr schedule, and the
ranking along the budget (bench.report.budget)."""

import itertools
import json
import re

import numpy as np
import pytest
import torch
from boards import cell, tables
from scipy import stats
from torch import nn

import bench.run.train as train_module
from bench.cli import main
from bench.config import Budget, TrainConfig
from bench.errors import UserError
from bench.grid import parse_grid
from bench.report.budget import NOISE_Z, curve_means, flips
from bench.report.leaderboard import markdown
from bench.report.lines import Line
from bench.report.table import table
from bench.run.cell import _Selection
from bench.run.train import budget_fraction, lr_factor, train
from bench.schema import as_rows


class TinyLoss(nn.Module):
    distance, batch = "cosine", "triplets"

    def forward(self, embeddings, labels):
        return embeddings.pow(2).mean()


def run_train(budget, curve=(0.25, 0.5, 1.0), cfg=TrainConfig(batch_size=12), monkeypatch=None, clock_step=None, on_curve=None):
    if clock_step is not None:
        ticks = itertools.count()
        monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(ticks) * clock_step)
    points = []
    labels = torch.arange(6).repeat_interleave(8)
    result = train(
        nn.Linear(4, 3),
        TinyLoss(),
        torch.randn(len(labels), 4),
        labels,
        lambda x: x,
        cfg,
        budget,
        0,
        torch.device("cpu"),
        False,
        curve=curve,
        on_curve=on_curve or (lambda f, at: points.append((f, at))),
    )
    return result, points


@pytest.mark.parametrize("budget", [Budget(max_steps=40), Budget(max_samples=480), Budget(max_steps=1000, max_samples=480)])
def test_curve_points_at_the_right_steps_under_steps_and_samples_budgets(budget):
    # 12 images a step: 480 samples are 40 steps, so either limit puts the points at steps 10, 20 and 40
    result, points = run_train(budget)
    assert [(f, at.steps) for f, at in points] == [(0.25, 10), (0.5, 20), (1.0, 40)]
    assert [at.samples for _, at in points] == [120, 240, 480] and result.steps == 40


def test_curve_points_under_a_seconds_budget_and_curve_time_is_not_charged(monkeypatch):
    plain, _ = run_train(Budget(max_seconds=10.0), curve=(), monkeypatch=monkeypatch, clock_step=0.1)

    def slow_eval(fraction, at):  # an evaluation that reads the (fake) clock many times: 3 s each
        points.append((fraction, at))
        for _ in range(30):
            train_module.time.perf_counter()

    points = []
    curved, _ = run_train(Budget(max_seconds=10.0), monkeypatch=monkeypatch, clock_step=0.1, on_curve=slow_eval)
    assert curved.steps == plain.steps  # curve evaluations cost no training budget
    assert curved.curve_seconds == pytest.approx(3 * 3.2, abs=0.05)  # 30 reads by the evaluation + 2 by the hook, per point
    assert [f for f, _ in points] == [0.25, 0.5, 1.0]
    step = plain.wall_seconds / plain.steps / 10.0  # one step's share of the budget
    for fraction, at in points[:-1]:  # each point right after the first step that reaches it
        assert fraction <= at.progress < fraction + 1.5 * step
        assert at.seconds == pytest.approx(at.progress * 10.0)


def test_budget_fraction_follows_the_binding_limit():
    b = Budget(max_steps=100, max_samples=1000, max_seconds=10.0)
    assert budget_fraction(b, 50, 100, 1.0) == 0.5 and budget_fraction(b, 10, 800, 1.0) == 0.8
    assert budget_fraction(b, 10, 100, 9.0) == 0.9 and budget_fraction(b, 200, 0, 0) == 1.0


def test_schedule_lr_at_known_fractions(monkeypatch):
    assert [lr_factor("constant", 0.0, f) for f in (0, 0.5, 1)] == [1, 1, 1]
    assert lr_factor("cosine", 0.0, 0.0) == 1 and lr_factor("cosine", 0.0, 0.5) == pytest.approx(0.5) and lr_factor("cosine", 0.0, 1.0) == pytest.approx(0)
    assert [lr_factor("cosine", 0.2, f) for f in (0.0, 0.1, 0.2, 0.6)] == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert lr_factor("constant", 0.5, 0.25) == pytest.approx(0.5)
    seen = []
    real = train_module.make_optimizer

    def spy(cfg, params):
        opt = real(cfg, params)
        seen.append(opt)
        return opt

    monkeypatch.setattr(train_module, "make_optimizer", spy)
    lrs = []
    labels = torch.arange(6).repeat_interleave(8)
    cfg = TrainConfig(batch_size=12, lr=0.1, schedule="cosine", warmup=0.25)
    train(
        nn.Linear(4, 3),
        TinyLoss(),
        torch.randn(48, 4),
        labels,
        lambda x: x,
        cfg,
        Budget(max_steps=8),
        0,
        torch.device("cpu"),
        False,
        on_step=lambda *a: lrs.append(seen[0].param_groups[0]["lr"]),
    )
    expected = [0.1 * lr_factor("cosine", 0.25, step / 8) for step in range(8)]  # set before step `step + 1`
    assert lrs == pytest.approx(expected)


def test_selection_keeps_the_best_validation_point_and_restores_its_weights():
    model = nn.Linear(2, 2)
    cell = parse_grid(
        {"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}, "train": {"select": "best"}, "eval": {"curve": [0.5, 1.0]}}, "g"
    ).cells[0]
    select = _Selection(cell, model)
    for fraction, auc in ((0.25, 0.6), (0.5, 0.8), (0.75, float("nan")), (1.0, 0.7)):
        nn.init.constant_(model.weight, fraction)
        select.offer(fraction, int(fraction * 100), {"verification_roc_auc": auc})
    chosen = select.restore()
    assert chosen == {"fraction": 0.5, "steps": 50, "metric": "verification_roc_auc", "value": 0.8}
    assert torch.all(model.weight == 0.5)  # the weights of that point, not the last
    eer = parse_grid(
        {
            "budget": {"max_steps": 1},
            "axes": {"backbone": ["koch"], "loss": ["bce_l1"]},
            "train": {"select": "best"},
            "eval": {"curve": [1.0], "select_metric": "verification_eer"},
        },
        "g",
    ).cells[0]
    select = _Selection(eer, model)
    for fraction, value in ((0.5, 0.3), (1.0, 0.2)):
        select.offer(fraction, 1, {"verification_eer": value})
    assert select.restore()["fraction"] == 1.0  # lower is better for EER


GRID = """
name = "{name}"
[budget]
max_steps = 12
[train]
batch_size = 12
precision = "fp32"
select = "{select}"
[split]
val_fraction = 0.2
[eval]
episodes = 20
n_way = 3
curve = [0.25, 0.5, 1.0]
[axes]
backbone = ["timm/resnet10t"]
loss = ["triplet", "none"]
"train.lr" = [0.001, 0.01]
[backbone."timm/resnet10t"]
image_size = 32
"""


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_untrained_rows_embed_the_trunk_and_never_call_the_optimizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(name="base", select="last").replace('loss = ["triplet", "none"]', 'loss = ["none"]'))
    monkeypatch.setattr(train_module, "make_optimizer", lambda *a: pytest.fail("the untrained baseline built an optimizer"))
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = rows(tmp_path / "results" / "base.jsonl")  # the lr axis cannot act on it: one cell, not two
    assert row["status"] == "ok" and row["train"]["steps"] == 0 and row["train"]["stopped_by"] == "untrained"
    assert "curve" not in row and row["model"]["embed_dim"] == 512  # resnet10t's pooled features, no head
    # the reference: the same backbone built with the same seed, its trunk alone, scored by evaluate
    from bench.builtins import load_builtins
    from bench.data.preprocess import fit_to_spec, normalize
    from bench.eval.metrics import evaluate
    from bench.plugins import BACKBONES, DATASETS
    from bench.run.cell import split_for

    load_builtins()
    (cell,) = parse_grid({**__import__("tomllib").loads((tmp_path / "g.toml").read_text())}, "g").cells
    torch.manual_seed(cell.seed)
    backbone = BACKBONES.get("timm/resnet10t").factory(image_size=32).eval()
    data = DATASETS.get("digits").factory()
    images, _ = fit_to_spec(data.images, backbone.input_spec)
    _, val_idx, test_idx, _ = split_for(cell, data)
    with torch.no_grad():
        emb = backbone.trunk(normalize(images[test_idx], backbone.input_spec))
        val = backbone.trunk(normalize(images[val_idx], backbone.input_spec))
    labels = torch.from_numpy(data.labels)
    expected = evaluate(emb, labels[test_idx], "cosine", cell.eval, cell.split.seed, val_embeddings=val, val_labels=labels[val_idx])
    for key in ("verification_roc_auc", "recall_at_1", "map_at_r"):
        assert row["metrics"][key] == pytest.approx(expected[key], abs=1e-4), key


def test_curve_and_selection_rows_rerun_identically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(name="sel", select="best"))
    assert main(["run", "--grid", "g.toml"]) == 0
    assert main(["run", "--grid", "g.toml", "--results", "again.jsonl"]) == 0
    first, second = rows(tmp_path / "results" / "sel.jsonl"), rows(tmp_path / "again.jsonl")
    assert len(first) == 3  # two lrs × triplet, one untrained
    for a, b in zip(first, second):
        assert a["cell_id"] == b["cell_id"]
        assert json.dumps(a["metrics"], sort_keys=True) == json.dumps(b["metrics"], sort_keys=True)
        timeless = lambda curve: json.dumps([{k: v for k, v in p.items() if k not in ("seconds", "progress")} for p in curve or []], sort_keys=True)
        assert timeless(a.get("curve")) == timeless(b.get("curve"))  # everything but wall-clock time
        assert a["train"].get("selected") == b["train"].get("selected")
    trained = [r for r in first if r["config"]["loss"] == "triplet"]
    for r in trained:
        assert [p["fraction"] for p in r["curve"]] == [0.25, 0.5, 1.0] and [p["steps"] for p in r["curve"]] == [3, 6, 12]
        assert all(p["on"] == "val" for p in r["curve"])
        best = max(r["curve"], key=lambda p: p["metrics"]["verification_roc_auc"])
        assert r["train"]["selected"]["fraction"] == best["fraction"]
    assert main(["run", "--grid", "g.toml"]) == 0 and len(rows(tmp_path / "results" / "sel.jsonl")) == 3  # resume: nothing reruns


def test_select_best_needs_a_validation_split_and_a_curve(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(name="x", select="best").replace("val_fraction = 0.2", "val_fraction = 0.0"))
    assert main(["validate", "g.toml"]) == 2
    assert "has no validation classes" in capsys.readouterr().err
    with pytest.raises(UserError, match="eval.curve is empty"):
        parse_grid({"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}, "train": {"select": "best"}}, "g")
    with pytest.raises(UserError, match="must be increasing"):
        parse_grid({"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}, "eval": {"curve": [0.5, 0.25]}}, "g")
    with pytest.raises(UserError, match="is not a score"):
        parse_grid({"budget": {"max_steps": 1}, "axes": {"backbone": ["koch"], "loss": ["bce_l1"]}, "eval": {"select_metric": "verification_pairs"}}, "g")


# --- the ranking along the budget ---------------------------------------------------------------------------

AUC = "verification_roc_auc"


def seeds_curve(values: dict[float, float]) -> list[dict]:
    return [{"fraction": f, "progress": f, "steps": int(100 * f), "samples": 0, "seconds": f, "on": "val", "metrics": {AUC: v}} for f, v in values.items()]


def flip_rows(spread: float, seeds: int = 3) -> list[dict]:
    """Line b leads a by 0.10 at 1/4 and 1/2, a leads b by 0.10 at the end; each seed sits `spread` apart."""
    out = []
    for loss, means in (("a", (0.40, 0.45, 0.60)), ("b", (0.50, 0.55, 0.50))):
        for s in range(seeds):
            e = spread * (s - (seeds - 1) / 2)
            out.append(cell("r", loss, s, means[-1] + e, curve=seeds_curve(dict(zip((0.25, 0.5, 1.0), (m + e for m in means))))))
    return out


def along_the_budget(rows: list[dict]) -> tuple[str, list[dict]]:
    text = markdown(table(rows))
    return next(ln for ln in text.splitlines() if ln.startswith("**Along the budget**")), tables(text)[""]


def test_a_flip_beyond_the_seed_noise_is_reported_and_named_as_the_table_ranks_its_lines():
    said, shown = along_the_budget(flip_rows(spread=0.002))  # se of a difference 0.0016, margins 0.10
    assert "1 pair of lines changed order: #2 b led #1 a until 1/2 (+0.100), #1 a after (+0.100 at the end)." in said
    assert "not counted" not in said
    for rank, name in re.findall(r"#(\d+) (\w+)", said):
        assert shown[int(rank) - 1]["#"] == rank and shown[int(rank) - 1]["loss"] == name


def test_the_same_means_with_a_wide_seed_spread_are_counted_within_the_noise():
    said, _ = along_the_budget(flip_rows(spread=0.15))  # se of a difference 0.12: 1.96 se = 0.24 > the 0.10 margins
    assert "no two lines change order beyond the seed noise; 1 order change within the seed noise (a margin under 1.96 se) not counted." in said
    assert " b led " not in said and " a led " not in said


@pytest.mark.parametrize("seeds", [1, 3])
def test_lines_without_a_seed_spread_are_not_asserted(seeds):
    rows = flip_rows(spread=0.0, seeds=seeds)  # one seed, or three identical ones: the noise is unknown
    said, _ = along_the_budget(rows)
    assert "no two lines change order beyond the seed noise; 1 order change between lines whose seed spread is unknown" in said
    means = [curve_means(Line(tuple(r for r in as_rows(rows) if r.config["loss"] == loss)), AUC) for loss in "ab"]
    assert all(se is None for c in means for _, se in c.values())


def test_flips_against_welch_t_statistics_from_scipy():
    rng = np.random.default_rng(0)
    fractions = (0.125, 0.25, 0.5, 1.0)
    for _ in range(20):
        values = rng.normal(0.5, 0.03, (6, 1, len(fractions))) + rng.normal(0, rng.uniform(0.002, 0.03), (6, 3, len(fractions)))
        lines = [
            Line(tuple(as_rows(cell("r", f"l{i}", s, v[-1], curve=seeds_curve(dict(zip(fractions, v)))) for s, v in enumerate(seeds))))
            for i, seeds in enumerate(values)
        ]
        names = [f"L{i}" for i in range(6)]
        found = flips([curve_means(line, AUC) for line in lines], names, AUC)
        want, changed = set(), 0
        for i, j in itertools.combinations(range(6), 2):
            t = [stats.ttest_ind(values[i][:, k], values[j][:, k], equal_var=False).statistic for k in range(len(fractions))]
            d = values[i].mean(0) - values[j].mean(0)
            other = [k for k in range(len(fractions) - 1) if d[k] * d[-1] < 0]
            changed += bool(other)
            clear = [k for k in other if abs(t[k]) > NOISE_Z]
            if abs(t[-1]) > NOISE_Z and clear:
                lead, trail = (i, j) if d[-1] > 0 else (j, i)
                want.add((names[trail], names[lead], fractions[clear[-1]]))
        got = {(m[1], m[2], {"1/8": 0.125, "1/4": 0.25, "1/2": 0.5}[m[3]]) for m in (re.match(r"(L\d) led (L\d) until (\S+) ", text) for text in found.said)}
        assert got == want and found.within_noise == changed - len(want) and found.unknown_spread == 0
