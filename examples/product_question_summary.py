"""The arms table of docs/products.md, computed from a product-question results file.

    .venv/bin/python examples/product_question_summary.py results/product_question.jsonl

The seed question's tables (`examples/seed_question_summary.py`) on recall@1, with recall@8, ROC-AUC and 20-way
one-shot beside it; then each untrained backbone's own features, and the configurations still improving.
"""

from __future__ import annotations

import sys

import pandas as pd
from seed_question_summary import arms, frame, improving, newest

METRIC = "recall_at_1"
COLUMNS = {"recall@8": "recall_at_8", "ROC-AUC": "verification_roc_auc", "20-way 1-shot": "few_shot_20way_1shot_accuracy"}


def untrained(df: pd.DataFrame) -> str:
    lines = ["| untrained backbone | preprocess | cells | recall@1 | " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for (backbone, preprocess), g in df[df.loss == "none"].groupby(["backbone", "preprocess"]):
        lines.append(f"| {backbone} | {preprocess} | {len(g)} | {g[METRIC].mean():.3f} | " + " | ".join(f"{g[k].mean():.3f}" for k in COLUMNS.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    rows = newest(sys.argv[1])
    bad = [r for r in rows if not r.ok]
    df = frame(rows, [METRIC, *COLUMNS.values()])
    print(arms(df, METRIC, "recall@1", COLUMNS, "untrained recall@1"))
    print()
    print(untrained(df))
    print(f"\n{len(rows)} cells, {len(bad)} not ok")
    print()
    print(improving(rows, METRIC))


if __name__ == "__main__":
    main()
