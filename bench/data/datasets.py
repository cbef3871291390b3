"""The built-in datasets (registered here) and the class-disjoint train/val/test split every cell uses."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence

import numpy as np

from bench.data.files import csv, folder
from bench.data.grocery import grocery
from bench.data.idx import mnist
from bench.data.omniglot import omniglot
from bench.data.standard import cars196, cub, inshop, sop
from bench.errors import UserError
from bench.plugins import DATASETS, LabelledImages

DATASETS.register("folder")(folder)
DATASETS.register("csv")(csv)
DATASETS.register("mnist")(mnist)
DATASETS.register("omniglot")(omniglot)
DATASETS.register("cub")(cub)
DATASETS.register("cars196")(cars196)
DATASETS.register("sop")(sop)
DATASETS.register("inshop")(inshop)
DATASETS.register("grocery")(grocery)


@DATASETS.register("digits")
def digits() -> LabelledImages:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes): no download needed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # pixel values are 0..16
    return LabelledImages(images, d.target.astype(np.int64), tuple(str(c) for c in range(10)))


def split_classes(
    data: LabelledImages,
    test_fraction: float,
    seed: int,
    val_fraction: float = 0.0,
    test_classes: Sequence[str] | None = None,
    val_classes: Sequence[str] | None = None,
    folds: int = 0,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Class-disjoint (train_idx, val_idx, test_idx, record); `record` is JSON-safe, for the result row.

    Classes are put in one seeded order, `default_rng(seed).permutation(class ids)`. Then:
      test: the dataset's own "test" split if it has one, else `test_classes` (names), else the first
            round(test_fraction × n_classes) classes of that order;
      val:  the dataset's own "val" split if it has one, else `val_classes`, else with `folds` = K > 0
            fold `fold` of K (below), else the next round(val_fraction × n_classes) classes (0 = no val);
      train: every other class.
    k-fold follows "A Metric Learning Reality Check" (Musgrave et al. 2020): the test classes stay fixed,
    the remaining classes, in the seeded order, are cut into K near-equal folds (np.array_split), and run
    `fold` validates on fold `fold` and trains on the other K-1; over fold = 0..K-1 every non-test class is
    validated on exactly once. Every non-empty part needs at least 2 classes (a UserError otherwise).
    """
    n_classes = len(data.class_names)
    order = [int(c) for c in np.random.default_rng(seed).permutation(np.unique(data.labels))]
    own = {s: sorted({int(c) for c in data.labels[data.split == s]}) for s in ("test", "val")} if data.split is not None else {}
    _check_args(data, test_fraction, val_fraction, test_classes, val_classes, folds, fold, own)
    if own.get("test"):
        test, test_rule = own["test"], "dataset"
    elif test_classes is not None:
        test, test_rule = _ids(data, test_classes, "test_classes"), "listed"
    else:
        test, test_rule = order[: round(test_fraction * n_classes)], f"first {round(test_fraction * n_classes)} of default_rng({seed}).permutation(class ids)"
    rest = [c for c in order if c not in set(test)]  # the seeded order, minus test
    if own.get("val"):
        val, val_rule = own["val"], "dataset"
    elif val_classes is not None:
        val, val_rule = _ids(data, val_classes, "val_classes"), "listed"
    elif folds:
        val, val_rule = (
            [int(c) for c in np.array_split(np.array(rest, dtype=np.int64), folds)[fold]],
            f"fold {fold} of {folds} over the non-test classes in seeded order",
        )
    else:
        n_val = round(val_fraction * n_classes)
        val, val_rule = rest[:n_val], (f"next {n_val} of the seeded order" if n_val else "none")
    overlap = set(test) & set(val)
    if overlap:
        raise UserError(f"split: class {data.class_names[min(overlap)]!r} is in both the test and the val classes — a class may be in one of them only")
    train = [c for c in rest if c not in set(val)]
    for part, ids, fix in (
        ("train", train, "lower split.test_fraction / split.val_fraction"),
        ("test", test, "raise split.test_fraction or list more split.test_classes"),
        ("val", val, "raise split.val_fraction, list more split.val_classes or use fewer split.folds"),
    ):
        if len(ids) < 2 and (part != "val" or ids):
            raise UserError(f"split: the {part} part has {len(ids)} class(es) of {n_classes} (seed {seed}) — it needs at least 2; {fix}")
    idx = {name: np.flatnonzero(np.isin(data.labels, ids)) for name, ids in (("train", train), ("val", val), ("test", test))}
    record = {
        "rule": f"test: {test_rule}; val: {val_rule}",
        "test_rule": test_rule,
        "val_rule": val_rule,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "folds": folds,
        "fold": fold if folds else None,
        "seed": seed,
        **{f"n_{p}_classes": len(ids) for p, ids in (("train", train), ("val", val), ("test", test))},
        **{f"n_{p}_images": int(len(i)) for p, i in idx.items()},
        "test_classes_sha256": _digest(data, test),
        "val_classes_sha256": _digest(data, val) if val else None,
    }
    if "split" in data.meta and test_rule == "dataset":
        record["dataset_split"] = data.meta["split"]
    return idx["train"], idx["val"], idx["test"], record


def _check_args(data, test_fraction, val_fraction, test_classes, val_classes, folds, fold, own) -> None:
    if not 0.0 <= test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
        raise UserError(f"split: test_fraction {test_fraction} and val_fraction {val_fraction} must each be in [0, 1) — fix [split]")
    if folds < 0 or folds == 1 or (folds and not 0 <= fold < folds):
        raise UserError(f"split: folds = {folds}, fold = {fold} — use folds = 0 (no k-fold) or folds >= 2 with fold in 0..folds-1")
    val_rules = [
        name
        for name, on in (
            ("the dataset's own val split", bool(own.get("val"))),
            ("split.val_classes", val_classes is not None),
            ("split.folds", folds > 0),
            ("split.val_fraction", val_fraction > 0),
        )
        if on
    ]
    if len(val_rules) > 1:
        raise UserError(f"split: validation classes are set by both {val_rules[0]} and {val_rules[1]} — keep one of them")
    if own.get("test") and test_classes is not None:
        raise UserError("split: the dataset brings its own test split, so split.test_classes would be ignored — remove split.test_classes")


def _ids(data: LabelledImages, names: Sequence[str], option: str) -> list[int]:
    index = {n: i for i, n in enumerate(data.class_names)}
    for n in names:
        if str(n) not in index:
            close = difflib.get_close_matches(str(n), data.class_names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(
                f"split.{option}: unknown class {n!r} — {hint}names are the dataset's class names, e.g. {', '.join(repr(c) for c in data.class_names[:3])}"
            )
    return sorted({index[str(n)] for n in names})


def _digest(data: LabelledImages, ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(sorted(data.class_names[i] for i in ids)).encode()).hexdigest()[:12]
