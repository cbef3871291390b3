"""Result rows that stay small: what a row costs in bytes and in reading with the test ROC inline (`roc`, rows
written before it moved) and in the cell's items file (rows now), side by side in one run. Measures a fresh
tiny digits cell, a committed results file, and a synthetic --rows file made by repeating the committed rows;
the views must read both the same (the leaderboard's markdown and the plots' PNGs are compared byte for byte).
--before REV also times `bench leaderboard` of that git revision's code on the rows with the ROC inline (the
committed figures: --before 8feacd1, the code before the move). Figures go to results/benchmarks/row_size.json (--out).

    .venv/bin/python benchmarks/row_size.py [--results results/seed_question.jsonl] [--metric M] [--rows 10000] [--repeats 5]
                                            [--before REV]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import record

from bench.items import ROC_FPR, ROC_TPR, items_folder, read_items, roc_items, write_items
from bench.results import read_rows

TINY = """
name = "tiny"
[budget]
max_steps = 10
[train]
batch_size = 32
[axes]
backbone = ["conv4"]
loss = ["contrastive"]
dataset = ["digits"]
seed = [0]
[backbone.conv4]
image_size = 28
"""


def line(row: dict) -> bytes:
    """A row as ResultsWriter writes it."""
    return (json.dumps(row, sort_keys=True, allow_nan=True) + "\n").encode()


def shares(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean bytes per row of each top-level key and of each key one level down ("train.selected"), largest first."""
    sizes: Counter = Counter()
    for row in rows:
        for key, value in row.items():
            sizes[key] += len(json.dumps({key: value}, sort_keys=True, allow_nan=True)) - 2
            for sub, inner in value.items() if isinstance(value, dict) else ():
                sizes[f"{key}.{sub}"] += len(json.dumps({sub: inner}, sort_keys=True, allow_nan=True)) - 2
    total = sum(len(line(r)) for r in rows)
    return {k: {"bytes": round(n / len(rows)), "share": round(n / total, 4)} for k, n in sizes.most_common()}


def inline(row: dict, arrays: dict | None) -> dict:
    """The row as metric-bench wrote it before the ROC moved: its items' ROC back under "roc"."""
    if arrays is None or ROC_FPR not in arrays:
        return row
    return {**row, "roc": {"fpr": arrays[ROC_FPR].tolist(), "tpr": arrays[ROC_TPR].tolist()}}


def convert(source: Path, target: Path, roc_in_items: bool) -> list[dict]:
    """`source`'s rows and items into `target` (a fresh folder), the ROC inline or in the items files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for typed in read_rows(source):
        arrays = read_items(source, typed.items) or {}
        row = typed.to_dict()
        roc = row.get("roc") or (inline(row, arrays).get("roc") if ROC_FPR in arrays else None)
        row = {k: v for k, v in row.items() if k not in ("roc", "items")}
        arrays = {k: v for k, v in arrays.items() if k not in (ROC_FPR, ROC_TPR)}
        if roc and roc_in_items:
            arrays |= roc_items(roc)
        elif roc:
            row["roc"] = roc
        if arrays:
            row["items"] = write_items(target, row["cell_id"], arrays)
        rows.append(row)
    target.write_bytes(b"".join(map(line, rows)))
    return rows


def repeated(source: Path, target: Path, n: int) -> None:
    """`n` rows made by repeating `source`'s, each a cell of its own (cell_id suffixed); items files shared."""
    rows = source.read_bytes().splitlines(keepends=True)
    with open(target, "wb") as out:
        for k in range(n):
            row = json.loads(rows[k % len(rows)])
            out.write(line({**row, "cell_id": f"{row['cell_id']}-{k // len(rows)}"}))
    shutil.copytree(items_folder(source), items_folder(target), dirs_exist_ok=True)


def command(*args: str, code: Path = record.ROOT) -> subprocess.CompletedProcess:
    """`args` run from `code` (`python -m bench` imports the bench/ package there)."""
    done = subprocess.run(args, capture_output=True, cwd=code)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    return done


