"""Klasson et al.'s Grocery Store dataset (WACV 2019, MIT licence), read in place: shop photos are queries, each
product's iconic catalogue image is its gallery. https://github.com/marcusklasson/GroceryStoreDataset"""

from __future__ import annotations

import csv as csvlib
from pathlib import Path, PurePosixPath

import numpy as np

from bench.data.common import check_decoding, check_labels, decode_images, decoding
from bench.errors import UserError
from bench.plugins import LabelledImages

WHERE = "dataset grocery"
LISTS = ("train", "val", "test")
CLASS_COLUMNS = ("Class Name (str)", "Class ID (int)", "Coarse Class Name (str)", "Coarse Class ID (int)", "Iconic Image Path (str)")


def grocery(
    root: str = "~/data/GroceryStoreDataset",
    image_size: int = 224,
    channels: int = 3,
    background: str = "white",
    max_pixels: int = 0,
    resize: str = "shorter_center_crop",
) -> LabelledImages:
    """The 81 fine-grained products of the Grocery Store dataset: every shop photo listed in train.txt, val.txt
    and test.txt (role "query") and every product's iconic catalogue image (role "gallery").

    `root` is the cloned repository or its `dataset/` folder (the one holding classes.csv). The files' own
    train/val/test lists split *photos*, not products; metric learning holds out products, so every photo is
    read and the grid's class split decides which products train (shop photos and iconic images alike) and
    which are scored, queries against the held-out products' iconic images. Each image also keeps its
    `coarse` class (e.g. "Apple" for "Pink-Lady"). Photos are 348×348 or 348×464 and iconic images 198×198:
    `image_size` (default 224) with `resize = "shorter_center_crop"` (default: the shorter side to the size,
    then the centre square) or "square" (stretched); `channels`, `background`, `max_pixels` as for `folder`.
    """
    rgb, max_pixels, resize = check_decoding(background, max_pixels, resize, WHERE)
    base = _dataset_folder(Path(root).expanduser())
    classes = _classes(base / "classes.csv")
    photos = [entry for name in LISTS for entry in _photos(base, name, classes)]
    by_class = {cid for cid, _ in photos}
    empty = [name for cid, (name, _, _) in classes.items() if cid not in by_class]
    if empty:
        raise UserError(
            f"{WHERE}: product {empty[0]!r}{f' and {len(empty) - 1} more' if len(empty) > 1 else ''} in "
            f"{str(base / 'classes.csv')!r} has no shop photos in {', '.join(f'{n}.txt' for n in LISTS)} — "
            "every product needs query photos; restore the lists or remove the product's row"
        )
    ids = sorted(classes)
    index = {cid: i for i, cid in enumerate(ids)}
    entries = [(cid, path, "query") for cid, path in photos] + [(cid, classes[cid][2], "gallery") for cid in ids]
    labels = np.array([index[cid] for cid, _, _ in entries], dtype=np.int64)
    names = tuple(classes[cid][0] for cid in ids)
    check_labels(labels, names, None, f"{WHERE} {str(base)!r}")
    images = decode_images([str(p) for _, p, _ in entries], str, WHERE, image_size, channels, rgb, max_pixels, resize=resize)
    attributes = {"role": np.array([r for _, _, r in entries]), "coarse": np.array([classes[cid][1] for cid, _, _ in entries])}
    meta = {
        "root": str(base),
        "decoding": decoding(rgb, max_pixels, resize),
        "protocol": "shop photos (train.txt + val.txt + test.txt) are queries, iconic images the gallery; products split by the grid",
        "n_photos": len(photos),
        "n_iconic": len(ids),
    }
    return LabelledImages(images, labels, names, meta=meta, attributes=attributes)


