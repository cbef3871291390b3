"""The benchmarks' records: the README's tables are rendered from the raw figures in results/benchmarks/*.json
(every ratio a table shows is the ratio of the raw figures beside it), and benchmarks/eval_speed.py's defaults
stay within a memory bound computed from its parameters (its scikit-learn reference once gathered every
pair's vectors and was killed at 20k × 512 on a 24 GiB machine). No timing is asserted."""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import ROOT

BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import eval_speed  # noqa: E402
import record  # noqa: E402
import tables  # noqa: E402


def write(tmp_path: Path, name: str, raw: dict) -> Path:
    """Through the benchmarks' own writer (machine, versions, NaN as null), as a benchmark would."""
    args = argparse.Namespace(out=tmp_path / f"{name}.json", tiny=True)
    return record.write(name, args, raw, tables.SUMMARISE[name](raw))


def rendered_rows(capsys, path: Path, first_header: str) -> list[dict]:
    """The rows of the markdown table whose first column is `first_header`, as printed by tables.py."""
    assert tables.main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip().strip("|").split(" | ")))))
    return rows


def test_parallel_table_ratios_are_ratios_of_the_raw_medians(tmp_path, capsys):
    runs = lambda *s: [{"seconds": x, "ok": 12, "total": 12, "statuses": ["ok"] * 12} for x in s]
    raw = {
        "grid": "examples/quickstart.toml",
        "cores": 2,
        "variants": [
            {"name": "in-process", "args": [], "runs": runs(10.0, 14.0, 12.0)},
            {"name": "2 workers × 1 thread", "args": ["--workers", "2"], "runs": runs(15.5, 13.0, 20.0)},
        ],
        "disk_cache": {"grid": "frozen grid", "runs": [{"cold_seconds": 9.0, "warm_seconds": 3.0}, {"cold_seconds": 11.0, "warm_seconds": 4.0}]},
    }
    path = write(tmp_path, "parallel", raw)
    stored = json.loads(path.read_text())
    assert stored["raw"] == raw and stored["machine"]["cores"] and "torch" in stored["versions"]
    executors = rendered_rows(capsys, path, "executor")
    base = statistics.median([10.0, 14.0, 12.0])
    assert [r["vs in-process"] for r in executors] == ["1.00×", f"{statistics.median([15.5, 13.0, 20.0]) / base:.2f}×"] == ["1.00×", "1.29×"]
    assert executors[1]["wall s"] == "15.5" and executors[1]["ok cells"] == "36 / 36"
    cache = {r["frozen grid"]: r["wall s"] for r in rendered_rows(capsys, path, "frozen grid")}
    assert cache["ratio"] == f"{10.0 / 3.5:.2f}×"


def test_precision_table_speed_up_and_differences_come_from_the_cells(tmp_path, capsys):
    def cell(backbone, precision, seed, samples, wall, auc):
        return {
            "backbone": backbone,
            "precision": precision,
            "precision_setting": "auto" if precision == "bf16" else "fp32",
            "seed": seed,
            "samples": samples,
            "wall_seconds": wall,
            "gflop_per_second": samples / wall,
            "metrics": {"verification_roc_auc": auc, "few_shot_20way_1shot_accuracy": float("nan"), "verification_pairs": 100},
        }

    cells = [
        cell("koch", "fp32", 0, 1280, 8.0, 0.70),
        cell("koch", "fp32", 1, 1280, 6.0, 0.74),
        cell("koch", "bf16", 0, 1280, 2.0, 0.69),
        cell("koch", "bf16", 1, 1280, 3.0, 0.71),
    ]
    path = write(tmp_path, "precision", {"dataset": "digits", "cells": cells})
    speed = {r["precision"]: r for r in rendered_rows(capsys, path, "backbone")}
    fp32, bf16 = np.mean([1280 / 8.0, 1280 / 6.0]), np.mean([1280 / 2.0, 1280 / 3.0])
    assert speed["fp32"]["speed-up"] == "1.00×" and speed["bf16"]["speed-up"] == f"{bf16 / fp32:.2f}×" == "2.86×"
    assert speed["bf16"]["img/s"] == f"{bf16:.0f}"
    metrics = {r["metric (mean over seeds)"]: r for r in rendered_rows(capsys, path, "metric (mean over seeds)")}
    assert set(metrics) == {"verification_roc_auc"}  # NaN everywhere and counts are not scores
    assert metrics["verification_roc_auc"]["koch bf16 − fp32 (fp32 seed std)"] == f"{0.70 - 0.72:+.4f} ({np.std([0.70, 0.74], ddof=1):.4f})"


