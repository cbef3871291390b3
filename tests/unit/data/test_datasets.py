"""Every dataset loader on small on-disk fixtures, the class-disjoint split and k-fold, and the bad-data catalogue."""

from __future__ import annotations

import gzip
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datafixtures import OMNIGLOT, make_csv, make_folder, omniglot_zip, png_bytes, write_idx_set, write_png
from PIL import Image

from bench.data.common import decode_images, encode_labels
from bench.data.datasets import csv, digits, folder, mnist, omniglot, split_classes
from bench.errors import UserError
from bench.plugins import DATASETS, LabelledImages

# ---------------------------------------------------------------- loaders


def test_folder_reads_classes_labels_and_pixels(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 3})
    (tmp_path / "notes.md").write_text("files directly in root are not a class")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0junk")
    data = folder(str(tmp_path))
    assert data.class_names == ("cat", "dog") and data.native == {"channels": 1, "size": [8, 8]}
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.images[:, 0, 0, 0].tolist() == [0, 1, 10, 11, 12]  # value 10 × class + index, read back exactly


def test_folder_colour_resize_and_forced_channels(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2}, size=(12, 6))
    write_png(tmp_path / "b" / "rgb.png", 100, (12, 6), "RGB")
    data = folder(str(tmp_path))
    assert data.images.shape == (5, 3, 6, 12)  # any colour image makes the set colour; gray ones are replicated
    gray = data.images[data.labels == 0]
    assert (gray[:, 0] == gray[:, 1]).all() and (gray[:, 1] == gray[:, 2]).all()
    assert folder(str(tmp_path), image_size=4, channels=1).images.shape == (5, 1, 4, 4)


PALETTE = [(255, 0, 0), (0, 128, 255), (10, 200, 30)]


def palette_png_with_trns(path: Path) -> Path:
    """A 3×2 palette PNG whose tRNS chunk gives each palette entry its own alpha (bytes transparency)."""
    im = Image.new("P", (3, 2))
    im.putpalette([v for rgb in PALETTE for v in rgb])
    im.putdata([0, 1, 2, 2, 1, 0])
    im.save(path, transparency=bytes([0, 128, 255]))
    with Image.open(path) as back:
        assert back.mode == "P" and isinstance(back.info["transparency"], bytes)  # the case Pillow warns about
    return path