def code_of(rev: str, folder: Path) -> Path:
    """A folder holding metric-bench's bench/ package at git revision `rev` (git archive), for `command(code=...)`."""
    folder.mkdir()
    archive = subprocess.run(["git", "archive", rev, "bench"], cwd=record.ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def loading(paths: dict[str, Path], metric: str, repeats: int, before: tuple[str, Path, Path] | None = None) -> dict[str, dict]:
    """Seconds to read each of `paths` ({variant: results file}): bench.results.read_rows in this process, `bench
    leaderboard` and `jq` as a user runs them; with `before` (variant, its file, a folder with another revision's
    code), also that code's `bench leaderboard` on that file. The variants take turns, so a busy neighbour slows all alike."""
    leaderboard = lambda path, code=record.ROOT: command(
        sys.executable, "-m", "bench", "leaderboard", str(path), "--metric", metric, "--out", str(path.with_suffix(".md")), code=code
    )
    readers = {
        "read_rows_seconds": lambda path: read_rows(path),
        "leaderboard_seconds": leaderboard,
        **({"jq_seconds": lambda path: command("jq", "-c", f'.metrics["{metric}"]', str(path))} if shutil.which("jq") else {}),
    }
    out = {v: {"bytes": p.stat().st_size, "rows": len(read_rows(p)), **{k: [] for k in readers}} for v, p in paths.items()}
    if before:
        out[before[0]]["leaderboard_seconds_code_before"] = []
    for n in range(repeats):
        for key, read in readers.items():
            if key == "leaderboard_seconds" and n >= max(1, repeats // 2):
                continue  # seconds each: half as many
            for variant, path in paths.items():
                start = time.perf_counter()
                read(path)
                out[variant][key].append(round(time.perf_counter() - start, 4))
            if key == "leaderboard_seconds" and before:
                start = time.perf_counter()
                leaderboard(before[1], before[2])
                out[before[0]]["leaderboard_seconds_code_before"].append(round(time.perf_counter() - start, 4))
    for figures in out.values():
        figures["bytes_per_row"] = round(figures["bytes"] / figures["rows"])
    return out


def tiny_cell(folder: Path) -> dict:
    """A 10-step conv4 digits cell run now; its row as written and as it was written with the ROC inline."""
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY)
    record.bench_run(folder, "--grid", "tiny.toml", "--results", "tiny.jsonl", "--threads", "1")
    [typed] = read_rows(folder / "tiny.jsonl")
    arrays = read_items(folder / "tiny.jsonl", typed.items)
    row = typed.to_dict()
    without_roc = write_items(folder / "bare.jsonl", row["cell_id"], {k: v for k, v in arrays.items() if k not in (ROC_FPR, ROC_TPR)})
    return {
        "row_bytes": len(line(row)),
        "row_bytes_roc_inline": len(line(inline(row, arrays))),
        "roc_vertices": len(arrays[ROC_FPR]),
        "items_bytes": row["items"]["bytes"],
        "items_bytes_without_roc": without_roc["bytes"],
        "shares": shares([row]),
        "shares_roc_inline": shares([inline(row, arrays)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=record.ROOT / "results" / "seed_question.jsonl", help="committed rows to measure")
    parser.add_argument("--metric", default="few_shot_20way_1shot_accuracy", help="the leaderboard's --metric for those rows")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the synthetic file")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (the leaderboard's: half as many); medians are reported")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also time `bench leaderboard` of this git revision's code on the rows with the ROC inline (the code before the ROC moved)",
    )
    record.add_out_argument(parser, "row_size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = {"tiny_cell": tiny_cell(tmp / "tiny")}
        committed, synthetic, kept = {}, {}, {}
        for variant, in_items in (("roc_inline", False), ("roc_in_items", True)):
            committed[variant] = tmp / variant / args.results.name
            kept[variant] = convert(args.results, committed[variant], in_items)
            command(sys.executable, "-m", "bench", "plot", str(committed[variant]), "--metric", args.metric, "--out", str(tmp / f"{variant}_plots"))
            synthetic[variant] = tmp / f"{variant}_big" / args.results.name
            synthetic[variant].parent.mkdir()
            repeated(committed[variant], synthetic[variant], args.rows)
        code = code_of(args.before, tmp / "before") if args.before else None
        raw["committed"] = {
            v: {**f, "shares": shares(kept[v])}
            for v, f in loading(committed, args.metric, args.repeats, code and ("roc_inline", committed["roc_inline"], code)).items()
        }
        raw["synthetic"] = loading(synthetic, args.metric, args.repeats, code and ("roc_inline", synthetic["roc_inline"], code))
        md = {v: p.with_suffix(".md").read_bytes() for v, p in committed.items()}
        pngs = sorted(p.name for p in (tmp / "roc_inline_plots").iterdir())
        raw["same_views"] = {
            "leaderboard_md": md["roc_inline"] == md["roc_in_items"],
            "plots": {name: filecmp.cmp(tmp / "roc_inline_plots" / name, tmp / "roc_in_items_plots" / name, shallow=False) for name in pngs},
        }
    summary = summarise(raw)
    record.write("row_size", args, raw, summary)
    print(json.dumps(summary, indent=1))


def summarise(raw: dict) -> dict:
    """Medians, and the new figure as a ratio of the old one (below 1: smaller or faster)."""
    tiny = raw["tiny_cell"]
    out = {
        "tiny_cell": {
            "row_bytes": tiny["row_bytes"],
            "row_bytes_roc_inline": tiny["row_bytes_roc_inline"],
            "row_ratio": round(tiny["row_bytes"] / tiny["row_bytes_roc_inline"], 3),
            "items_bytes": tiny["items_bytes"],
            "items_bytes_without_roc": tiny["items_bytes_without_roc"],
        },
        "same_views": raw["same_views"]["leaderboard_md"] and all(raw["same_views"]["plots"].values()),
    }
    for part in ("committed", "synthetic"):
        old, new = raw[part]["roc_inline"], raw[part]["roc_in_items"]
        figures = {"rows": new["rows"], "bytes_per_row": [old["bytes_per_row"], new["bytes_per_row"]], "bytes_ratio": round(new["bytes"] / old["bytes"], 3)}
        for key in ("read_rows_seconds", "leaderboard_seconds", "jq_seconds"):
            if key in old:
                before, after = round(statistics.median(old[key]), 4), round(statistics.median(new[key]), 4)
                figures[key] = [before, after]
                figures[key.replace("_seconds", "_ratio")] = round(after / before, 3)
        if "leaderboard_seconds_code_before" in old:  # the old code on the old rows, against this code on the new ones
            before = round(statistics.median(old["leaderboard_seconds_code_before"]), 4)
            figures["leaderboard_seconds_code_before"] = before
            figures["leaderboard_ratio_vs_code_before"] = round(figures["leaderboard_seconds"][1] / before, 3)
        out[part] = figures
    return out


if __name__ == "__main__":
    main()
