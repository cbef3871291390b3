"""The catalogue of bad inputs: each exits 2 with one line naming the input and the fix, and writes nothing."""

import json
from importlib.metadata import EntryPoint

import pytest

import bench.registry as registry_module
from bench.cli import main
from bench.plugins import REGISTRIES
from bench.results import SCHEMA

GOOD = """
name = "bad"
[budget]
max_steps = 1
[axes]
backbone = ["timm/resnet10t"]
loss = ["triplet"]
[backbone."timm/resnet10t"]
image_size = 32
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


GRIDS = {
    "malformed TOML": (GOOD.replace("[budget]", "[budget"), "not valid TOML"),
    "unknown top-level key": ("learning_rate = 0.1\n" + GOOD, "unknown key 'learning_rate' in top level; allowed:"),
    "a typo of a [train] key": (GOOD + "\n[train]\nlerning_rate = 0.1\n", "unknown key 'lerning_rate' in [train]; did you mean 'lr'? allowed:"),
    "unknown section key": (
        edit("max_steps = 1", "max_steps = 1\nmax_epochs = 2"),
        "unknown key 'max_epochs' in [budget]; did you mean 'max_steps'? allowed: max_steps",
    ),
    "unknown backbone": (edit('["timm/resnet10t"]\nloss', '["kosh"]\nloss'), "unknown backbone 'kosh': did you mean koch?"),
    "unknown timm model": (GOOD.replace("resnet10t", "resnet10x"), "unknown timm model 'resnet10x': did you mean timm/resnet10t"),
    "unknown loss": (edit('["triplet"]', '["triplets"]'), "unknown loss 'triplets': did you mean triplet?"),
    "unknown pml loss": (
        edit('["triplet"]', '["pml/MultiSimilarity"]'),
        "unknown pytorch-metric-learning loss 'MultiSimilarity': did you mean pml/MultiSimilarityLoss",
    ),
    "unknown dataset": (edit('loss = ["triplet"]', 'loss = ["triplet"]\ndataset = ["digit"]'), "unknown dataset 'digit': did you mean digits?"),
    "wrong plugin argument name": (
        edit("image_size = 32", "img_size = 32"),
        "unknown argument 'img_size'; did you mean 'image_size'? it takes embed_dim, pretrained, image_size",
    ),
    "wrong plugin argument type": (edit("image_size = 32", 'image_size = "32"'), "argument 'image_size' = '32' should be int"),
    "plugin argument the plugin rejects": (GOOD + '\n[loss.triplet]\nmargin = "wide"\n', "argument 'margin' = 'wide' should be float"),
    "arguments for a plugin not in the grid": (GOOD + "\n[backbone.koch]\nimage_size = 65\n", "sets arguments for a backbone not in axes.backbone"),
    "empty axis": (edit('loss = ["triplet"]', "loss = []"), "[axes] loss must be a non-empty list"),
    "missing axis": (edit('loss = ["triplet"]', ""), "[axes] has no 'loss'"),
    "unknown axis": (edit('loss = ["triplet"]', 'loss = ["triplet"]\n"optim.lr" = [0.1]'), "unknown axis 'optim.lr'; axes are backbone"),
    "unknown option in an axis": (edit('loss = ["triplet"]', 'loss = ["triplet"]\n"train.momentum" = [0.9]'), "unknown key 'momentum' in [train"),
    "non-positive list element": (GOOD + "\n[eval]\nrecall_k = [0, -1]\n", "recall_k = [0, -1] must be positive (every element)"),
    "negative FAR": (GOOD + "\n[eval]\ntar_far = [-1.0]\n", "tar_far = [-1.0] must be positive (every element)"),
    "FAR above 1": (GOOD + "\n[eval]\ntar_far = [0.01, 1.5]\n", "every element must be a fraction between 0 and 1"),
    "fold axis without folds": (
        edit('loss = ["triplet"]', 'loss = ["triplet"]\n"split.fold" = [0, 1]'),
        "'split.fold' changes nothing in any cell: it acts only with split.folds > 0",
    ),
    "unfrozen_stages axis without all_but_last_n": (
        edit('loss = ["triplet"]', 'loss = ["triplet"]\n"model.unfrozen_stages" = [1, 2]'),
        'acts only with model.freeze = "all_but_last_n"',
    ),
    "m_per_class axis with a triplet loss": (
        edit('loss = ["triplet"]', 'loss = ["triplet"]\n"train.m_per_class" = [2, 4]'),
        "acts only with losses that take m-per-class batches",
    ),
    "no budget": (edit("max_steps = 1", ""), "[budget] sets no limit"),
    "zero budget": (edit("max_steps = 1", "max_steps = 0"), "max_steps = 0 must be positive"),
    "negative budget": (edit("max_steps = 1", "max_seconds = -3.0"), "max_seconds = -3.0 must be positive"),
    "seed not an int": (edit('loss = ["triplet"]', 'loss = ["triplet"]\nseed = [1.5]'), "seed = [1.5] must be a list of integers"),
    "bad optimizer": (GOOD + '\n[train]\noptimizer = "adamax"\n', "optimizer = 'adamax' should be 'adam' | 'adamw' | 'sgd'"),
    "batch too small for the loss": (GOOD + "\n[train]\nbatch_size = 2\n", "train.batch_size = 2 is too small for triplet"),
    "backbone that cannot be built": (
        edit('["timm/resnet10t"]', '["koch"]').replace('[backbone."timm/resnet10t"]\nimage_size = 32', "[backbone.koch]\nimage_size = 30"),
        "backbone 'koch' (image_size=30) cannot be built",
    ),
    "missing dataset root": (
        edit('loss = ["triplet"]', 'loss = ["triplet"]\ndataset = ["folder"]') + '\n[dataset.folder]\nroot = "/no/such/dir"\n',
        "'/no/such/dir' is not a directory",
    ),
    "exclude removes everything": (GOOD + '\n[[exclude]]\nloss = "triplet"\n', "[[exclude]] removes every cell"),
}


def run(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_exit_2(code, err, expected, tmp_path):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("case", list(GRIDS))
def test_bad_grid(case, tmp_path, monkeypatch, capsys):
    text, expected = GRIDS[case]
    (tmp_path / "grid.toml").write_text(text)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml"])
    assert_one_line_exit_2(code, err, expected, tmp_path)
    assert err.startswith("error: ")


def test_missing_grid_file(tmp_path, monkeypatch, capsys):
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "nope.toml"])
    assert_one_line_exit_2(code, err, "nope.toml: no such grid file", tmp_path)


def test_results_path_not_writable(tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    (tmp_path / "afile").write_text("")
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--results", "afile/r.jsonl"])
    assert_one_line_exit_2(code, err, "afile is a file, not a folder", tmp_path)
    assert (tmp_path / "afile").read_text() == ""


def test_results_file_from_a_newer_schema(tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    newer = json.dumps({"schema": 99, "cell_id": "x"}) + "\n"
    (tmp_path / "r.jsonl").write_text(newer)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--results", "r.jsonl"])
    assert_one_line_exit_2(code, err, f"newer metric-bench (row schema 99 > {SCHEMA})", tmp_path)
    assert (tmp_path / "r.jsonl").read_text() == newer


def test_results_file_from_an_older_schema_is_not_silently_rerun(tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    older = (
        json.dumps({"schema": SCHEMA - 1, "cell_id": "x", "status": "ok", "config": {}, "metrics": {}, "train": {"steps": 1, "stopped_by": "max_steps"}}) + "\n"
    )
    (tmp_path / "r.jsonl").write_text(older)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--results", "r.jsonl"])
    assert_one_line_exit_2(code, err, f"rows of results schema {SCHEMA - 1}", tmp_path)
    assert "rerun into a new file with --results" in err
    assert (tmp_path / "r.jsonl").read_text() == older


def test_plugin_entry_point_that_fails_to_import(tmp_path, monkeypatch, capsys):
    registry = REGISTRIES["backbones"]
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    ep = EntryPoint("broken", "no_such_module_abc:factory", "metric_bench.backbones")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep] if group == "metric_bench.backbones" else [])
    (tmp_path / "grid.toml").write_text(GOOD.replace('["timm/resnet10t"]', '["broken"]').replace('[backbone."timm/resnet10t"]\nimage_size = 32', ""))
    with pytest.warns(Warning, match="skipping backbone plugin 'broken'"):  # other plugins still register
        code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml"])
    assert_one_line_exit_2(code, err, "'broken'", tmp_path)  # naming it is the error
    assert "failed to import" in err


def test_plugin_module_that_fails_to_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--plugin", "no_such_plugin_xyz", "--grid", "grid.toml"])
    assert_one_line_exit_2(code, err, "--plugin no_such_plugin_xyz: import failed", tmp_path)


def test_bad_cell_timeout(tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--cell-timeout", "0"])
    assert_one_line_exit_2(code, err, "--cell-timeout 0 must be a positive number", tmp_path)


def test_leaderboard_of_missing_file(tmp_path, monkeypatch, capsys):
    code, err = run(tmp_path, monkeypatch, capsys, ["leaderboard", "results/none.jsonl"])
    assert_one_line_exit_2(code, err, "no such results file", tmp_path)


def test_catalogue_has_at_least_30_grid_cases():
    assert len(GRIDS) >= 30  # shrinking the catalogue (deleting a case) fails here


def test_weights_file_that_does_not_match(tmp_path, monkeypatch, capsys):
    import timm
    import torch

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "w.pth")
    (tmp_path / "grid.toml").write_text(edit("image_size = 32", 'image_size = 32\nweights = "w.pth"'))
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml"])
    assert_one_line_exit_2(code, err, "timm/resnet10t: weights 'w.pth' do not match the model", tmp_path)


# Second round: inputs nobody wrote tests for, across every command and option.

NONFINITE = {
    "infinite time budget alone": (edit("max_steps = 1", "max_seconds = inf"), "budget.max_seconds = inf is not a finite number"),
    "nan learning rate": (GOOD + "\n[train]\nlr = nan\n", "train.lr = nan is not a finite number"),
    "nan in an axis": (edit('loss = ["triplet"]', 'loss = ["triplet"]\n"train.lr" = [0.001, nan]'), "axes.train.lr[1] = nan is not a finite number"),
    "infinite plugin argument": (GOOD + "\n[loss.triplet]\nmargin = -inf\n", "loss.triplet.margin = -inf is not a finite number"),
}


@pytest.mark.parametrize("case", list(NONFINITE))
def test_nonfinite_numbers_anywhere_in_a_grid(case, tmp_path, monkeypatch, capsys):
    text, expected = NONFINITE[case]
    (tmp_path / "grid.toml").write_text(text)
    for command in (["run", "--grid", "grid.toml"], ["validate", "grid.toml"]):
        code, err = run(tmp_path, monkeypatch, capsys, command)
        assert_one_line_exit_2(code, err, expected, tmp_path)


@pytest.mark.parametrize("kind,expected", [("folder", "is a folder, not a grid file"), ("binary", "not a UTF-8 text grid file")])
def test_grid_path_that_is_not_readable_text(kind, expected, tmp_path, monkeypatch, capsys):
    if kind == "folder":
        (tmp_path / "grid.toml").mkdir()
    else:
        (tmp_path / "grid.toml").write_bytes(b'name = "x"\n\xff\xfe\x00\x81 binary')
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml"])
    assert_one_line_exit_2(code, err, expected, tmp_path)


@pytest.mark.parametrize(
    "setup,flag,expected",
    [
        ("mkdir r.jsonl", "r.jsonl", "r.jsonl: is a folder — give a file path to --results"),
        ("mkdir r.md", "r.jsonl", "r.md: is a folder — give a file path to --results (its leaderboard .md)"),
        ("touch afile", "afile/sub/r.jsonl", "afile is a file, not a folder"),
    ],
)
def test_results_path_that_cannot_be_a_file(setup, flag, expected, tmp_path, monkeypatch, capsys):
    command, name = setup.split()
    (tmp_path / name).mkdir() if command == "mkdir" else (tmp_path / name).write_text("")
    (tmp_path / "grid.toml").write_text(GOOD)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--results", flag])
    assert_one_line_exit_2(code, err, expected, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["grid.toml", name])  # nothing written


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--cell-timeout", "inf"], "'inf' must be a finite number"),
        (["--cell-timeout", "nan"], "'nan' must be a finite number"),
        (["--rerun", "some"], "invalid choice: 'some'"),
    ],
)
def test_bad_options_are_one_line(args, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / "grid.toml").write_text(GOOD)
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", *args])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and expected in err and "--help" in err, err
    assert not (tmp_path / "results").exists()


def test_cuda_device_without_cuda(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "grid.toml").write_text(GOOD)
    code, err = run(tmp_path, monkeypatch, capsys, ["run", "--grid", "grid.toml", "--device", "cuda"])
    assert_one_line_exit_2(code, err, "--device cuda: this torch sees no CUDA device", tmp_path)


def test_evaluate_with_malformed_inputs(tmp_path, monkeypatch, capsys):
    import numpy as np

    np.save(tmp_path / "bare.npy", np.zeros((4, 2)))
    (tmp_path / "bare.npz").write_bytes((tmp_path / "bare.npy").read_bytes())  # a .npy under an .npz name
    np.savez(tmp_path / "cube.npz", embeddings=np.zeros((4, 2, 2)), labels=np.arange(4))
    np.savez(tmp_path / "ok.npz", embeddings=np.random.default_rng(0).normal(size=(8, 3)), labels=np.arange(8) % 2)
    (tmp_path / "text.npz").write_text("embeddings,labels\n1,2\n")
    (tmp_path / "out").mkdir()
    cases = {
        ("evaluate", "bare.npz"): "holds one bare array, not named arrays",
        ("evaluate", "cube.npz"): "expected a non-empty 2-D (N, D) array",
        ("evaluate", "text.npz"): "not a readable .npz",
        ("evaluate", "ok.npz", "--json", "out"): "out: is a folder — give a file path to --json",
        ("evaluate", "ok.npz", "--tar-far", "nan"): "'nan' must be a finite number",
    }
    for args, expected in cases.items():
        monkeypatch.chdir(tmp_path)
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (args, err)


def test_leaderboard_of_files_that_are_not_results(tmp_path, monkeypatch, capsys):
    (tmp_path / "other.jsonl").write_text(json.dumps({"cell_id": "a", "score": 1.0}) + "\n")  # another tool's schema
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff")
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "good.jsonl").write_text("")
    cases = {
        ("leaderboard", "other.jsonl"): "other.jsonl:1: no 'config' — not a metric-bench results file",
        ("leaderboard", "binary.jsonl"): "not a UTF-8 text results file",
        ("leaderboard", "folder.jsonl"): "is a folder, not a results file",
        ("leaderboard", "good.jsonl", "--out", "folder.jsonl"): "folder.jsonl: is a folder — give a file path to --out",
    }
    for args, expected in cases.items():
        code, err = run(tmp_path, monkeypatch, capsys, list(args))
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (args, err)
    assert not list(tmp_path.glob("*.md"))


BAD_PLUGINS = """
import numpy as np
import torch
from bench.plugins import BACKBONES, DATASETS, LOSSES, InputSpec, LabelledImages


