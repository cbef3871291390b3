"""Query/gallery roles: `query/` and `gallery/` sub-folders in `folder`, a `role` column in `csv`, kept in
`attributes["role"]`; bad values and mixed layouts are one-line errors, and datasets without roles are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from datafixtures import make_csv, make_folder, make_role_folder, write_png

from bench.data.datasets import csv, folder
from bench.errors import UserError


def roles_by_pixel(data) -> set[tuple[str, str, int]]:
    """(class, role, gray value) per image: the fixtures give every image its own value."""
    return {(data.class_names[label], str(role), int(image[0, 0, 0])) for label, role, image in zip(data.labels, data.attributes["role"], data.images)}


def test_folder_role_sub_folders_give_each_image_its_role(tmp_path):
    written = make_role_folder(tmp_path, {"shoe": {"query": 2, "gallery": 3}, "bag": {"query": 1, "gallery": 2}, "hat": {"": 2}})
    write_png(tmp_path / "bag" / "gallery" / "side" / "0.png", 99)  # nested deeper: still the gallery
    data = folder(str(tmp_path))
    assert data.class_names == ("bag", "hat", "shoe") and len(data.labels) == 11
    assert data.attributes["role"].dtype.kind == "U" and set(data.attributes["role"]) == {"query", "gallery", ""}
    assert roles_by_pixel(data) == set(written) | {("bag", "gallery", 99)}  # the roleless class: ""


def test_csv_role_column_gives_each_image_its_role(tmp_path):
    rows = [
        ("s0.png", "shoe", "train", "query"),
        ("s1.png", "shoe", "train", "gallery"),
        ("b0.png", "bag", "train", "gallery"),
        ("b1.png", "bag", "train", "query"),
        ("h0.png", "hat", "test", "query"),
        ("h1.png", "hat", "test", "gallery"),
        ("c0.png", "cap", "test", "gallery"),
        ("c1.png", "cap", "test", "gallery"),
    ]
    data = csv(str(make_csv(tmp_path, rows, header="path,label,split,role")))
    assert data.attributes["role"].tolist() == [r[3] for r in rows]  # rows keep the manifest's order
    assert data.split.tolist() == [r[2] for r in rows]


def test_datasets_without_roles_have_no_role_attribute(tmp_path):
    data = folder(str(make_folder(tmp_path / "plain", {"cat": 2, "dog": 3})))
    assert "role" not in data.attributes and data.attributes == {}
    assert data.labels.tolist() == [0, 0, 1, 1, 1] and data.images[:, 0, 0, 0].tolist() == [0, 1, 10, 11, 12]
    rows = [
        ("a0.png", "a", "train"),
        ("a1.png", "a", "train"),
        ("b0.png", "b", "test"),
        ("b1.png", "b", "test"),
        ("c0.png", "c", "train"),
        ("c1.png", "c", "train"),
        ("d0.png", "d", "test"),
        ("d1.png", "d", "test"),
    ]
    without = csv(str(make_csv(tmp_path / "csv", rows)))
    empty = csv(str(make_csv(tmp_path / "empty", [(*r, "") for r in rows], header="path,label,split,role")))
    for data in (without, empty):
        assert data.attributes == {} and data.split.tolist() == [r[2] for r in rows] and data.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.array_equal(without.images, empty.images)


def _mixed_class_folder(root):
    make_role_folder(root, {"shoe": {"query": 1, "gallery": 2, "": 1}, "bag": {"query": 1, "gallery": 1}})
    return lambda: folder(str(root))


def _stray_sub_folder(root):
    make_role_folder(root, {"shoe": {"query": 1, "gallery": 2, "angles": 1}, "bag": {"": 2}})
    return lambda: folder(str(root))


def _roles_at_the_top(root):
    make_role_folder(root, {"query": {"shoe": 2, "bag": 2}, "gallery": {"shoe": 2, "bag": 2}})
    return lambda: folder(str(root))


def _csv_roles(roles):
    def build(root):
        rows = [(f"{c}{i}.png", c, role) for (c, i), role in zip([("a", 0), ("a", 1), ("b", 0), ("b", 1)], roles)]
        return lambda: csv(str(make_csv(root, rows, header="path,label,role")))

    return build


BAD_ROLES = {
    "folder image next to role sub-folders": (_mixed_class_folder, ["shoe/0.png", "has no role", "query/ or gallery/"]),
    "folder other sub-folder next to role sub-folders": (_stray_sub_folder, ["shoe/angles/0.png", "has no role", "move it into query/ or gallery/"]),
    "folder roles above the classes": (_roles_at_the_top, ["top-level folders 'query' and 'gallery'", "<class>/query/"]),
    "csv bad role value": (_csv_roles(["query", "gallery", "probe", "gallery"]), ["manifest.csv' line 4", "role 'probe'", "query, gallery"]),
    "csv role on some rows only": (_csv_roles(["query", "gallery", "", "gallery"]), ["manifest.csv' line 4", "role ''", "leave the column empty on all"]),
    "csv role in capitals": (_csv_roles(["Query", "gallery", "query", "gallery"]), ["line 2", "role 'Query'"]),
}


@pytest.mark.parametrize("case", BAD_ROLES)
def test_bad_roles_are_one_line_errors(tmp_path, case):
    build, expected = BAD_ROLES[case]
    with pytest.raises(UserError) as exc:
        build(tmp_path)()
    message = str(exc.value)
    assert "\n" not in message and " — " in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
