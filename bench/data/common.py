"""What every image loader shares: decoding files into one uint8 array, encoding labels, and the checks
that turn bad data into a one-line UserError before any training."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import numpy as np

from bench.errors import UserError
from bench.plugins import SPLIT_NAMES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # "I" too: Pillow opens 16-bit PGM as "I"
GRAY_MODES = {"1", "L", "LA", "La", "F"} | SIXTEEN_BIT_MODES
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
ROLE_NAMES = ("query", "gallery")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
RESIZES = ("square", "shorter_center_crop")


def parse_background(value: object, where: str) -> tuple[int, int, int]:
    """The RGB colour transparent pixels are composited onto, from "white", "black" or "#rrggbb"."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in BACKGROUNDS:
        return BACKGROUNDS[text]
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    raise UserError(f'{where}: background = {value!r} — use "white", "black" or a colour "#rrggbb" (e.g. "#808080")')


def check_resize(value: object, where: str) -> str:
    """How `image_size` makes an image square: "square" stretches it, "shorter_center_crop" keeps its aspect."""
    if value not in RESIZES:
        raise UserError(
            f'{where}: resize = {value!r} — use "square" (stretch to image_size × image_size) or '
            f'"shorter_center_crop" (shorter side to image_size, then the centre square)'
        )
    return str(value)


def check_decoding(background: object, max_pixels: object, resize: object, where: str) -> tuple[tuple[int, int, int], int, str]:
    """A file dataset's decoding arguments checked: (RGB background, pixel limit, resize rule)."""
    return parse_background(background, where), check_max_pixels(max_pixels, where), check_resize(resize, where)


def decoding(background: tuple[int, int, int], max_pixels: int, resize: str = "square") -> dict:
    """How the files were decoded, as a checkpoint records it so that `bench embed` decodes new files the same way
    ("resize" only when it is not the default stretch, so older records read the same)."""
    return {"background": list(background), "max_pixels": max_pixels, **({"resize": resize} if resize != "square" else {})}