@BACKBONES.register("returns_a_dict")
def returns_a_dict():
    return {"embed_dim": 8}


@BACKBONES.register("no_input_spec")
def no_input_spec():
    module = torch.nn.Linear(4, 8)
    module.embed_dim = 8
    return module


@LOSSES.register("no_batch_kind")
def no_batch_kind(embed_dim):
    loss = torch.nn.Identity()
    loss.batch, loss.distance = "quadruplets", "cosine"
    return loss


@DATASETS.register("mismatched_lengths")
def mismatched_lengths():
    return LabelledImages(np.zeros((10, 1, 8, 8), np.uint8), np.arange(9) % 3, ("a", "b", "c"))


@DATASETS.register("not_images")
def not_images():
    return {"images": [], "labels": []}
"""


@pytest.fixture
def bad_plugins(tmp_path, monkeypatch):
    import sys

    for registry in REGISTRIES.values():  # registrations made here vanish after the test
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    (tmp_path / "bad_plugins_mod.py").write_text(BAD_PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("bad_plugins_mod", None)


@pytest.mark.parametrize(
    "change,expected",
    [
        (('["timm/resnet10t"]', '["returns_a_dict"]'), "backbone 'returns_a_dict' returned dict, not a torch.nn.Module"),
        (('["timm/resnet10t"]', '["no_input_spec"]'), "backbone 'no_input_spec' has input_spec = None"),
        (('["triplet"]', '["no_batch_kind"]'), "loss 'no_batch_kind' declares batch = 'quadruplets'"),
        (('loss = ["triplet"]', 'loss = ["triplet"]\ndataset = ["mismatched_lengths"]'), "10 images but 9 labels"),
        (('loss = ["triplet"]', 'loss = ["triplet"]\ndataset = ["not_images"]'), "dataset 'not_images' returned dict, not bench.plugins.LabelledImages"),
    ],
)
def test_plugins_that_break_their_protocol(change, expected, bad_plugins, tmp_path, monkeypatch, capsys):
    text = GOOD.replace(*change)
    if "returns_a_dict" in text or "no_input_spec" in text:
        text = text.replace('[backbone."timm/resnet10t"]\nimage_size = 32', "")
    (tmp_path / "grid.toml").write_text(text)
    code, err = run(tmp_path, monkeypatch, capsys, ["--plugin", "bad_plugins_mod", "run", "--grid", "grid.toml"][2:] + ["--plugin", "bad_plugins_mod"])
    assert_one_line_exit_2(code, err, expected, tmp_path)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_grid_typo_is_reported_before_torch_is_imported(tmp_path, command):
    """A mistyped key in a section is found by the grid's own checks, which need no plugin: the error must not
    wait for torch and the built-in plugins to import (seconds on a small machine)."""
    import subprocess
    import sys

    (tmp_path / "g.toml").write_text(GOOD + "\n[train]\nlerning_rate = 0.1\n")
    args = ["--grid", "g.toml"] if command == "run" else ["g.toml"]
    probe = "import sys\nfrom bench.cli import main\ncode = main([" + ", ".join(repr(a) for a in [command, *args]) + "])\nprint(code, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], (proc.stdout, proc.stderr)
    assert "did you mean 'lr'?" in proc.stderr