@pytest.mark.parametrize("channels", [0, 1, 3])
def test_palette_png_with_transparency_decodes_without_warning(tmp_path, channels):
    path = palette_png_with_trns(tmp_path / "p.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = decode_images([str(path)], str, "test", channels=channels)
    rgb = np.array([PALETTE[i] for i in (0, 1, 2, 2, 1, 0)]).reshape(2, 3, 3).transpose(2, 0, 1)  # (C, H, W)
    if channels == 1:  # ITU-R 601-2 luma, as Pillow's L; alpha is dropped, not blended
        luma = (rgb * np.array([299, 587, 114])[:, None, None]).sum(0) / 1000
        assert images.shape == (1, 1, 2, 3) and np.abs(images[0, 0] - luma).max() <= 0.5
    else:
        assert images.shape == (1, 3, 2, 3) and (images[0] == rgb).all()


def test_csv_manifest_relative_paths_int_labels_and_own_split(tmp_path):
    rows = [
        ("img/a0.png", 3, "train"),
        ("img/a1.png", 3, "train"),
        ("img/b0.png", 10, "train"),
        ("img/b1.png", 10, "train"),
        ("other/c0.png", 2, "test"),
        ("other/c1.png", 2, "test"),
        ("other/d0.png", "x", "test"),
        ("other/d1.png", "x", "test"),
    ]
    manifest = make_csv(tmp_path / "cat", rows)
    data = csv(str(manifest))
    assert data.class_names == ("2", "3", "10", "x")  # integers numerically, then names
    assert data.labels.tolist() == [1, 1, 2, 2, 0, 0, 3, 3]
    assert data.split.tolist() == ["train"] * 4 + ["test"] * 4
    train, val, test, record = split_classes(data, test_fraction=0.9, seed=0)
    assert set(data.labels[test]) == {0, 3} and len(val) == 0 and record["test_rule"] == "dataset"


def test_csv_without_split_column(tmp_path):
    manifest = make_csv(tmp_path, [("a.png", "shoe"), ("b.png", "shoe"), ("c.png", "bag"), ("d.png", "bag")], header="path,label")
    data = csv(str(manifest))
    assert data.split is None and data.class_names == ("bag", "shoe") and data.images.shape == (4, 1, 8, 8)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_plain_and_gzipped(tmp_path, gz):
    written = write_idx_set(tmp_path, gz=gz)
    data = mnist(str(tmp_path))
    assert data.images.shape == (50, 1, 28, 28) and len(data.class_names) == 10
    assert np.array_equal(data.images[:30, 0], written["train"][0]) and np.array_equal(data.images[30:, 0], written["t10k"][0])
    assert np.array_equal(data.labels, np.concatenate([written["train"][1], written["t10k"][1]]))
    only_test = mnist(str(tmp_path), files="t10k")
    assert np.array_equal(only_test.images[:, 0], written["t10k"][0])


def test_idx_torchvision_layout_and_kind_names(tmp_path):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = mnist(str(tmp_path), kind="fashion-mnist")
    assert data.class_names[0] == "T-shirt/top" and len(data.labels) == 50


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    data = mnist("/usr/share/datasets/fashion-mnist", kind="fashion-mnist", files="t10k")
    assert data.images.shape == (10000, 1, 28, 28) and np.bincount(data.labels).tolist() == [1000] * 10


def _omniglot_root(tmp_path: Path) -> Path:
    omniglot_zip(tmp_path / "images_background.zip", "images_background", {"Greek": 3, "Latin": 2})
    omniglot_zip(tmp_path / "images_evaluation.zip", "images_evaluation", {"Atlantean": 2, "Latin": 1})
    return tmp_path


def test_omniglot_zip_split_metadata_and_overlap(tmp_path):
    data = omniglot(str(_omniglot_root(tmp_path)))
    assert data.images.shape[1:] == (1, 105, 105) and set(np.unique(data.images)) == {0, 255}
    train_classes = {data.class_names[c] for c in data.labels[data.split == "train"]}
    test_classes = {data.class_names[c] for c in data.labels[data.split == "test"]}
    # Latin/character01 is in both sets: it stays in test and leaves train, so the split is class-disjoint
    assert test_classes == {"Atlantean/character01", "Atlantean/character02", "Latin/character01"}
    assert train_classes == {"Greek/character01", "Greek/character02", "Greek/character03", "Latin/character02"}
    assert data.meta["split"]["train_classes_dropped_as_also_in_test"] == 1
    assert set(data.attributes["drawer"]) == {1, 2, 3}
    assert {a for a, s in zip(data.attributes["alphabet"], data.split) if s == "train"} == {"Greek", "Latin"}
    only_background = omniglot(str(tmp_path), evaluation="")
    assert only_background.split is None and len(only_background.class_names) == 5


def test_omniglot_torchvision_extracted_layout(tmp_path):
    for name, alphabet in (("images_background", "Greek"), ("images_evaluation", "Tifinagh")):
        with zipfile.ZipFile(omniglot_zip(tmp_path / f"{name}.zip", name, {alphabet: 2})) as z:
            z.extractall(tmp_path / "omniglot-py")
        (tmp_path / f"{name}.zip").unlink()
    data = omniglot(str(tmp_path))
    assert data.class_names == ("Greek/character01", "Greek/character02", "Tifinagh/character01", "Tifinagh/character02")
    assert data.meta["sources"]["train"].endswith("omniglot-py/images_background")
    assert data.split.tolist() == ["train"] * 6 + ["test"] * 6


@pytest.mark.skipif(not OMNIGLOT.is_dir(), reason=f"{OMNIGLOT} (the Omniglot small1/small2 zips) is not present")
def test_real_omniglot_small1_to_small2():
    data = omniglot(str(OMNIGLOT), background="images_background_small1", evaluation="images_background_small2")
    assert data.images.shape == (4840, 1, 105, 105) and data.images.dtype == np.uint8
    assert np.bincount(data.labels).min() == 20 and len(data.class_names) == 136 - 50 + 156
    assert data.meta["split"]["train_classes_dropped_as_also_in_test"] == 50  # Greek and Latin are in both zips
    train, val, test, record = split_classes(data, 0.4, 0, folds=4, fold=0)
    assert record["n_test_classes"] == 156 and record["n_train_classes"] + record["n_val_classes"] == 86
    assert not set(data.labels[train]) & set(data.labels[test])
    assert set(data.attributes["drawer"]) == set(range(1, 21))


def test_every_builtin_is_registered():
    assert {"digits", "folder", "csv", "mnist", "omniglot"} <= {name for name, _ in DATASETS.list()}


# ---------------------------------------------------------------- splits


def _synthetic(n_classes: int = 20, per_class: int = 3, split: list[str] | None = None) -> LabelledImages:
    labels = np.repeat(np.arange(n_classes), per_class)
    split_array = np.repeat(np.array(split), per_class) if split else None
    return LabelledImages(np.zeros((len(labels), 1, 2, 2), np.uint8), labels, tuple(f"c{i:02d}" for i in range(n_classes)), split_array)


def _classes(data: LabelledImages, idx: np.ndarray) -> set[int]:
    return set(data.labels[idx].tolist())


@pytest.mark.parametrize("kwargs", [{}, {"val_fraction": 0.2}, {"folds": 3, "fold": 2}, {"test_classes": ["c01", "c05"], "val_fraction": 0.1}])
def test_split_is_class_disjoint_covering_and_deterministic(kwargs):
    data = _synthetic()
    train, val, test, record = split_classes(data, 0.3, seed=7, **kwargs)
    assert not (_classes(data, train) & _classes(data, test) or _classes(data, train) & _classes(data, val) or _classes(data, val) & _classes(data, test))
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(data.labels)))  # every image once
    again = split_classes(data, 0.3, seed=7, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again[:3])) and again[3] == record
    json.dumps(record)  # goes into the result row as is
    assert record["n_test_classes"] == len(_classes(data, test)) and record["n_train_images"] == len(train)


