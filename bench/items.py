"""Per-test-item outcomes of a cell (one .npz per cell beside the results file), in one place: the arrays
the evaluator keeps, the file format, and the per-item values whose mean (or ROC-AUC) is a row's metric.

A paired comparison of two cells uses the items they share (the same test images, episodes and pairs, which
their `material.*` digests certify); rows without items fall back to seed-level tests. The file also keeps the
cell's test ROC vertices (ROC_FPR, ROC_TPR) for the plots: a few hundred of them would be half a small row.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bench.schema import ItemsRef

ITEMS_SCHEMA = 1
ITEM_PAIRS = 5000  # the most verification pairs a cell keeps (rank uint16 + same bool: ~9 KB compressed)
FIXED_POINT = 65535  # r_precision and map_at_r are kept as round(value * FIXED_POINT) in uint16
ROC_FPR, ROC_TPR = "verification.roc_fpr", "verification.roc_tpr"  # float64: the values a row kept inline before,
# exactly (6 significant digits), so a plot draws the same curve from either; optional, so ITEMS_SCHEMA stays 1

_FEW_SHOT = re.compile(r"few_shot_\d+way_\d+shot(_within_[A-Za-z0-9_]+)?_accuracy\Z")
_RECALL = re.compile(r"recall_at_(\d+)\Z")


def material_digest(*parts: np.ndarray | None) -> str:
    """sha256 hex of what items are (labels, indices, flags), never of a model's output: two cells may be
    paired on a metric only when these agree. Integers are hashed as int64 and booleans as uint8, each part
    with its shape, so the digest does not depend on the platform's index dtype; None stands for "none"."""
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"none;")
            continue
        a = np.asarray(part)
        a = a.astype(np.uint8) if a.dtype == bool else a.astype(np.int64) if a.dtype.kind in "iu" else a
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fixed_point(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint16 round(value * 65535): within 7.7e-6 of the value."""
    return np.rint(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * FIXED_POINT).astype(np.uint16)


def roc_items(roc: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """The ROC vertices a cell's evaluation kept (`verification_roc`: {"fpr": [...], "tpr": [...]}) as items arrays."""
    return {ROC_FPR: np.asarray(roc["fpr"], dtype=np.float64), ROC_TPR: np.asarray(roc["tpr"], dtype=np.float64)}


def roc_vertices(items: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of the ROC kept in a cell's items, or None: no items, or items from before the ROC moved there."""
    if not items or ROC_FPR not in items or ROC_TPR not in items:
        return None
    fpr, tpr = np.asarray(items[ROC_FPR], dtype=float), np.asarray(items[ROC_TPR], dtype=float)
    return (fpr, tpr) if len(fpr) and fpr.shape == tpr.shape else None


def items_folder(results_path: Path) -> Path:
    """<results folder>/<results stem>_items: results/g.jsonl keeps its items in results/g_items/."""
    results_path = Path(results_path)
    return results_path.parent / f"{results_path.stem}_items"


def items_path(results_path: Path, entry: ItemsRef | None) -> Path | None:
    """Where a row's items file (its `items` entry) is, or None when the row has none."""
    return None if entry is None else Path(results_path).parent / entry.file


def write_items(results_path: Path, cell_id: str, items: dict[str, np.ndarray], on_error: Callable[[OSError], None] | None = None) -> dict | None:
    """Write `items` to <items folder>/<cell_id>.npz (compressed, with a 0-d `schema`) through a temporary
    file in the same folder and os.replace, so a reader never sees half a file and a rerun replaces it.
    Returns the row's entry {"file" (relative to the results file's folder), "sha256" (of the file's bytes),
    "bytes"}; on an OSError (full disk, read-only folder) None, after `on_error(exc)`: the row is kept without."""
    folder = items_folder(results_path)
    target = folder / f"{cell_id}.npz"
    temp = folder / f".{cell_id}.{os.getpid()}.tmp"  # one coordinator writes a results file (it holds the lock)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, schema=np.array(ITEMS_SCHEMA), **items)
    data = buffer.getvalue()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if on_error is not None:
            on_error(exc)
        return None
    return {"file": target.relative_to(folder.parent).as_posix(), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class Arrays(Mapping):
    """The arrays of an items file whose bytes matched the row's sha256, each decoded on first use: a view needs a
    metric's two or three of a file's ~18 (never the ROC's), and at 10,000 cells decoding them all was most of
    `bench leaderboard`'s time. Holds the compressed bytes, smaller than the arrays they decode to."""

    def __init__(self, npz):
        self._npz, self._names, self._decoded = npz, tuple(n for n in npz.files if n != "schema"), {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._decoded:
            if name not in self._names:
                raise KeyError(name)
            self._decoded[name] = self._npz[name]
        return self._decoded[name]

    def __contains__(self, name) -> bool:  # without decoding (Mapping's default would)
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_items(results_path: Path, entry: ItemsRef | None) -> Arrays | None:
    """The arrays `write_items` wrote for a row whose `items` entry is `entry` (without `schema`; a Mapping that
    decodes each on first use), or None: the row has no items, or the file is missing, unreadable, of a newer schema or not the one the row
    names (its sha256 differs; the cell was rerun into another results file, or the file was edited); those say
    so in one warning naming the file."""
    path = items_path(results_path, entry)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        warnings.warn(f"{path}: items file not readable ({exc.strerror or exc}); the row's items are ignored", stacklevel=2)
        return None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        warnings.warn(f"{path}: sha256 differs from the row's (the file was replaced or edited); the row's items are ignored", stacklevel=2)
        return None
    try:  # the bytes are the ones written (their sha256 is the row's), so a member decoded later decodes as written
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        schema = int(npz["schema"]) if "schema" in npz.files else 0
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        warnings.warn(f"{path}: not a readable items file ({exc}); the row's items are ignored", stacklevel=2)
        return None
    if schema > ITEMS_SCHEMA:
        warnings.warn(f"{path}: items schema {schema} is newer than this metric-bench's {ITEMS_SCHEMA}; upgrade to read it", stacklevel=2)
        return None
    return Arrays(npz)


@dataclass(frozen=True)
class ItemScores:
    """One metric of one cell, item by item."""

    kind: Literal["mean", "auc"]  # "mean": the metric is the mean of `values`; "auc": ROC-AUC of -values with `same` the positives
    material: str  # the digest of what the items are: pair two cells only on equal material
    values: np.ndarray  # float64 per item: a hit (1.0/0.0), an AP@R, an episode's accuracy; for "auc", a pair's distance rank
    same: np.ndarray | None = None  # "auc" only: whether each pair is same-class


def item_scores(items: dict[str, np.ndarray], metric: str) -> ItemScores | None:
    """`metric`'s per-item values from a cell's items: recall_at_<k>, precision_at_1, r_precision, map_at_r
    (per scored query), every few-shot accuracy (per episode) and verification_roc_auc (per kept pair, "auc").
    None for another metric, or when the items lack it (its figure was NaN, or rows from before items)."""
    if (recall := _RECALL.match(metric)) or metric == "precision_at_1":
        k = int(recall.group(1)) if recall else 1
        first_hit = items.get("retrieval.first_hit")
        if first_hit is None or k > int(items["retrieval.k"]):
            return None  # a first hit beyond the neighbours retrieval searched reads as 0
        hit = (first_hit >= 1) & (first_hit <= k)
        return ItemScores("mean", str(items["material.retrieval"]), hit.astype(np.float64))
    if metric in ("r_precision", "map_at_r"):
        if f"retrieval.{metric}" not in items:
            return None
        return ItemScores("mean", str(items["material.retrieval"]), items[f"retrieval.{metric}"].astype(np.float64) / FIXED_POINT)
    if _FEW_SHOT.match(metric):
        if metric not in items:
            return None
        return ItemScores("mean", str(items[f"material.{metric}"]), items[metric].astype(np.float64) / float(items[f"{metric}.queries"]))
    if metric == "verification_roc_auc":
        if "verification.rank" not in items:
            return None
        return ItemScores("auc", str(items["material.verification"]), items["verification.rank"].astype(np.float64), items["verification.same"].astype(bool))
    return None


def item_metric(scores: ItemScores, weights: np.ndarray | None = None) -> float | np.ndarray:
    """The metric from its items: their mean ("mean"), or the ROC-AUC of -values over the pairs ("auc",
    Mann-Whitney with ties counted 1/2, what sklearn's roc_auc_score gives). `weights` are per-item
    multiplicities (a bootstrap resample's counts): a weighted mean, a weighted AUC in which a pair of
    items counts w_pos * w_neg. Weights of shape (B, n) give B values at once (vectorised). NaN where the
    weights leave nothing (or, for "auc", no same-class or no different-class pair)."""
    values = np.asarray(scores.values, dtype=np.float64)
    if weights is None:
        if scores.kind == "mean":
            return float(values.mean()) if len(values) else float("nan")
        return float(_weighted_auc(values, scores.same, np.ones((1, len(values))))[0])
    w = np.asarray(weights, dtype=np.float64)
    single = w.ndim == 1
    w = w.reshape(1, -1) if single else w
    if w.shape[1] != len(values):
        raise ValueError(f"weights have {w.shape[1]} items per row, the scores {len(values)}")
    if scores.kind == "mean":
        total = w.sum(1)
        out = np.divide(w @ values, total, out=np.full(len(w), np.nan), where=total > 0)
    else:
        out = _weighted_auc(values, scores.same, w)
    return float(out[0]) if single else out


def _weighted_auc(values: np.ndarray, same: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC-AUC of -values for each row of weights `w` (B, n), in O(n log n + B·n): the items sorted once by
    value, each row's positive and negative weight summed per distinct value (`reduceat` over the sorted
    runs), then Σ_v pos(v) · (neg above v + neg(v) / 2) / (Σ pos · Σ neg). Written here because sklearn's
    roc_auc_score takes one weight vector per call and sorts every time (B = 2000 calls for a bootstrap)."""
    same = np.asarray(same, dtype=bool)
    out = np.full(len(w), np.nan)
    if not len(values):
        return out
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ws = w[:, order]
    positive = same[order]
    pos = np.add.reduceat(np.where(positive, ws, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, ws), starts, axis=1)
    neg_total = neg.sum(1)
    neg_above = neg_total[:, None] - np.cumsum(neg, axis=1)  # larger value: a lower score than the positive's
    numerator = (pos * (neg_above + 0.5 * neg)).sum(1)
    denominator = pos.sum(1) * neg_total
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
