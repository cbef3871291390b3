"""The four standard deep-metric-learning datasets, read in place from their extracted archives with their
published class-disjoint protocols: `cub` (CUB-200-2011), `cars196` (Stanford Cars), `sop` (Stanford Online
Products) and `inshop` (DeepFashion In-Shop Clothes Retrieval)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.data.common import check_decoding, check_labels, decode_images
from bench.data.common import decoding as decoding_record
from bench.errors import UserError, read_text
from bench.plugins import LabelledImages

CUB_FIX = "set dataset.cub.root to the extracted CUB_200_2011 folder (it holds images.txt, classes.txt, image_class_labels.txt, images/)"
CARS_FIX = "set dataset.cars196.root to the folder holding cars_annos.mat and car_ims/ (the original release: car_ims.tgz extracted beside cars_annos.mat)"
SOP_FIX = "set dataset.sop.root to the extracted Stanford_Online_Products folder (it holds Ebay_train.txt, Ebay_test.txt and the <category>_final/ folders)"
INSHOP_FIX = "set dataset.inshop.root to the folder holding list_eval_partition.txt and img/ (img.zip extracted there)"
SOP_HEADER = ("image_id", "class_id", "super_class_id", "path")
INSHOP_HEADER = ("image_name", "item_id", "evaluation_status")


# ---------------------------------------------------------------- the readers


def cub(root: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """CUB-200-2011 (Wah et al. 2011; https://www.vision.caltech.edu/datasets/cub_200_2011/): 11,788 bird photos
    of 200 species, read from the extracted `CUB_200_2011` folder (or its parent) through images.txt,
    image_class_labels.txt and classes.txt. Protocol: classes 1–100 train, 101–200 test, all images of a class
    (train_test_split.txt is not used). Class names from classes.txt ("001.Black_footed_Albatross").
    `image_size`, `channels`, `background`, `max_pixels` and `resize` as for `folder`.
    """
    where = "dataset cub"
    decoding = check_decoding(background, max_pixels, resize, where)
    base = _root(root, where, CUB_FIX, child="CUB_200_2011", marker="images.txt")
    names = _id_map(base / "classes.txt", where, CUB_FIX)
    paths = _id_map(base / "images.txt", where, CUB_FIX)
    labels_file = base / "image_class_labels.txt"
    classes = {i: _int(c, labels_file, line, where, "class id") for i, (c, line) in _id_map(labels_file, where, CUB_FIX, lines=True).items()}
    _same_ids(paths, classes, base / "images.txt", labels_file, where)
    for i, c in classes.items():
        if c not in names:
            raise UserError(
                f"{where}: {labels_file} gives image {i} class {c}, which {base / 'classes.txt'} does not list — the lists come from different releases; extract CUB_200_2011.tgz again"
            )
    ids = sorted(paths)
    files = _existing(base / "images", [paths[i] for i in ids], f"{base / 'images.txt'}", where, CUB_FIX)
    raw = [classes[i] for i in ids]
    split = _range_split(raw, 100, 200, labels_file, where, "CUB-200-2011 has classes 1–200")
    protocol = "CUB-200-2011: classes 1-100 train, 101-200 test (Wah et al. 2011 / Oh Song et al. 2016)"
    return _build(where, base, files, raw, {c: names[c] for c in set(raw)}, split, {}, protocol, image_size, channels, decoding)


def cars196(root: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """Stanford Cars (Krause et al. 2013): 16,185 photos of 196 car models, read from the original release's
    cars_annos.mat (`annotations`: relative_im_path, class; `class_names`) and car_ims/ in `root`. The original
    Stanford page is offline; the usual copies of `car_ims.tgz` + `cars_annos.mat` are mirrors such as Kaggle's
    (the devkit's cars_train_annos.mat / cars_test_annos.mat layout is not this one). Protocol: classes 1–98
    train, 99–196 test, all images of a class (the file's `test` flag is not used). Class names from
    `class_names`. `image_size`, `channels`, `background`, `max_pixels` and `resize` as for `folder`.
    """
    where = "dataset cars196"
    decoding = check_decoding(background, max_pixels, resize, where)
    base = _root(root, where, CARS_FIX)
    file = base / "cars_annos.mat"
    rel, raw, class_names = _cars_annotations(file, where)
    files = _existing(base, rel, str(file), where, CARS_FIX)
    split = _range_split(raw, 98, 196, file, where, "Stanford Cars has classes 1–196")
    protocol = "Cars196: classes 1-98 train, 99-196 test (Krause et al. 2013 / Oh Song et al. 2016)"
    return _build(where, base, files, raw, {c: class_names[c - 1] for c in set(raw)}, split, {}, protocol, image_size, channels, decoding)


def sop(root: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """Stanford Online Products (Oh Song et al. 2016; https://cvgl.stanford.edu/projects/lifted_struct/): 120,053
    eBay photos of 22,634 products in 12 categories, read from the extracted `Stanford_Online_Products` folder
    (or its parent) through Ebay_train.txt and Ebay_test.txt. Protocol: Ebay_train's 11,318 products train,
    Ebay_test's 11,316 test. Classes are the class ids; each image's category folder ("bicycle_final") is kept
    as `attributes["super_class"]`. All images are decoded into memory: set `image_size` small (e.g. 64, about
    1.5 GB as uint8 RGB; 224 needs about 18 GB). `channels`, `background`, `max_pixels`, `resize` as for `folder`.
    """
    where = "dataset sop"
    decoding = check_decoding(background, max_pixels, resize, where)
    base = _root(root, where, SOP_FIX, child="Stanford_Online_Products", marker="Ebay_train.txt")
    parts = {s: _sop_rows(base / f"Ebay_{s}.txt", where) for s in ("train", "test")}
    both = {c for c, _, _ in parts["train"]} & {c for c, _, _ in parts["test"]}
    if both:
        raise UserError(
            f"{where}: class {min(both)} is in both {base / 'Ebay_train.txt'} and {base / 'Ebay_test.txt'} — the lists are not the original release's; extract Stanford_Online_Products.zip again"
        )
    rows = parts["train"] + parts["test"]
    files = _existing(base, [p for _, p, _ in rows], f"{base}/Ebay_<train|test>.txt", where, SOP_FIX)
    raw = [c for c, _, _ in rows]
    split = np.array(["train"] * len(parts["train"]) + ["test"] * len(parts["test"]))
    attributes = {"super_class": np.array([s for _, _, s in rows])}
    protocol = "Stanford Online Products: Ebay_train.txt classes train, Ebay_test.txt classes test (Oh Song et al. 2016)"
    return _build(where, base, files, raw, {c: str(c) for c in set(raw)}, split, attributes, protocol, image_size, channels, decoding)


def inshop(root: str, image_size: int = 0, channels: int = 0, background: str = "white", max_pixels: int = 0, resize: str = "square") -> LabelledImages:
    """DeepFashion In-Shop Clothes Retrieval (Liu et al. 2016;
    https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html): 52,712 shop photos of 7,982 items,
    read from list_eval_partition.txt (in `root` or `root/Eval/`) and the extracted img/ (in `root` or
    `root/Img/`). Protocol: `train` items train (3,997); `query` and `gallery` images are the test split with
    `attributes["role"]` "query" / "gallery" (train images ""), so retrieval searches queries against the
    gallery only (3,985 items). Classes are item ids. A train item with a single image is dropped (no positive
    pair), counted in meta["split"]. `image_size`, `channels`, `background`, `max_pixels`, `resize` as for `folder`.
    """
    where = "dataset inshop"
    decoding = check_decoding(background, max_pixels, resize, where)
    base = _root(root, where, INSHOP_FIX)
    listing = base / "list_eval_partition.txt"
    if not listing.is_file() and (base / "Eval" / listing.name).is_file():
        listing = base / "Eval" / listing.name
    images = base / "Img" if not (base / "img").is_dir() and (base / "Img" / "img").is_dir() else base
    rows = _inshop_rows(listing, where)
    files = _existing(images, [p for p, _, _ in rows], str(listing), where, INSHOP_FIX)
    raw = [item for _, item, _ in rows]
    split = np.array(["train" if s == "train" else "test" for _, _, s in rows])
    roles = np.array(["" if s == "train" else s for _, _, s in rows])
    protocol = "In-Shop Clothes Retrieval: train items train; query images searched against the gallery images of the test items (Liu et al. 2016)"
    return _build(where, base, files, raw, {r: r for r in raw}, split, {"role": roles}, protocol, image_size, channels, decoding)


# ---------------------------------------------------------------- list files


def _rows(file: Path, n_columns: int, where: str, fix: str, header: Sequence[str] = (), skip: int = 0) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a whitespace-separated list file after `skip` lines and
    the `header` line (checked); each line must have exactly `n_columns` fields (the last may hold spaces)."""
    if not file.is_file():
        raise UserError(f"{where}: {file} does not exist — {fix}")
    try:
        text = read_text(file, "list file", fix)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    lines = [(k, line.split(None, n_columns - 1)) for k, line in enumerate(text.splitlines(), 1) if line.strip()][skip:]
    if header:
        if not lines or tuple(f.lower() for f in lines[0][1]) != tuple(header):
            found = " ".join(lines[0][1]) if lines else "nothing"
            raise UserError(
                f"{where}: {file} has {found!r} where its header {' '.join(header)!r} belongs — the file is not the original release's; extract it again"
            )
        lines = lines[1:]
    for k, fields in lines:
        if len(fields) != n_columns:
            raise UserError(
                f"{where}: {file} line {k} is malformed: {len(fields)} field(s) where {n_columns} whitespace-separated ones belong — fix or restore that line (extract the archive again)"
            )
    if not lines:
        raise UserError(f"{where}: {file} lists nothing — the file is empty or truncated; extract the archive again")
    return lines


def _int(text: str, file: Path, line: int, where: str, what: str) -> int:
    if not text.isdigit():
        raise UserError(
            f"{where}: {file} line {line} is malformed: {what} {text!r} is not a positive integer — fix or restore that line (extract the archive again)"
        )
    return int(text)


def _id_map(file: Path, where: str, fix: str, lines: bool = False) -> dict:
    """{id: value} (or {id: (value, line)}) of a "<id> <value>" list file such as CUB's; a repeated id is an error."""
    found: dict[int, tuple[str, int]] = {}
    for k, (key, value) in _rows(file, 2, where, fix):
        i = _int(key, file, k, where, "id")
        if i in found:
            raise UserError(f"{where}: {file} lists id {i} on lines {found[i][1]} and {k} — remove the duplicate line (extract the archive again)")
        found[i] = (value.strip(), k)
    return found if lines else {i: v for i, (v, _) in found.items()}


def _same_ids(paths: dict, classes: dict, paths_file: Path, classes_file: Path, where: str) -> None:
    for ids, other, lacking in ((paths, classes, classes_file), (classes, paths, paths_file)):
        missing = sorted(set(ids) - set(other))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise UserError(
                f"{where}: image id {missing[0]}{more} is not in {lacking} — the list files come from different or partial releases; extract the archive again"
            )


def _sop_rows(file: Path, where: str) -> list[tuple[int, str, str]]:
    """(class id, path, category folder) per image of an Ebay_<train|test>.txt."""
    out = []
    for k, (_, class_id, super_id, path) in _rows(file, 4, where, SOP_FIX, header=SOP_HEADER):
        _int(super_id, file, k, where, "super_class_id")
        folder = path.strip().split("/")[0] if "/" in path else f"super_class_{super_id}"
        out.append((_int(class_id, file, k, where, "class_id"), path.strip(), folder))
    return out


def _inshop_rows(file: Path, where: str) -> list[tuple[str, str, str]]:
    """(image path, item id, status) per line of list_eval_partition.txt, whose first line is the count."""
    rows = _rows(file, 3, where, INSHOP_FIX, header=INSHOP_HEADER, skip=1)
    first = read_text(file, "list file", INSHOP_FIX).split(None, 1)[0]
    if first.isdigit() and int(first) != len(rows):
        raise UserError(f"{where}: {file} says {first} images on line 1 but lists {len(rows)} — the file is truncated; extract it again")
    out = []
    for k, (path, item, status) in rows:
        if status not in ("train", "query", "gallery"):
            raise UserError(f"{where}: {file} line {k} is malformed: evaluation_status {status!r} — it must be train, query or gallery")
        out.append((path, item, status))
    query, gallery = ({item for _, item, s in out if s == role} for role in ("query", "gallery"))
    if query ^ gallery:
        item = min(query ^ gallery)
        has = "query" if item in query else "gallery"
        raise UserError(
            f"{where}: {file} has {has} images of item {item} but no {'gallery' if has == 'query' else 'query'} images — the list is not the original release's; extract it again"
        )
    return out


def _cars_annotations(file: Path, where: str) -> tuple[list[str], list[int], list[str]]:
    """(relative image paths, class ids 1..196, the 196 class names) of cars_annos.mat."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not file.is_file():
        raise UserError(f"{where}: {file} does not exist — {CARS_FIX}")
    try:
        mat = scipy.io.loadmat(str(file), squeeze_me=True)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise UserError(f"{where}: cannot read {file} ({type(exc).__name__}: {exc}) — replace it with the original cars_annos.mat") from None
    missing = [k for k in ("annotations", "class_names") if k not in mat]
    annotations = np.atleast_1d(mat.get("annotations"))
    fields = annotations.dtype.names or ()
    if missing or not {"relative_im_path", "class"} <= set(fields):
        lacks = ", ".join(missing) or f"annotations fields relative_im_path and class (it has {', '.join(fields) or 'none'})"
        raise UserError(f"{where}: {file} has no {lacks} — it is not the original release's cars_annos.mat (the devkit's cars_*_annos.mat differ); {CARS_FIX}")
    class_names = [str(n).strip() for n in np.atleast_1d(mat["class_names"])]
    if len(class_names) != 196:
        raise UserError(
            f"{where}: {file} has {len(class_names)} class names, Stanford Cars has 196 — the file looks partial or from another release; {CARS_FIX}"
        )
    rel = [str(p).strip() for p in annotations["relative_im_path"]]
    raw = [int(np.asarray(c).reshape(-1)[0]) if np.asarray(c).size else 0 for c in annotations["class"]]
    return rel, raw, class_names


# ---------------------------------------------------------------- shared steps


def _root(root: str, where: str, fix: str, child: str = "", marker: str = "") -> Path:
    """The dataset folder: `root`, or `root/child` when `root` is its parent (has `child/marker`)."""
    base = Path(root).expanduser()
    if child and not (base / marker).exists() and (base / child / marker).exists():
        base = base / child
    if not base.is_dir():
        raise UserError(f"{where}: root {str(base)!r} is not a directory — {fix}")
    return base


def _existing(folder: Path, relative: Sequence[str], listed_in: str, where: str, fix: str) -> list[str]:
    """Each listed image's path under `folder`; a listed image that is not there is an error naming it."""
    paths = [folder / r for r in relative]
    for _r, p in zip(relative, paths):
        if not p.is_file():
            raise UserError(
                f"{where}: image {str(p)!r}, listed in {listed_in}, does not exist — the archive looks partially extracted; extract it again ({fix})"
            )
    return [str(p) for p in paths]


def _range_split(raw: Sequence[int], last_train: int, last: int, file: Path, where: str, fact: str) -> np.ndarray:
    """ "train" for class ids 1..last_train, "test" for last_train+1..last; ids outside 1..last, or a protocol half
    without classes, mean the layout is partial or not the original release."""
    ids = np.array(raw, dtype=np.int64)
    bad = ids[(ids < 1) | (ids > last)]
    if len(bad):
        raise UserError(f"{where}: {file} gives class id {int(bad[0])}, outside 1–{last} ({fact}) — the file is not the original release's; extract it again")
    for name, inside in (("train", ids <= last_train), ("test", ids > last_train)):
        if not inside.any():
            span = f"1–{last_train}" if name == "train" else f"{last_train + 1}–{last}"
            raise UserError(
                f"{where}: {file} has no images of classes {span} (the protocol's {name} classes; {fact}) — the layout looks partial; extract the whole archive"
            )
    return np.where(ids <= last_train, "train", "test")


def _build(
    where: str,
    base: Path,
    files: list[str],
    raw: Sequence,
    names_by_id: dict,
    split: np.ndarray,
    attributes: dict,
    protocol: str,
    image_size: int,
    channels: int,
    decoding: tuple[tuple[int, int, int], int, str],
) -> LabelledImages:
    """Labels 0..K-1 in class-id order, train classes with a single image dropped (no positive pair), checked,
    then decoded; meta records the protocol and the class counts (the row's `split.dataset_split`)."""
    counts = Counter(r for r, s in zip(raw, split) if s == "train")
    keep = np.array([not (s == "train" and counts[r] < 2) for r, s in zip(raw, split)], dtype=bool)
    dropped = len({r for r, k in zip(raw, keep) if not k})
    files, raw, split = [f for f, k in zip(files, keep) if k], [r for r, k in zip(raw, keep) if k], split[keep]
    attributes = {key: values[keep] for key, values in attributes.items()}
    ids = sorted(set(raw), key=lambda r: (isinstance(r, str), r))
    index = {r: i for i, r in enumerate(ids)}
    labels = np.array([index[r] for r in raw], dtype=np.int64)
    names = tuple(str(names_by_id[r]) for r in ids)
    check_labels(labels, names, split, f"{where} {str(base)!r}")
    rgb, max_pixels, resize = decoding
    images = decode_images(files, str, where, image_size, channels, rgb, max_pixels, resize=resize)
    counted = {f"{s}_classes": len(np.unique(labels[split == s])) for s in ("train", "test")}
    meta = {
        "root": str(base),
        "decoding": decoding_record(rgb, max_pixels, resize),
        "protocol": protocol,
        "split": {"protocol": protocol, **counted, "train_classes_dropped_single_image": dropped},
    }
    return LabelledImages(images, labels, names, split=split, meta=meta, attributes=attributes)
