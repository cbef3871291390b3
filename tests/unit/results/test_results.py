"""The append-only JSONL results file: rows round-trip, torn lines, the writer lock, schema, bad paths."""

from __future__ import annotations

import json
import math

import pytest

from bench.errors import UserError
from bench.results import SCHEMA, ResultsWriter, read_rows
from bench.schema import Row


def make_row(cell_id: str, **extra) -> Row:
    return Row.from_dict(raw_row(cell_id, **extra))


def raw_row(cell_id: str, **extra) -> dict:
    return {
        "schema": SCHEMA,
        "cell_id": cell_id,
        "status": "ok",
        "config": {"backbone": "b", "loss": "l", "dataset": "d", "seed": 0},
        "metrics": {"verification_roc_auc": 0.75},
        "train": {"steps": 1, "stopped_by": "max_steps"},
        **extra,
    }


@pytest.mark.filterwarnings("error")
def test_appended_rows_read_back(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"  # parent folders are created
    rows = [make_row("a"), make_row("b", config={"seed": 1, "recall_k": [1, 2]}), make_row("c", note="ünïcode ±")]
    with ResultsWriter(path) as writer:
        for r in rows:
            writer.append(r)
        assert read_rows(path) == rows  # flushed as written, readable while the writer is open
    assert read_rows(path) == rows
    assert path.read_text(encoding="utf-8").count("\n") == 3


def test_nan_metric_round_trips(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("a", metrics={"verification_roc_auc": float("nan")}))
    assert math.isnan(read_rows(path)[0].metrics["verification_roc_auc"])


def test_reopening_appends_rather_than_truncating(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("a"))
    with ResultsWriter(path) as writer:
        writer.append(make_row("b"))
    assert [r.cell_id for r in read_rows(path)] == ["a", "b"]


def test_missing_file_reads_as_no_rows(tmp_path):
    assert read_rows(tmp_path / "nothing.jsonl") == []


def test_torn_last_line_is_skipped_and_next_row_starts_on_a_new_line(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("a"))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(raw_row("torn"))[:25])  # a run killed mid-write: no closing brace, no newline
    with pytest.warns(UserWarning, match="torn"):
        assert [r.cell_id for r in read_rows(path)] == ["a"]
    with ResultsWriter(path) as writer:
        writer.append(make_row("b"))
    with pytest.warns(UserWarning, match=r":2: .*torn"):
        assert [r.cell_id for r in read_rows(path)] == ["a", "b"]


def test_file_without_final_newline_but_complete_row_keeps_both_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(raw_row("a")), encoding="utf-8")
    with ResultsWriter(path) as writer:
        writer.append(make_row("b"))
    assert [r.cell_id for r in read_rows(path)] == ["a", "b"]


def test_torn_last_line_ending_in_non_ascii_character(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(raw_row("a")) + '\n{"cell_id": "caf\u00e9', encoding="utf-8")
    with ResultsWriter(path) as writer:
        writer.append(make_row("b"))
    with pytest.warns(UserWarning, match="torn"):
        assert [r.cell_id for r in read_rows(path)] == ["a", "b"]


def test_non_row_lines_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([json.dumps(raw_row("a")), "[1, 2]", '{"no_cell_id": 1}', "", json.dumps(raw_row("b"))]) + "\n")
    with pytest.warns(UserWarning, match="not a metric-bench row"):
        assert [r.cell_id for r in read_rows(path)] == ["a", "b"]


def test_second_writer_on_same_file_is_a_user_error(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as first:
        first.append(make_row("a"))
        with pytest.raises(UserError, match="another `bench run`"):
            ResultsWriter(path)
        first.append(make_row("b"))
    with ResultsWriter(path) as again:  # the lock is released on close
        again.append(make_row("c"))
    assert [r.cell_id for r in read_rows(path)] == ["a", "b", "c"]


def test_row_from_newer_schema_is_a_user_error(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("a"))
        writer.append(make_row("b", schema=SCHEMA + 1))
    with pytest.raises(UserError, match="newer metric-bench"):
        read_rows(path)


def test_row_without_schema_or_current_schema_is_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(Row.from_dict({k: v for k, v in raw_row("old").items() if k != "schema"}))
        writer.append(make_row("now"))
    assert [r.cell_id for r in read_rows(path)] == ["old", "now"]


def test_a_row_of_another_shape_is_a_user_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(raw_row("a")) + "\n" + json.dumps({"cell_id": "b", "status": "ok", "config": {}}) + "\n")
    with pytest.raises(UserError, match=r"r.jsonl:2: an ok row with no metrics, train"):
        read_rows(path)


