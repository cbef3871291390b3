"""A third-party plugin package, pip-installed, adds a backbone that a grid can name."""
import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "metric-bench-tinycnn"


def test_pip_installed_plugin_is_listed_and_runs_in_a_grid(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "bench", "ls", "backbones"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert any("tinycnn" in l and "plugin metric-bench-tinycnn" in l for l in listing.stdout.splitlines())

    (tmp_path / "grid.toml").write_text(
        'name = "plug"\n[budget]\nmax_steps = 3\n[axes]\nbackbone = ["tinycnn"]\nloss = ["triplet"]\n'
        '[backbone.tinycnn]\nwidth = 8\n'
    )
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "grid.toml"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(l) for l in (tmp_path / "results" / "plug.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["config"]["backbone_args"] == {"width": 8}
    assert row["input"]["size"] == [16, 16] and row["model"]["embed_dim"] == 32

    # without the package the same grid is a clear error, not a crash
    bare = subprocess.run([sys.executable, "-m", "bench", "validate", "grid.toml"], capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 2 and "unknown backbone 'tinycnn'" in bare.stderr
