"""The Grocery Store dataset read in place: shop photos are queries, iconic images the gallery, held-out products
scored query → gallery through a real grid; `resize`; and its bad inputs as one line, exit 2, nothing written."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from datafixtures import make_grocery
from PIL import Image

from bench.cli import main
from bench.data.common import check_resize, decode_images
from bench.data.grocery import grocery
from bench.errors import UserError


def test_photos_are_queries_and_iconic_images_the_gallery(tmp_path):
    make_grocery(tmp_path)
    for root in (tmp_path, tmp_path / "dataset"):  # the clone or its dataset/ folder
        data = grocery(str(root), image_size=16)
        assert data.images.shape == (21 + 6, 3, 16, 16) and data.split is None
        assert data.class_names == ("Pink-Lady", "Royal-Gala", "Banana", "Oat-Milk", "Leek", "Cabbage")  # classes.csv's id order
        roles, labels = data.attributes["role"], data.labels
        assert (roles == "query").sum() == 21 and (roles == "gallery").sum() == 6
        assert sorted(labels[roles == "gallery"].tolist()) == list(range(6))  # one iconic image per product
        assert np.bincount(labels[roles == "query"]).tolist() == [4, 3, 4, 3, 3, 4]  # train.txt + val.txt + test.txt
        assert data.attributes["coarse"][labels == 1].tolist() == ["Apple"] * 4 and data.meta["decoding"]["resize"] == "shorter_center_crop"
        assert data.meta["n_photos"] == 21 and data.meta["n_iconic"] == 6


def _png(pixels: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer


def test_shorter_center_crop_keeps_the_aspect_and_square_stretches():
    """A 20-wide, 10-tall image with a white centre square on black: the centre crop is all white, the stretch is not."""
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, 5:15] = 255
    crop = decode_images(["x"], lambda _: _png(pixels), "t", 10, 3, resize="shorter_center_crop")
    stretch = decode_images(["x"], lambda _: _png(pixels), "t", 10, 3)
    assert crop.shape == stretch.shape == (1, 3, 10, 10)
    assert crop.min() >= 250 and stretch[0, :, :, 0].max() == 0 and stretch[0, :, :, 5].min() == 255
    with pytest.raises(UserError, match="resize = 'crop'.*shorter_center_crop"):
        check_resize("crop", "t")


GRID = """
name = "shop"
[budget]
max_steps = 3
[train]
precision = "fp32"
batch_size = 8
[split]
test_fraction = 0.5
[eval]
n_way = 2
episodes = 20
[axes]
backbone = ["conv4"]
loss = ["contrastive"]
dataset = ["grocery"]
[backbone.conv4]
image_size = 16
channels = 3
[dataset.grocery]
root = "{root}"
image_size = 16
"""


def test_a_grid_scores_held_out_products_query_to_gallery(tmp_path, monkeypatch):
    make_grocery(tmp_path / "g")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.toml").write_text(GRID.format(root=tmp_path / "g"))
    assert main(["run", "--grid", "grid.toml"]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "results" / "shop.jsonl").read_text().splitlines()]
    m, split = row["metrics"], row["split"]
    assert row["status"] == "ok" and split["n_test_classes"] == 3 and split["n_train_classes"] == 3
    assert m["retrieval_gallery"] == "separate"
    assert m["retrieval_queries"] == split["n_test_images"] - 3  # every held-out shop photo, searched against the 3 iconic images
    assert m["verification_pairs"] == m["retrieval_queries"] * 3


def _missing_iconic(base):
    (base / "iconic-images-and-descriptions" / "Fruit" / "Banana" / "Banana_Iconic.jpg").unlink()


def _no_queries(base):
    for part in ("train", "val", "test"):
        f = base / f"{part}.txt"
        f.write_text("".join(line + "\n" for line in f.read_text().splitlines() if "Leek" not in line))


def _csv_mismatch(base):  # Banana's and Leek's rows swapped ids: the photo folders no longer match
    text = (base / "classes.csv").read_text().replace("Banana,2,", "TMP,2,").replace("Leek,4,", "Banana,4,").replace("TMP,2,", "Leek,2,")
    (base / "classes.csv").write_text(text)


def _unknown_id(base):
    with (base / "test.txt").open("a") as fh:
        fh.write("test/Fruit/Kiwi/Kiwi_001.jpg, 80, 9\n")


def _undecodable(base):
    (base / "val" / "Fruit" / "Apple" / "Pink-Lady" / "Pink-Lady_001.jpg").write_bytes(b"not a jpeg")


def _missing_list(base):
    (base / "val.txt").unlink()


BAD = {
    "missing iconic image": (_missing_iconic, ["'Banana'", "Banana_Iconic.jpg", "no iconic image", "restore"]),
    "product without shop photos": (_no_queries, ["'Leek'", "has no shop photos", "train.txt, val.txt, test.txt"]),
    "classes.csv does not match the folders": (_csv_mismatch, ["is not in a folder of product", "classes.csv does not match"]),
    "class id classes.csv does not list": (_unknown_id, ["test.txt' line", "class id 80", "does not list"]),
    "undecodable photo": (_undecodable, ["cannot read image", "Pink-Lady_001.jpg"]),
    "missing photo list": (_missing_list, ["val.txt' does not exist"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_layouts_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, name):
    break_it, expected = BAD[name]
    make_grocery(tmp_path / "g")
    break_it(tmp_path / "g" / "dataset")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.toml").write_text(GRID.format(root=tmp_path / "g"))
    assert main(["run", "--grid", "grid.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(part in err for part in expected), err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_wrong_root_names_the_file_it_expected(tmp_path):
    with pytest.raises(UserError, match="does not exist.*classes.csv"):
        grocery(str(tmp_path))
    with pytest.raises(UserError, match="is not a directory"):
        grocery(str(tmp_path / "nowhere"))
    make_grocery(tmp_path)
    with pytest.raises(UserError, match="resize = 'stretch'"):
        grocery(str(tmp_path), resize="stretch")
