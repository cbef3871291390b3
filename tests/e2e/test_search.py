"""[search]: equal-budget tuning per configuration. Trials never reach the test split; a seeded search asks the
same trials again, also after a kill; bad ranges fail at validation; the pruning bar is Optuna's median rule;
the leaderboard's lines are the best trial's options run on every seed."""

import json
import math
import sys
from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch
from boards import raw_rows
from processes import kill_when, launch, run_bench

import bench.run.cell as cell_module
import bench.run.rows as rows_module
from bench.cli import main
from bench.config import Cell, Trial
from bench.config.space import TRIAL_SEED
from bench.grid import parse_grid
from bench.report.table import table
from bench.run.cell import split_for
from bench.run.job import Job
from bench.run.pruning import Pruner
from bench.run.rows import run_cell, trial_record
from bench.run.study import Search, curve_steps
from bench.schema import Row, as_rows

GRID = """
name = "s"
[budget]
max_steps = {steps}
[train]
batch_size = 16
precision = "fp32"
[model]
freeze = "backbone"
[split]
test_fraction = 0.3
val_fraction = 0.3
folds = {folds}
[eval]
episodes = 20
n_way = 3
curve = [0.5, 1.0]
[axes]
backbone = ["conv4"]
loss = ["contrastive", "triplet", "none"]
seed = [0, 1]
[backbone.conv4]
image_size = 16
[search]
trials = {trials}
metric = "verification_roc_auc"
sampler = "{sampler}"
seed = {seed}
defaults = {defaults}
"train.lr" = {{ log = [1e-4, 1e-1] }}
"loss.margin" = {{ range = [0.01, 0.5] }}
"""


def grid_text(steps=6, trials=3, sampler="tpe", seed=0, folds=0, defaults="false") -> str:
    text = GRID.format(steps=steps, trials=trials, sampler=sampler, seed=seed, folds=folds, defaults=defaults)
    return text.replace("val_fraction = 0.3", "val_fraction = 0.0") if folds else text  # folds choose the validation classes


def trials_of(rows: list) -> dict[tuple, dict]:
    """(study, trial number) -> params, from trial rows (`Row`s or their dicts)."""
    return {(r.search.study, r.search.trial): r.config["trial"]["params"] for r in as_rows(rows) if r.config.get("trial")}


@pytest.mark.parametrize("folds", [0, 2])
def test_trials_never_give_the_test_split_to_the_evaluator(folds, tmp_path, monkeypatch):
    """Every evaluator call made while a trial runs (curve points and the objective) holds validation classes
    only; the final cells do score the test classes, so the spy is not vacuous."""
    calls = []  # (is a trial, labels given to the evaluator, that cell's val classes, that cell's test classes)
    current = {}
    real_measure, real_evaluate = rows_module.measure, cell_module.evaluate

    def spy_measure(cell, job, data, *args, **kwargs):
        folds_of = [replace(cell, split=replace(cell.split, fold=f)) for f in range(max(cell.split.folds, 1))]
        splits = [split_for(c, data) for c in folds_of]
        current.update(trial=cell.trial is not None, val={int(x) for s in splits for x in data.labels[s[1]]}, test={int(x) for x in data.labels[splits[0][2]]})
        return real_measure(cell, job, data, *args, **kwargs)

    def spy_evaluate(embeddings, labels, *args, **kwargs):
        calls.append((current["trial"], {int(x) for x in labels}, current["val"], current["test"]))
        return real_evaluate(embeddings, labels, *args, **kwargs)

    monkeypatch.setattr(rows_module, "measure", spy_measure)
    monkeypatch.setattr(cell_module, "evaluate", spy_evaluate)
    (tmp_path / "g.toml").write_text(grid_text(folds=folds))
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(tmp_path / "r.jsonl"), "--no-disk-cache"]) == 0
    trial_calls = [c for c in calls if c[0]]
    assert len(trial_calls) == 2 * 3 * 2 * max(folds, 1)  # 2 studies × 3 trials × (curve point 0.5 + objective) per fold
    for _, labels, val, test in trial_calls:
        assert labels <= val and not labels & test
    assert any(labels & test for trial, labels, _, test in calls if not trial)  # the final cells are scored on test
    rows = raw_rows(tmp_path / "r.jsonl")
    trials = [r for r in rows if r["config"].get("trial")]
    assert len(trials) == 6 and all(r["status"] == "ok" and r["search"]["objective"] == r["metrics"]["verification_roc_auc"] for r in trials)
    if folds:
        for r in trials:
            assert [f["fold"] for f in r["folds"]] == [0, 1]
            assert r["metrics"]["verification_roc_auc"] == pytest.approx(np.mean([f["metrics"]["verification_roc_auc"] for f in r["folds"]]))
            assert r["folds"][0]["split"]["val_classes_sha256"] != r["folds"][1]["split"]["val_classes_sha256"]


