"""The untrained baseline (loss = "none") runs once per distance its trained lines are scored with."""

import json

import pytest
from torch import nn

from bench.baselines import untrained_key
from bench.cli import main
from bench.grid import parse_grid
from bench.plugins import LOSSES

GRID = """
name = "baselines"
[budget]
max_steps = 2
[train]
batch_size = 12
[eval]
episodes = 20
n_way = 3
[axes]
backbone = ["koch"]
loss = ["bce_l1", "triplet", "none"]
[backbone.koch]
image_size = 65
embed_dim = 16
"""


def grid(losses: str, axes: str = "", seeds: str = "[0]", tail: str = ""):
    import tomllib

    text = GRID.replace('loss = ["bce_l1", "triplet", "none"]', f"loss = {losses}\nseed = {seeds}\n{axes}") + tail
    return parse_grid(tomllib.loads(text), "g")


def baselines(g) -> list:
    return [c for c in g.cells if c.loss == "none"]


def test_one_baseline_per_distance_the_trained_cells_are_scored_with():
    g = grid('["bce_l1", "triplet", "none"]', seeds="[0, 1]")
    got = [(c.seed, c.eval.distance) for c in baselines(g)]
    assert got == [(0, None), (0, "l1"), (1, None), (1, "l1")]  # None: the untrained loss's own cosine
    # the cosine baseline keeps the id it has in a grid that needs no other baseline
    plain = grid('["triplet", "none"]', seeds="[0, 1]")
    assert [(c.seed, c.eval.distance) for c in baselines(plain)] == [(0, None), (1, None)]
    assert {c.cell_id for c in baselines(plain)} < {c.cell_id for c in baselines(g)}
    # each baseline serves the trained cells of its key, matched however eval.distance was set
    for cell in g.cells:
        assert untrained_key(cell.to_dict()) == untrained_key(baselines(g)[0].to_dict())


def test_a_baseline_no_trained_line_uses_is_not_run_and_explicit_distances_are_kept():
    only_l1 = grid('["bce_l1", "none"]')
    assert [c.eval.distance for c in baselines(only_l1)] == ["l1"]
    alone = grid('["none"]')  # nothing to serve: the baseline as it is
    assert [c.eval.distance for c in baselines(alone)] == [None]
    axis = grid('["bce_l1", "triplet", "none"]', '"eval.distance" = ["euclidean", "l1"]\n')
    assert sorted(c.eval.distance for c in baselines(axis)) == ["euclidean", "l1"]  # one each, no duplicate
    # a baseline is matched only with trained cells of its own key: another backbone setup has its own
    two = grid('["bce_l1", "triplet", "none"]', '"model.preprocess" = ["native", "unit"]\n')
    got = sorted((c.model.preprocess, c.eval.distance or "cosine") for c in baselines(two))
    assert got == [("native", "cosine"), ("native", "l1"), ("unit", "cosine"), ("unit", "l1")]
    excluded = grid(
        '["bce_l1", "triplet", "none"]', '"model.preprocess" = ["native", "unit"]\n', tail='[[exclude]]\nloss = "bce_l1"\n"model.preprocess" = "unit"\n'
    )
    got = sorted((c.model.preprocess, c.eval.distance or "cosine") for c in baselines(excluded))
    assert got == [("native", "cosine"), ("native", "l1"), ("unit", "cosine")]


class ArgDistanceLoss(nn.Module):
    """A plugin whose distance is an instance attribute set from its argument."""

    batch = "triplets"

    def __init__(self, distance: str):
        super().__init__()
        self.distance = distance

    def forward(self, embeddings, labels):
        return embeddings.pow(2).mean()


@pytest.fixture
def arg_loss():
    if "test_arg_distance" not in LOSSES:

        @LOSSES.register("test_arg_distance")
        def make(embed_dim: int, distance: str = "euclidean"):
            return ArgDistanceLoss(distance)

    yield "test_arg_distance"


def test_a_plugin_losses_instance_distance_is_learned(arg_loss):
    g = grid(f'["{arg_loss}", "none"]')
    assert [c.eval.distance for c in baselines(g)] == ["euclidean"]
    g = grid(f'["{arg_loss}", "none"]', '"loss.distance" = ["l1", "cosine"]\n')
    assert sorted(c.eval.distance or "cosine" for c in baselines(g)) == ["cosine", "l1"]


def test_validate_lists_the_baselines_run_runs_and_the_rows_are_scored_at_each_distance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID)
    assert main(["validate", "g.toml"]) == 0
    listed = capsys.readouterr().out
    ids = {c.cell_id: c for c in grid('["bce_l1", "triplet", "none"]').cells}
    assert len(ids) == 4 and all(cid in listed for cid in ids)
    assert main(["run", "--grid", "g.toml", "--no-disk-cache"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results" / "baselines.jsonl").read_text().splitlines()]
    assert {r["cell_id"] for r in rows} == set(ids)  # validate listed exactly the cells run ran
    assert all(r["status"] == "ok" for r in rows)
    scored = {r["config"]["loss"]: r["metrics"]["distance"] for r in rows if r["config"]["loss"] != "none"}
    assert scored == {"bce_l1": "l1", "triplet": "cosine"}
    assert sorted(r["metrics"]["distance"] for r in rows if r["config"]["loss"] == "none") == ["cosine", "l1"]


def test_a_fold_axis_without_folds_is_inert_for_the_baseline_too():
    from bench.errors import UserError

    with pytest.raises(UserError, match="'split.fold' changes nothing in any cell"):
        grid('["triplet", "none"]', '"split.fold" = [0, 1]\n')  # before: two baselines, identical but for the label
