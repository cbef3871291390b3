"""Image-file datasets: `folder` (one sub-folder per class) and `csv` (a `path,label[,split][,role]` manifest)."""

from __future__ import annotations

import csv as csvlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.data.common import (
    IMAGE_SUFFIXES,
    ROLE_NAMES,
    check_decoding,
    check_labels,
    decode_images,
    decoding,
    encode_labels,
)
from bench.errors import UserError
from bench.plugins import SPLIT_NAMES, LabelledImages


def folder(root: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """One sub-folder per class of image files (searched recursively); files directly in `root` are ignored.

    Images are decoded once with Pillow; `image_size` resizes all to a square (0 = keep, all must match) by
    `resize`: "square" stretches, "shorter_center_crop" scales the shorter side and keeps the centre square;
    `channels` is 1, 3 or 0 (3 if any image has colour, else 1); transparent pixels are blended onto
    `background` ("white", "black" or "#rrggbb"); `max_pixels` raises Pillow's decompression-bomb limit
    (0 = Pillow's). A class folder may instead hold `query/` and `gallery/` sub-folders: their images get
    that role in `attributes["role"]` ("" for images of classes without them). Hidden files are skipped;
    any other file that is not an image is an error, so a stray file never silently changes a class.
    """
    where = "dataset folder"
    rgb, max_pixels, resize = check_decoding(background, max_pixels, resize, where)
    base, names, files = folder_files(root, where)
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[c] for c, _, _ in files], dtype=np.int64)
    check_labels(labels, names, None, f"{where} {str(base)!r}")
    images = decode_images([str(f) for _, f, _ in files], str, where, image_size, channels, rgb, max_pixels, resize=resize)
    roles = [role for _, _, role in files]
    attributes = {"role": np.array(roles)} if any(roles) else {}
    return LabelledImages(images, labels, names, meta={"root": str(base), "decoding": decoding(rgb, max_pixels, resize)}, attributes=attributes)


def folder_files(root: str | Path, where: str) -> tuple[Path, tuple[str, ...], list[tuple[str, Path, str]]]:
    """(root, class names, [(class, file, role)]) of a folder dataset, in the order it is read; the
    `folder` dataset and `bench embed --folder` share it so they see the same files."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"{where}: root {str(base)!r} is not a directory — set dataset.folder.root to a folder with one sub-folder per class")
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{where}: {str(base)!r} has no class sub-folders — put images in one sub-folder per class")
    if set(ROLE_NAMES) <= {c.name for c in classes}:
        raise UserError(
            f"{where}: {str(base)!r} has top-level folders 'query' and 'gallery' — roles go inside each class folder (<class>/query/, <class>/gallery/)"
        )
    files = [entry for c in classes for entry in _class_images(c, base, where)]
    if not files:
        raise UserError(f"{where}: no image files under {str(base)!r} — put images in one sub-folder per class")
    return base, tuple(c.name for c in classes), files  # names from the folders, so an empty class folder is reported


def _class_images(c: Path, base: Path, where: str) -> list[tuple[str, Path, str]]:
    """(class, file, role) for a class folder's images; the role is the `query`/`gallery` sub-folder, else ""."""
    found = []
    for f in sorted(c.rglob("*")):
        parts = f.relative_to(c).parts
        if f.is_dir() or any(part.startswith(".") for part in parts):
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{where}: {str(f)!r} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}) — remove it or move it out of {str(base)!r}")
        found.append((c.name, f, parts[0] if len(parts) > 1 and parts[0] in ROLE_NAMES else ""))
    if any(role for _, _, role in found) and not all(role for _, _, role in found):
        stray = next(f for _, f, role in found if not role)
        raise UserError(
            f"{where}: {str(stray)!r} has no role but class folder {str(c)!r} has query/ or gallery/ sub-folders — move it into query/ or gallery/ (a class has roles for all its images or none)"
        )
    return found


def csv(manifest: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """A CSV manifest with columns `path,label` and optionally `split` and `role`, the way product catalogues are kept.

    `path` is relative to the manifest's folder (or absolute); `label` is a class name or an integer id;
    `split` (train | val | test, all rows or none) makes the dataset bring its own class-disjoint split;
    `role` (query | gallery, all rows or none) goes to `attributes["role"]`.
    `image_size`, `channels`, `background`, `max_pixels` and `resize` as for `folder`.
    """
    where = "dataset csv"
    rgb, max_pixels, resize = check_decoding(background, max_pixels, resize, where)
    file, rows, paths, raw_labels, origins = manifest_entries(manifest, where)
    split = _all_or_none("split", [row.get("split") for _, row in rows], SPLIT_NAMES, origins, where)
    role = _all_or_none("role", [row.get("role") for _, row in rows], ROLE_NAMES, origins, where)
    labels, names = encode_labels(raw_labels, where, origins)
    check_labels(labels, names, split, f"{where} {str(file)!r}")
    images = decode_images(paths, str, where, image_size, channels, rgb, max_pixels, resize=resize)
    attributes = {"role": role} if role is not None else {}
    return LabelledImages(
        images, labels, names, split=split, meta={"manifest": str(file), "decoding": decoding(rgb, max_pixels, resize)}, attributes=attributes
    )


def manifest_entries(manifest: str | Path, where: str) -> tuple[Path, list, list[str], list[str], list[str]]:
    """(file, [(line, row)], paths, raw labels, origins) of a CSV manifest, checked row by row; the `csv`
    dataset and `bench embed --csv` share it."""
    file = Path(manifest).expanduser()
    if not file.is_file():
        raise UserError(f"{where}: manifest {str(file)!r} does not exist — set dataset.csv.manifest to a CSV file with columns path,label[,split][,role]")
    with file.open(newline="", encoding="utf-8-sig") as fh:
        reader = csvlib.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise UserError(
                f"{where}: {str(file)!r} has no {' or '.join(repr(c) for c in missing)} column (columns: {', '.join(columns) or 'none'}) — the header must be path,label[,split][,role]"
            )
        reader.fieldnames = columns
        rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise UserError(f"{where}: {str(file)!r} has a header but no rows — add one row per image")
    seen: dict[str, int] = {}
    paths, raw_labels, origins = [], [], []
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
    return file, rows, paths, raw_labels, origins


def _all_or_none(column: str, cells: Sequence[str | None], allowed: Sequence[str], origins: Sequence[str], where: str) -> np.ndarray | None:
    """An optional column's values: None when it is absent or empty on every row, else one of `allowed` on every row."""
    values = [(v or "").strip() for v in cells]
    if not any(values):
        return None
    for origin, value in zip(origins, values):
        if value not in allowed:
            raise UserError(f"{where}: {origin} has {column} {value!r} — use one of {', '.join(allowed)} on every row, or leave the column empty on all")
    return np.array(values)