def fake_rows(search: Search, rows: list[Row], objective) -> list[Cell]:
    """Finish one round of trials without training: each gets objective(params) and a two-point curve."""
    cells = search.next_trials(rows)
    for cell in cells:
        value = objective(cell.trial.params)
        row = {
            "cell_id": cell.cell_id,
            "config": cell.to_dict(),
            "status": "ok",
            "metrics": {"verification_roc_auc": value},
            "train": {"steps": 2, "stopped_by": "max_steps"},
            "curve": [{"fraction": 0.5, "metrics": {"verification_roc_auc": value - 0.1}}, {"fraction": 1.0, "metrics": {"verification_roc_auc": value}}],
        }
        rows.append(Row.from_dict({**row, "search": trial_record(cell, row)}))
    return cells


def objective(params: dict) -> float:  # best near lr = 1e-2, margin = 0.2
    return 1 - (math.log10(params["train.lr"]) + 2) ** 2 / 10 - (params.get("loss.margin", 0.2) - 0.2) ** 2


def search_of(text: str) -> Search:
    import tomllib

    return Search(parse_grid(tomllib.loads(text), "g"))


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_seeded_search_asks_the_same_trials_and_a_resumed_one_continues_them(sampler):
    """14 trials per study (past TPE's 10 random start-up trials): two runs ask identical params; a run that
    loses its rows after trial 11 (a kill) and resumes from the rest asks what the uninterrupted run asked;
    another seed asks other params; a finished search asks nothing."""
    text = grid_text(trials=14, sampler=sampler)

    def run(seed=0, stop_after=None, rows=None):
        search, rows = search_of(text.replace("seed = 0", f"seed = {seed}")), rows if rows is not None else []
        while fake_rows(search, rows, objective):
            if stop_after is not None and len(rows) >= stop_after:
                break
        return search, rows

    search, first = run()
    _, second = run()
    assert len(first) == 28 and trials_of(first) == trials_of(second)
    assert not search.next_trials(first)  # finished: nothing to ask
    _, killed = run(stop_after=23)
    _, resumed = run(rows=killed[:22])  # the in-flight trials' rows never landed
    assert trials_of(resumed) == trials_of(first)
    _, other = run(seed=1)
    assert trials_of(other) != trials_of(first)
    if sampler == "tpe":  # past the random start-up, TPE proposes near the best trials so far
        late = [objective(p) for (_, n), p in trials_of(first).items() if n >= 10]
        early = [objective(p) for (_, n), p in trials_of(first).items() if n < 10]
        assert np.mean(late) > np.mean(early)


def few_digits():
    """Every fifth digits image (360, all 10 classes): the frozen trunk embeds them in a fraction of the time."""
    from bench.builtins import load_builtins
    from bench.plugins import DATASETS

    load_builtins()
    data = DATASETS.get("digits").factory()
    return replace(data, images=data.images[::5], labels=data.labels[::5])


