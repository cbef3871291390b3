"""The tables of README's "Why the pretrained siamese lost", computed from a seed-question results file.

    .venv/bin/python examples/seed_question_summary.py results/seed_question.jsonl

Arms compare backbone × freeze mode at native preprocessing and a linear head (Koch's CNN has its own
sigmoid-4096 head), each a mean over 3 losses × the seeds; factors are means over the frozen Lite0's cells.
Only `ok` rows count; the line under each table says how many cells were not ok.
"""
from __future__ import annotations

import sys

import pandas as pd

from bench.results import latest_rows, read_rows

FEW_SHOT = "few_shot_20way_1shot_accuracy"


def frame(path: str) -> pd.DataFrame:
    rows = list(latest_rows(read_rows(path)).values())
    out = []
    for r in rows:
        c = r["config"]
        out.append({"status": r["status"], "backbone": c["backbone"], "loss": c["loss"], "seed": c["seed"],
                    "freeze": c["model"]["freeze"], "preprocess": c["model"]["preprocess"],
                    "head": c["backbone_args"].get("head", "koch"),
                    **({"few_shot": r["metrics"][FEW_SHOT], "auc": r["metrics"]["verification_roc_auc"],
                        "r1": r["metrics"]["recall_at_1"], "steps": r["train"]["steps"],
                        "by_seconds": r["train"]["stopped_by"] == "max_seconds"} if r["status"] == "ok" else {})})
    return pd.DataFrame(out)


def arms(df: pd.DataFrame) -> str:
    ok = df[df.status == "ok"]
    native = ok[(ok.preprocess == "native") & ok.head.isin(["linear", "koch"])]
    names = {("koch", "none"): "Koch CNN, from scratch", ("efficientnet_lite0_imagenet", "none"): "Lite0, fine-tuned",
             ("efficientnet_lite0_imagenet", "backbone"): "Lite0, frozen, BatchNorm in eval mode",
             ("efficientnet_lite0_imagenet", "backbone_bn_train"): "Lite0, frozen, BatchNorm left in train mode"}
    lines = ["| arm | cells | 20-way 1-shot acc (± seed std) | ROC-AUC | recall@1 | mean steps | stopped by max_seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    table = []
    for (backbone, freeze), g in native.groupby(["backbone", "freeze"]):
        seed_means = g.groupby("seed").few_shot.mean()
        table.append((g.few_shot.mean(), f"| {names.get((backbone, freeze), f'{backbone} {freeze}')} | {len(g)} | {g.few_shot.mean():.3f} ± "
                      f"{seed_means.std():.3f} | {g.auc.mean():.3f} | {g.r1.mean():.3f} | {g.steps.mean():.0f} | {int(g.by_seconds.sum())} of {len(g)} |"))
    return "\n".join(lines + [line for _, line in sorted(table, reverse=True)])


def factors(df: pd.DataFrame) -> str:
    ok = df[(df.status == "ok") & (df.backbone == "efficientnet_lite0_imagenet") & (df.freeze == "backbone")]
    lines = ["| factor | values (20-way 1-shot accuracy, mean over cells; mean steps) |", "|---|---|"]
    for factor in ("preprocess", "head", "loss"):
        means = ok.groupby(factor).agg(acc=("few_shot", "mean"), steps=("steps", "mean"), n=("few_shot", "size")).sort_values("acc", ascending=False)
        lines.append(f"| {factor} | " + " · ".join(f"{k} {v.acc:.3f} ({v.steps:.0f} steps, {v.n} cells)" for k, v in means.iterrows()) + " |")
    return "\n".join(lines)


def main() -> None:
    df = frame(sys.argv[1])
    bad = df[df.status != "ok"]
    print(arms(df))
    print(f"\n{len(df)} cells, {len(bad)} not ok" + (": " + ", ".join(f"{r.backbone} {r.loss} seed {r.seed} {r.status}" for r in bad.itertuples()) if len(bad) else ""))
    print()
    print(factors(df))


if __name__ == "__main__":
    main()
