"""A third-party plugin package, pip-installed, adds a backbone that a grid can name; plugin arguments are type-checked."""

import functools
import json
import os
import subprocess
import sys
import warnings

import pytest
from paths import ROOT

from bench.registry import PluginWarning
from bench.typecheck import check_call_args

PLUGIN = ROOT / "examples" / "plugins" / "metric-bench-tinycnn"


def test_pip_installed_plugin_is_listed_and_runs_in_a_grid(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(PLUGIN)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "bench", "ls", "backbones"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert any("tinycnn" in l and "plugin metric-bench-tinycnn" in l for l in listing.stdout.splitlines())

    (tmp_path / "grid.toml").write_text(
        'name = "plug"\n[budget]\nmax_steps = 3\n[axes]\nbackbone = ["tinycnn"]\nloss = ["triplet"]\n[backbone.tinycnn]\nwidth = 8\n'
    )
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "grid.toml"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(l) for l in (tmp_path / "results" / "plug.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["config"]["backbone_args"] == {"width": 8}
    assert row["input"]["size"] == [16, 16] and row["model"]["embed_dim"] == 32

    # without the package the same grid is a clear error, not a crash
    bare = subprocess.run([sys.executable, "-m", "bench", "validate", "grid.toml"], capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 2 and "unknown backbone 'tinycnn'" in bare.stderr


def widget(width: "int" = 8, norm: "NameThePluginNeverImported" = None, mode: "str" = "a"):  # noqa: F821
    return width, norm, mode


WHERE = 'g.toml: [backbone."widget"]'


def test_one_unresolvable_hint_leaves_the_other_arguments_checked():
    with pytest.warns(PluginWarning) as caught, pytest.raises(ValueError, match=r"argument 'width' = 'wide' should be int"):
        check_call_args(widget, {"width": "wide"}, WHERE)
    with pytest.warns(PluginWarning), pytest.raises(ValueError, match=r"argument 'mode' = 3 should be str"):
        check_call_args(functools.partial(widget, width=4), {"mode": 3}, WHERE)  # timm/<name> factories are partials
    with pytest.warns(PluginWarning):
        check_call_args(widget, {"width": 16, "norm": "anything"}, WHERE)  # the bad hint's argument is not checked
    (warning,) = caught
    assert str(warning.message) == (
        "g.toml: [backbone.\"widget\"]: cannot resolve the type hint 'NameThePluginNeverImported' of argument 'norm' "
        "(NameError: name 'NameThePluginNeverImported' is not defined); its values are not type-checked"
    )


def test_a_class_is_checked_by_its_init_and_a_skipped_argument_is_not_warned_about():
    class Widget:
        batch: str  # a class attribute, not the argument of the same name

        def __init__(self, batch: "int" = 1):
            self.batch = str(batch)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_call_args(widget, {"width": 16}, WHERE, skip=("norm",))  # a bad hint on a skipped argument is not ours to check
        with pytest.raises(ValueError, match=r"argument 'batch' = 'x' should be int"):
            check_call_args(Widget, {"batch": "x"}, WHERE)