def check_max_pixels(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where}: max_pixels = {value!r} — use 0 (Pillow's own limit) or the largest width × height to accept")
    return value


def decode_images(
    names: Sequence[str],
    open_file: Callable[[str], str | IO[bytes]],
    where: str,
    image_size: int = 0,
    channels: int = 0,
    background: tuple[int, int, int] | None = None,
    max_pixels: int = 0,
    raise_limit: str = "the dataset argument max_pixels = {n}",
    resize: str = "square",
) -> np.ndarray:
    """Decode every image once with Pillow into one uint8 (N, C, H, W) array.

    `open_file(name)` gives a path or a binary file object (a zip member). `image_size` makes every image an
    `image_size` square (0 = keep the size, which must then be the same for all): `resize = "square"` stretches
    it; "shorter_center_crop" scales its shorter side to `image_size` and keeps the centre square (the
    natural-image evaluation pipeline: the aspect ratio is kept, the ends of the longer side are cut); `channels` is 1, 3 or 0 (3 if any image has
    colour, else 1). A file Pillow cannot read fails with its name.
    Product-photo conventions: EXIF orientation is applied; images with alpha (RGBA, LA, a tRNS chunk) are
    alpha-blended onto `background` (an RGB triple; None drops the alpha and keeps the colour under it);
    16-bit grey is scaled to 8 bits; palette and CMYK convert to the channels. An image over Pillow's
    decompression-bomb limit (`max_pixels`, 0 = Pillow's own) fails with its name, never a warning, and says
    how to raise it (`raise_limit`, formatted with the image's pixel count `n`).
    """
    from PIL import Image

    if channels not in (0, 1, 3):
        raise UserError(f"{where}: channels = {channels} — set it to 1 (gray), 3 (colour) or 0 (as the files are)")
    arrays: list[np.ndarray] = []
    size = (image_size, image_size) if image_size else None
    with _pixel_limit(max_pixels):
        for name in names:
            im = _read(name, open_file, where, channels, background, raise_limit)
            if size is None:
                size, first = im.size, name
            if im.size != size:
                if not image_size:
                    raise UserError(
                        f"{where}: {name!r} is {im.size[0]}x{im.size[1]} but {first!r} is {size[0]}x{size[1]} — set image_size to resize all images to one size"
                    )
                im = im.resize(size, Image.BILINEAR, box=_centre_square(im.size) if resize == "shorter_center_crop" else None, reducing_gap=3.0)
            a = np.asarray(im, dtype=np.uint8)
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if not channels and any(a.shape[0] == 3 for a in arrays):  # mixed: gray images join as gray RGB
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return np.stack(arrays)


def _centre_square(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The (left, upper, right, lower) box of the largest centred square in a `size` (width, height) image."""
    w, h = size
    side = min(w, h)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit set to `max_pixels` (0 = leave it), its warning raised as an error.

    Pillow only warns between 1× and 2× its limit and then decodes anyway, which for a real bomb is a hang.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _read(
    name: str,
    open_file: Callable[[str], str | IO[bytes]],
    where: str,
    channels: int,
    background: tuple[int, int, int] | None,
    raise_limit: str = "the dataset argument max_pixels = {n}",
):
    """One file as an upright L (channels 1) or RGB (channels 3) image; channels 0 keeps the file's gray or colour."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(open_file(name)) as im:
            mode = channels or (1 if im.mode in GRAY_MODES else 3)
            return _convert(ImageOps.exif_transpose(im), "L" if mode == 1 else "RGB", background)  # also forces the full decode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found[1]) if found else 0
        has = f"has {pixels:,} pixels" if pixels else "is too large"
        raise UserError(
            f"{where}: image {name!r} {has}, over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} — "
            f"resize it, or raise the limit with {raise_limit.format(n=pixels or 'N')} if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{where}: cannot read image {name!r} ({type(exc).__name__}: {exc}) — fix or remove that file") from exc


def _convert(im, target: str, background: tuple[int, int, int] | None):
    """`im` in mode `target` ("L" or "RGB") by the conventions in `decode_images`."""
    from PIL import Image

    if im.mode in SIXTEEN_BIT_MODES:
        # Pillow clips 16-bit grey at 255 when it converts to L; scale 0..65535 to 0..255 instead (65535 = 255 × 257)
        values = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray(((values + 128) // 257).astype(np.uint8))
    elif background is not None and (im.mode in ALPHA_MODES or "transparency" in im.info):
        # out = a·fg + (1 − a)·bg: Pillow's alpha_composite over an opaque background, rounded to uint8
        im = Image.alpha_composite(Image.new("RGBA", im.size, (*background, 255)), im.convert("RGBA"))
    elif im.mode == "P" and "transparency" in im.info:
        # Per-entry alpha (a PNG tRNS chunk) has no meaning in L or RGB; Pillow warns on a direct
        # conversion and asks for RGBA first. The alpha is then dropped, keeping palette colours.
        im = im.convert("RGBA")
    return im.convert(target)


def encode_labels(raw: Sequence, where: str, rows: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids 0..K-1 and their names from labels that must each be a string or an int.

    Floats are refused rather than turned into names: 3.0 next to 3 would silently make two classes.
    Integer labels sort numerically, strings alphabetically. `rows` names each label's origin in errors.
    """
    names = []
    for i, value in enumerate(raw):
        origin = rows[i] if rows is not None else f"label {i}"
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, int, np.integer, np.str_)):
            raise UserError(f"{where}: {origin} has label {value!r} of type {type(value).__name__} — labels must be strings or ints")
        text = str(value).strip()
        if not text:
            raise UserError(f"{where}: {origin} has an empty label — give every image a class label")
        if isinstance(value, str) and _is_float(text) and not _is_int(text):
            raise UserError(f"{where}: {origin} has label {value!r}, a float — labels must be strings or ints (write {text.split('.')[0]!r} or a name)")
        names.append(text)
    unique = sorted(set(names), key=lambda n: (0, int(n), n) if _is_int(n) else (1, 0, n))
    index = {n: i for i, n in enumerate(unique)}
    return np.array([index[n] for n in names], dtype=np.int64), tuple(unique)


def _parses_as(text: str, kind: type) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def _is_int(text: str) -> bool:
    return _parses_as(text, int)


def _is_float(text: str) -> bool:
    return _parses_as(text, float)


def check_labels(labels: np.ndarray, class_names: Sequence[str], split: np.ndarray | None, where: str) -> None:
    """The checks every loader runs before decoding: 2+ classes, 2+ images per class, a class-disjoint split."""
    counts = np.bincount(labels, minlength=len(class_names))
    if len(class_names) < 2:
        raise UserError(f"{where}: found {len(class_names)} class(es) — metric learning needs at least 2; add classes")
    if (counts < 2).any():
        small = [f"{class_names[i]!r} ({counts[i]})" for i in np.flatnonzero(counts < 2)[:3]]
        more = f" and {int((counts < 2).sum()) - 3} more" if (counts < 2).sum() > 3 else ""
        raise UserError(f"{where}: class {', '.join(small)}{more} has fewer than 2 images — add images or remove the class")
    if split is not None:
        pairs = np.unique(np.stack([labels, np.unique(split, return_inverse=True)[1]]), axis=1)
        ids, n_splits = np.unique(pairs[0], return_counts=True)
        if (n_splits > 1).any():
            c = ids[n_splits > 1][0]
            in_splits = sorted(set(split[labels == c]))
            raise UserError(
                f"{where}: class {class_names[c]!r} is in splits {', '.join(in_splits)} — splits are class-disjoint; put all its images in one split"
            )
        for name in SPLIT_NAMES:
            classes = np.unique(labels[split == name])
            if len(classes) < 2 and (name != "val" or len(classes)):
                have = f"only class {class_names[classes[0]]!r}" if len(classes) else "no classes"
                raise UserError(f"{where}: the {name!r} split has {have} — a split needs at least 2 classes; mark more classes {name!r}")
