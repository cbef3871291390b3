"""Where a cell's evaluation time goes, phase by phase, in this code and in --before REV's, side by side in one run.

Each of the seed question's kinds of cell (examples/seed_question.toml: Omniglot's small sets, 3,120 test and 480
validation images, a four-point learning curve on validation, train.select = "best") is trained for --steps steps
and scored as the grid scores it, in a fresh process per (code, cell), the two codes taking turns. Inside it the
forward passes (`embed`: images and seconds) and each metric family are timed, in the curve points and in the
test score (`eval_seconds`), and the coordinator's per-item file write after it; the rest of a phase is "other".
The two codes' metrics must agree (`max_metric_diff`). `bench evaluate` on embeddings of the test split's size is
timed too: its imports (`python -X importtime`) and its wall time; and the networks' forward passes in torch's
default layout against channels-last (faster, but not the same embeddings).

From those, the seed question's committed rows (results/seed_question.jsonl) are projected: each row's curve and
test seconds scaled by its kind's after/before ratio, over the rows' clocks (training, warm-up, curve, test). The
ratio costs the forward passes at the before run's seconds per image times the images the after code embeds
(`_expected`): on a shared machine a neighbour moves a 15 s forward pass by more than the changes measured.

    .venv/bin/python benchmarks/eval_profile.py [--cells conv4 koch ...] [--steps 8] [--repeats 1] [--before 8feacd1]

Figures go to results/benchmarks/eval_profile.json (--out); `--render FILE` prints its tables.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import record

if TYPE_CHECKING:
    from bench.schema import Row

BEFORE = "8feacd1"  # the code before #30 item 5 (evaluation that costs little)
KINDS = {  # kind → (backbone, loss, model.freeze) of a seed-0 cell of the grid (native preprocessing, no augmentation)
    "conv4": ("conv4", "contrastive", "none"),
    "conv4_untrained": ("conv4", "none", "none"),
    "koch": ("koch", "contrastive", "none"),
    "koch_untrained": ("koch", "none", "none"),
    "lite0_finetuned": ("efficientnet_lite0_imagenet", "contrastive", "none"),
    "lite0_frozen": ("efficientnet_lite0_imagenet", "contrastive", "backbone"),
    "lite0_untrained": ("efficientnet_lite0_imagenet", "none", "none"),
}
METRIC_FUNCTIONS = ("verification_metrics", "retrieval_metrics", "few_shot_accuracy", "within_group_few_shot_accuracy")
PHASES = ("curve", "test")


def kind_of(row: Row) -> str:
    """The profiled kind a seed-question row's evaluation costs like (frozen BatchNorm-in-train-mode Lite0 embeds
    through its whole network, as a fine-tuned one does; caffe preprocessing costs what native does)."""
    backbone = {"efficientnet_lite0_imagenet": "lite0"}.get(row.config["backbone"], row.config["backbone"])
    cost = row.train.cost_model
    if cost == "untrained":
        return f"{backbone}_untrained"
    if backbone == "lite0":
        return "lite0_frozen" if cost == "features_once" else "lite0_finetuned"
    return backbone


# ---------------------------------------------------------------------------------------------- in the child


def child(kind: str, steps: int, threads: int, omniglot: str) -> dict:
    """Train one cell of `kind` for `steps` steps and score it, timing what its evaluation does."""
    import dataclasses

    import torch

    import bench  # noqa: F401  before torch: bench sets OpenMP's wait policy, as in `bench run`
    from bench.config import Budget
    from bench.eval import metrics
    from bench.grid import load_grid
    from bench.run import cell as cell_module
    from bench.run.runner import items_keeper, load_datasets

    torch.set_num_threads(threads)
    phase = ["setup"]  # before the first curve point: a frozen trunk's feature extraction (charged to training)
    spent: dict = {p: {"embed_seconds": 0.0, "embed_images": 0, "embed_calls": 0, **{f: 0.0 for f in METRIC_FUNCTIONS}} for p in ("setup", *PHASES)}

    def timed(module, name: str, images: bool = False):
        inner = getattr(module, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                into = spent[phase[0]]
                if images:
                    into["embed_seconds"] += time.perf_counter() - start
                    into["embed_images"] += len(args[1])
                    into["embed_calls"] += 1
                else:
                    into[name] += time.perf_counter() - start

        setattr(module, name, wrapper)

    timed(cell_module, "embed", images=True)
    for name in METRIC_FUNCTIONS:
        timed(metrics, name)

    def report(*args, info: str | None = None, **kwargs) -> None:
        if info and info.startswith("curve point"):
            phase[0] = "curve"
        elif info == "evaluating":
            phase[0] = "test"

    backbone, loss, freeze = KINDS[kind]
    grid = load_grid(record.ROOT / "examples" / "seed_question.toml")
    [cell] = [
        c
        for c in grid.cells
        if (c.backbone, c.loss, c.model.freeze, c.model.preprocess, c.train.augment, c.seed) == (backbone, loss, freeze, "native", "none", 0)
    ]
    cell = dataclasses.replace(cell, budget=Budget(max_steps=steps), dataset_args={**cell.dataset_args, "root": omniglot})
    data = load_datasets([cell], _Quiet())[cell_module.data_key(cell)]
    if "job" in inspect.signature(cell_module.train_and_evaluate).parameters:  # from the Job refactor on
        from bench.run.job import Job

        out = cell_module.train_and_evaluate(cell, Job("profile"), data, {}, torch.device("cpu"), report, lambda message: None)
    else:  # the version before it, measured side by side
        out = cell_module.train_and_evaluate(cell, data, {}, torch.device("cpu"), report, None, True, lambda message: None)
    with tempfile.TemporaryDirectory() as tmp:  # the coordinator's write of the per-item outcomes beside the row
        start = time.perf_counter()
        items_keeper(Path(tmp) / "r.jsonl", lambda message: None)({"cell_id": "profile", **out})
        items_seconds = time.perf_counter() - start
    seconds = {"curve": out["train"]["curve_seconds"], "test": out["eval_seconds"]}
    return {
        "kind": kind,
        "steps": out["train"]["steps"],
        "items_seconds": items_seconds,
        "phases": {p: {"seconds": seconds[p], **spent[p]} for p in PHASES},
        "metrics": _numbers(out["metrics"]),
        "curve_metrics": [_numbers(point["metrics"]) for point in out.get("curve", [])],
    }


def child_layouts(threads: int, images: int = 512, repeats: int = 5) -> list[dict]:
    """The seed question's networks (fresh weights, eval mode, batches of 64) on `images` random images in torch's
    default layout and in channels-last, taking turns: the best seconds per image of each, and how far apart
    their embeddings are (the largest relative L2 difference)."""
    import copy

    import torch

    import bench  # noqa: F401  before torch, as in `bench run`
    from bench.builtins import load_builtins
    from bench.plugins import BACKBONES

    torch.set_num_threads(threads)
    load_builtins()
    out = []
    for name, size in (("conv4", 28), ("koch", 65), ("efficientnet_lite0_imagenet", 65)):
        torch.manual_seed(0)
        plain = BACKBONES.get(name).factory(image_size=size).eval()
        last = copy.deepcopy(plain).to(memory_format=torch.channels_last)
        x = torch.rand(images, plain.input_spec.channels, size, size)

        def run(model, channels_last):
            with torch.no_grad():
                return torch.cat([model(c.contiguous(memory_format=torch.channels_last) if channels_last else c) for c in x.split(64)])

        seconds: dict = {"default": [], "channels_last": []}
        embedded: dict = {}
        for _ in range(repeats):
            for layout, model in (("default", plain), ("channels_last", last)):
                start = time.perf_counter()
                embedded[layout] = run(model, layout == "channels_last")
                seconds[layout].append(time.perf_counter() - start)
        reference = embedded["default"]
        difference = float(((embedded["channels_last"] - reference).norm(dim=1) / reference.norm(dim=1)).max())
        out.append({"network": name, **{f"{k}_ms_per_image": min(v) / images * 1e3 for k, v in seconds.items()}, "max_relative_difference": difference})
    return out


class _Quiet:
    def status(self, *args, **kwargs):
        import contextlib

        return contextlib.nullcontext()


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --------------------------------------------------------------------------------------------- in the parent


def code_of(rev: str, folder: Path) -> Path:
    """A folder holding the bench/, backbones/ and losses/ packages at git revision `rev` (git archive)."""
    folder.mkdir()
    archive = subprocess.run(["git", "archive", rev, "bench", "backbones", "losses"], cwd=record.ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_child(code: Path, kind: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}  # `bench` from `code`, before the editable install's finder
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--steps", str(args.steps), "--threads", str(args.threads), "--omniglot", str(args.omniglot)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} with the code in {code} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def evaluate_command(code: Path, npz: Path) -> dict:
    """`python -m bench evaluate` from `code`: the imports' seconds (-X importtime's self times summed; the
    largest top-level imports by cumulative time) and, in a second run without it, the wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", "evaluate", str(npz)], capture_output=True, text=True, cwd=code, env=env, check=True
    )
    total, top = 0, {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
            total += int(self_us)
            if not name[1:].startswith(" "):  # a top-level import
                top[name.strip()] = int(cumulative_us) / 1e6
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "evaluate", str(npz)], capture_output=True, cwd=code, env=env, check=True)
    wall = time.perf_counter() - start
    heavy = {name: s for name, s in sorted(top.items(), key=lambda kv: -kv[1]) if s >= 0.05}
    return {"import_seconds": total / 1e6, "wall_seconds": wall, "largest_imports": heavy}


