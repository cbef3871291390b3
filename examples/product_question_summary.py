"""The arms table of README's "On products", computed from a product-question results file.

    .venv/bin/python examples/product_question_summary.py results/product_question.jsonl

Arms are backbone × freeze mode × preprocessing × augmentation, each a mean over its losses and seeds (ok rows
only), beside the untrained features of the same backbone and input; ± is the seed sd within a configuration,
pooled over the arm's losses. Then every configuration that was still improving when its budget ended.
"""
from __future__ import annotations

import sys

import pandas as pd

from bench.report.leaderboard import table
from bench.results import latest_rows, read_rows

METRIC = "recall_at_1"
OTHERS = {"recall_at_8": "recall@8", "verification_roc_auc": "ROC-AUC", "few_shot_20way_1shot_accuracy": "20-way 1-shot"}
NAMES = {("koch", "none"): "Koch's CNN, from scratch", ("conv4", "none"): "conv4, from scratch",
         ("efficientnet_lite0_imagenet", "none"): "Lite0, fine-tuned",
         ("efficientnet_lite0_imagenet", "backbone"): "Lite0, frozen, BatchNorm in eval mode",
         ("efficientnet_lite0_imagenet", "backbone_bn_train"): "Lite0, frozen, BatchNorm left in train mode"}


def frame(rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r["status"] != "ok":
            continue
        c, m, t = r["config"], r["metrics"], r["train"]
        out.append({"backbone": c["backbone"], "loss": c["loss"], "seed": c["seed"], "freeze": c["model"]["freeze"],
                    "preprocess": c["model"]["preprocess"], "augment": c.get("train", {}).get("augment", "none"),
                    METRIC: m[METRIC], **{k: m.get(k, float("nan")) for k in OTHERS}, "steps": t["steps"],
                    "by_seconds": t["stopped_by"] == "max_seconds"})
    return pd.DataFrame(out)


def arms(df: pd.DataFrame) -> str:
    base = df[df.loss == "none"].groupby(["backbone", "preprocess"])[METRIC].mean()
    trained = df[df.loss != "none"]
    lines = [f"| arm | preprocess | cells | recall@1 (± seed sd within a configuration) | {' | '.join(OTHERS.values())} | untrained recall@1 | mean steps | stopped by seconds |",
             "|---|---|---:|---:|" + "---:|" * len(OTHERS) + "---:|---:|---:|"]
    table_rows = []
    for (backbone, freeze, preprocess, augment), g in trained.groupby(["backbone", "freeze", "preprocess", "augment"]):
        seed_sd = g.groupby("loss")[METRIC].var(ddof=1).mean() ** 0.5
        untrained = base.get((backbone, preprocess), float("nan"))
        name = NAMES.get((backbone, freeze), f"{backbone} {freeze}") + (f", {augment} augmentation" if augment != "none" else "")
        others = " | ".join(f"{g[k].mean():.3f}" for k in OTHERS)
        table_rows.append((g[METRIC].mean(), f"| {name} | {preprocess} | {len(g)} | {g[METRIC].mean():.3f} ± {seed_sd:.3f} | {others} | "
                           f"{untrained:.3f} | {g.steps.mean():.0f} | {int(g.by_seconds.sum())} of {len(g)} |"))
    return "\n".join(lines + [line for _, line in sorted(table_rows, reverse=True)])


def untrained(df: pd.DataFrame) -> str:
    lines = ["| untrained backbone | preprocess | cells | recall@1 | " + " | ".join(OTHERS.values()) + " |", "|---|---|---:|---:|" + "---:|" * len(OTHERS)]
    for (backbone, preprocess), g in df[df.loss == "none"].groupby(["backbone", "preprocess"]):
        lines.append(f"| {backbone} | {preprocess} | {len(g)} | {g[METRIC].mean():.3f} | " + " | ".join(f"{g[k].mean():.3f}" for k in OTHERS) + " |")
    return "\n".join(lines)


def improving(rows: list[dict]) -> str:
    board = table(rows, METRIC)
    still = board[board["still_improving"].astype(str).str.startswith("yes")]
    lines = [f"Still improving at the end of the budget ({len(still)} of {int((board['loss'] != 'none').sum())} trained configurations):"]
    for _, r in still.iterrows():
        lines.append(f"- {r['backbone']} · {r['loss']} · freeze {r.get('model.freeze', 'none')} · {r.get('model.preprocess', 'native')} · "
                     f"augment {r.get('train.augment', 'none')}: {r['still_improving']}")
    return "\n".join(lines)


def main() -> None:
    rows = list(latest_rows(read_rows(sys.argv[1])).values())
    bad = [r for r in rows if r["status"] != "ok"]
    df = frame(rows)
    print(arms(df))
    print()
    print(untrained(df))
    print(f"\n{len(rows)} cells, {len(bad)} not ok")
    print()
    print(improving(rows))


if __name__ == "__main__":
    main()
