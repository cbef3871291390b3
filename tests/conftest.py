"""What the whole suite shares: the markers each test gets from where it lives and what it needs, and a grid
builder (`make_grid`) so a test states only the options it is about."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

E2E = Path(__file__).parent / "e2e"
ENGINES = ("ray", "submitit", "mlflow", "optuna", "statsmodels", "matplotlib")


@functools.cache
def _source(path: Path) -> str:
    return path.read_text() if path.suffix == ".py" else ""


def pytest_collection_modifyitems(items):
    """e2e tests are `slow`; a test whose module imports an optional engine is `engine`; the Chromium test is
    `browser`. Select with -m, e.g. `pytest -m "not slow"` for the unit tests alone."""
    for item in items:
        path = Path(str(item.fspath))
        if E2E in path.parents:
            item.add_marker(pytest.mark.slow)
        source = _source(path)  # once per file, not once per test
        if any(f'"{engine}"' in source or f"import {engine}" in source for engine in ENGINES):
            item.add_marker(pytest.mark.engine)
        if "webdriver" in item.name or "browser" in item.name:
            item.add_marker(pytest.mark.browser)


DEFAULT_GRID = {
    "name": "t",
    "budget": {"max_steps": 4},
    "train": {"batch_size": 16},
    "axes": {"backbone": ["conv4"], "loss": ["contrastive"], "dataset": ["digits"], "seed": [0]},
    "backbone": {"conv4": {"image_size": 16}},
}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"TOML has no {v}")
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def to_toml(grid: dict, prefix: str = "") -> str:
    """A grid dict as TOML text: plain values first, then each sub-table (dotted keys quoted)."""
    plain = [f"{_key(k)} = {_toml_value(v)}" for k, v in grid.items() if not isinstance(v, dict)]
    out = "\n".join(plain) + ("\n" if plain else "")
    for k, v in grid.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


MERGED = ("axes", "backbone")  # sections a test adds to; any other section it gives replaces the default's


def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if k in MERGED and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_grid(tmp_path):
    """make_grid(name, **sections) -> the path of a grid file: a 4-step conv4 (16 px) contrastive cell on digits,
    with each given section in place of the default's, `axes` and `backbone` added to (e.g.
    `axes={"loss": ["triplet", "none"]}`, `budget={"max_seconds": 2.0}`)."""

    def make(name: str = "t", **sections) -> Path:
        grid = merged(DEFAULT_GRID, {"name": name, **sections})
        path = tmp_path / f"{name}.toml"
        path.write_text(to_toml(grid))
        return path

    return make


# The reference run the determinism checks compare with: 4 conv4 cells long enough (400 steps) for a kill to land
# mid-grid, at one thread (what a `--workers` run gives each cell), run once per session in a fresh process.
REFERENCE_GRID = {
    "name": "ref",
    "budget": {"max_steps": 400},
    "train": {"batch_size": 16, "precision": "fp32"},
    "eval": {"episodes": 50},
    "axes": {"backbone": ["conv4"], "loss": ["bce_l1", "triplet"], "dataset": ["digits"], "seed": [0, 1]},
    "backbone": {"conv4": {"image_size": 16}},
}


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The folder of one uninterrupted `bench run --threads 1` of REFERENCE_GRID: its grid as `grid.toml` (name
    "ref"), its rows in `ref.jsonl` and its leaderboard in `ref.md`. Tests read it; none may write there."""
    from processes import run_bench

    folder = tmp_path_factory.mktemp("reference")
    (folder / "grid.toml").write_text(to_toml(REFERENCE_GRID))
    done = run_bench(folder, "--grid", "grid.toml", "--results", "ref.jsonl", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder
