"""`bench report`'s HTML page: every string from the rows escaped, one table row per line, nothing loaded from the
network, the Pareto front against a brute-force reference, its one-line errors, and (with Debian's chromium and
chromium-driver) the page in a real headless browser: no console error, sortable tables, visible plots, and an
injected <script> that never runs."""

from __future__ import annotations

import copy
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from boards import raw_rows
from paths import ROOT, copy_rows, link_items

from bench.cli import main
from bench.report.html import page
from bench.report.pareto import Point, front

SOURCE = ROOT / "results" / "seed_question_quick.jsonl"
METRIC = "few_shot_20way_1shot_accuracy"
ERROR_PAYLOAD = "RuntimeError: <script>window.__pwned = 'error'; document.title = 'pwned'</script> in the loss"
PATH_PAYLOAD = "data/<script>window.__pwned = 'path'</script>omniglot"
PLUGIN_PAYLOAD = "koch<img src=x onerror=\"window.__pwned = 'plugin'\">"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


class Tags(HTMLParser):
    """Every start tag with its attributes, and the body rows of the tables with class `leaderboard`."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.leaderboard_rows = 0
        self._tables: list[bool] = []  # per open table: is it a leaderboard
        self._head = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._tables.append("leaderboard" in (attrs.get("class") or "").split())
        self._head |= tag == "thead"
        self.leaderboard_rows += tag == "tr" and bool(self._tables) and self._tables[-1] and not self._head

    def handle_endtag(self, tag):
        if tag == "table":
            self._tables.pop()
        self._head &= tag != "thead"


def configurations(rows: list[dict]) -> int:
    """The lines by the obvious definition: distinct configs less the seed (no row here keeps a checkpoint)."""
    return len({json.dumps({k: v for k, v in r["config"].items() if k != "seed"}, sort_keys=True) for r in rows})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A copy of a committed results file, plus a failed row whose error and dataset path carry a <script> and an ok
    row whose backbone (a plugin name) carries an <img onerror>, written to a page through the CLI."""
    folder = tmp_path_factory.mktemp("report")
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    failed = copy.deepcopy(rows[0])
    for key in ("metrics", "train", "curve", "roc", "input", "model", "split", "eval_seconds", "finished_at", "precision"):
        failed.pop(key, None)
    failed["config"]["dataset_args"]["root"] = PATH_PAYLOAD
    failed.update(cell_id="f" * 16, status="error", error=ERROR_PAYLOAD + "\nTraceback line two <b>bold?</b>")
    injected = copy.deepcopy(rows[0])
    injected["config"]["backbone"] = PLUGIN_PAYLOAD
    injected["cell_id"] = "e" * 16
    rows += [failed, injected]
    results = folder / "quick.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    link_items(folder)
    out = folder / "quick.html"
    assert main(["report", str(results), "--out", str(out), "--metric", METRIC]) == 0
    return out, rows


def test_every_string_from_the_data_is_escaped(built):
    out, _ = built
    text = out.read_text()
    for payload in (ERROR_PAYLOAD.split(" in ")[0], PATH_PAYLOAD, PLUGIN_PAYLOAD):
        assert payload not in text  # never raw …
        assert payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").split("=")[0] in text  # … shown as text
    tags = Tags()
    tags.feed(text)
    assert [t for t, _ in tags.tags].count("script") == 1  # ours
    assert all(not name.startswith("on") for _, attrs in tags.tags for name in attrs), "an event-handler attribute"
    assert all(attrs.get("src", "").startswith("data:image/png;base64,") for t, attrs in tags.tags if t == "img")


def test_one_table_row_per_line(built):
    out, rows = built
    tags = Tags()
    tags.feed(out.read_text())
    assert configurations(rows[:-2]) == 8  # the reference agrees with the committed leaderboard
    assert tags.leaderboard_rows == configurations(rows) == 10  # the failed row's dataset path and the plugin are lines