def random_study(rng, steps: int, least: int = 0) -> tuple[dict, "optuna.Study"]:
    """`least`–8 finished trials with random values (NaN included) at each of `steps` steps, some pruned early: as
    trial rows (by number) and as an Optuna study with optuna.pruners.MedianPruner."""
    done, study = {}, optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner())
    for n in range(int(rng.integers(least, 9))):
        values = [float(v) if rng.random() > 0.1 else math.nan for v in rng.random(steps)]
        if rng.random() < 0.2:
            values = values[: int(rng.integers(1, steps))]  # a trial that was itself pruned
            done[n] = Row.from_dict(
                {"cell_id": f"t{n}", "config": {}, "status": "pruned", "search": {"study": "s", "trial": n, "objective": None, "intermediate": values}}
            )
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values=dict(enumerate(values))))
        else:
            objective = values[-1] if math.isfinite(values[-1]) else 0.0
            done[n] = Row.from_dict(
                {
                    "cell_id": f"t{n}",
                    "config": {},
                    "status": "ok",
                    "metrics": {},
                    "train": {"steps": steps, "stopped_by": "max_steps"},
                    "search": {"study": "s", "trial": n, "objective": objective, "intermediate": values},
                }
            )
            study.add_trial(optuna.trial.create_trial(value=objective, intermediate_values=dict(enumerate(values))))
    return done, study


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # Optuna's own nanmax over a trial of NaNs
def test_median_bar_prunes_exactly_when_optunas_median_pruner_does():
    """The bar the coordinator computes, applied by the cell's rule, against optuna.pruners.MedianPruner on the
    same completed trials, for trials reporting random values (NaN included) at each step."""
    rng = np.random.default_rng(0)
    search = search_of(grid_text().replace("curve = [0.5, 1.0]", "curve = [0.25, 0.5, 0.75, 1.0]"))
    conf = search.studies[0]
    steps = 4
    outcomes = []
    for case in range(60):
        done, study = random_study(rng, steps)
        bar = search.prune_bar(done, conf.base)
        cell = replace(conf.base, trial=Trial("s", 99, {}, "verification_roc_auc", bar))
        pruner = Pruner(cell)
        trial = study.ask()
        for step in range(steps - 1):  # the last point never prunes: training has ended
            value = float(rng.random()) if rng.random() > 0.15 else math.nan
            trial.report(value, step)
            expected = study.pruner.prune(study, study._storage.get_trial(trial._trial_id))
            assert pruner.report({"verification_roc_auc": value}) == expected, (case, step, bar)
            outcomes.append((len(bar) > 0, expected))
            if expected:
                break
    assert {(True, True), (True, False), (False, False)} <= set(outcomes)  # pruned, kept, and no bar before the start-up trials


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_a_trial_with_folds_prunes_exactly_when_optunas_median_pruner_does(monkeypatch):
    """Trials of 3 folds × 2 curve points run through the real fold loop and training loop, the evaluator
    replaced by scripted random values: a trial stops at the step (numbered across folds, as Optuna numbers
    them) where optuna.pruners.MedianPruner, given the same completed trials and values, first says prune; that
    includes a fold's last point, after which the next fold never starts; never at the trial's very last point."""
    from bench.builtins import load_builtins

    load_builtins()
    data, caches, script = few_digits(), {}, []
    monkeypatch.setattr(cell_module, "evaluate", lambda *args, **kwargs: {"verification_roc_auc": script.pop(0)})
    rng = np.random.default_rng(17)  # 8 cases: kept, pruned at a first point, pruned at fold 1's last point
    search = search_of(grid_text(steps=2, folds=3))
    conf = search.studies[0]
    steps = curve_steps(conf.base)
    assert steps == 6
    outcomes = []
    for case in range(8):
        done, study = random_study(rng, steps, least=3)
        values = [float(rng.random()) if rng.random() > 0.15 else math.nan for _ in range(steps)]
        trial, stop = study.ask(), None
        for step in range(steps - 1):  # the trial's last point never prunes: it has trained every fold
            trial.report(values[step], step)
            if study.pruner.prune(study, study._storage.get_trial(trial._trial_id)):
                stop = step
                break
        script[:] = values
        cell = replace(conf.base, trial=Trial("s", 99, {}, "verification_roc_auc", search.prune_bar(done, conf.base)))
        row = run_cell(cell, Job("s"), data, caches, torch.device("cpu"))
        reported = steps if stop is None else stop + 1
        assert row["status"] == ("ok" if stop is None else "pruned"), (case, stop, row.get("error"))
        assert row["search"]["intermediate"] == pytest.approx(values[:reported], nan_ok=True), case
        assert [f["fold"] for f in row["folds"]] == list(range((reported - 1) // 2 + 1)), case
        outcomes.append(stop)
    assert None in outcomes and {1, 3} & set(outcomes) and {0, 2, 4} & set(outcomes)  # kept; pruned at a fold's end and within one


def test_a_bar_impossible_at_a_folds_last_point_prunes_the_trial_there(tmp_path):
    """The bar is impossible (above 1) only at fold 0's last point: the trial trains fold 0 to its budget, is
    pruned there and never starts fold 1."""
    import tomllib

    from bench.builtins import load_builtins

    load_builtins()
    search = Search(parse_grid(tomllib.loads(grid_text(steps=4, folds=2)), "g"))
    cell = search.next_trials([])[0]
    cell = replace(cell, trial=replace(cell.trial, prune_at=(None, 1.5, None)))
    row = run_cell(cell, Job("s"), few_digits(), {}, torch.device("cpu"))
    assert row["status"] == "pruned" and row["train"]["stopped_by"] == "pruned" and row["search"]["objective"] is None
    assert [f["fold"] for f in row["folds"]] == [0] and row["folds"][0]["steps"] == 4 and len(row["search"]["intermediate"]) == 2


def test_a_trial_below_the_bar_is_pruned_at_its_curve_point_and_recorded(tmp_path):
    """An impossible bar (ROC-AUC above 1) prunes the trial at its first curve point: it stops at half the
    budget, its status is pruned, and a rebuilt study holds it as PRUNED with its intermediate value."""
    import tomllib

    from bench.builtins import load_builtins
    from bench.plugins import DATASETS

    load_builtins()
    grid = parse_grid(tomllib.loads(grid_text(steps=8)), "g")
    search = Search(grid)
    cell = search.next_trials([])[0]
    cell = replace(cell, trial=replace(cell.trial, prune_at=(1.5,)))
    row = run_cell(cell, Job("s"), DATASETS.get("digits").factory(), {}, torch.device("cpu"))
    assert row["status"] == "pruned" and row["train"]["stopped_by"] == "pruned" and row["train"]["steps"] == 4
    assert row["search"]["objective"] is None and len(row["search"]["intermediate"]) == 1 and len(row["curve"]) == 1
    study = optuna.create_study(direction="maximize")
    conf = search.studies[0]
    study.add_trial(search.frozen_trial(optuna, Row.from_dict(row), {d.option: search_dist(d) for d in conf.dims}))
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and study.trials[0].intermediate_values == {0: row["search"]["intermediate"][0]}


def search_dist(dim):
    from bench.run.study import _distribution

    return _distribution(optuna, dim)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search through the CLI, in a subprocess as a user runs it: 2 studies × 4 trials, then 2 seeds."""
    cwd = tmp_path_factory.mktemp("search")
    (cwd / "g.toml").write_text(grid_text(trials=4, defaults="true", steps=30))
    proc = run_bench(cwd, "--grid", "g.toml", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def test_the_leaderboard_lines_are_the_best_trials_run_on_every_seed(searched):
    rows = raw_rows(searched / "results" / "s.jsonl")
    trials = [r for r in rows if r["config"].get("trial")]
    finals = [r for r in rows if r.get("search", {}).get("role") == "final"]
    assert len(trials) == 8 and len(finals) == 4
    for study in {r["search"]["study"] for r in trials}:
        mine = [r for r in trials if r["search"]["study"] == study]
        best = max(mine, key=lambda r: r["search"]["objective"])
        chosen = [r for r in finals if r["search"]["study"] == study]
        assert sorted(r["config"]["seed"] for r in chosen) == [0, 1]
        for r in chosen:
            assert r["search"]["trial"] == best["search"]["trial"] and r["search"]["params"] == best["config"]["trial"]["params"]
            assert r["config"]["train"]["lr"] == best["config"]["train"]["lr"] and "trial" not in r["config"]
            assert r["config"]["loss_args"] == best["config"]["loss_args"]
    frame = table(rows, "verification_roc_auc")
    tuned = frame[frame["tuned"] != "—"]
    assert len(frame) == 5 and len(tuned) == 2  # 2 tuned, 2 at the grid's values, 1 untrained baseline
    for _, line in tuned.iterrows():
        mine = [r for r in finals if r["config"]["loss"] == line["loss"]]
        assert line["verification_roc_auc_mean"] == pytest.approx(np.mean([r["metrics"]["verification_roc_auc"] for r in mine]))
        shown = float(format(mine[0]["config"]["train"]["lr"], ".4g"))
        assert line["ok"] == 2 and f"train.lr={json.dumps(shown)}" in line["tuned"]
    markdown = (searched / "results" / "s.md").read_text()
    assert "tuned (search)" in markdown and "trial " in markdown
    again = run_bench(searched, "--grid", "g.toml")
    assert again.returncode == 0 and "nothing to run" in again.stderr and len(raw_rows(searched / "results" / "s.jsonl")) == len(rows)


def test_no_final_replicate_is_a_run_the_selection_saw(searched):
    """Trials train on TRIAL_SEED, which no final has: no final's (seed, split, options) is a trial's, and the
    winning trial's validation curve is no final's (under the old rule the seed-0 final was the winner's run)."""
    rows = raw_rows(searched / "results" / "s.jsonl")
    trials = [r for r in rows if r["config"].get("trial")]
    finals = [r for r in rows if r.get("search", {}).get("role") == "final"]
    assert {r["config"]["seed"] for r in trials} == {TRIAL_SEED} and {r["config"]["seed"] for r in finals} == {0, 1}

    def run_of(row, params):
        return row["config"]["seed"], json.dumps(row["config"]["split"], sort_keys=True), json.dumps(params, sort_keys=True)

    seen = {run_of(r, r["config"]["trial"]["params"]) for r in trials}
    assert not seen & {run_of(r, r["search"]["params"]) for r in finals}
    for final in finals:
        winner = next(r for r in trials if r["search"]["study"] == final["search"]["study"] and r["search"]["trial"] == final["search"]["trial"])
        assert len(final["curve"]) == len(winner["curve"]) == 2 and final["curve"][0]["on"] == winner["curve"][0]["on"] == "val"
        assert [p["metrics"] for p in final["curve"]] != [p["metrics"] for p in winner["curve"]]


def test_a_study_of_the_old_rule_is_not_continued_and_its_finals_run_again():
    """A results file from the rule before TRIAL_SEED (trials on the grid's first seed, studies keyed without
    the trial seed): its trials are not the new study's (trial 0 is asked again), and a final cell whose row
    an old study chose runs again under the new study even when the new one chooses the same options."""
    import hashlib

    from bench.run.runner import run_search

    search = search_of(grid_text(trials=3))
    old_ids = set()
    for conf in search.studies:  # the old rule's study id: the configuration without its seed, the search without trial_seed
        config = conf.cells[0].identity()
        config.pop("seed")
        for dim in conf.dims:
            config[dim.section if dim.section in ("train", "model") else f"{dim.section}_args"].pop(dim.name, None)
        identity = {k: v for k, v in search.spec.identity().items() if k != "trial_seed"}
        old_ids.add(hashlib.sha256(json.dumps({"config": config, "search": identity}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16])
    assert not old_ids & {conf.study for conf in search.studies}
    rows = []
    while fake_rows(search, rows, objective):
        pass
    finals, records, _ = search.final_cells(rows)
    old_study = sorted(old_ids)[0]
    rows += [
        Row.from_dict(
            {
                "cell_id": c.cell_id,
                "config": c.to_dict(),
                "status": "ok",
                "metrics": {"verification_roc_auc": 0.9},
                "train": {"steps": 2, "stopped_by": "max_steps"},
                "search": {**records[c.cell_id], "study": old_study},
            }
        )
        for c in finals
    ]  # the same options, chosen by an old study
    assert search.pending(rows) == len(finals) == 2 * 2
    ran = []
    run_search(search, lambda cells, records=None: ran.extend(cells), rows, "none", None)
    assert sorted(c.cell_id for c in ran) == sorted(c.cell_id for c in finals)


def test_a_killed_search_resumes_with_the_same_trials(searched, tmp_path):
    (tmp_path / "g.toml").write_text((searched / "g.toml").read_text())
    results = tmp_path / "results" / "s.jsonl"
    kill_when(launch(tmp_path, "--grid", "g.toml", "--threads", "1"), results, 3)
    partial = raw_rows(results)
    assert 3 <= len(partial) < 8 and all(r["config"].get("trial") for r in partial)  # killed among the trials
    done = run_bench(tmp_path, "--grid", "g.toml", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = raw_rows(results)
    assert len({r["cell_id"] for r in rows}) == len(rows) == 8 + 4 + 4 + 2  # trials, finals, defaults, baselines: none twice
    assert trials_of(rows) == trials_of(raw_rows(searched / "results" / "s.jsonl"))  # the same studies asked the same params


def test_trials_run_through_local_workers_as_in_process(searched, tmp_path):
    (tmp_path / "g.toml").write_text((searched / "g.toml").read_text())
    proc = run_bench(tmp_path, "--grid", "g.toml", "--workers", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = raw_rows(tmp_path / "results" / "s.jsonl"), raw_rows(searched / "results" / "s.jsonl")
    assert trials_of(got) == trials_of(want)
    objective = {r["cell_id"]: r["search"]["objective"] for r in want if r["config"].get("trial")}
    assert {r["cell_id"]: r["search"]["objective"] for r in got if r["config"].get("trial")} == pytest.approx(objective, abs=1e-6)
    assert {r["cell_id"] for r in got} == {r["cell_id"] for r in want}  # the same finals chosen


BAD = [
    ('"train.precision" = { choices = ["fp32", "bf16"] }', "precision is a property of the machine a run is on"),
    ('"train.batch_size" = { range = [8, 64] }', "cannot be searched under budget.max_steps: a larger batch buys more images"),
    ('"train.lr" = { log = [0, 1e-2] }', "log range needs low > 0"),
    ('"train.lr" = { range = [1e-2, 1e-3] }', "low < high"),
    ('"train.lr" = { range = ["a", 1] }', "two finite numbers"),
    ('"train.lr" = { log = [1e-5, 1e-2], step = 2 }', "one of log, range, choices"),
    ('"train.batch_size" = { range = [8.5, 32] }', "batch_size = 8.5 should be int"),
    ('"train.optimizer" = { choices = ["adam", "lamb"] }', "'adam' | 'adamw' | 'sgd'"),
    ('"train.weight_decay" = { range = [-1, 0] }', "must be positive"),
    ('"train.optimizer" = { choices = [] }', "non-empty list"),
    ('"loss.nope" = { range = [0, 1] }', "acts in no trained cell"),
    ('"loss.margin" = { choices = ["wide"] }', "should be float"),
    ('"train.m_per_class" = { range = [2, 8] }', "acts in no trained cell"),
    ('"split.val_fraction" = { range = [0.1, 0.3] }', "cannot be searched"),
    ('"budget.max_steps" = { range = [10, 30] }', "cannot be searched"),
    ('"train.save" = { choices = ["none", "last"] }', "cannot be searched"),
    ("trials = 0", "at least 1"),
    ('sampler = "grid"', "should be 'tpe' | 'random'"),
    ('metric = "verification_balanced_accuracy_val_threshold"', "threshold from a validation split"),
    ('metric = "recall_at_one"', "is not a score"),
    ('colour = "red"', "unknown key 'colour' in [search]"),
]


@pytest.mark.parametrize("line, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_search_fails_at_validation_in_one_line(line, message, tmp_path, capsys):
    text = grid_text()
    key = line.split(" =")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + " =")] + [line]  # replaces a setting the grid has
    (tmp_path / "g.toml").write_text("\n".join(lines) + "\n")
    for command in (["validate", str(tmp_path / "g.toml")], ["run", "--grid", str(tmp_path / "g.toml"), "--results", str(tmp_path / "r.jsonl")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert message in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ([("val_fraction = 0.3", "val_fraction = 0.0")], "no validation classes"),
        (
            [("n_way = 3", "n_way = 5"), ('metric = "verification_roc_auc"', 'metric = "few_shot_5way_1shot_accuracy"')],
            "cannot be scored on this validation split",
        ),
        ([("[axes]", '[axes]\n"train.lr" = [1e-3, 1e-2]')], "is also an axis"),
        ([("seed = [0, 1]", f"seed = [0, {TRIAL_SEED}]")], "the seed [search] trials train on"),
    ],
)
def test_a_search_the_data_cannot_support_fails_before_training(changes, message, tmp_path, capsys):
    text = grid_text()
    for old, new in changes:
        text = text.replace(old, new)
    (tmp_path / "g.toml").write_text(text)
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.jsonl").exists()


def test_without_optuna_a_search_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    (tmp_path / "g.toml").write_text(grid_text())
    assert main(["run", "--grid", str(tmp_path / "g.toml"), "--results", str(tmp_path / "r.jsonl")]) == 2
    assert "pip install 'metric-bench[search]'" in capsys.readouterr().err and not (tmp_path / "r.jsonl").exists()


def test_raising_trials_continues_the_same_study_and_a_new_space_starts_another():
    small, rows = search_of(grid_text(trials=3)), []
    while fake_rows(small, rows, objective):
        pass
    more = search_of(grid_text(trials=5))
    assert [c.study for c in more.studies] == [c.study for c in small.studies]
    asked = more.next_trials(rows)
    assert sorted({c.trial.number for c in asked}) == [3] and len(asked) == 2  # the next trial of each study, not a restart
    wider = search_of(grid_text(trials=5).replace("log = [1e-4, 1e-1]", "log = [1e-5, 1e-1]"))
    assert not {c.study for c in wider.studies} & {c.study for c in small.studies}
    assert {c.trial.number for c in wider.next_trials(rows)} == {0}


def test_a_range_is_integer_exactly_when_its_option_takes_integers():
    """Bounds written as integers over a float argument (triplet's margin, annotated in a module with postponed
    annotations) still give a float range; an int option (train.batch_size, searchable under max_samples) gives
    an integer one."""
    text = (
        grid_text()
        .replace("max_steps = 6", "max_samples = 96")
        .replace('"loss.margin" = { range = [0.01, 0.5] }', '"loss.margin" = { range = [0, 1] }\n"train.batch_size" = { range = [16, 32] }')
    )
    search = search_of(text)
    dims = {d.option: d for d in search.spec.dims}
    assert not dims["loss.margin"].integer and dims["train.batch_size"].integer
    asked = [c for c in search.next_trials([]) if c.loss == "triplet"][0].trial.params
    assert isinstance(asked["loss.margin"], float) and 0 < asked["loss.margin"] < 1 and isinstance(asked["train.batch_size"], int)
