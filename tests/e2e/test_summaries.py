"""The docs' arms tables are what the example summary scripts print from the committed rows (no stale figure)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import ROOT


@pytest.mark.parametrize("study, page", [("seed_question", "seed-question.md"), ("product_question", "products.md")])
def test_the_docs_arms_table_is_the_scripts_output(study, page):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{study}_summary.py"), str(ROOT / "results" / f"{study}.jsonl")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    table = out.split("\n\n", 1)[0].splitlines()  # the arms table: the first block the script prints
    assert all(line.startswith("|") for line in table)
    text = (ROOT / "docs" / page).read_text()
    assert len(table) >= 6 and all(line in text for line in table), [line for line in table if line not in text]
