"""The committed leaderboards and reports are views of the committed rows: the plain commands the docs give
(no --metric: each grid's metric comes with its rows) regenerate them byte for byte."""

import pytest
from paths import ROOT

from bench.cli import main

STUDIES = ("seed_question", "seed_question_quick", "product_question", "search")


@pytest.mark.parametrize("study", STUDIES)
def test_the_plain_leaderboard_command_gives_the_committed_leaderboard(study, tmp_path):
    out = tmp_path / f"{study}.md"
    (tmp_path / f"{study}_plots").symlink_to(ROOT / "results" / f"{study}_plots")  # the leaderboard links the committed plots
    assert main(["leaderboard", str(ROOT / "results" / f"{study}.jsonl"), "--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "results" / f"{study}.md").read_text()


def test_the_plain_report_command_gives_the_committed_report(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(ROOT)  # the page names its results file as given: results/<name>.jsonl, as the docs run it
    out = tmp_path / "seed_question_quick.html"
    assert main(["report", "results/seed_question_quick.jsonl", "--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "results" / "seed_question_quick.html").read_text()
