"""train.select = "best" follows eval.select_metric on validation: a metric the validation split cannot give
(a threshold chosen on validation, 20-way episodes among 3 classes) fails in preflight, in one line, before
anything is written, instead of scoring the last weights in silence."""

import pytest

from bench.cli import main


def probe(make_grid, metric: str, n_way: int):
    return make_grid(
        "probe",
        budget={"max_steps": 2},
        train={"batch_size": 12, "precision": "fp32", "select": "best"},
        split={"val_fraction": 0.3},
        eval={"episodes": 20, "n_way": n_way, "curve": [0.5, 1.0], "select_metric": metric},
        axes={"loss": ["triplet"]},
    )


CASES = {
    "a threshold chosen on validation": ("verification_balanced_accuracy_val_threshold", 3, "not among the metrics a validation split alone gives"),
    "20-way episodes among 3 validation classes": ("few_shot_20way_1shot_accuracy", 20, "validation has 3 classes"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_select_metric_validation_cannot_give_fails_before_training(case, tmp_path, capsys, make_grid):
    metric, n_way, why = CASES[case]
    grid = probe(make_grid, metric, n_way)
    results = tmp_path / "r.jsonl"
    for command in (["validate", str(grid)], ["run", "--grid", str(grid), "--results", str(results)]):
        assert main(command) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        err = " ".join(" ".join(lines).split())
        assert len(lines) == 1, lines
        assert f"eval.select_metric (with train.select = \"best\") = '{metric}' cannot be scored on this validation split" in err, err
        assert why in err and 'train.select = "last"' in err
    assert not results.exists() and not (tmp_path / "r_checkpoints").exists()


def test_a_select_metric_validation_gives_passes_preflight(capsys, make_grid):
    assert main(["validate", str(probe(make_grid, "few_shot_3way_1shot_accuracy", 3))]) == 0
