"""The standard metric-learning datasets (CUB-200-2011, Cars196, SOP, In-Shop) read from miniature fakes of their
release layouts: the published class-disjoint protocols, the roles, and one-line errors for broken layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from datafixtures import make_cars, make_cub, make_inshop, make_sop

from bench.cli import main
from bench.data.datasets import split_classes
from bench.data.standard import cars196, cub, inshop, sop
from bench.errors import UserError
from bench.plugins import DATASETS


def classes_of(data, part: str) -> set[str]:
    return {data.class_names[c] for c in np.unique(data.labels[data.split == part])}


# ---------------------------------------------------------------- the protocols


def test_every_standard_dataset_is_registered_and_listed(capsys):
    assert {"cub", "cars196", "sop", "inshop"} <= {name for name, _ in DATASETS.list()}
    assert main(["ls", "datasets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("cub", "cars196", "sop", "inshop"))


def test_cub_classes_1_to_100_train_the_rest_test(tmp_path):
    root = make_cub(tmp_path)
    data = cub(str(tmp_path), image_size=8, resize="shorter_center_crop")  # the parent of CUB_200_2011/ is accepted
    assert data.images.shape == (12, 3, 8, 8) and data.images.dtype == np.uint8
    assert data.class_names == ("001.Bird_1", "002.Bird_2", "101.Bird_101", "102.Bird_102")
    assert classes_of(data, "train") == {"001.Bird_1", "002.Bird_2"} and classes_of(data, "test") == {"101.Bird_101", "102.Bird_102"}
    assert data.meta["root"] == str(root) and "classes 1-100 train, 101-200 test" in data.meta["protocol"]
    assert data.meta["split"]["train_classes"] == 2 and data.meta["split"]["test_classes"] == 2
    assert data.meta["decoding"] == {"background": [255, 255, 255], "max_pixels": 0, "resize": "shorter_center_crop"}  # bench embed decodes new photos alike
    stretched = cub(str(root), image_size=8)  # the folder itself too; "square" stretches, so the pixels differ
    assert stretched.images.shape == data.images.shape and not np.array_equal(stretched.images, data.images)
    _, _, test, record = split_classes(data, 0.5, 0)
    assert record["test_rule"] == "dataset" and set(data.labels[test]) == {2, 3}
    assert record["dataset_split"]["protocol"] == data.meta["protocol"]


def test_cars196_classes_1_to_98_train_the_rest_test_ignoring_the_test_flag(tmp_path):
    make_cars(tmp_path)
    data = cars196(str(tmp_path), image_size=10, channels=1)
    assert data.images.shape == (12, 1, 10, 10)
    assert data.class_names == ("Maker Model 1 2012", "Maker Model 2 2012", "Maker Model 99 2012", "Maker Model 100 2012")
    assert classes_of(data, "train") == {"Maker Model 1 2012", "Maker Model 2 2012"}
    assert list(data.split).count("test") == 6 and "99-196 test" in data.meta["protocol"]


def test_sop_train_and_test_files_with_super_class(tmp_path):
    make_sop(tmp_path)
    data = sop(str(tmp_path), image_size=6)
    assert data.images.shape == (10, 3, 6, 6)
    assert classes_of(data, "train") == {"1", "2", "3"} and classes_of(data, "test") == {"4", "5"}
    assert data.attributes["super_class"].tolist()[:4] == ["chair_final", "chair_final", "bicycle_final", "bicycle_final"]
    assert "Ebay_train.txt classes train" in data.meta["protocol"]


def test_inshop_roles_and_single_image_train_item_dropped(tmp_path):
    make_inshop(tmp_path)
    data = inshop(str(tmp_path), image_size=8)
    roles, split = data.attributes["role"], data.split
    assert len(data.labels) == 12 + 16 and "id_00000009" not in data.class_names
    assert set(roles[split == "train"]) == {""} and sorted(set(roles[split == "test"])) == ["gallery", "query"]
    assert (roles == "query").sum() == 8 and (roles == "gallery").sum() == 8
    assert classes_of(data, "test") == {f"id_{k:08d}" for k in range(5, 9)}
    assert data.meta["split"]["train_classes_dropped_single_image"] == 1


def test_inshop_release_layout_with_eval_and_img_folders(tmp_path):
    make_inshop(tmp_path / "tmp", single=False)
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Img").mkdir()
    (tmp_path / "tmp" / "list_eval_partition.txt").rename(tmp_path / "Eval" / "list_eval_partition.txt")
    (tmp_path / "tmp" / "img").rename(tmp_path / "Img" / "img")
    assert len(inshop(str(tmp_path), image_size=8).labels) == 28


GRID = """
name = "inshop"
[budget]
max_steps = 2
[train]
batch_size = 12
precision = "fp32"
[eval]
n_way = 2
episodes = 20
[axes]
backbone = ["conv4"]
loss = ["triplet"]
dataset = ["inshop"]
[backbone.conv4]
image_size = 16
[dataset.inshop]
root = "{root}"
image_size = 16
resize = "shorter_center_crop"
"""


def test_inshop_grid_uses_the_protocol_and_searches_queries_against_the_gallery(tmp_path, monkeypatch):
    make_inshop(tmp_path / "inshop")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text(GRID.format(root=tmp_path / "inshop"))
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "results" / "inshop.jsonl").read_text().splitlines()]
    m, split = row["metrics"], row["split"]
    assert row["status"] == "ok", row.get("error")
    assert split["test_rule"] == "dataset" and "In-Shop" in split["dataset_split"]["protocol"]
    assert split["n_train_classes"] == 4 and split["n_test_classes"] == 4
    assert m["retrieval_gallery"] == "separate" and m["retrieval_queries"] == 8


# ---------------------------------------------------------------- broken layouts: one line naming the file


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _replace(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def _cub(change):
    def case(tmp):
        root = make_cub(tmp)
        change(root)
        return cub(str(root), image_size=8)

    return case


def _cars(change, **kwargs):
    def case(tmp):
        make_cars(tmp, **kwargs)
        change(tmp)
        return cars196(str(tmp), image_size=8)

    return case


def _sop(change, **kwargs):
    def case(tmp):
        root = make_sop(tmp, **kwargs)
        change(root)
        return sop(str(root), image_size=8)

    return case


def _inshop(change, **kwargs):
    def case(tmp):
        make_inshop(tmp, **kwargs)
        change(tmp)
        return inshop(str(tmp), image_size=8)

    return case


def _devkit_mat(root: Path) -> None:
    scipy.io.savemat(
        str(root / "cars_annos.mat"),
        {"annotations": np.array([[("000001.jpg", 1)]], dtype=[("fname", object), ("class", object)]), "class_names": np.array([["A"]], dtype=object)},
    )


CASES = {
    "cub root missing": (lambda tmp: cub(str(tmp / "nope")), ["nope", "is not a directory", "CUB_200_2011"]),
    "cub images.txt missing": (_cub(lambda r: (r / "images.txt").unlink()), ["images.txt does not exist", "dataset.cub.root"]),
    "cub labels missing": (_cub(lambda r: (r / "image_class_labels.txt").unlink()), ["image_class_labels.txt does not exist"]),
    "cub classes missing": (_cub(lambda r: (r / "classes.txt").unlink()), ["classes.txt does not exist"]),
    "cub image missing": (
        _cub(lambda r: (r / "images/002.Bird_2/Bird_2_1.jpg").unlink()),
        ["Bird_2_1.jpg", "images.txt", "does not exist", "partially extracted"],
    ),
    "cub malformed line": (_cub(lambda r: _append(r / "images.txt", "13\n")), ["images.txt line 13 is malformed"]),
    "cub class not an int": (
        _cub(lambda r: _replace(r / "image_class_labels.txt", "1 1\n", "1 one\n")),
        ["image_class_labels.txt line 1 is malformed", "'one'"],
    ),
    "cub duplicate id": (_cub(lambda r: _append(r / "classes.txt", "2 002.Again\n")), ["classes.txt lists id 2 on lines 2 and 5"]),
    "cub class out of range": (
        _cub(lambda r: (_append(r / "classes.txt", "201 201.X\n"), _replace(r / "image_class_labels.txt", "12 102", "12 201"))),
        ["image_class_labels.txt gives class id 201, outside 1–200"],
    ),
    "cub no test classes": (
        lambda tmp: cub(str(make_cub(tmp, classes=(1, 2, 3))), image_size=8),
        ["image_class_labels.txt has no images of classes 101–200", "partial"],
    ),
    "cub class not in classes.txt": (_cub(lambda r: _replace(r / "classes.txt", "102 102.Bird_102\n", "")), ["class 102", "classes.txt does not list"]),
    "cub image without label": (_cub(lambda r: _replace(r / "image_class_labels.txt", "12 102\n", "")), ["image id 12", "image_class_labels.txt"]),
    "cub bad resize": (lambda tmp: cub(str(make_cub(tmp)), image_size=8, resize="crop"), ["dataset cub", "resize = 'crop'", "shorter_center_crop"]),
    "cars root missing": (lambda tmp: cars196(str(tmp / "nope")), ["nope", "is not a directory", "cars_annos.mat"]),
    "cars mat missing": (_cars(lambda r: (r / "cars_annos.mat").unlink()), ["cars_annos.mat does not exist", "dataset.cars196.root"]),
    "cars image missing": (_cars(lambda r: (r / "car_ims/000004.jpg").unlink()), ["car_ims/000004.jpg", "cars_annos.mat", "partially extracted"]),
    "cars class out of range": (_cars(lambda r: None, classes=(1, 2, 197)), ["cars_annos.mat gives class id 197, outside 1–196"]),
    "cars too few class names": (_cars(lambda r: None, n_names=195), ["cars_annos.mat has 195 class names", "196"]),
    "cars no test classes": (_cars(lambda r: None, classes=(1, 2, 98)), ["no images of classes 99–196", "partial"]),
    "cars devkit file": (_cars(_devkit_mat), ["cars_annos.mat has no annotations fields relative_im_path", "fname", "devkit"]),
    "cars not a mat file": (_cars(lambda r: (r / "cars_annos.mat").write_text("not matlab")), ["cannot read", "cars_annos.mat"]),
    "sop root missing": (lambda tmp: sop(str(tmp / "nope")), ["nope", "is not a directory", "Stanford_Online_Products"]),
    "sop test list missing": (_sop(lambda r: (r / "Ebay_test.txt").unlink()), ["Ebay_test.txt does not exist", "dataset.sop.root"]),
    "sop header wrong": (_sop(lambda r: _replace(r / "Ebay_train.txt", "image_id class_id super_class_id path\n", "")), ["Ebay_train.txt has", "header"]),
    "sop malformed line": (_sop(lambda r: _append(r / "Ebay_test.txt", "99 4 1\n")), ["Ebay_test.txt line 6 is malformed", "3 field(s)"]),
    "sop class id not an int": (
        _sop(lambda r: _replace(r / "Ebay_train.txt", "1 1 2 chair", "1 x 2 chair")),
        ["Ebay_train.txt line 2 is malformed", "class_id"],
    ),
    "sop class in both lists": (_sop(lambda r: None, train=(1, 2, 4)), ["class 4 is in both", "Ebay_train.txt", "Ebay_test.txt"]),
    "sop image missing": (_sop(lambda r: (r / "bicycle_final/1004_1.JPG").unlink()), ["1004_1.JPG", "Ebay_", "partially extracted"]),
    "inshop root missing": (lambda tmp: inshop(str(tmp / "nope")), ["nope", "is not a directory", "list_eval_partition.txt"]),
    "inshop list missing": (_inshop(lambda r: (r / "list_eval_partition.txt").unlink()), ["list_eval_partition.txt does not exist", "dataset.inshop.root"]),
    "inshop count mismatch": (
        _inshop(lambda r: _append(r / "list_eval_partition.txt", "img/x.jpg id_00000001 train\n")),
        ["says 29 images on line 1 but lists 30", "truncated"],
    ),
    "inshop bad status": (
        _inshop(lambda r: _replace(r / "list_eval_partition.txt", "01_1_front.jpg id_00000005 query", "01_1_front.jpg id_00000005 probe")),
        ["list_eval_partition.txt line", "evaluation_status 'probe'"],
    ),
    "inshop malformed line": (
        _inshop(lambda r: _replace(r / "list_eval_partition.txt", "01_1_front.jpg id_00000001 train", "01_1_front.jpg")),
        ["list_eval_partition.txt line 3 is malformed"],
    ),
    "inshop query without gallery": (_inshop(lambda r: None, gallery=0), ["query images of item id_00000005 but no gallery", "list_eval_partition.txt"]),
    "inshop image missing": (
        _inshop(lambda r: (r / "img/WOMEN/Blouses_Shirts/id_00000006/03_1_front.jpg").unlink()),
        ["id_00000006/03_1_front.jpg", "list_eval_partition.txt", "partially extracted"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_layouts_fail_in_one_line_naming_the_file(tmp_path, name):
    case, expected = CASES[name]
    with pytest.raises(UserError) as info:
        case(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("dataset ") and " — " in message, message
    for part in expected:
        assert part in message, message
