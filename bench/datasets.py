"""Built-in datasets (`digits`, `folder`) and the seeded class-disjoint split every cell uses."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.plugins import DATASETS, LabelledImages

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@DATASETS.register("digits")
def digits() -> LabelledImages:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes): no download needed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # pixel values are 0..16
    return LabelledImages(images, d.target.astype(np.int64), tuple(str(c) for c in range(10)))


@DATASETS.register("folder")
def folder(root: str, image_size: int = 0, channels: int = 0) -> LabelledImages:
    """One sub-folder per class of image files (a product catalogue's usual shape).

    Images are decoded once with Pillow and resized to `image_size` (0 = the size of the first image;
    all must then match); `channels` is 1 or 3 (0 = 3 if any image has colour, else 1).
    """
    from PIL import Image, UnidentifiedImageError

    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"dataset folder: root {str(base)!r} is not a directory — set dataset.folder.root to a folder with one sub-folder per class")
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(c.name, f) for c in classes for f in sorted(c.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UserError(f"dataset folder: no image files under {str(base)!r} — put images in one sub-folder per class")
    decoded = []
    for _, f in files:
        try:
            with Image.open(f) as im:
                decoded.append(im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"dataset folder: cannot read image {str(f)!r} ({exc}) — fix or remove that file") from exc
    if channels == 0:
        channels = 3 if any(im.mode == "RGB" for im in decoded) else 1
    size = (image_size, image_size) if image_size else decoded[0].size
    arrays = []
    for (_, f), im in zip(files, decoded):
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != size:
            if not image_size:
                raise UserError(f"dataset folder: {str(f)!r} is {im.size[0]}x{im.size[1]} but the first image is {size[0]}x{size[1]} — set dataset.folder.image_size to resize all")
            im = im.resize(size, Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    names = sorted({c for c, _ in files})
    index = {c: i for i, c in enumerate(names)}
    labels = np.array([index[c] for c, _ in files], dtype=np.int64)
    return LabelledImages(np.stack(arrays), labels, tuple(names), meta={"root": str(base)})


def split_classes(data: LabelledImages, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Class-disjoint train/test image indices.

    Rule: classes are shuffled with numpy's default_rng(seed) and the first round(test_fraction * n_classes)
    (at least 1, and at least 1 left for training) become test classes. A dataset's own split wins.
    Returns (train_idx, test_idx, record) where record goes into the result row.
    """
    if data.split is not None:
        train = np.flatnonzero(data.split == "train")
        test = np.flatnonzero(data.split == "test")
        rule = "dataset"
    else:
        classes = np.unique(data.labels)
        if len(classes) < 2:
            raise UserError("dataset has fewer than 2 classes: a class-disjoint split needs at least 2")
        n_test = min(max(1, round(test_fraction * len(classes))), len(classes) - 1)
        test_classes = np.random.default_rng(seed).permutation(classes)[:n_test]
        is_test = np.isin(data.labels, test_classes)
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        rule = f"default_rng({seed}).permutation(classes)[:{n_test}] are test"
    test_class_ids = np.unique(data.labels[test])
    digest = hashlib.sha256(",".join(data.class_names[i] for i in test_class_ids).encode()).hexdigest()[:12]
    record = {
        "rule": rule,
        "test_fraction": test_fraction,
        "seed": seed,
        "n_train_classes": int(len(np.unique(data.labels[train]))),
        "n_test_classes": int(len(test_class_ids)),
        "n_train_images": int(len(train)),
        "n_test_images": int(len(test)),
        "test_classes_sha256": digest,
    }
    return train, test, record