def test_split_fractions_seeds_and_explicit_lists():
    data = _synthetic()
    train, val, test, record = split_classes(data, 0.25, seed=0, val_fraction=0.15)
    assert (len(_classes(data, test)), len(_classes(data, val)), len(_classes(data, train))) == (5, 3, 12)
    other = split_classes(data, 0.25, seed=1, val_fraction=0.15)
    assert _classes(data, other[2]) != _classes(data, test) and other[3]["test_classes_sha256"] != record["test_classes_sha256"]
    _, val, test, record = split_classes(data, 0.25, seed=0, test_classes=["c03", "c04", "c19"], val_classes=["c00", "c02"])
    assert _classes(data, test) == {3, 4, 19} and _classes(data, val) == {0, 2} and record["test_rule"] == "listed"


def test_kfold_partitions_the_non_test_classes():
    data = _synthetic(23)
    runs = [split_classes(data, 0.3, seed=3, folds=4, fold=k) for k in range(4)]
    tests = {frozenset(_classes(data, r[2])) for r in runs}
    assert len(tests) == 1  # the test classes stay fixed across folds
    (test,) = tests
    vals = [_classes(data, r[1]) for r in runs]
    assert set().union(*vals) == set(range(23)) - test and sum(map(len, vals)) == 23 - len(test)  # disjoint and covering
    assert sorted(map(len, vals)) == [4, 4, 4, 4]  # 16 non-test classes in near-equal folds
    for (train, _val, _, record), k in zip(runs, range(4)):
        assert _classes(data, train) == set(range(23)) - test - vals[k] and record["fold"] == k and record["folds"] == 4


