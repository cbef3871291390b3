"""MNIST-style idx files (MNIST, Fashion-MNIST, KMNIST), gzipped or not, from a folder, torchvision's
layout, or Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist/)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np

from bench.data.common import check_labels
from bench.errors import UserError
from bench.plugins import LabelledImages

# kind -> torchvision class: its folder name (root/<Name>/raw/) and its class names
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One idx file (gzipped if it ends in .gz). Written here because torchvision's reader takes only
    uncompressed files and raises bare asserts; this one names the file in its error."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        try:
            raw = fh.read()
        except (OSError, EOFError) as exc:
            raise UserError(f"idx file {str(path)!r} cannot be read ({exc}) — replace it with the original download") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise UserError(f"idx file {str(path)!r} does not start with an idx header — replace it with the original download")
    ndim, dtype = raw[3], np.dtype(IDX_DTYPES[raw[2]])
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != 4 + 4 * ndim + size:
        raise UserError(
            f"idx file {str(path)!r} holds {len(raw) - 4 - 4 * ndim} bytes of data but its header says {shape} — it is truncated; download it again"
        )
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def find_idx(root: Path, kind: str, stem: str) -> Path | None:
    """`stem` or `stem.gz` in root, or in torchvision's root/<Name>/raw/; also the `-ubyte` → `.ubyte` spelling."""
    for folder in (root, root / TORCHVISION[kind] / "raw"):
        for name in (stem, stem.replace("-ubyte", ".ubyte")):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def mnist(
    root: str = "~/data", kind: Literal["mnist", "fashion-mnist", "kmnist"] = "mnist", files: Literal["all", "train", "t10k"] = "all", download: bool = False
) -> LabelledImages:
    """MNIST-style 28×28 gray digits/garments/kana, 10 classes, read from idx files under `root`.

    The files' own train/t10k division splits images, not classes, so by default both are pooled
    (`files = "all"`, 70,000 images) and the harness splits the 10 classes (the usual metric-learning
    protocol); `files` reads just one of them. Debian: `apt-get install dataset-fashion-mnist` and set
    root = "/usr/share/datasets/fashion-mnist". With download = true, missing files are fetched into
    root/<MNIST|FashionMNIST|KMNIST>/raw/ by torchvision.
    """
    import torchvision.datasets as tvd

    where = f"dataset mnist ({kind})"
    if kind not in TORCHVISION:
        raise UserError(f"{where}: unknown kind {kind!r} — use one of {', '.join(TORCHVISION)}")
    base = Path(root).expanduser()
    wanted = list(PARTS) if files == "all" else [files]
    stems = [s for part in wanted for s in PARTS[part]]
    if download and any(find_idx(base, kind, s) is None for s in stems):
        try:
            getattr(tvd, TORCHVISION[kind])(str(base), train=True, download=True)  # fetches all four files
        except Exception as exc:  # offline, a mirror down, a full disk: all mean "put the files there yourself"
            raise UserError(f"{where}: download into {str(base)!r} failed ({type(exc).__name__}: {exc}) — put the idx files in that folder") from exc
    images, labels = [], []
    for image_stem, label_stem in (PARTS[p] for p in wanted):
        paths = [find_idx(base, kind, s) for s in (image_stem, label_stem)]
        if None in paths:
            missing = image_stem if paths[0] is None else label_stem
            hint = " (Debian: apt-get install dataset-fashion-mnist, root = '/usr/share/datasets/fashion-mnist')" if kind == "fashion-mnist" else ""
            raise UserError(
                f"{where}: no {missing}[.gz] in {str(base)!r} or {str(base / TORCHVISION[kind] / 'raw')!r} — set root to the folder with the idx files{hint}, or set download = true"
            )
        x, y = read_idx(paths[0]), read_idx(paths[1])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(
                f"{where}: {str(paths[0])!r} has shape {x.shape} and {str(paths[1])!r} has {y.shape} — expected (N, H, W) images and N labels; replace them with a matching pair"
            )
        images.append(x.astype(np.uint8, copy=False))
        labels.append(y.astype(np.int64))
    label_array = np.concatenate(labels)
    names = tuple(getattr(tvd, TORCHVISION[kind]).classes)
    if label_array.min() < 0 or label_array.max() >= len(names):
        raise UserError(
            f"{where}: labels in {str(base)!r} run from {label_array.min()} to {label_array.max()}, not 0..{len(names) - 1} — these are not {kind} files; set kind"
        )
    check_labels(label_array, names, None, where)
    return LabelledImages(np.concatenate(images)[:, None], label_array, names, meta={"root": str(base), "kind": kind, "files": files})