def test_eval_speed_and_frozen_cache_tables_divide_the_raw_figures(tmp_path, capsys):
    run = lambda s, mb, v: {"seconds": s, "peak_mb": mb, "values": {"roc_auc": v}}
    raw = {
        "knn": "torch",
        "cases": [
            {
                "kind": "random",
                "n": 60000,
                "dim": 128,
                "comparison": "ROC-AUC vs sklearn",
                "ours": [run(4.0, 100.0, 0.75)],
                "theirs": [run(10.0, 400.0, 0.7500001)],
            }
        ],
    }
    [row] = rendered_rows(capsys, write(tmp_path, "eval_speed", raw), "embeddings")
    assert (row["embeddings"], row["speed-up"], row["memory ratio"], row["max abs diff"]) == ("random 60k×128", "2.50×", "0.25", "1.0e-07")

    cells = lambda wall, auc: [
        {"loss": "triplet", "seed": s, "train_wall_seconds": wall, "eval_seconds": 1.0, "metrics": {"verification_roc_auc": auc + s / 10}} for s in range(2)
    ]
    raw = {"repeats": [{"cached": {"wall_seconds": 20.0, "cells": cells(0.5, 0.8)}, "plain": {"wall_seconds": 100.0, "cells": cells(39.0, 0.8)}}]}
    rows = {r["sweep"]: r for r in rendered_rows(capsys, write(tmp_path, "frozen_cache", raw), "sweep")}
    assert rows["ratio"]["wall s (incl. start-up)"] == "5.0×" and rows["ratio"]["train + eval s"] == f"{80.0 / 3.0:.1f}×"
    assert rows["frozen-feature cache"]["max metric diff"] == "0"


def test_tables_refuse_what_is_not_a_benchmark_record(tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps({"benchmark": "nope"}))
    assert tables.main([str(tmp_path / "x.json")]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


GIB_24 = 24 * 1024  # the 2-core machine the README's figures come from, in MB


def test_eval_speed_defaults_fit_the_machine():
    args = eval_speed.parser().parse_args([])
    estimates = {
        (n, dim, m): eval_speed.peak_estimate_mb(m, n, dim, args.pairs, args.sklearn_chunk_mb)
        for n in args.sizes
        for dim in args.dims
        for m in ("ours_retrieval", "pml_retrieval", "ours_auc", "sklearn_auc")
    }
    data_mb = max(n * dim * 4 for n in args.sizes for dim in args.dims) / 2**20
    # one child at a time beside the parent: each with the data, the imports (~1 GB) and its peak, well inside 24 GiB
    assert max(estimates.values()) + 2 * data_mb + 1024 < GIB_24 / 4, estimates
    # the reference's memory no longer grows with pairs × dim: the case that was killed is bounded by its chunk
    killed = eval_speed.peak_estimate_mb("sklearn_auc", 20_000, 512, 2_000_000, args.sklearn_chunk_mb)
    assert killed < 1024 < 3 * 2_000_000 * 512 * 4 / 2**20


def test_the_sklearn_reference_stays_under_its_estimate(tmp_path):
    """The estimate is checked, not assumed: the reference's measured peak (VmHWM above the loaded data) at
    sizes where gathering every pair's vectors would need 1.8 GB."""
    n, dim, pairs, chunk_mb = 3000, 512, 300_000, 8
    x, y = eval_speed.make("clustered", n, dim)
    assert x.dtype == np.float32
    np.savez(tmp_path / "e.npz", x=x, y=y)
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "eval_speed.py"),
            "--child",
            "sklearn_auc",
            str(tmp_path / "e.npz"),
            "--pairs",
            str(pairs),
            "--sklearn-chunk-mb",
            str(chunk_mb),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    if not measured["peak_reset"]:
        pytest.skip("no /proc/self/clear_refs here: the peak would include the imports")
    assert measured["peak_mb"] <= eval_speed.peak_estimate_mb("sklearn_auc", n, dim, pairs, chunk_mb) < 3 * pairs * dim * 4 / 2**20 / 10
    assert 0.5 <= measured["values"]["roc_auc"] <= 1


