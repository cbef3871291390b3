"""Small on-disk datasets written by the tests themselves: PNG folders, CSV manifests, idx files, Omniglot zips."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from paths import ROOT
from PIL import Image

OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


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


GROCERY_HEADER = "Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),Iconic Image Path (str),Product Description Path (str)"


def make_grocery(root: Path, products: dict[str, tuple[str, int]] | None = None, seed: int = 0) -> Path:
    """A miniature Grocery Store release at root/dataset: {product: (coarse class, shop photos)}; photos are
    24×32 (portrait, like the release's 348×464) class-coloured noise, iconic images 20×20 JPEGs; the photos
    are dealt round-robin into train.txt, val.txt and test.txt as the release lists them."""
    products = products or {
        "Pink-Lady": ("Apple", 4),
        "Royal-Gala": ("Apple", 3),
        "Banana": ("Banana", 4),
        "Oat-Milk": ("Oat-Milk", 3),
        "Leek": ("Leek", 3),
        "Cabbage": ("Cabbage", 4),
    }
    base, rng = root / "dataset", np.random.default_rng(seed)
    coarse_ids = {c: i for i, c in enumerate(dict.fromkeys(c for c, _ in products.values()))}
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    csv_rows = [GROCERY_HEADER]
    for cid, (name, (coarse, n)) in enumerate(products.items()):
        colour = rng.integers(0, 256, 3)
        folder = f"Fruit/{coarse}/{name}" if coarse != name else f"Fruit/{name}"
        iconic = f"/iconic-images-and-descriptions/{folder}/{name}_Iconic.jpg"
        _noise_image(base / iconic.lstrip("/"), colour, (20, 20), rng, "JPEG")
        csv_rows.append(f"{name},{cid},{coarse},{coarse_ids[coarse]},{iconic},/iconic-images-and-descriptions/{folder}/{name}_Description.txt")
        for i in range(n):
            part = ("train", "val", "test")[i % 3]
            rel = f"{part}/{folder}/{name}_{i:03d}.jpg"
            _noise_image(base / rel, colour, (24, 32), rng, "JPEG")
            lines[part].append(f"{rel}, {cid}, {coarse_ids[coarse]}")
    (base / "classes.csv").write_text("\n".join(csv_rows) + "\n")
    for part, text in lines.items():
        (base / f"{part}.txt").write_text("\n".join(text) + "\n")
    return root


def _noise_image(path: Path, colour: np.ndarray, size: tuple[int, int], rng: np.random.Generator, kind: str) -> None:
    """An RGB image of `size` (width, height): `colour` plus noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.clip(colour[None, None] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, kind)


# The standard metric-learning datasets' release layouts, in miniature (bench.data.standard).


def write_image(path: Path, seed: int, size: tuple[int, int] = (12, 9)) -> None:
    """Class-structured noise, 12×9 (non-square, to exercise resize); JPEG or PNG by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, (1, 1, 3)) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def make_cub(parent: Path, classes=(1, 2, 101, 102), per_class: int = 3) -> Path:
    """parent/CUB_200_2011 with images.txt, image_class_labels.txt, classes.txt and images/."""
    root = parent / "CUB_200_2011"
    images, labels, names = [], [], []
    for c in classes:
        name = f"{c:03d}.Bird_{c}"
        names.append(f"{c} {name}")
        for i in range(per_class):
            image_id = len(images) + 1
            rel = f"{name}/Bird_{c}_{i}.jpg"
            write_image(root / "images" / rel, 100 * c + i)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    for file, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("classes.txt", names)):
        (root / file).write_text("\n".join(lines) + "\n")
    return root


def make_cars(root: Path, classes=(1, 2, 99, 100), per_class: int = 3, n_names: int = 196) -> Path:
    """root/cars_annos.mat (a 1×N struct array as the release's) and root/car_ims/."""
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = []
    for c in classes:
        for i in range(per_class):
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            write_image(root / rel, 100 * c + i)
            rows.append((rel, 1, 1, 11, 8, np.uint8(c), np.uint8(i % 2)))
    annotations = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for j, row in enumerate(rows):
        annotations[0, j] = row
    names = np.empty((1, n_names), dtype=object)
    names[0, :] = [f"Maker Model {k} 2012" for k in range(1, n_names + 1)]
    scipy.io.savemat(str(root / "cars_annos.mat"), {"annotations": annotations, "class_names": names})
    return root


def make_sop(parent: Path, train=(1, 2, 3), test=(4, 5), per_class: int = 2) -> Path:
    """parent/Stanford_Online_Products with Ebay_train.txt, Ebay_test.txt and <category>_final/ folders."""
    root = parent / "Stanford_Online_Products"
    categories = ["bicycle_final", "chair_final"]
    image_id = 0
    for part, classes in (("train", train), ("test", test)):
        lines = ["image_id class_id super_class_id path"]
        for c in classes:
            super_id = c % 2 + 1
            for i in range(per_class):
                image_id += 1
                rel = f"{categories[super_id - 1]}/{1000 + c}_{i}.JPG"
                write_image(root / rel, 100 * c + i)
                lines.append(f"{image_id} {c} {super_id} {rel}")
        (root / f"Ebay_{part}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_inshop(root: Path, train=4, test=4, per_train: int = 3, queries: int = 2, gallery: int = 2, single: bool = True) -> Path:
    """root/list_eval_partition.txt (count, header, rows) and root/img/; items id_00000001.. train first,
    then the test items with query and gallery images; `single` adds a train item with one image."""
    rows = []
    layout = [("train", per_train)] * train + [("test", 0)] * test + ([("train", 1)] if single else [])
    for k, (part, count) in enumerate(layout, 1):
        item = f"id_{k:08d}"
        statuses = ["train"] * count if part == "train" else ["query"] * queries + ["gallery"] * gallery
        for i, status in enumerate(statuses):
            rel = f"img/WOMEN/Blouses_Shirts/{item}/{i + 1:02d}_1_front.jpg"
            write_image(root / rel, 100 * k + i)
            rows.append(f"{rel} {item} {status}")
    (root / "list_eval_partition.txt").write_text("\n".join([str(len(rows)), "image_name item_id evaluation_status", *rows]) + "\n")
    return root