def seed_question_rows(path: Path) -> list[Row]:
    from bench.results import read_rows  # not at the top: this script times `bench evaluate`'s imports

    return read_rows(path)


def seed_question_clocks(rows: list[Row], path: Path) -> dict:
    """Each row's kind and clocks, what a projection of the grid's evaluation share reads: the curve and test
    seconds, the training loop's wall seconds, the budget's clock (`train_seconds`: the loop plus a frozen trunk's
    charged extraction) and the warm-up."""
    return {
        "path": str(path.relative_to(record.ROOT)) if path.is_relative_to(record.ROOT) else str(path),
        "rows": [
            {
                "kind": kind_of(r),
                "curve_seconds": r.train.curve_seconds,
                "eval_seconds": r.eval_seconds,
                "train_wall_seconds": r.train.wall_seconds,
                "train_seconds": r.train.seconds,
                "warmup_seconds": r.train.warmup_seconds or 0.0,
            }
            for r in rows
        ],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--steps", type=int, default=8, help="training steps before the cell is scored (the curve's points fall among them)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the seed question ran with 2)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--before", default=BEFORE, help="git revision of the code to compare with")
    p.add_argument("--omniglot", type=Path, default=record.ROOT / "data" / "omniglot")
    p.add_argument("--rows", type=Path, default=record.ROOT / "results" / "seed_question.jsonl", help="rows to project the grid's share from")
    p.add_argument("--evaluate-repeats", type=int, default=3, help="runs of `bench evaluate` per code")
    p.add_argument("--render", type=Path, metavar="FILE", help="only print the tables of a record")
    p.add_argument("--child", help=argparse.SUPPRESS)
    record.add_out_argument(p, "eval_profile")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child:
        print(json.dumps(child_layouts(args.threads) if args.child == "layouts" else child(args.child, args.steps, args.threads, str(args.omniglot))))
        return
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    import numpy as np

    runs: list[dict] = []
    commands: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"before": code_of(args.before, Path(tmp) / "before"), "after": record.ROOT}
        rng = np.random.default_rng(0)  # embeddings shaped like the seed question's test split: 156 classes × 20, 128-d
        labels = np.repeat(np.arange(156), 20)
        embeddings = (rng.normal(size=(156, 128))[labels] * 0.5 + rng.normal(size=(len(labels), 128))).astype(np.float32)
        np.savez(Path(tmp) / "test.npz", embeddings=embeddings, labels=labels)
        for n in range(args.evaluate_repeats):
            for version in ("before", "after") if n % 2 == 0 else ("after", "before"):
                commands[version].append(evaluate_command(codes[version], Path(tmp) / "test.npz"))
        layouts = run_child(record.ROOT, "layouts", args)
        for repeat in range(args.repeats):
            for kind in args.cells:
                for version in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                    runs.append({"version": version, "repeat": repeat, **run_child(codes[version], kind, args)})
                    print(
                        f"{kind} ({version}): curve {runs[-1]['phases']['curve']['seconds']:.2f} s, test {runs[-1]['phases']['test']['seconds']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    rows = seed_question_rows(args.rows)
    raw = {
        "before": args.before,
        "steps": args.steps,
        "threads": args.threads,
        "runs": runs,
        "evaluate_command": commands,
        "layouts": layouts,
        "seed_question": seed_question_clocks(rows, args.rows),
    }
    out = record.write("eval_profile", args, raw, summarise(raw))
    print(render(json.loads(out.read_text())))


# ------------------------------------------------------------------------------------------ summary, tables


def summarise(raw: dict) -> dict:
    """Per kind and code: median seconds of each phase and of its parts; the after/before ratios; the two codes'
    largest metric difference; and the seed question's evaluation share, measured (its rows) and projected."""
    kinds = list(dict.fromkeys(r["kind"] for r in raw["runs"]))
    per_kind = {}
    for kind in kinds:
        entry = {}
        for version in ("before", "after"):
            runs = [r for r in raw["runs"] if r["kind"] == kind and r["version"] == version]
            med = lambda f: statistics.median(f(r) for r in runs)
            entry[version] = {
                p: {
                    "seconds": med(lambda r: r["phases"][p]["seconds"]),
                    "embed_seconds": med(lambda r: r["phases"][p]["embed_seconds"]),
                    "embed_images": med(lambda r: r["phases"][p]["embed_images"]),
                    **{f: med(lambda r: r["phases"][p][f]) for f in METRIC_FUNCTIONS},
                }
                for p in PHASES
            }
            entry[version]["items_seconds"] = med(lambda r: r["items_seconds"])
        pairs = [
            (b, a)
            for b in raw["runs"]
            for a in raw["runs"]
            if b["kind"] == a["kind"] == kind and b["version"] == "before" and a["version"] == "after" and b["repeat"] == a["repeat"]
        ]
        entry["max_metric_diff"] = max(
            (
                _difference(b_m[k], a_m.get(k))
                for b, a in pairs
                for b_m, a_m in [(b["metrics"], a["metrics"]), *zip(b["curve_metrics"], a["curve_metrics"])]
                for k in b_m
            ),
            default=0.0,
        )
        expected = {p: _expected(entry["before"][p], entry["after"][p]) for p in PHASES}
        entry["ratio"] = {p: sum(expected[p]) / max(entry["before"][p]["seconds"], 1e-9) for p in PHASES}
        entry["forward_ratio"] = {p: expected[p][0] / max(entry["before"][p]["seconds"], 1e-9) for p in PHASES}
        per_kind[kind] = entry
    rows = raw["seed_question"]["rows"]
    clock = sum(r["train_wall_seconds"] + r["warmup_seconds"] + r["curve_seconds"] + r["eval_seconds"] for r in rows)
    evaluation = sum(r["curve_seconds"] + r["eval_seconds"] for r in rows)
    covered = [r for r in rows if r["kind"] in per_kind]
    projected = sum(
        r["curve_seconds"] * per_kind[r["kind"]]["ratio"]["curve"] + r["eval_seconds"] * per_kind[r["kind"]]["ratio"]["test"] for r in covered
    ) + sum(r["curve_seconds"] + r["eval_seconds"] for r in rows if r["kind"] not in per_kind)
    forward = sum(
        r["curve_seconds"] * per_kind[r["kind"]]["forward_ratio"]["curve"] + r["eval_seconds"] * per_kind[r["kind"]]["forward_ratio"]["test"] for r in covered
    )
    command = {
        v: {k: statistics.median(c[k] for c in raw["evaluate_command"][v]) for k in ("import_seconds", "wall_seconds")}
        for v in ("before", "after")
        if raw["evaluate_command"][v]
    }
    return {
        "kinds": per_kind,
        "evaluate_command": command,
        "seed_question": {
            "rows": len(rows),
            "rows_covered": len(covered),
            "clock_seconds": clock,
            "evaluation_seconds": evaluation,
            "evaluation_share": evaluation / clock,
            "projected_evaluation_seconds": projected,
            "projected_share": projected / (clock - evaluation + projected),
            "projected_forward_seconds": forward,
            "projected_share_without_forward": (projected - forward) / (clock - evaluation + projected),
        },
    }


def _expected(before: dict, after: dict) -> tuple[float, float]:
    """A phase's (forward, other) seconds in the code after, its forward passes costed at the code before's seconds per image:
    the same networks embed the same batches in both, so the images embedded decide what those cost, and a
    neighbour's load during one run does not (it moves the seconds of a 15 s forward pass by more than the
    changes being measured). The rest of the phase (metrics and bookkeeping) is the after run's own."""
    per_image = before["embed_seconds"] / before["embed_images"] if before["embed_images"] else 0.0
    return per_image * after["embed_images"], after["seconds"] - after["embed_seconds"]


def _difference(a, b) -> float:
    """|a − b| of two figures of a row, NaN written as null: two NaNs agree, a NaN and a number do not."""
    missing = [v is None or v != v for v in (a, b)]
    return 0.0 if all(missing) else float("inf") if any(missing) else abs(a - b)


def render(rec: dict) -> str:
    import tables

    s = summarise(rec["raw"])
    parts = ["curve", "test"]
    rows = []
    for kind, e in s["kinds"].items():
        for version in ("before", "after"):
            v = e[version]
            cells = [kind if version == "before" else "", version]
            for p in parts:
                metric = sum(v[p][f] for f in METRIC_FUNCTIONS)
                cells += [
                    f"{v[p]['seconds']:.2f}",
                    f"{v[p]['embed_seconds']:.2f} ({v[p]['embed_images']:.0f})",
                    f"{metric:.2f}",
                    f"{max(v[p]['seconds'] - v[p]['embed_seconds'] - metric, 0):.2f}",
                ]
            before_total = e["before"]["curve"]["seconds"] + e["before"]["test"]["seconds"]
            expected = sum(sum(_expected(e["before"][p], v[p])) for p in parts) / before_total
            cells += [
                f"{v['items_seconds']:.3f}",
                f"{(v['curve']['seconds'] + v['test']['seconds']) / before_total:.2f}",
                f"{expected:.2f}",
                f"{e['max_metric_diff']:.0e}" if version == "after" else "",
            ]
            rows.append(cells)
    header = [
        "cell",
        "code",
        "curve s",
        "curve forward s (images)",
        "curve metrics s",
        "curve other s",
        "test s",
        "test forward s (images)",
        "test metrics s",
        "test other s",
        "items write s",
        "vs before",
        "vs before, forward at before's s/image",
        "max metric diff",
    ]
    breakdown = tables.markdown(header, rows, "llrrrrrrrrrrrr")
    metric_rows = []
    for kind, e in s["kinds"].items():
        for version in ("before", "after"):
            metric_rows.append([kind if version == "before" else "", version, *(f"{e[version][p][f]:.3f}" for p in parts for f in METRIC_FUNCTIONS)])
    short = {
        "verification_metrics": "verification",
        "retrieval_metrics": "retrieval",
        "few_shot_accuracy": "few-shot",
        "within_group_few_shot_accuracy": "within-group few-shot",
    }
    metrics_table = tables.markdown(["cell", "code", *(f"{p} {short[f]} s" for p in parts for f in METRIC_FUNCTIONS)], metric_rows, "ll" + "r" * 8)
    q = s["seed_question"]
    c = s["evaluate_command"]
    command = tables.markdown(
        ["`bench evaluate` (3,120 × 128)", "imports s (-X importtime)", "wall s"],
        [[v, f"{c[v]['import_seconds']:.2f}", f"{c[v]['wall_seconds']:.2f}"] for v in c],
        "lrr",
    )
    share = (
        f"Seed question ({q['rows']} rows, {q['rows_covered']} of a profiled kind): evaluation {q['evaluation_seconds']:.0f} s of "
        f"{q['clock_seconds']:.0f} s of the rows' clocks ({q['evaluation_share']:.1%}); projected with these ratios "
        f"{q['projected_evaluation_seconds']:.0f} s ({q['projected_share']:.1%}), of which forward passes "
        f"{q['projected_forward_seconds']:.0f} s (without them {q['projected_share_without_forward']:.1%})."
    )
    layouts = tables.markdown(
        ["network (fresh weights, 64 a batch)", "default ms/image", "channels-last ms/image", "speed-up", "max relative difference"],
        [
            [
                r["network"],
                f"{r['default_ms_per_image']:.2f}",
                f"{r['channels_last_ms_per_image']:.2f}",
                f"{r['default_ms_per_image'] / r['channels_last_ms_per_image']:.2f}×",
                f"{r['max_relative_difference']:.1e}",
            ]
            for r in rec["raw"].get("layouts", [])
        ],
        "lrrrr",
    )
    return f"{tables.provenance(rec)} Before: `{rec['raw']['before']}`.\n\n{breakdown}\n\n{metrics_table}\n\n{command}\n\n{layouts}\n\n{share}"


if __name__ == "__main__":
    main()