def test_threads_table_pairs_by_seed_against_a_paired_t_test(tmp_path, capsys):
    from scipy.stats import ttest_rel

    def cell(threads, seed, auc, precision="fp32"):
        return {
            "cell_id": f"c{seed}{precision}",
            "backbone": "conv4",
            "freeze": "none",
            "precision": precision,
            "seed": seed,
            "threads": threads,
            "status": "ok",
            "steps": 10,
            "run_seconds": 1.0,
            "metrics": {"verification_roc_auc": auc},
        }

    one, two = [0.80, 0.70, 0.75, 0.78], [0.83, 0.72, 0.79, 0.80]  # a shift of about +0.03 on every seed
    cells = [cell(1, s, v) for s, v in enumerate(one)] + [cell(2, s, v) for s, v in enumerate(two)]
    cells += [cell(1, s, 0.6, "bf16") for s in range(3)] + [cell(2, s, 0.6, "bf16") for s in range(3)]  # no difference at all
    path = write(tmp_path, "threads", {"steps": 10, "seeds": 4, "threads": [1, 2], "metrics": ["verification_roc_auc"], "cells": cells})
    rows = {r["precision"]: r for r in rendered_rows(capsys, path, "backbone")}
    diff = np.subtract(two, one)
    assert rows["fp32"]["2 − 1, paired (mean ± std)"] == f"{diff.mean():+.4f} ± {diff.std(ddof=1):.4f}"
    assert rows["fp32"]["paired p"] == f"{ttest_rel(two, one).pvalue:.2g}"
    assert rows["fp32"]["seed std"] == f"{np.std(one, ddof=1):.4f} / {np.std(two, ddof=1):.4f}"
    assert rows["bf16"]["paired p"] == "identical"
    pooled = np.sqrt((np.var(one, ddof=1) + np.var(two, ddof=1)) / 2)
    assert rows["fp32"]["paired std / (√2 seed std)"] == f"{diff.std(ddof=1) / (np.sqrt(2) * pooled):.2f}"  # ≈ 1: like a fresh seed


def test_threads_record_pairs_bf16_with_fp32_by_seed_and_thread_count(tmp_path, capsys):
    from scipy.stats import ttest_rel

    def cell(threads, seed, auc, precision):
        return {
            "cell_id": f"c{seed}{precision}{threads}",
            "backbone": "lite0",
            "freeze": "none",
            "precision": precision,
            "seed": seed,
            "threads": threads,
            "status": "ok",
            "steps": 10,
            "run_seconds": 1.0,
            "metrics": {"verification_roc_auc": auc},
        }

    fp32 = {(t, s): 0.80 + 0.01 * s + 0.002 * t for t in (1, 2) for s in range(3)}
    bf16 = {k: v - 0.03 - 0.001 * k[1] for k, v in fp32.items()}  # bf16 about 0.03 lower on every pair
    cells = [cell(t, s, v, "fp32") for (t, s), v in fp32.items()] + [cell(t, s, v, "bf16") for (t, s), v in bf16.items()]
    path = write(tmp_path, "threads", {"steps": 10, "seeds": 3, "threads": [1, 2], "metrics": ["verification_roc_auc"], "cells": cells})
    summary = tables.summarise_threads(json.loads(path.read_text())["raw"])
    (row,) = summary["precision"]
    keys = sorted(fp32)
    diff = np.array([bf16[k] - fp32[k] for k in keys])
    assert row["pairs"] == 6 and row["diff_mean"] == pytest.approx(diff.mean()) and row["diff_std"] == pytest.approx(diff.std(ddof=1))
    assert row["p"] == pytest.approx(ttest_rel([bf16[k] for k in keys], [fp32[k] for k in keys]).pvalue)
    assert row["fp32_seed_std"] == pytest.approx(np.std([fp32[(1, s)] for s in range(3)], ddof=1))  # the same spread at each count
    tables.main([str(path)])
    assert "bf16 − fp32, paired" in capsys.readouterr().out