def _dataset_folder(root: Path) -> Path:
    for base in (root, root / "dataset"):
        if (base / "classes.csv").is_file():
            return base
    if not root.is_dir():
        raise UserError(
            f"{WHERE}: root {str(root)!r} is not a directory — set dataset.grocery.root to a clone of "
            "github.com/marcusklasson/GroceryStoreDataset (or its dataset/ folder)"
        )
    raise UserError(
        f"{WHERE}: {str(root / 'dataset' / 'classes.csv')!r} does not exist — set dataset.grocery.root to the "
        "repository (or its dataset/ folder, which holds classes.csv, train.txt, val.txt, test.txt and iconic-images-and-descriptions/)"
    )


def _classes(file: Path) -> dict[int, tuple[str, str, Path]]:
    """{class id: (name, coarse name, iconic image path)} from classes.csv, every iconic image checked to exist."""
    with file.open(newline="", encoding="utf-8-sig") as fh:
        reader = csvlib.reader(fh)
        header = [c.strip() for c in next(reader, [])]
        if tuple(header[:5]) != CLASS_COLUMNS:
            raise UserError(
                f"{WHERE}: {str(file)!r} has header {', '.join(header) or '(none)'} — expected the release's "
                f"{', '.join(CLASS_COLUMNS)}, ...; restore the original classes.csv"
            )
        classes: dict[int, tuple[str, str, Path]] = {}
        for line, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            cells = [c.strip() for c in row]
            if len(cells) < 5 or not cells[1].isdigit():
                raise UserError(f"{WHERE}: {str(file)!r} line {line} is not name,id,coarse name,coarse id,iconic path,... — fix or restore that line")
            cid = int(cells[1])
            if cid in classes:
                raise UserError(f"{WHERE}: {str(file)!r} line {line} repeats class id {cid} ({classes[cid][0]!r}) — each product has one row")
            iconic = file.parent / cells[4].lstrip("/")
            if not iconic.is_file():
                raise UserError(
                    f"{WHERE}: product {cells[0]!r} ({str(file)!r} line {line}) has no iconic image {str(iconic)!r} — "
                    "restore the file (every product needs its catalogue image as the gallery)"
                )
            classes[cid] = (cells[0], cells[2], iconic)
    if len(classes) < 2:
        raise UserError(f"{WHERE}: {str(file)!r} lists {len(classes)} product(s) — it needs at least 2; restore the original classes.csv")
    return classes


def _photos(base: Path, name: str, classes: dict[int, tuple[str, str, Path]]) -> list[tuple[int, Path]]:
    """(class id, path) of each photo listed in `name`.txt ("train/Fruit/Apple/Pink-Lady/Pink-Lady_001.jpg, 2, 0")."""
    file = base / f"{name}.txt"
    if not file.is_file():
        raise UserError(f"{WHERE}: {str(file)!r} does not exist — the dataset folder needs {', '.join(f'{n}.txt' for n in LISTS)} beside classes.csv")
    out = []
    for line, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        cells = [c.strip() for c in text.split(",")]
        if len(cells) < 2 or not cells[1].isdigit():
            raise UserError(f"{WHERE}: {str(file)!r} line {line} is not 'path, class id, coarse id' — fix or restore that line")
        cid, rel = int(cells[1]), PurePosixPath(cells[0])
        if cid not in classes:
            raise UserError(
                f"{WHERE}: {str(file)!r} line {line} has class id {cid}, which classes.csv does not list — "
                "classes.csv and the photo lists come from different releases; restore both"
            )
        if classes[cid][0] not in rel.parts[:-1]:
            raise UserError(
                f"{WHERE}: {str(file)!r} line {line}: {str(rel)!r} is not in a folder of product {classes[cid][0]!r} (class id {cid} "
                "in classes.csv) — classes.csv does not match the photo folders; restore the original files"
            )
        path = base / rel
        if not path.is_file():
            raise UserError(f"{WHERE}: {str(file)!r} line {line}: photo {str(path)!r} does not exist — restore it or remove its line")
        out.append((cid, path))
    return out
