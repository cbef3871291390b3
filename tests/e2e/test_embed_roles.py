"""`bench embed` keeps query/gallery roles and decodes as the checkpoint's dataset did (background, max_pixels,
recorded at save time): `bench embed` → `bench evaluate` gives the cell's query→gallery metrics again."""

import json
import shutil

import pytest
from datafixtures import noise_classes
from PIL import Image

from bench.cli import main

GRID = """
name = "roles"
[budget]
max_steps = 4
[train]
batch_size = 12
precision = "fp32"
lr = 0.01
save = "last"
[split]
test_classes = ["c6", "c7", "c8", "c9"]
val_classes = ["c4", "c5"]
[eval]
n_way = 2
episodes = 50
[axes]
backbone = ["conv4"]
loss = ["triplet"]
dataset = ["folder"]
[backbone.conv4]
image_size = 16
[dataset.folder]
root = "{root}"
background = "black"
max_pixels = 1000
"""
COMPARED = (
    "verification_roc_auc",
    "verification_eer",
    "recall_at_1",
    "recall_at_2",
    "map_at_r",
    "few_shot_2way_1shot_accuracy",
    "verification_pairs",
    "retrieval_queries",
    "few_shot_classes",
)


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A cell trained on a catalogue whose 4 test classes have query/ and gallery/ images, under a pixel limit
    (16×16 images, 256 pixels) that only the dataset's max_pixels lets through."""
    mp = pytest.MonkeyPatch()
    mp.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    cwd = tmp_path_factory.mktemp("roles")
    noise_classes(cwd / "cat", {f"c{c}": ({"query": 3, "gallery": 3} if c >= 6 else {"": 6}) for c in range(10)}, noise=60.0)
    (cwd / "g.toml").write_text(GRID.format(root=cwd / "cat"))
    mp.chdir(cwd)
    assert main(["run", "--grid", "g.toml"]) == 0
    [row] = [json.loads(line) for line in (cwd / "results" / "roles.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["metrics"]["retrieval_gallery"] == "separate"
    yield cwd, row, cwd / "results" / row["checkpoint"]["path"]
    mp.undo()


def evaluate_npz(cwd, npz, row) -> dict:
    """`bench evaluate` with the cell's evaluation options (distance, episodes, seed)."""
    out = cwd / (npz.stem + ".json")
    assert (
        main(
            [
                "evaluate",
                str(npz),
                "--distance",
                row["metrics"]["distance"],
                "--n-way",
                "2",
                "--episodes",
                "50",
                "--seed",
                str(row["config"]["split"]["seed"]),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    return json.loads(out.read_text())["metrics"]


def test_the_checkpoint_records_how_the_dataset_decoded_its_files(cell):
    _, _, folder = cell
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["decoding"] == {"background": [0, 0, 0], "max_pixels": 1000}


def test_embed_then_evaluate_reproduces_the_cells_query_gallery_metrics(cell, capsys):
    import numpy as np

    cwd, row, folder = cell
    test = cwd / "test_classes"
    for c in ("c6", "c7", "c8", "c9"):
        shutil.copytree(cwd / "cat" / c, test / c)
    capsys.readouterr()
    assert main(["embed", str(folder), "--folder", str(test), "--out", str(cwd / "folder.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 12
    arrays = np.load(cwd / "folder.npz")
    assert arrays["embeddings"].shape[0] == 12 and arrays["gallery_embeddings"].shape[0] == 12
    assert all("/query/" in p for p in arrays["paths"]) and all("/gallery/" in p for p in arrays["gallery_paths"])
    # the same catalogue as a CSV manifest with a role column
    lines = ["path,label,role", *(f"{p.relative_to(cwd)},{p.parts[-3]},{p.parts[-2]}" for p in sorted(test.rglob("*.png")))]
    (cwd / "test.csv").write_text("\n".join(lines) + "\n")
    assert main(["embed", str(folder), "--csv", str(cwd / "test.csv"), "--out", str(cwd / "csv.npz")]) == 0
    for npz in (cwd / "folder.npz", cwd / "csv.npz"):
        metrics = evaluate_npz(cwd, npz, row)
        assert metrics["retrieval_gallery"] == "separate"
        for key in COMPARED:
            assert metrics[key] == pytest.approx(row["metrics"][key], abs=1e-4), (npz.name, key)


def test_images_with_and_without_roles_are_one_line_errors(cell, capsys):
    cwd, _, folder = cell
    capsys.readouterr()
    assert main(["embed", str(folder), "--folder", str(cwd / "cat"), "--out", str(cwd / "mixed.npz")]) == 2
    err = capsys.readouterr().err
    assert "36 images" in err and "have no role while others have one" in err and len(err.strip().splitlines()) == 1
    assert not (cwd / "mixed.npz").exists()
    only = cwd / "queries_only"
    shutil.copytree(cwd / "cat" / "c6" / "query", only / "c6" / "query")
    assert main(["embed", str(folder), "--folder", str(only), "--out", str(cwd / "q.npz")]) == 2
    assert "give both query and gallery images" in capsys.readouterr().err


def test_an_image_over_the_recorded_pixel_limit_names_the_embed_option(cell, capsys):
    cwd, _, folder = cell
    big = cwd / "big.png"
    Image.new("L", (40, 40), 128).save(big)  # 1,600 pixels: over the dataset's max_pixels = 1000
    capsys.readouterr()
    assert main(["embed", str(folder), str(big), "--out", str(cwd / "big.npz")]) == 2
    err = capsys.readouterr().err
    assert "1,600 pixels" in err and "--max-pixels 1600" in err and len(err.strip().splitlines()) == 1
    assert main(["embed", str(folder), str(big), "--out", str(cwd / "big.npz"), "--max-pixels", "2000"]) == 0