def test_thread_ops_counts_the_modules_whose_kernels_differ_by_kind(tmp_path, capsys):
    def module(kind, forward=0.0, grad_input=0.0, grad_weights=0.0):
        return {"module": kind, "kind": kind, "input": [2, 3], "forward": forward, "grad_input": grad_input, "grad_weights": grad_weights}

    step = {"embeddings": 0.0, "loss": 0.0, "gradient": 2e-5, "gradient_norm": 1e-7, "gradient_cosine": 1.0}
    modules = [module("BatchNorm"), module("BatchNorm", 5e-3, None, 2e-2), module("Conv 1x1", 0.0, 0.0, 3e-7), module("ReLU")]
    raw = {
        "image_size": 65,
        "batch": [30, 3, 65, 65],
        "threads": [1, 2],
        "precisions": {"bf16": {"whole_step": step, "repeat_1_thread": 0.0, "modules": modules}},
        "versus_fp32": {
            "bf16": {"embeddings_1_vs_2_threads": 0.4, "gradient_cosine_1_vs_2_threads": 0.7, "embeddings_vs_fp32": 0.3, "gradient_cosine_vs_fp32": 0.5}
        },
    }
    path = write(tmp_path, "thread_ops", raw)
    rows = {r["leaf module"]: r for r in rendered_rows(capsys, path, "leaf module")}
    assert rows["BatchNorm"]["count"] == "2" and rows["BatchNorm"]["forward differs (max)"] == "1 (5.0e-03)"
    assert rows["BatchNorm"]["input gradient differs (max)"] == "0"  # a module without an input gradient (None) does not count
    assert rows["Conv 1x1"]["weight gradient differs (max)"] == "1 (3.0e-07)" and rows["ReLU"]["forward differs (max)"] == "0"


def test_eval_profile_ratios_and_projection_come_from_the_raw_figures():
    import eval_profile

    def run(kind, version, curve, test, diff=0.0):  # each phase: (seconds, forward seconds, images embedded)
        phase = lambda seconds, embed, images: {
            "seconds": seconds,
            "embed_seconds": embed,
            "embed_images": images,
            "embed_calls": 1,
            **{f: 0.1 for f in eval_profile.METRIC_FUNCTIONS},
        }
        return {
            "kind": kind,
            "version": version,
            "repeat": 0,
            "steps": 8,
            "items_seconds": 0.01,
            "phases": {"curve": phase(*curve), "test": phase(*test)},
            "metrics": {"map_at_r": 0.5 + diff, "few_shot_20way_1shot_accuracy": None},
            "curve_metrics": [{"map_at_r": 0.25}],
        }

    # koch after: 100 fewer test images, and a neighbour slowed its forward passes; the projection costs them at 0.02 s an image
    raw = {
        "before": "abc1234",
        "runs": [
            run("koch", "before", (4.0, 2.0, 100), (10.0, 8.0, 400)),
            run("koch", "after", (3.0, 2.5, 100), (6.0, 5.5, 300), diff=1e-9),
            run("conv4", "before", (1.0, 0.5, 100), (2.0, 1.0, 400)),
            run("conv4", "after", (1.0, 0.5, 100), (1.0, 0.75, 300)),
        ],
        "evaluate_command": {"before": [{"import_seconds": 3.0, "wall_seconds": 4.0}], "after": [{"import_seconds": 1.0, "wall_seconds": 2.0}]},
        "seed_question": {
            "rows": [
                {"kind": "koch", "curve_seconds": 8.0, "eval_seconds": 20.0, "train_wall_seconds": 32.0, "warmup_seconds": 0.0},
                {"kind": "conv4", "curve_seconds": 2.0, "eval_seconds": 4.0, "train_wall_seconds": 32.0, "warmup_seconds": 0.0},
                {"kind": "lite0_frozen", "curve_seconds": 1.0, "eval_seconds": 1.0, "train_wall_seconds": 30.0, "warmup_seconds": 0.0},
            ]
        },
    }
    s = eval_profile.summarise(raw)
    assert s["kinds"]["koch"]["ratio"] == pytest.approx({"curve": (2.0 + 0.5) / 4.0, "test": (0.02 * 300 + 0.5) / 10.0})
    assert s["kinds"]["conv4"]["ratio"] == pytest.approx({"curve": 1.0, "test": (0.0025 * 300 + 0.25) / 2.0})
    assert s["kinds"]["koch"]["max_metric_diff"] == pytest.approx(1e-9) and s["kinds"]["conv4"]["max_metric_diff"] == 0  # NaN (null) agrees with NaN
    q = s["seed_question"]
    assert q["clock_seconds"] == 130.0 and q["evaluation_seconds"] == 36.0 and q["rows_covered"] == 2
    projected = 8 * 0.625 + 20 * 0.65 + 2 * 1.0 + 4 * 0.5 + 2.0  # an unprofiled kind stays as it was
    assert q["projected_evaluation_seconds"] == pytest.approx(projected) and q["projected_share"] == pytest.approx(projected / (130.0 - 36.0 + projected))
    assert q["projected_forward_seconds"] == pytest.approx(8 * 2.0 / 4.0 + 20 * 6.0 / 10.0 + 2 * 0.5 + 4 * 0.75 / 2.0)
    assert s["evaluate_command"]["after"] == {"import_seconds": 1.0, "wall_seconds": 2.0}
    rec = {
        "raw": raw,
        "machine": {"cpu_model": "x", "cores": 2, "torch_threads": 2, "fast_bf16": False},
        "versions": {},
        "date": "2026-12-06",
        "command": "python benchmarks/eval_profile.py",
    }
    text = eval_profile.render(rec)
    assert "| koch | before | 4.00 | 2.00 (100) |" in text and f"({projected / (130.0 - 36.0 + projected):.1%})" in text


