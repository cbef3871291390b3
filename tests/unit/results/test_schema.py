"""The typed row (bench.schema): every committed row reads and writes back unchanged, types are checked with the key
named, old layouts are upgraded in one place, and the writer refuses keys the schema does not know."""

from __future__ import annotations

import json
import math

import pytest
from paths import ROOT

from bench.errors import UserError
from bench.results import ResultsWriter, read_rows
from bench.schema import SCHEMA, CurvePoint, Env, ItemsRef, Machine, Row, RowError, SearchRecord, TrainRecord, upgrade

COMMITTED = sorted(p for p in (ROOT / "results").glob("*.jsonl"))


def ok_row(**extra) -> dict:
    return {
        "schema": SCHEMA,
        "cell_id": "c",
        "status": "ok",
        "config": {"backbone": "b", "seed": 0},
        "metrics": {"verification_roc_auc": 0.75, "distance": "cosine"},
        "train": {"steps": 10, "stopped_by": "max_steps", "machine": {"core_wait_share": 0.01, "threads": 2}},
        **extra,
    }


def test_every_committed_row_reads_as_typed_parts_and_writes_back_unchanged():
    assert len(COMMITTED) >= 4
    count = 0
    for path in COMMITTED:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            raw = json.loads(line)
            row = Row.from_dict(raw, where=f"{path.name}:{number}")
            assert isinstance(row.env, Env) and isinstance(row.train, TrainRecord)
            assert all(isinstance(p, CurvePoint) for p in row.curve or []) and (row.items is None or isinstance(row.items, ItemsRef))
            assert row.search is None or isinstance(row.search, SearchRecord)
            if (raw.get("train") or {}).get("machine", 1) is None:  # older rows wrote an unknown machine record as null
                del raw["train"]["machine"]
            assert row.to_dict() == raw, f"{path.name}:{number}"
            assert Row.from_dict(raw, strict=True) == row  # nothing of a committed row is unknown to the schema
            count += 1
    assert count >= 300


def test_attributes_read_what_the_dicts_held():
    row = Row.from_dict(ok_row(curve=[{"fraction": 0.5, "steps": 5, "on": "val", "metrics": {"x": 1.0}}]))
    assert row.ok and row.seed == 0 and row.metric("verification_roc_auc") == 0.75 and math.isnan(row.metric("absent", math.nan))
    assert row.train.steps == 10 and isinstance(row.train.machine, Machine) and row.train.machine.core_wait_share == 0.01
    assert row.curve[0].fraction == 0.5 and row.curve[0].on == "val" and row.curve[0].fold is None
    assert row.with_(status="error").status == "error" and row.status == "ok"  # frozen: a changed copy


def test_a_value_of_the_wrong_type_is_an_error_naming_its_key():
    with pytest.raises(RowError, match=r"row.train.steps: expected int, got 'ten'"):
        Row.from_dict(ok_row(train={"steps": "ten", "stopped_by": "max_steps"}))
    with pytest.raises(RowError, match=r"row.curve\[1\]: no 'fraction'"):
        Row.from_dict(ok_row(curve=[{"fraction": 0.5, "metrics": {}}, {"metrics": {}}]))
    with pytest.raises(RowError, match=r"row.env: expected Env \| NoneType, got \[1, 2\]"):
        Row.from_dict(ok_row(env=[1, 2]))
    with pytest.raises(RowError, match=r"an ok row with no train"):
        Row.from_dict({k: v for k, v in ok_row().items() if k != "train"})
    Row.from_dict({k: v for k, v in ok_row(status="error", error="boom").items() if k not in ("train", "metrics")})  # a failed row has neither


def test_the_reader_says_which_line_breaks_the_schema_and_keeps_nothing_half_read(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(ok_row()) + "\n" + json.dumps(ok_row(cell_id="d", train={"steps": 1.5, "stopped_by": "max_steps"})) + "\n")
    with pytest.raises(UserError, match=r"r.jsonl:2.train.steps: expected int, got 1.5 — not a metric-bench results file"):
        read_rows(path)


def test_unknown_keys_are_kept_on_read_and_refused_on_write(tmp_path):
    raw = ok_row(added_later={"a": 1}, train={"steps": 1, "stopped_by": "max_steps", "new_figure": 2.0})
    row = Row.from_dict(raw)
    assert row.extra == {"added_later": {"a": 1}} and row.train.extra == {"new_figure": 2.0}
    assert row.to_dict() == raw  # a newer minor version's keys survive a read and a write
    with pytest.raises(RowError, match=r"row: unknown key\(s\) added_later"):
        Row.from_dict(raw, strict=True)
    with pytest.raises(RowError, match=r"row.status: 'done' is none of ok, pruned"):
        Row.from_dict(ok_row(status="done"), strict=True)
    with ResultsWriter(tmp_path / "r.jsonl") as writer:
        writer.append(row)
    assert read_rows(tmp_path / "r.jsonl") == [row]


def test_old_layouts_are_upgraded_in_one_place():
    env = {"precision": "bf16", "device": "cpu"}
    old = {k: v for k, v in ok_row(env=env).items() if k != "schema"}
    old["metrics"] = {**old["metrics"], "verification_roc": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}}
    row = Row.from_dict(old)
    assert row.schema == 0 and row.precision == "bf16"  # the precision that ran, as the environment recorded it
    assert row.roc == {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]} and "verification_roc" not in row.metrics
    assert "verification_roc" in old["metrics"] and "precision" not in upgrade({"cell_id": "x"})  # the input is left alone


def test_the_runner_writes_rows_through_the_strict_schema(reference_run):
    """Real cells' rows, as the coordinator wrote them (the session's reference run): every key they carry is one the
    schema declares, and they read back as they were written."""
    raws = [json.loads(line) for line in (reference_run / "ref.jsonl").read_text().splitlines()]
    assert raws and all(r["status"] == "ok" for r in raws)
    for raw in raws:
        row = Row.from_dict(raw, strict=True)
        assert row.to_dict() == raw and row.train.machine is not None and row.env.torch_threads == 1 and row.items is not None