def test_dataset_split_wins_for_test_and_val_comes_from_the_rest():
    data = _synthetic(8, split=["train"] * 5 + ["test"] * 3)
    train, val, test, record = split_classes(data, 0.9, seed=0, val_fraction=0.25)
    assert _classes(data, test) == {5, 6, 7} and len(_classes(data, val)) == 2 and _classes(data, train) | _classes(data, val) == set(range(5))
    own_val = _synthetic(8, split=["train"] * 3 + ["val"] * 2 + ["test"] * 3)
    assert _classes(own_val, split_classes(own_val, 0.4, 0)[1]) == {3, 4}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_fraction": 0.05}, "the test part has 0 class(es) of 10"),
        ({"test_fraction": 0.9}, "the train part has 1 class(es)"),
        ({"test_fraction": 0.4, "folds": 6}, "the val part has 1 class(es)"),
        ({"test_fraction": 0.4, "folds": 3, "fold": 3}, "fold in 0..folds-1"),
        ({"test_fraction": 0.4, "folds": 3, "val_fraction": 0.2}, "both split.folds and split.val_fraction"),
        ({"test_fraction": 0.4, "test_classes": ["c01", "c1"]}, "unknown class 'c1' — did you mean"),
        ({"test_fraction": 0.4, "test_classes": ["c01", "c02"], "val_classes": ["c02", "c03"]}, "in both the test and the val"),
        ({"test_fraction": 1.0}, "must each be in [0, 1)"),
    ],
)
def test_split_errors_are_one_line(kwargs, message):
    with pytest.raises(UserError) as exc:
        split_classes(_synthetic(10), seed=0, **kwargs)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_digits_split_matches_the_spine():
    train, val, test, record = split_classes(digits(), 0.4, 0)
    assert (record["n_train_classes"], record["n_test_classes"], len(val)) == (6, 4, 0)


# ---------------------------------------------------------------- bad data: one line naming the path and the fix


def _csv_case(rows, header="path,label,split"):
    return lambda root: lambda: csv(str(make_csv(root, rows, header)))


def _bad_png(root):
    make_folder(root)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return lambda: folder(str(root))


def _truncated_png(root):
    make_folder(root)
    (root / "cat" / "half.png").write_bytes(png_bytes(3, (64, 64))[:60])
    return lambda: folder(str(root))


def _stray_file(root):
    make_folder(root)
    (root / "eel" / "notes.txt").write_text("not an image")
    return lambda: folder(str(root))


def _mixed_sizes(root):
    make_folder(root)
    write_png(root / "eel" / "big.png", 1, (9, 8))
    return lambda: folder(str(root))


def _truncated_idx(root):
    write_idx_set(root, gz=True)
    raw = gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    return lambda: mnist(str(root))


