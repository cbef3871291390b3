"""Image-file datasets: `folder` (one sub-folder per class) and `csv` (a `path,label[,split]` manifest)."""
from __future__ import annotations

import csv as csvlib
import os
from pathlib import Path

import numpy as np

from bench.data.common import IMAGE_SUFFIXES, check_labels, decode_images, encode_labels
from bench.errors import UserError
from bench.plugins import SPLIT_NAMES, LabelledImages


def folder(root: str, image_size: int = 0, channels: int = 0) -> LabelledImages:
    """One sub-folder per class of image files (searched recursively); files directly in `root` are ignored.

    Images are decoded once with Pillow; `image_size` resizes all to a square (0 = keep, all must match);
    `channels` is 1, 3 or 0 (3 if any image has colour, else 1). Hidden files are skipped; any other
    file that is not an image is an error, so a stray file never silently changes a class.
    """
    where = "dataset folder"
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"{where}: root {str(base)!r} is not a directory — set dataset.folder.root to a folder with one sub-folder per class")
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{where}: {str(base)!r} has no class sub-folders — put images in one sub-folder per class")
    files: list[tuple[str, Path]] = []
    for c in classes:
        for f in sorted(c.rglob("*")):
            if f.is_dir() or any(part.startswith(".") for part in f.relative_to(c).parts):
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{where}: {str(f)!r} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}) — remove it or move it out of {str(base)!r}")
            files.append((c.name, f))
    if not files:
        raise UserError(f"{where}: no image files under {str(base)!r} — put images in one sub-folder per class")
    names = tuple(c.name for c in classes)  # from the folders, so an empty class folder is reported
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[c] for c, _ in files], dtype=np.int64)
    check_labels(labels, names, None, f"{where} {str(base)!r}")
    images = decode_images([str(f) for _, f in files], str, where, image_size, channels)
    return LabelledImages(images, labels, names, meta={"root": str(base)})


def csv(manifest: str, image_size: int = 0, channels: int = 0) -> LabelledImages:
    """A CSV manifest with columns `path,label` and optionally `split`, the way product catalogues are kept.

    `path` is relative to the manifest's folder (or absolute); `label` is a class name or an integer id;
    `split` (train | val | test, all rows or none) makes the dataset bring its own class-disjoint split.
    `image_size` and `channels` as for `folder`.
    """
    where = "dataset csv"
    file = Path(manifest).expanduser()
    if not file.is_file():
        raise UserError(f"{where}: manifest {str(file)!r} does not exist — set dataset.csv.manifest to a CSV file with columns path,label[,split]")
    with file.open(newline="", encoding="utf-8-sig") as fh:
        reader = csvlib.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise UserError(f"{where}: {str(file)!r} has no {' or '.join(repr(c) for c in missing)} column (columns: {', '.join(columns) or 'none'}) — the header must be path,label[,split]")
        reader.fieldnames = columns
        rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise UserError(f"{where}: {str(file)!r} has a header but no rows — add one row per image")
    seen: dict[str, int] = {}
    paths, raw_labels, origins, splits = [], [], [], []
    for line, row in rows:
        text = (row.get("path") or "").strip()
        if not text:
            raise UserError(f"{where}: {str(file)!r} line {line} has an empty path — give every row an image path")
        path = os.path.normpath(file.parent / text)
        if path in seen:
            raise UserError(f"{where}: {str(file)!r} lists {text!r} on lines {seen[path]} and {line} — remove the duplicate row")
        seen[path] = line
        if not Path(path).is_file():
            raise UserError(f"{where}: {str(file)!r} line {line}: image {path!r} does not exist — paths are relative to the manifest's folder")
        paths.append(path)
        raw_labels.append(row.get("label") or "")
        origins.append(f"{str(file)!r} line {line}")
        if "split" in columns:
            splits.append((row.get("split") or "").strip())
    split = None
    if splits and any(splits):
        for origin, value in zip(origins, splits):
            if value not in SPLIT_NAMES:
                raise UserError(f"{where}: {origin} has split {value!r} — use one of {', '.join(SPLIT_NAMES)} on every row, or leave the column empty on all")
        split = np.array(splits)
    labels, names = encode_labels(raw_labels, where, origins)
    check_labels(labels, names, split, f"{where} {str(file)!r}")
    images = decode_images(paths, str, where, image_size, channels)
    return LabelledImages(images, labels, names, split=split, meta={"manifest": str(file)})
