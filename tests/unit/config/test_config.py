"""Grid expansion and strict validation: every mistake fails before training with file + key + fix."""

import pytest
from paths import ROOT

from bench.config import Cell
from bench.errors import UserError
from bench.grid import load_grid, parse_grid


def grid(**overrides) -> dict:
    raw = {
        "name": "t",
        "budget": {"max_steps": 3},
        "axes": {"backbone": ["koch", "timm/resnet10t"], "loss": ["bce_l1", "contrastive", "triplet"], "seed": [0, 1]},
    }
    raw.update(overrides)
    return raw


def test_expands_the_product_of_axes_in_order():
    g = parse_grid(grid(), "g.toml")
    assert len(g.cells) == 2 * 3 * 2
    assert all(isinstance(c, Cell) and c.dataset == "digits" for c in g.cells)
    assert {(c.backbone, c.loss, c.seed) for c in g.cells} == {
        (b, l, s) for b in ("koch", "timm/resnet10t") for l in ("bce_l1", "contrastive", "triplet") for s in (0, 1)
    }


def test_excludes_with_wildcards_and_lists():
    g = parse_grid(grid(exclude=[{"backbone": "timm/*", "loss": ["bce_l1", "triplet"]}]), "g.toml")
    assert g.excluded == 4 and len(g.cells) == 8
    assert not any(c.backbone.startswith("timm/") and c.loss != "contrastive" for c in g.cells)


def test_plugin_args_and_section_axes_reach_the_cell():
    raw = grid(backbone={"koch": {"image_size": 65}}, loss={"triplet": {"margin": 0.2}})
    raw["axes"]["train.lr"] = [0.1, 0.01]
    cells = parse_grid(raw, "g.toml").cells
    assert len(cells) == 24
    koch = [c for c in cells if c.backbone == "koch"]
    assert all(c.backbone_args == {"image_size": 65} for c in koch)
    assert {c.train.lr for c in cells} == {0.1, 0.01}
    assert all(c.loss_args == ({"margin": 0.2} if c.loss == "triplet" else {}) for c in cells)


def test_family_axis_applies_only_to_plugins_taking_the_argument_and_dedupes():
    raw = grid()
    raw["axes"]["loss.margin"] = [0.1, 0.2]
    cells = parse_grid(raw, "g.toml").cells
    # triplet gets both margins; bce_l1/contrastive take no `margin`, so their duplicates collapse
    assert len(cells) == 2 * 2 * (2 + 1 + 1)
    assert sorted(c.loss_args.get("margin") for c in cells if c.loss == "triplet" and c.backbone == "koch" and c.seed == 0) == [0.1, 0.2]


def test_cell_id_is_stable_and_config_sensitive():
    a = parse_grid(grid(), "g.toml").cells
    b = parse_grid(grid(), "other.toml").cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert len({c.cell_id for c in a}) == len(a)
    c = parse_grid(grid(budget={"max_steps": 4}), "g.toml").cells
    assert a[0].cell_id != c[0].cell_id


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, r"g.toml: unknown key 'colour' in top level; allowed: name, axes"),
        ({"budget": {}}, r"\[budget\] sets no limit — set max_steps"),
        ({"budget": {"max_steps": 0}}, r"\[budget\] max_steps = 0 must be positive"),
        ({"budget": {"max_steps": -5}}, r"must be positive"),
        ({"budget": {"max_steps": 2.5}}, r"\[budget\] max_steps = 2.5 should be int"),
        ({"budget": {"max_step": 3}}, r"unknown key 'max_step' in \[budget\]; did you mean 'max_steps'\? allowed: max_steps"),
        ({"train": {"optimizer": "lbfgs"}}, r"\[train\] optimizer = 'lbfgs' should be 'adam' \| 'adamw' \| 'sgd'"),
        ({"train": {"batch_size": "32"}}, r"batch_size = '32' should be int"),
        ({"axes": {"loss": ["triplet"]}}, r"\[axes\] has no 'backbone'"),
        ({"axes": {"backbone": [], "loss": ["triplet"]}}, r"\[axes\] backbone must be a non-empty list"),
        ({"axes": {"backbone": ["kohc"], "loss": ["triplet"]}}, r"unknown backbone 'kohc': did you mean koch\? run `bench ls backbones`"),
        ({"axes": {"backbone": ["timm/resnet18x"], "loss": ["triplet"]}}, r"unknown timm model 'resnet18x'"),
        ({"axes": {"backbone": ["koch"], "loss": ["triplett"]}}, r"unknown loss 'triplett': did you mean triplet"),
        ({"axes": {"backbone": ["koch"], "loss": ["triplet"], "seed": ["0"]}}, r"seed = \['0'\] must be a list of integers"),
        ({"axes": {"backbone": ["koch"], "loss": ["triplet"], "colour": [1]}}, r"unknown axis 'colour'"),
        ({"axes": {"backbone": ["koch"], "loss": ["triplet"], "loss.alpha": [1]}}, r"no loss in axes.loss takes argument 'alpha'"),
        ({"axes": {"backbone": ["koch"], "loss": ["triplet"], "train.lr": ["x"]}}, r"lr = 'x' should be float"),
        (
            {"backbone": {"koch": {"image_sise": 65}}},
            r'\[backbone."koch"\]: unknown argument .image_sise.; did you mean .image_size.\? it takes image_size, channels',
        ),
        ({"backbone": {"koch": {"image_size": "big"}}}, r"argument 'image_size' = 'big' should be int"),
        ({"loss": {"triplet": {"margin": True}}}, r"argument 'margin' = True should be float"),
        ({"backbone": {"resnet": {"x": 1}}}, r"sets arguments for a backbone not in axes.backbone"),
        ({"exclude": [{"colour": "red"}]}, r"unknown key 'colour' in \[\[exclude\]\] #1"),
        ({"exclude": [{"seed": [0, 1]}]}, r"\[\[exclude\]\] removes every cell"),
        ({"name": "a b"}, r"name = 'a b' must be a non-empty string"),
    ],
)
def test_bad_grids_fail_with_file_key_and_fix(change, message):
    with pytest.raises(UserError, match=message):
        parse_grid(grid(**change), "g.toml")


