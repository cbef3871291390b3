"""Every view of one results file tells the same story: the markdown leaderboard, its CSV, the HTML report and the
MLflow export name the same lines, the same best line and the same means (they all read rows through bench.report)."""

from __future__ import annotations

import csv
from html.parser import HTMLParser

import pytest
from paths import ROOT, copy_rows

from bench.cli import main

METRIC = "few_shot_20way_1shot_accuracy"
KEYS = ("backbone", "loss", "model.freeze")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # inside MLflow's SQL store


class LeaderboardCells(HTMLParser):
    """The first leaderboard table of a report: its header texts and, per row, each cell's (text, data-sort)."""

    def __init__(self):
        super().__init__()
        self.heads, self.rows, self._in, self._cell, self._done = [], [], None, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "leaderboard" in (attrs.get("class") or "") and not self._done:
            self._in = "table"
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("th", "td"):
            self._cell = ["", attrs.get("data-sort")]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if self._in and tag in ("th", "td") and self._cell is not None:
            (self.heads if tag == "th" else self.rows[-1]).append(self._cell[0] if tag == "th" else tuple(self._cell))
            self._cell = None
        elif self._in and tag == "table":
            self._in, self._done = None, True


def markdown_lines(text: str) -> list[tuple[tuple[str, ...], float]]:
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    out = []
    for ln in table[2:]:
        cells = dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
        out.append((tuple(cells[k] for k in KEYS), float(cells[METRIC].split()[0])))
    return out


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    pytest.importorskip("mlflow")
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("views")
    results = folder / "quick.jsonl"
    copy_rows(ROOT / "results" / "seed_question_quick.jsonl", results)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["leaderboard", str(results), "--metric", METRIC, "--csv", str(folder / "quick.csv")]) == 0
    assert main(["report", str(results), "--metric", METRIC, "--out", str(folder / "quick.html")]) == 0
    assert main(["export", "mlflow", str(results), "--metric", METRIC, "--tracking-uri", store, "--experiment", "quick"]) == 0
    return folder, store


def test_markdown_csv_html_and_mlflow_name_the_same_best_line_and_means(views):
    from mlflow.tracking import MlflowClient

    folder, store = views
    md = markdown_lines((folder / "quick.md").read_text())
    assert len(md) >= 5 and len({k for k, _ in md}) == len(md)  # distinct lines, ranked

    with open(folder / "quick.csv", newline="") as f:
        frame = list(csv.DictReader(f))
    from_csv = [(tuple(r[k] for k in KEYS), float(r[f"{METRIC}_mean"])) for r in frame]

    page = LeaderboardCells()
    page.feed((folder / "quick.html").read_text())
    at = {h: i for i, h in enumerate(page.heads)}
    body = [r for r in page.rows if r]  # the header row holds no td
    from_html = [(tuple(r[at[k]][0] for k in KEYS), float(r[at[METRIC]][1])) for r in body]

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("quick")
    parents = [r for r in client.search_runs([experiment.experiment_id], max_results=1000) if r.data.tags.get("bench.kind") == "line"]
    from_mlflow = {tuple(r.data.tags.get(k) or r.data.params.get(k) for k in KEYS): r for r in parents}

    assert [k for k, _ in from_csv] == [k for k, _ in md] == [k for k, _ in from_html]  # the same lines in the same order
    assert set(from_mlflow) == {k for k, _ in md}
    for (key, shown), (_, exact), (_, sorted_by) in zip(md, from_csv, from_html):
        assert sorted_by == pytest.approx(exact, abs=1e-12)  # the page sorts by the CSV's own number
        assert shown == pytest.approx(exact, abs=5e-5)  # the markdown's 4 decimals
        assert from_mlflow[key].data.metrics[METRIC] == pytest.approx(exact, abs=1e-12)  # the children's own key
    best = md[0][0]
    assert from_mlflow[best].data.tags["vs_best"] == "best"
    assert [k for k, r in from_mlflow.items() if r.data.tags.get("vs_best") == "best"] == [best]
    assert frame[0]["vs_best"] == "best" and body[0][at["vs best"]][0] == "best"