def _not_idx(root):
    write_idx_set(root)
    (root / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    return lambda: mnist(str(root))


def _omniglot_not_png(root):
    path = omniglot_zip(root / "images_background.zip", "images_background", {"Greek": 2})
    omniglot_zip(root / "images_evaluation.zip", "images_evaluation", {"Tifinagh": 2})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("images_background/Greek/character01/readme.txt", "hello")
    return lambda: omniglot(str(root))


BAD_DATA = {
    "missing root": (lambda root: lambda: folder(str(root / "nope")), ["nope", "is not a directory", "set dataset.folder.root"]),
    "empty folder": (lambda root: lambda: folder(str(root)), ["has no class sub-folders", "one sub-folder per class"]),
    "class folder without images": (
        lambda root: (make_folder(root), (root / "fox").mkdir(), lambda: folder(str(root)))[-1],
        ["'fox' (0)", "fewer than 2 images"],
    ),
    "unreadable image": (_bad_png, ["broken.png", "cannot read image", "fix or remove"]),
    "truncated image": (_truncated_png, ["half.png", "cannot read image"]),
    "non-image file": (_stray_file, ["notes.txt", "is not an image file", "remove it"]),
    "class with one image": (
        lambda root: (make_folder(root, {"cat": 2, "dog": 1}), lambda: folder(str(root)))[-1],
        ["'dog' (1)", "fewer than 2 images", "add images or remove"],
    ),
    "one class": (lambda root: (make_folder(root, {"cat": 3}), lambda: folder(str(root)))[-1], ["found 1 class(es)", "at least 2"]),
    "sizes differ": (_mixed_sizes, ["big.png", "9x8", "set image_size"]),
    "csv missing manifest": (lambda root: lambda: csv(str(root / "gone.csv")), ["gone.csv", "does not exist", "path,label"]),
    "csv missing label column": (_csv_case([("a.png", "x")], header="path,class"), ["manifest.csv", "no 'label' column", "path,label[,split]"]),
    "csv no rows": (_csv_case([], header="path,label"), ["manifest.csv", "no rows"]),
    "csv duplicate path": (
        _csv_case([("a.png", "x", "train"), ("./a.png", "y", "train")]),
        ["manifest.csv", "'./a.png' on lines 2 and 3", "remove the duplicate"],
    ),
    "csv missing image": (_csv_case([("a.png", "x", "train"), ("missing.jpg", "x", "train")]), ["missing.jpg", "line 3", "does not exist"]),
    "csv float label": (_csv_case([("a.png", "3.0", "train"), ("b.png", "3", "train")]), ["manifest.csv' line 2", "'3.0'", "strings or ints"]),
    "csv empty label": (_csv_case([("a.png", "x", "train"), ("b.png", "", "train")]), ["line 3", "empty label"]),
    "csv bad split value": (_csv_case([("a.png", "x", "train"), ("b.png", "x", "holdout")]), ["line 3", "'holdout'", "train, val, test"]),
    "csv one class in a split": (
        _csv_case([(f"{c}{i}.png", c, s) for c, s in (("a", "train"), ("b", "train"), ("c", "test")) for i in range(2)]),
        ["manifest.csv", "'test' split has only class 'c'", "at least 2 classes"],
    ),
    "csv class in two splits": (
        _csv_case([(f"{c}{i}.png", c, "test" if (c, i) == ("b", 1) else "train") for c in "abcd" for i in range(2)]),
        ["manifest.csv", "class 'b' is in splits test, train", "class-disjoint"],
    ),
    "idx missing": (lambda root: lambda: mnist(str(root)), ["train-images-idx3-ubyte", "set download = true"]),
    "idx truncated": (_truncated_idx, ["t10k-images-idx3-ubyte.gz", "truncated"]),
    "idx not idx": (_not_idx, ["train-labels-idx1-ubyte", "idx header"]),
    "omniglot missing zip": (lambda root: lambda: omniglot(str(root)), ["images_background.zip", "set download = true"]),
    "omniglot no download for small sets": (
        lambda root: lambda: omniglot(str(root), "images_background_small1", download=True),
        ["images_background_small1", "torchvision can download only"],
    ),
    "omniglot stray file": (_omniglot_not_png, ["readme.txt", "images_background.zip", "original release"]),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_one_line_naming_path_and_fix(tmp_path, case):
    build, expected = BAD_DATA[case]
    load = build(tmp_path)
    with pytest.raises(UserError) as exc:
        load()
    message = str(exc.value)
    assert "\n" not in message and " — " in message  # one line: what is wrong — the fix
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "labels, message",
    [
        ([1, 2.5], "label 2.5 of type float"),
        (["a", None], "type NoneType"),
        ([True, False], "type bool"),
        (["a", " "], "empty label"),
    ],
)
def test_labels_must_be_strings_or_ints(labels, message):
    with pytest.raises(UserError, match="labels must be strings or ints|empty label") as exc:
        encode_labels(labels, "dataset test")
    assert message in str(exc.value)
    assert encode_labels([5, "b", 10, "a"], "x")[1] == ("5", "10", "a", "b")
