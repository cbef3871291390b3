"""Product-image decoding through the `folder` loader: alpha blended onto the background, palette, CMYK and
16-bit grey converted, EXIF orientation applied, the decompression-bomb limit a one-line error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from datafixtures import make_csv, make_folder, save_image, write_png
from PIL import Image

from bench.data.common import decode_images
from bench.data.datasets import csv, folder
from bench.errors import UserError

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def load_first(
    root: Path, image: Image.Image, name: str = "0.png", size: tuple[int, int] | None = None, save_args: dict | None = None, **dataset_args
) -> np.ndarray:
    """`image` as the first file of a two-class folder dataset (the rest opaque gray), as `folder` decodes it: (C, H, W)."""
    save_image(root / "a" / name, image, **(save_args or {}))
    for path in (root / "a" / "1.png", root / "b" / "0.png", root / "b" / "1.png"):
        write_png(path, 50, size or image.size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every convention is applied without a Pillow warning
        data = folder(str(root), **dataset_args)
    assert (data.images[1:] == 50).all()  # opaque images are the same whatever the background
    return data.images[0]


def blend(fg: np.ndarray, alpha: np.ndarray, bg) -> np.ndarray:
    """The reference: out = a·fg + (1 − a)·bg with a = alpha / 255, in float, (H, W, C)."""
    a = alpha[..., None] / 255.0
    return a * fg + (1.0 - a) * np.asarray(bg, dtype=float)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, Pillow's definition of L."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def chw(expected: np.ndarray) -> np.ndarray:
    return expected[None] if expected.ndim == 2 else expected.transpose(2, 0, 1)


@pytest.mark.parametrize("background, bg", [(None, WHITE), ("black", BLACK), ("#3366CC", (0x33, 0x66, 0xCC))])
@pytest.mark.parametrize("channels", [3, 1])
def test_rgba_is_alpha_blended_onto_the_background(tmp_path, background, bg, channels):
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)  # the colour under alpha 0 too: it must not show
    alpha = np.array([0, 1, 64, 127, 128, 200, 254, 255, 0, 90] * 2, dtype=np.uint8).reshape(4, 5)
    args = {"background": background} if background else {}  # None: the default, white
    got = load_first(tmp_path, Image.fromarray(np.dstack([fg, alpha])), channels=channels, **args)
    expected = blend(fg, alpha, bg) if channels == 3 else luma(blend(fg, alpha, bg))
    assert got.shape == (channels, 4, 5)
    assert np.abs(got - chw(expected)).max() <= 1  # uint8 rounding (twice for gray)
    if channels == 3:
        assert (got[:, alpha == 0] == np.array(bg)[:, None]).all()  # fully transparent: exactly the background


@pytest.mark.parametrize("background, bg", [("white", 255), ("black", 0)])
def test_gray_with_alpha_is_blended_and_stays_gray(tmp_path, background, bg):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    alpha = np.array([[0, 255, 128, 64], [200, 1, 0, 255], [100, 150, 30, 220]], dtype=np.uint8)
    image = Image.fromarray(np.dstack([gray, alpha]))
    assert image.mode == "LA"
    got = load_first(tmp_path, image, background=background)  # channels 0: gray files give a gray dataset
    expected = blend(gray[..., None].astype(float), alpha, (bg,))[..., 0]
    assert got.shape == (1, 3, 4) and np.abs(got[0] - expected).max() <= 1  # uint8 rounding
    rgb = load_first(tmp_path / "rgb", image, background=background, channels=3)
    assert (rgb == got).all()  # the same gray in every channel


PALETTE = np.array([(255, 0, 0), (0, 128, 255), (10, 200, 30)], dtype=np.uint8)
INDICES = np.array([[0, 1, 2], [2, 1, 0]])


@pytest.mark.parametrize(
    "suffix, transparency, alpha",
    [
        (".png", bytes([0, 128, 255]), [0, 128, 255]),  # a tRNS chunk: one alpha per palette entry
        (".gif", 1, [255, 0, 255]),  # one transparent palette index
    ],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_palette_with_transparency_is_blended(tmp_path, suffix, transparency, alpha, channels):
    image = Image.new("P", (3, 2))
    image.putpalette(PALETTE.flatten().tolist())
    image.putdata(INDICES.flatten().tolist())
    path_name = "0" + suffix
    got = load_first(tmp_path, image, name=path_name, save_args={"transparency": transparency}, channels=channels)
    with Image.open(tmp_path / "a" / path_name) as back:
        assert back.mode == "P" and "transparency" in back.info
    expected = blend(PALETTE[INDICES].astype(float), np.array(alpha)[INDICES], WHITE)
    expected = expected if channels == 3 else luma(expected)
    assert np.abs(got - chw(expected)).max() <= 1


@pytest.mark.parametrize("channels", [0, 3, 1])
def test_cmyk_converts_to_rgb_or_gray(tmp_path, channels):
    rng = np.random.default_rng(2)
    cmyk = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)
    image = Image.frombytes("CMYK", (3, 2), cmyk.tobytes())
    got = load_first(tmp_path, image, name="0.tif", channels=channels)
    c, m, y, k = (cmyk[..., i].astype(float) for i in range(4))
    rgb = np.dstack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)]) / 255
    expected = luma(rgb) if channels == 1 else rgb  # channels 0: CMYK is colour
    assert got.shape == (1 if channels == 1 else 3, 2, 3) and np.abs(got - chw(expected)).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
def test_16_bit_gray_is_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 32768, 65535], [257 * 100, 1000, 65280]], dtype=np.uint16)
    got = load_first(tmp_path, Image.fromarray(values), name="0" + suffix)
    with Image.open(tmp_path / "a" / ("0" + suffix)) as back:
        assert back.mode in ("I;16", "I") and np.asarray(back).max() == 65535  # the file really is 16-bit
    expected = values * 255.0 / 65535.0
    assert got.shape == (1, 2, 3) and np.abs(got[0] - expected).max() <= 0.5 + 1e-9
    assert got[0].tolist() == [[0, 128, 255], [100, 4, 254]]


def test_exif_orientation_6_is_applied(tmp_path):
    stored = (np.arange(6, dtype=np.uint8) * 40).reshape(2, 3)  # 3 wide, 2 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    got = load_first(tmp_path, Image.fromarray(stored), size=(2, 3), save_args={"exif": exif})
    with Image.open(tmp_path / "a" / "0.png") as back:
        assert back.getexif()[0x0112] == 6
    rows, cols = stored.shape
    clockwise = np.array([[stored[rows - 1 - j, i] for j in range(rows)] for i in range(cols)])
    assert got.shape == (1, 3, 2) and (got[0] == clockwise).all()


@pytest.mark.parametrize("limit", [40, 20])  # 8×8 = 64 pixels: over the limit (Pillow warns) and over twice it (Pillow raises)
def test_image_over_the_pixel_limit_is_a_one_line_error(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    make_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError) as exc:
            folder(str(tmp_path))
    message = str(exc.value)
    assert "\n" not in message and " — " in message
    for part in (str(tmp_path / "cat" / "0.png"), "64 pixels", "resize it", "max_pixels = 64"):
        assert part in message, f"{part!r} not in {message!r}"
    assert limit == Image.MAX_IMAGE_PIXELS  # put back after the failed load
    data = folder(str(tmp_path), max_pixels=64)
    assert data.images.shape == (7, 1, 8, 8) and limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    "args, part",
    [
        ({"background": "grey"}, "background = 'grey'"),
        ({"background": "#12345"}, "'#12345'"),
        ({"background": "#gg0000"}, "'#gg0000'"),
        ({"background": 0}, "background = 0"),
        ({"max_pixels": -1}, "max_pixels = -1"),
    ],
)
@pytest.mark.parametrize("loader", ["folder", "csv"])
def test_bad_background_or_max_pixels_is_a_one_line_error(tmp_path, args, part, loader):
    with pytest.raises(UserError) as exc:
        if loader == "folder":
            folder(str(make_folder(tmp_path)), **args)
        else:
            csv(str(make_csv(tmp_path, [("a.png", "x"), ("b.png", "x"), ("c.png", "y"), ("d.png", "y")], "path,label")), **args)
    message = str(exc.value)
    assert "\n" not in message and part in message and ("#rrggbb" if "background" in args else "Pillow's own limit") in message


def test_csv_blends_onto_its_background_too(tmp_path):
    save_image(tmp_path / "clear.png", Image.new("RGBA", (8, 8), (200, 10, 10, 0)))
    manifest = make_csv(tmp_path, [("clear.png", "x"), ("b.png", "x"), ("c.png", "y"), ("d.png", "y")], "path,label")
    assert (csv(str(manifest)).images[0] == 255).all()
    assert (csv(str(manifest), background="#000000").images[0] == 0).all()


def test_decode_images_without_a_background_keeps_the_colour_under_alpha(tmp_path):
    # Direct callers (Omniglot, and the loaders before backgrounds existed) get the alpha dropped, not blended
    rgba = np.array([[[200, 10, 10, 0], [0, 0, 0, 0], [30, 60, 90, 128]]], dtype=np.uint8)
    path = save_image(tmp_path / "x.png", Image.fromarray(rgba))
    assert (decode_images([str(path)], str, "test")[0] == chw(rgba[..., :3])).all()