def test_malformed_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[budget\nmax_steps = 3\n")
    with pytest.raises(UserError, match=r"bad.toml: not valid TOML .* fix the syntax"):
        load_grid(bad)
    with pytest.raises(UserError, match=r"no such grid file"):
        load_grid(tmp_path / "missing.toml")


def test_grid_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "sweep-1.toml"
    path.write_text('[budget]\nmax_steps = 2\n[axes]\nbackbone = ["koch"]\nloss = ["triplet"]\n')
    assert load_grid(path).name == "sweep-1"


def test_options_that_cannot_act_do_not_make_cells():
    # m_per_class acts only for m-per-class losses; unfrozen_stages only with all_but_last_n; fold only with folds.
    raw = grid(
        axes={
            "backbone": ["timm/resnet10t"],
            "loss": ["triplet", "pml/MultiSimilarityLoss"],
            "train.m_per_class": [2, 4],
            "model.freeze": ["none", "all_but_last_n"],
            "model.unfrozen_stages": [1, 2],
        }
    )
    g = parse_grid(raw, "g.toml")
    # triplet: m_per_class inert → 1 × (none: 1 + all_but_last_n: 2) = 3; MultiSimilarity: 2 × 3 = 6
    assert len(g.cells) == 9
    triplet = [c for c in g.cells if c.loss == "triplet"]
    assert {c.train.m_per_class for c in triplet} == {4}  # reset to the default, not left at a value that did nothing
    assert {c.model.unfrozen_stages for c in g.cells if c.model.freeze == "none"} == {1}
    folds = parse_grid(grid(split={"folds": 3}, axes={"backbone": ["koch"], "loss": ["bce_l1"], "split.fold": [0, 1, 2]}), "g.toml")
    assert sorted(c.split.fold for c in folds.cells) == [0, 1, 2]


def test_split_seed_zero_is_accepted_and_list_elements_are_validated():
    assert parse_grid(grid(split={"seed": 0}), "g.toml").cells[0].split.seed == 0
    with pytest.raises(UserError, match=r"recall_k = \[1, 0\] must be positive"):
        parse_grid(grid(eval={"recall_k": [1, 0]}), "g.toml")
    with pytest.raises(UserError, match="tar_far"):
        parse_grid(grid(axes={**grid()["axes"], "eval.tar_far": [[0.01], [-0.5]]}), "g.toml")


def test_every_toml_block_in_the_readme_validates():
    import re

    import tomllib

    root = ROOT
    readme = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert blocks, "the README and docs have no ```toml blocks"
    checked = 0
    for block in blocks:
        raw = tomllib.loads(block)
        if "project" in raw:  # a pyproject.toml fragment (plugin entry points), not a grid
            continue
        if "axes" not in raw:  # a fragment: checked inside a minimal grid whose axes name its plugins
            base = grid()
            for family in ("backbone", "loss", "dataset"):
                if family in raw:
                    base["axes"][family] = [*base["axes"].get(family, []), *raw[family]]
            raw = {**base, **raw}
        assert parse_grid(raw, "README.md").cells
        checked += 1
    assert checked >= 2


def test_report_table_is_checked_and_kept_out_of_the_cells_identity():
    import pytest

    from bench.errors import UserError

    plain, judged = parse_grid(grid(), "g.toml"), parse_grid(grid(report={"equivalence": 0.01, "target": 0.03}), "g.toml")
    assert judged.report == {"equivalence": 0.01, "target": 0.03} and plain.report == {}
    assert [c.cell_id for c in judged.cells] == [c.cell_id for c in plain.cells]  # how lines are judged is not what a cell is
    assert parse_grid(grid(report={"metric": "recall_at_1"}), "g.toml").report == {"metric": "recall_at_1"}
    for bad, said in (
        ({"equivalence": -1}, "must be a positive number"),
        ({"margin": 0.1}, "unknown key 'margin' in \\[report\\]; allowed: metric, equivalence, target"),
        ({"target": True}, "must be a positive number"),
        ({"metric": "recall_at_one"}, "metric = 'recall_at_one' is not a score"),
        ({"metric": "verification_pairs"}, "is not a score"),
        ({"metric": 1}, "metric = 1 is not a score"),
    ):
        with pytest.raises(UserError, match=said):
            parse_grid(grid(report=bad), "g.toml")