def test_path_under_a_regular_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write results"):
        ResultsWriter(blocker / "results.jsonl")
    with pytest.raises(UserError, match="cannot write results"):
        ResultsWriter(blocker / "deeper" / "results.jsonl")


def test_directory_as_results_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot write results"):
        ResultsWriter(tmp_path)


@pytest.fixture
def full_device(tmp_path) -> str:
    """/dev/full (every write fails with ENOSPC), or the same device node made here when /dev has none."""
    import os
    import stat

    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        return "/dev/full"
    try:
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o600, os.makedev(1, 7))
    except OSError:
        pytest.skip("no /dev/full here, and no permission to make the device node")
    return str(tmp_path / "full")


def test_a_results_file_on_a_full_disk_is_one_user_error_naming_it_and_the_cause(full_device):
    with ResultsWriter(full_device) as writer:  # the real device: every write fails with ENOSPC
        with pytest.raises(UserError, match=rf"^{full_device}: cannot write a result row \(No space left on device\)"):
            writer.append(make_row("a"))


class FillingDisk:
    """A results file on a disk that fills up: the first write lands what `lands` keeps of it, later ones raise ENOSPC."""

    def __init__(self, f, lands):
        self.f, self.lands, self.calls = f, lands, 0

    def write(self, data):
        self.calls += 1
        if self.calls > 1:
            raise OSError(28, "No space left on device")
        return self.f.write(bytes(self.lands(data)))

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_write_that_fails_part_way_is_a_user_error_and_leaves_no_torn_line(tmp_path, monkeypatch):
    import warnings

    import bench.results as results_module

    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("a"))
    before = path.read_bytes()

    with monkeypatch.context() as m:
        m.setattr(results_module, "open", lambda *a, **k: FillingDisk(open(*a, **k), lands=lambda data: data[:10]), raising=False)
        with ResultsWriter(path) as writer:
            with pytest.raises(
                UserError,
                match=rf"^{path}: cannot write a result row \(No space left on device\) — the rows "
                r"before it are kept and the partial line removed; .*rerun",
            ):
                writer.append(make_row("b"))
    assert path.read_bytes() == before  # cut back to the last complete line: no 10-byte fragment
    with ResultsWriter(path) as writer:
        writer.append(make_row("c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn to skip
        assert [r.cell_id for r in read_rows(path)] == ["a", "c"]


def test_a_failed_append_that_cannot_cut_back_says_so_and_the_next_run_skips_the_line(tmp_path, monkeypatch):
    import bench.results as results_module

    path = tmp_path / "r.jsonl"

    def ftruncate(fd, size):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(results_module, "open", lambda *a, **k: FillingDisk(open(*a, **k), lands=lambda data: data[: len(data) // 2]), raising=False)
        m.setattr(results_module.os, "ftruncate", ftruncate)
        with ResultsWriter(path) as writer:
            with pytest.raises(UserError, match=r"partial line could not be removed \(Input/output error; the next run skips it\)"):
                writer.append(make_row("b"))
    with ResultsWriter(path) as writer:
        writer.append(make_row("c"))
    with pytest.warns(UserWarning, match=r":1: .*torn"):
        assert [r.cell_id for r in read_rows(path)] == ["c"]


def test_appending_until_a_real_small_tmpfs_is_full_leaves_only_complete_lines(tmp_path):
    """A 32 KiB tmpfs (mounting needs root; skipped otherwise): rows of ~2 KB are appended until the disk is full;
    the error names the file, and the file holds exactly the complete rows written before it."""
    import subprocess

    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = disk / "r.jsonl"
        written = []
        with ResultsWriter(path) as writer, pytest.raises(UserError, match=r"No space left on device.*partial line removed"):
            for n in range(1000):
                writer.append(make_row(f"c{n}", note="x" * 2000))
                written.append(f"c{n}")
        assert written and path.read_bytes().endswith(b"\n")
        assert [r.cell_id for r in read_rows(path)] == written
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_file_whose_older_rows_keep_the_roc_inline_still_resumes(tmp_path):
    """Rows written before the ROC moved to the items file (bench.items.ROC_FPR) carry it as "roc": the same schema,
    so a grid resumes into the same file, and both kinds of row read back as they were written."""
    from bench.results import require_current_schema

    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(make_row("before", roc={"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.75, 1.0]}))
        writer.append(make_row("after", items={"file": "r_items/after.npz", "sha256": "0" * 64, "bytes": 1}))
    rows = read_rows(path)
    require_current_schema(rows, path)  # no UserError: nothing to rerun
    assert [r.cell_id for r in rows] == ["before", "after"] and rows[0].roc["tpr"] == [0.0, 0.75, 1.0] and rows[1].roc is None