def test_eval_profile_knows_every_kind_of_the_seed_questions_rows():
    import eval_profile

    rows = eval_profile.seed_question_rows(ROOT / "results" / "seed_question.jsonl")
    assert {eval_profile.kind_of(r) for r in rows} == set(eval_profile.KINDS)


def test_eval_precision_ratios_differences_and_projection_come_from_the_raw_figures():
    import eval_precision

    def run(kind, precision, curve, test, metric, recall, steps=100, loss=0.5):
        return {
            "kind": kind,
            "precision": precision,
            "repeat": 0,
            "steps": steps,
            "final_loss": loss,
            "train_seconds": 32.0,
            "warmup_seconds": 0.0,
            "curve_seconds": curve,
            "eval_seconds": test,
            "selected": {"fraction": 1.0},
            "metrics": {"few_shot_20way_1shot_accuracy": metric, "recall_at_1": recall, "verification_best_threshold": 0.3 if precision == "fp32" else 0.9},
            "curve": [],
        }

    raw = {
        "metric": "few_shot_20way_1shot_accuracy",
        "runs": [
            run("koch", "fp32", 4.0, 10.0, 0.50, 0.20),
            run("koch", "bf16", 1.0, 4.0, 0.48, 0.15),
            run("conv4", "fp32", 1.0, 2.0, 0.60, 0.40),
            run("conv4", "bf16", 1.0, 1.0, 0.60, 0.41, loss=0.6),  # trained differently: said so
        ],
        "committed_std": {"koch": 0.002, "conv4": None},
        "seed_question": {
            "rows": [
                {"kind": "koch", "curve_seconds": 8.0, "eval_seconds": 20.0, "train_seconds": 32.0, "warmup_seconds": 0.0},
                {"kind": "lite0_frozen", "curve_seconds": 1.0, "eval_seconds": 1.0, "train_seconds": 30.0, "warmup_seconds": 0.0},
            ]
        },
    }
    s = eval_precision.summarise(raw)
    koch, conv4 = s["kinds"]["koch"], s["kinds"]["conv4"]
    assert koch["ratio"] == pytest.approx({"curve": 0.25, "test": 0.4}) and koch["same_training"] and not conv4["same_training"]
    assert koch["metric_diff"] == pytest.approx(-0.02)
    assert koch["max_metric_diff"] == pytest.approx(0.05) and koch["max_metric_diff_of"] == "recall_at_1"  # a threshold is not a score
    q = s["seed_question"]
    projected = 8 * 0.25 + 20 * 0.4 + 2.0  # a kind not measured stays as it was
    assert q["evaluation_share"] == pytest.approx(30 / 92) and q["projected_share"] == pytest.approx(projected / (92 - 30 + projected))
    assert s["own_cells_share"]["fp32"] == pytest.approx(17 / (64 + 17))
    rec = {
        "raw": raw,
        "summary": s,
        "machine": {"cpu_model": "x", "cores": 2, "torch_threads": 2, "fast_bf16": False},
        "versions": {},
        "date": "2026-12-06",
        "command": "c",
    }
    text = eval_precision.render(rec)
    assert "| koch | 4.00 | 1.00 | 10.00 | 4.00 | 0.40× | −0.0200 | 0.0020 | 0.0500 (recall_at_1) | yes |" in text
    assert f"{projected / (92 - 30 + projected):.1%} projected" in text


def test_the_docs_eval_precision_table_is_the_committed_records():
    import eval_precision

    rec = json.loads((ROOT / "results" / "benchmarks" / "eval_precision.json").read_text())
    assert eval_precision.render(rec) in (ROOT / "docs" / "metrics.md").read_text()
