"""The tables of docs/seed-question.md, computed from a seed-question results file.

    .venv/bin/python examples/seed_question_summary.py results/seed_question.jsonl

Arms are backbone × freeze mode × preprocessing × augmentation, each a mean over its losses and seeds (ok rows only),
beside the untrained features of the same backbone and input. Then every configuration that was still
improving when its budget ended, by the leaderboard's rule. `examples/product_question_summary.py` reuses these
functions with its own metrics.
"""

from __future__ import annotations

import sys

import pandas as pd

from bench.report.table import table
from bench.results import latest_rows, read_rows
from bench.schema import Row

FEW_SHOT = "few_shot_20way_1shot_accuracy"
WITHIN = "few_shot_20way_1shot_within_alphabet_accuracy"
COLUMNS = {"within alphabet": WITHIN, "ROC-AUC": "verification_roc_auc", "recall@1": "recall_at_1"}  # beside the headline
NAMES = {
    ("koch", "none"): "Koch's CNN, from scratch",
    ("conv4", "none"): "conv4, from scratch",
    ("efficientnet_lite0_imagenet", "none"): "Lite0, fine-tuned",
    ("efficientnet_lite0_imagenet", "backbone"): "Lite0, frozen, BatchNorm in eval mode",
    ("efficientnet_lite0_imagenet", "backbone_bn_train"): "Lite0, frozen, BatchNorm left in train mode",
}


def frame(rows: list[Row], metrics: list[str]) -> pd.DataFrame:
    """One line per ok row: its options, the `metrics` (NaN where a row lacks one), its steps and whether the clock stopped it."""
    out = []
    for r in rows:
        if not r.ok:
            continue
        c, m, t = r.config, r.metrics, r.train
        out.append(
            {
                "backbone": c["backbone"],
                "loss": c["loss"],
                "seed": c["seed"],
                "freeze": c["model"]["freeze"],
                "preprocess": c["model"]["preprocess"],
                "augment": c.get("train", {}).get("augment", "none"),
                **{k: m.get(k, float("nan")) for k in metrics},
                "steps": t.steps,
                "by_seconds": t.stopped_by == "max_seconds",
            }
        )
    return pd.DataFrame(out)


def arms(df: pd.DataFrame, metric: str, title: str, columns: dict[str, str], untrained_title: str = "untrained") -> str:
    """The arms table on `metric` (headed `title`), with `columns` ({header: metric}) beside it."""
    base = df[df.loss == "none"].groupby(["backbone", "preprocess"])[metric].mean()
    trained = df[df.loss != "none"]
    lines = [
        f"| arm | preprocess | cells | {title} (± seed sd within a configuration) | {' | '.join(columns)} | {untrained_title} | mean steps | stopped by seconds |",
        "|---|---|---:|---:|" + "---:|" * len(columns) + "---:|---:|---:|",
    ]
    table_rows = []
    for (backbone, freeze, preprocess, augment), g in trained.groupby(["backbone", "freeze", "preprocess", "augment"]):
        # the seed sd within a configuration, pooled over the arm's configurations (its losses): what another seed moves
        # one line by — not the spread of per-seed means averaged across losses, which cancels that noise
        seed_sd = g.groupby("loss")[metric].var(ddof=1).mean() ** 0.5
        untrained = base.get((backbone, preprocess), float("nan"))
        name = NAMES.get((backbone, freeze), f"{backbone} {freeze}") + (f", {augment} augmentation" if augment != "none" else "")
        beside = " | ".join(f"{g[k].mean():.3f}" for k in columns.values())
        table_rows.append(
            (
                g[metric].mean(),
                f"| {name} | {preprocess} | {len(g)} | {g[metric].mean():.3f} ± {seed_sd:.3f} | {beside} | "
                f"{untrained:.3f} | {g.steps.mean():.0f} | {int(g.by_seconds.sum())} of {len(g)} |",
            )
        )
    return "\n".join(lines + [line for _, line in sorted(table_rows, reverse=True)])


def improving(rows: list[Row], metric: str) -> str:
    board = table(rows, metric)
    still = board[board["still_improving"].astype(str).str.startswith("yes")]
    lines = [f"Still improving at the end of the budget ({len(still)} of {int((board['loss'] != 'none').sum())} trained configurations):"]
    for _, r in still.iterrows():
        lines.append(
            f"- {r['backbone']} · {r['loss']} · freeze {r.get('model.freeze', 'none')} · {r.get('model.preprocess', 'native')} · "
            f"augment {r.get('train.augment', 'none')}: "
            f"{r['still_improving']}"
        )
    return "\n".join(lines)


def newest(path: str) -> list[Row]:
    return list(latest_rows(read_rows(path)).values())


def main() -> None:
    rows = newest(sys.argv[1])
    bad = [r for r in rows if not r.ok]
    print(arms(frame(rows, [FEW_SHOT, *COLUMNS.values()]), FEW_SHOT, "20-way 1-shot", COLUMNS))
    print(f"\n{len(rows)} cells, {len(bad)} not ok")
    print()
    print(improving(rows, FEW_SHOT))


if __name__ == "__main__":
    main()
