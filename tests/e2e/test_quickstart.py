"""The quickstart gives the same table on every run at a given thread count: its cells are bound by steps alone,
and it shows the columns *Answers you can trust* promises."""

import subprocess
import sys

from paths import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

QUICKSTART = ROOT / "examples" / "quickstart.toml"


def test_the_quickstart_is_steps_bound_with_a_baseline_and_curves():
    grid = tomllib.loads(QUICKSTART.read_text())
    assert grid["budget"] == {"max_steps": 300}  # no clock: OpenMP keeps its default wait (bench.run.clock.seconds_bound)
    assert "none" in grid["axes"]["loss"] and grid["split"]["val_fraction"] > 0 and grid["eval"]["curve"][-1] == 1.0


def test_two_runs_in_two_processes_give_the_same_table(tmp_path):
    """The quickstart's own grid, cut to its fastest backbone and one seed (the suite's time), run twice in fresh
    processes at the same thread count: every row stopped by steps, the two leaderboards byte-identical, and the
    trained line above its untrained baseline as the README says."""
    text = QUICKSTART.read_text().replace('backbone = ["conv4", "timm/resnet10t"]', 'backbone = ["conv4"]')
    text = text.replace('loss = ["bce_l1", "contrastive", "triplet", "none"]', 'loss = ["bce_l1", "none"]').replace("seed = [0, 1]", "seed = [0]")
    text = text[: text.index('[backbone."timm/resnet10t"]')]
    (tmp_path / "q.toml").write_text(text)
    boards = []
    for run in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "bench", "run", "--grid", "q.toml", "--results", f"{run}/quickstart.jsonl", "--threads", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        boards.append((tmp_path / run / "quickstart.md").read_text())
        rows = (tmp_path / run / "quickstart.jsonl").read_text()
        assert '"stopped_by": "max_seconds"' not in rows
    assert boards[0] == boards[1]
    assert "gain vs untrained" in boards[0] and "still improving" in boards[0]
    # What the README says the quickstart teaches: the trained conv4 (BCE on L1) tops its own untrained features.
    lines = boards[0].splitlines()
    header = next(line for line in lines if line.startswith("| # |")).split(" | ")
    top = next(line for line in lines if line.startswith("| 1 |")).split(" | ")
    assert top[header.index("backbone")] == "conv4" and top[header.index("loss")] == "bce_l1", top
    assert float(top[header.index("gain vs untrained")].replace("−", "-")) > 0, top