def test_the_page_loads_nothing_from_the_network(built):
    text = built[0].read_text()
    assert not re.search(r"""\b(src|href|srcset|action|poster|data)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<link" not in text.replace('<link rel="icon" href="data:,">', "")
    assert "default-src 'none'" in text  # and the browser is told to refuse anything else


def test_it_degrades_without_matplotlib_and_statsmodels(monkeypatch):
    from bench.errors import UserError
    from bench.report import plots, variance

    def missing(*_):
        raise UserError("not installed")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    monkeypatch.setattr(variance, "require_statsmodels", missing)
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    text = page(rows, METRIC, "quick", [str(SOURCE)])
    assert "<img" not in text and "metric-bench[plot]" in text and "metric-bench[stats]" in text
    assert "<svg" in text  # the quality-against-cost chart needs neither


@pytest.mark.parametrize("seed", range(5))
def test_the_pareto_front_is_the_lines_nothing_cheaper_matches(seed):
    rng = np.random.default_rng(seed)
    points = [Point(f"#{i}", float(q), float(c)) for i, (q, c) in enumerate(zip(rng.integers(0, 6, 30) / 5, rng.integers(0, 6, 30)))]
    points.append(Point("no metric", math.nan, 0.0))
    for lower in (False, True):
        better = (lambda a, b: a < b) if lower else (lambda a, b: a > b)
        slow = {
            i
            for i, p in enumerate(points)
            if math.isfinite(p.quality)
            and not any(
                j != i and q.cost <= p.cost and not better(p.quality, q.quality) and (q.cost < p.cost or better(q.quality, p.quality))
                for j, q in enumerate(points)
                if math.isfinite(q.quality)
            )
        }
        found = front(points, lower)
        assert set(found) == slow and [points[i].cost for i in found] == sorted(points[i].cost for i in found)


@pytest.mark.parametrize("seed", range(3))
def test_pareto_labels_never_overlap_each_other_or_a_point(seed):
    from bench.report.pareto import CHAR_WIDTH, LABEL_HEIGHT, place_labels

    rng = np.random.default_rng(seed)
    centres = [(float(x), float(y)) for x, y in zip(rng.uniform(100, 300, 40), rng.uniform(50, 200, 40))]  # a crowd
    labels = [f"#{i + 1}" for i in range(40)]
    placed = place_labels(list(zip(centres, labels)), (64, 16, 696, 332))
    boxes = [(x, y - LABEL_HEIGHT + 2, x + CHAR_WIDTH * len(t), y + 2) for spot, t in zip(placed, labels) if spot for x, y in [spot]]
    apart = lambda a, b: a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert all(apart(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert all(apart(b, (cx - 5, cy - 5, cx + 5, cy + 5)) for b in boxes for cx, cy in centres)
    assert len(boxes) >= 10  # most points keep a label; the most crowded keep their tooltip
    lone = place_labels([((200.0, 100.0), "#1"), ((500.0, 300.0), "#2")], (64, 16, 696, 332))
    assert lone == [(207.0, 94.0), (507.0, 294.0)]  # room everywhere: the usual spot, up and to the right


def test_a_cost_every_trained_line_paid_alike_is_not_drawn(tmp_path):
    """An equal-seconds grid: the seconds axis would put every trained line at the same x; the page says so instead."""
    from bench.report.html import page
    from bench.report.pareto import SPREAD, Point, spread

    assert spread([Point("a", 0.5, 32.00), Point("b", 0.6, 32.02), Point("untrained", 0.4, 0.0)]) < SPREAD
    assert spread([Point("a", 0.5, 80.0), Point("b", 0.6, 1000.0)]) > SPREAD
    rows = raw_rows(SOURCE)
    for r in rows:
        if r.get("status") == "ok" and r["train"].get("seconds"):
            r["train"]["seconds"] = 16.0 + 0.001 * r["config"]["seed"]
    text = page(rows, METRIC, "t", ["x.jsonl"])
    assert "Not drawn, as every trained line paid about the same" in text and re.search(r"seconds \(16\.\d+–16\.\d+ per trained line\)", text)
    assert "training seconds per cell" not in text.split("Not drawn")[0].split('id="cost"')[1]  # no seconds chart
    assert "training steps per cell" in text  # the costs that differ are drawn


def test_figure_captions_say_what_they_show_and_how_many_lines(built):
    import pandas as pd

    from bench.report.html import caption

    out, _ = built
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", out.read_text())
    assert captions and all(len(c) > 40 and c.endswith(".") for c in captions)  # a sentence, not "roc"
    assert any(c.startswith("Verification ROC") and re.search(r"; all \d+ lines( \(comparison group \d\))?\.$", c) for c in captions)
    frame = pd.DataFrame({"group": ["a"] * 28 + ["b"] * 3})
    assert caption("roc", "recall_at_1", frame).endswith("the best 12 of 28 lines.")
    assert caption("leaderboard_group2", "recall_at_1", frame).endswith("all 3 lines (comparison group 2).")
    assert "recall_at_1 along the budget" in caption("curves", "recall_at_1", frame)


def section(text: str, name: str) -> str:
    return text.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def test_the_roc_comes_on_both_false_accept_axes_linear_first(built):
    plots = section(built[0].read_text(), "plots")
    roc = re.search(r'<figure class="roc">(.*?)</figure>', plots, re.S)[1]
    images = re.findall(r'<img class="fpr-(linear|log)"[^>]* src="data:image/png;base64,([^"]+)"', roc)
    assert [kind for kind, _ in images] == ["linear", "log"] and images[0][1] != images[1][1]
    assert re.search(r'<input type="checkbox" class="log-fpr">', roc)  # unticked: the linear axis, as before
    assert plots.count("<img") == 5 and "roc_log" not in plots  # leaderboard, ROC ×2, recall@k, curves


def test_the_backbone_by_loss_interaction_only_where_the_grid_crosses_them(built):
    """The committed quick grid runs one loss: no interaction. Give its Koch and conv4 lines a second loss (with
    conv4 gaining from it and Koch losing) and the effects section draws the interaction, leaving out Lite0 (run with
    one loss)."""
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    assert "interaction on" not in section(built[0].read_text(), "effects")
    more = []
    for r in rows:
        if r["config"]["backbone"] in ("conv4", "koch") and r["config"]["loss"] == "triplet":
            r = copy.deepcopy(r)
            r["config"]["loss"], r["cell_id"] = "contrastive", "c" + r["cell_id"][1:]
            r["metrics"][METRIC] += 0.1 if r["config"]["backbone"] == "conv4" else -0.1
            more.append(r)
    effects = section(page(rows + more, METRIC, "crossed", ["crossed.jsonl"]), "effects")
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", effects)
    assert len(captions) == 2 and captions[1].startswith(f"the backbone × loss interaction on {METRIC}: the mean per loss")
    assert "<strong>backbone × loss</strong>" in effects and "every level of the other axis: efficientnet_lite0_imagenet" in effects


def test_one_line_errors_and_nothing_written(tmp_path, capsys):
    results = copy_rows(SOURCE, tmp_path / "r.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    old = tmp_path / "old.html"
    old.write_text("old page")
    cases = [
        ([str(tmp_path / "missing.jsonl"), "--out", str(old)], "no such results file"),
        ([str(empty), "--out", str(old)], "holds no result rows yet"),
        ([str(results), "--out", str(tmp_path / "r.md")], "ending in .html"),
        ([str(results), "--out", str(tmp_path / "no" / "such" / "r.html")], "does not exist"),
        ([str(results), "--out", str(tmp_path)], "ending in .html"),
        ([str(results), str(results)], "need --out FILE.html"),
        ([str(results), "--out", str(old), "--metric", "no_such_metric"], "no_such_metric"),
    ]
    for args, said in cases:
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    assert old.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("_items")) == ["empty.jsonl", "old.html", "r.jsonl"]  # no page written


# --- a real browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="no selenium (pip install 'metric-bench[test]')")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:  # the explicit driver path: Selenium Manager never looks for (or downloads) one
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium did not start: {str(exc.msg or exc).splitlines()[0]}")
    yield driver
    driver.quit()


def column(driver, table, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(arguments[0].tBodies[0].rows, r => { const c = r.cells[arguments[1]];"
        " return c.getAttribute('data-sort') ?? c.textContent.trim(); });",
        table,
        index,
    )


def test_the_page_in_a_real_browser(built, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By

    out, rows = built
    browser.get(out.as_uri())
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    assert browser.execute_script("return window.__pwned === undefined") and "pwned" not in browser.title
    assert "<script>" in browser.find_element(By.ID, "failures").text  # the payload is there, as text

    tables = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard")
    assert sum(len(t.find_elements(By.CSS_SELECTOR, "tbody tr")) for t in tables) == configurations(rows)
    table = max(tables, key=lambda t: len(t.find_elements(By.CSS_SELECTOR, "tbody tr")))
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    at = next(i for i, h in enumerate(heads) if h.text.strip().startswith(METRIC))

    def means() -> list[float]:
        return [float(v) if re.fullmatch(r"[-+.\de]+", v) else math.nan for v in column(browser, table, at)]

    shown = means()
    finite = [v for v in shown if not math.isnan(v)]
    assert finite == sorted(finite, reverse=True) and len(set(finite)) > 1  # as ranked: best first
    heads[at].click()
    ascending = means()
    assert [v for v in ascending if not math.isnan(v)] == sorted(finite) and ascending != shown
    assert all(math.isnan(v) for v in ascending[len(finite) :])  # lines without a value stay last
    heads[at].click()
    assert [v for v in means() if not math.isnan(v)] == sorted(finite, reverse=True)
    heads[0].click()  # "#": back to the ranking
    assert [int(float(v)) for v in column(browser, table, 0)] == list(range(1, len(shown) + 1))

    images = browser.find_elements(By.CSS_SELECTOR, "#plots img")
    assert images, "no plot"
    for image in images[:2]:
        browser.execute_script("arguments[0].scrollIntoView()", image)
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
        shot = Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB")
        assert len(shot.getcolors(maxcolors=1 << 20)) > 1, "a blank plot"
    assert browser.find_elements(By.CSS_SELECTOR, "svg.pareto g.front")  # the Pareto front is drawn
    assert browser.execute_script("return window.__pwned === undefined")


def test_the_roc_switches_to_a_log_false_accept_axis_and_back(built, browser):
    from selenium.webdriver.common.by import By

    browser.get(built[0].as_uri())
    figure = browser.find_element(By.CSS_SELECTOR, "#plots figure.roc")
    linear, log = figure.find_elements(By.CSS_SELECTOR, "img")
    box = figure.find_element(By.CSS_SELECTOR, "input.log-fpr")
    assert linear.is_displayed() and not log.is_displayed()  # the page opens on the linear axis
    browser.execute_script("arguments[0].scrollIntoView()", box)
    box.click()
    assert log.is_displayed() and not linear.is_displayed()
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", log) > 0
    box.click()
    assert linear.is_displayed() and not log.is_displayed()
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


CARRIED = re.compile(r"^(p\s*([=<\u2264])\s*)?([+\-\u2212]?(\d[\d,]*\.?\d*|\.\d+)(e[+\-]?\d+)?)", re.I)


def carried(text: str) -> float:
    """The number a cell carries as the page sorts it (at its start, after an optional p= / p<), else NaN."""
    m = CARRIED.match(text)
    if not m:
        return math.nan
    value = float(m[3].replace("\u2212", "-").replace(",", ""))
    return value * (1 - 1e-9) - 1e-300 if m[2] and m[2] != "=" else value


def test_every_column_of_every_table_sorts_by_the_number_its_cells_carry(built, browser):
    """Click each header twice: numbers in order (ascending, then descending), cells without a number after them,
    empty cells last — on mixed columns too (gain vs untrained with "(baseline)", the effects' p = / p < columns)."""
    from selenium.webdriver.common.by import By

    out, _ = built
    browser.get(out.as_uri())
    tables = browser.find_elements(By.CSS_SELECTOR, "table.sortable")
    clicked, mixed = 0, 0
    for table in tables:
        heads = table.find_elements(By.CSS_SELECTOR, "thead th")
        for at, head in enumerate(heads):
            for descending in (False, True):
                browser.execute_script("arguments[0].click()", head)
                keys = column(browser, table, at)
                filled = [k for k in keys if k not in ("", "\u2014")]
                numbers = [carried(k) for k in filled]
                if not filled or 2 * sum(not math.isnan(n) for n in numbers) < len(filled):
                    assert keys[: len(filled)] == filled  # a text column: empty cells last
                    continue
                rank = [2 if k in ("", "\u2014") else int(math.isnan(carried(k))) for k in keys]
                assert rank == sorted(rank), (head.text, keys)  # numbers, then the cells without one, then empty cells
                shown = [n for n in numbers if not math.isnan(n)]
                assert shown == sorted(shown, reverse=descending), (head.text, keys)
                clicked += 1
                mixed += any(math.isnan(n) for n in numbers)
    assert clicked >= 20 and mixed >= 1  # the page has numeric columns, some of them mixed


WIDER = """
const width = document.documentElement.clientWidth, out = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.parentElement && el.parentElement.closest('.scroll')) continue;  // inside a table's scroll box: the box scrolls
  const r = el.getBoundingClientRect();
  if (r.width > 0 && (r.right > width + 1 || r.left < -1)) out.push(el.tagName.toLowerCase() + '.' + (typeof el.className === 'string' ? el.className : el.className.baseVal) + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
}
return [document.documentElement.scrollWidth, width, out.slice(0, 8)];
"""


def test_at_phone_width_nothing_but_the_tables_scroll_boxes_is_wider_than_the_screen(built, browser):
    out, _ = built
    browser.set_window_size(390, 844)
    try:
        browser.get(out.as_uri())
        page_width, width, wider = browser.execute_script(WIDER)
        assert width <= 390 and not wider, wider
        assert page_width <= width  # the page itself never scrolls sideways; only the tables' own boxes do
    finally:
        browser.set_window_size(1400, 1000)


def test_the_answer_comes_first_and_the_table_keeps_its_names_in_view(built, browser):
    """At 1400 px: the verdict and the largest effects are on the first screen; scrolled sideways, the rank, backbone
    and loss stay in view; a column group hides and shows again; protocol terms explain themselves."""
    from selenium.webdriver.common.by import By

    out, _ = built
    browser.get(out.as_uri())
    sections = [s.get_attribute("id") for s in browser.find_elements(By.CSS_SELECTOR, "body > section")]
    assert sections[0] == "answer" and sections[-2:] == ["run", "glossary"]  # the run and its environment below
    verdict = browser.find_element(By.CSS_SELECTOR, "#answer .verdict")
    assert verdict.rect["y"] < 200 and "Verdict" in verdict.text
    assert browser.find_elements(By.CSS_SELECTOR, "#answer ul.effects li")  # the largest effects, with intervals
    table = max(browser.find_elements(By.CSS_SELECTOR, "table.leaderboard"), key=lambda t: len(t.find_elements(By.CSS_SELECTOR, "tr")))
    box = table.find_element(By.XPATH, "..")
    browser.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", box)
    assert browser.execute_script("return arguments[0].scrollLeft", box) > 0  # the table is wider than its box
    left = browser.execute_script("return arguments[0].getBoundingClientRect().left", box)
    pinned = table.find_elements(By.CSS_SELECTOR, "tbody tr:first-child td.pin")
    assert len(pinned) == 3  # #, backbone, loss
    edges = [browser.execute_script("return arguments[0].getBoundingClientRect().left", c) for c in pinned]
    assert abs(edges[0] - left) <= 2 and edges == sorted(edges)  # still at the box's left edge, side by side
    heads = lambda: [h.text for h in table.find_elements(By.CSS_SELECTOR, "thead th") if h.is_displayed()]
    shown = heads()
    marks = table.find_element(By.XPATH, "../preceding-sibling::p[1]").find_element(By.CSS_SELECTOR, "input[data-group=marks]")
    browser.execute_script("arguments[0].click()", marks)
    hidden = heads()
    assert "vs best" in " ".join(shown) and "vs best" not in " ".join(hidden) and len(hidden) < len(shown)
    browser.execute_script("arguments[0].click()", marks)
    assert heads() == shown
    terms = [c.get_attribute("title") for c in table.find_elements(By.CSS_SELECTOR, "td[title]")]
    assert any("BatchNorm" in t for t in terms)  # backbone_bn_train explained where it appears


def test_the_page_says_what_the_markdown_says_under_each_table():
    """The notes under a group's table come from the leaderboard's one `group_notes`: rows run at two thread counts
    are said to be so in the page as in the markdown."""
    from bench.report.leaderboard import markdown
    from bench.report.table import table
    from bench.report.wording import group_notes

    rows = [json.loads(line) for line in SOURCE.read_text().splitlines()]
    for r in rows[::2]:
        r["env"] = {**r.get("env", {}), "torch_threads": 1}
    notes = group_notes(table(rows, METRIC), METRIC)
    numerics = next(n for n in notes if n.startswith("*numerics*"))
    assert numerics in markdown(table(rows, METRIC), METRIC)
    text = page(rows, METRIC, "mixed", ["mixed.jsonl"])
    assert "arithmetic environments" in text and "1 threads" in text
