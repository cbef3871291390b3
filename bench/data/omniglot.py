"""Omniglot (Lake et al. 2015): 105×105 handwritten characters, class = alphabet/character, read from the
original release zips in place (no extraction) or from torchvision's extracted layout."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from bench.data.common import check_labels, decode_images
from bench.errors import UserError
from bench.plugins import LabelledImages

TORCHVISION_SETS = {"images_background": True, "images_evaluation": False}  # name -> Omniglot(background=...)


def find_set(root: Path, name: str) -> Path | None:
    """`name`.zip or the extracted folder `name`/, in root or in torchvision's root/omniglot-py/."""
    for folder in (root, root / "omniglot-py"):
        for candidate in (folder / f"{name}.zip", folder / name):
            if candidate.is_file() if candidate.suffix == ".zip" else candidate.is_dir():
                return candidate
    return None


def _entries(source: Path) -> list[tuple[str, str, str, str]]:
    """(alphabet, character, file name, zip member or file path) for every PNG of a zip or folder."""
    if source.suffix == ".zip":
        try:
            with zipfile.ZipFile(source) as z:
                found = {PurePosixPath(m): m for m in z.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")}
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"dataset omniglot: cannot open {str(source)!r} ({exc}) — replace it with the original zip") from exc
    else:
        found = {p.relative_to(source): str(p) for p in source.rglob("*") if p.is_file()}
    out = []
    for p in sorted(found, key=str):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() != ".png" or len(p.parts) < 3:
            raise UserError(f"dataset omniglot: {str(source)!r} holds {str(p)!r}, not an alphabet/character/NNNN_DD.png image — use the original release files")
        out.append((p.parts[-3], p.parts[-2], p.name, found[p]))
    if not out:
        raise UserError(f"dataset omniglot: {str(source)!r} holds no PNG images — use the original release files")
    return out


def _drawer(file_name: str) -> int:
    """Omniglot files are <character id>_<drawer 01..20>.png; -1 when a name does not follow that."""
    tail = file_name.rsplit(".", 1)[0].rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _decode(source: Path, members: list[str]) -> np.ndarray:
    """Gray uint8 (N, 1, 105, 105), decoded once; zip members are read in place, never extracted."""
    where = f"dataset omniglot ({str(source)!r})"
    if source.suffix != ".zip":
        return decode_images(members, str, where, channels=1)
    with zipfile.ZipFile(source) as z:
        return decode_images(members, lambda m: io.BytesIO(z.read(m)), where, channels=1)


def omniglot(
    root: str = "~/data/omniglot", background: str = "images_background", evaluation: str = "images_evaluation", download: bool = False
) -> LabelledImages:
    """Omniglot with its own class-disjoint split: `background` classes train, `evaluation` classes test.

    Each set is `<name>.zip` (the original release, read in place) or the folder `<name>/`, in `root` or
    in torchvision's `root/omniglot-py/`. Sets: images_background (964 characters), images_evaluation
    (659), images_background_small1 (136), images_background_small2 (156). `evaluation = ""` loads only
    the background set and leaves the class split to the harness. Classes are "alphabet/character";
    `attributes` holds each image's `alphabet` and `drawer` (1..20). small1 and small2 share their Greek
    and Latin characters: a class found in both sets is kept in test and dropped from train (counted in
    meta["split"]), so the split stays class-disjoint. With download = true, torchvision fetches
    images_background / images_evaluation when they are missing.
    """
    where = "dataset omniglot"
    base = Path(root).expanduser()
    sets = {"train": background} | ({"test": evaluation} if evaluation else {})
    sources = {}
    for split, name in sets.items():
        sources[split] = find_set(base, name)
        if sources[split] is None and download:
            sources[split] = _download(base, name)
        if sources[split] is None:
            fix = "set download = true or put" if name in TORCHVISION_SETS else "put"
            raise UserError(f"{where}: no {name}.zip or {name}/ in {str(base)!r} (or its omniglot-py/) — {fix} {name}.zip there, or set root")
    listed = {split: _entries(source) for split, source in sources.items()}
    test_classes = {(a, c) for a, c, _, _ in listed.get("test", [])}
    train_classes = {(a, c) for a, c, _, _ in listed["train"]}
    listed["train"] = [e for e in listed["train"] if (e[0], e[1]) not in test_classes]
    entries = [e for split in listed for e in listed[split]]
    names = tuple(sorted({f"{a}/{c}" for a, c, _, _ in entries}))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[f"{a}/{c}"] for a, c, _, _ in entries], dtype=np.int64)
    split = np.array([s for s in listed for _ in listed[s]]) if "test" in listed else None
    check_labels(labels, names, split, f"{where} {str(base)!r}")
    images = np.concatenate([_decode(sources[s], [e[3] for e in listed[s]]) for s in listed])
    meta = {"root": str(base), "sources": {s: str(p) for s, p in sources.items()}}
    if split is not None:
        meta["split"] = {"train": background, "test": evaluation, "train_classes_dropped_as_also_in_test": len(train_classes & test_classes)}
    attributes = {"alphabet": np.array([a for a, _, _, _ in entries]), "drawer": np.array([_drawer(f) for _, _, f, _ in entries], dtype=np.int64)}
    return LabelledImages(images, labels, names, split=split, meta=meta, attributes=attributes)


def _download(root: Path, name: str) -> Path | None:
    if name not in TORCHVISION_SETS:
        raise UserError(f"dataset omniglot: torchvision can download only {' and '.join(TORCHVISION_SETS)}, not {name} — put {name}.zip in {str(root)!r}")
    from torchvision.datasets import Omniglot

    try:
        Omniglot(str(root), background=TORCHVISION_SETS[name], download=True)
    except Exception as exc:  # offline, a mirror down, a full disk: all mean "put the files there yourself"
        raise UserError(f"dataset omniglot: download of {name} into {str(root)!r} failed ({type(exc).__name__}: {exc}) — put {name}.zip there") from exc
    return find_set(root, name)
