"""Small on-disk datasets written by the tests themselves: PNG folders, CSV manifests, idx files, Omniglot zips."""
from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def png_bytes(value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    color = value if mode in ("L", "1") else (value, 255 - value, value // 2)
    Image.new(mode, size, color=color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(value, size, mode))
    return path


def make_folder(root: Path, classes: dict[str, int] | None = None, size: tuple[int, int] = (8, 8)) -> Path:
    """root/<class>/<i>.png, pixel value 10 × class index + i so tests can tell images apart."""
    for c, (name, count) in enumerate((classes or {"cat": 2, "dog": 3, "eel": 2}).items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_png(root / name / f"{i}.png", 10 * c + i, size)
    return root


def make_csv(root: Path, rows: list[tuple], header: str = "path,label,split") -> Path:
    """Writes each row's image (if its path is under root and missing) and the manifest root/manifest.csv."""
    for row in rows:
        target = root / row[0]
        if not target.exists() and row[0].endswith(".png"):
            write_png(target, len(row[0]) * 7 % 256)
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join([header, *(",".join(str(v) for v in row) for row in rows)]) + "\n")
    return manifest


def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_per_part: dict[str, int] | None = None, gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """train-/t10k- images (N, 28, 28) and labels cycling 0..9; returns what it wrote, for comparison."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, n in (n_per_part or {"train": 30, "t10k": 20}).items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, array in ((f"{part}-images-idx3-ubyte", images), (f"{part}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
        written[part] = images, labels
    return written


def omniglot_zip(path: Path, top: str, characters: dict[str, int], drawers: int = 3) -> Path:
    """An Omniglot-layout zip: top/<alphabet>/characterNN/<id>_<drawer>.png, as the original release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/", "")
        char_id = 0
        for alphabet, n_chars in characters.items():
            for c in range(1, n_chars + 1):
                char_id += 1
                for d in range(1, drawers + 1):
                    z.writestr(f"{top}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png", png_bytes(255 * (d % 2), (105, 105), "1"))
    return path


def save_image(path: Path, image: Image.Image, **save_args) -> Path:
    """Writes a Pillow image (any mode the format takes; `save_args` such as transparency= or exif=) to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_args)
    return path


def make_role_folder(root: Path, layout: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """root/<class>/<role>/<i>.png for each class's {role: count} ("" = directly in the class folder).

    Every image has its own gray value; returns (class, role, value) per image so tests can check roles by pixel.
    """
    written, value = [], 0
    for name, roles in layout.items():
        for role, count in roles.items():
            for i in range(count):
                write_png(root / name / role / f"{i}.png", value)
                written.append((name, role, value))
                value += 1
    return written


def noise_classes(root: Path, layout: dict[str, dict[str, int]], seed: int = 0, noise: float = 40.0) -> Path:
    """root/<class>/<role>/<i>.png of class-structured noise: a per-class 16×16 grey pattern plus per-image
    noise, so a network can learn the classes; {class: {role: count}}, role "" = directly in the class folder."""
    rng = np.random.default_rng(seed)
    for name, roles in layout.items():
        base = rng.integers(0, 256, (16, 16))
        for role, count in roles.items():
            folder = root / name / role
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(np.clip(base + rng.normal(0, noise, (16, 16)), 0, 255).astype(np.uint8), "L").save(folder / f"{i}.png")
    return root
