"""`bench embed` and `bench verify`: use a cell's checkpoint on your own images, with the cell's exact input
pipeline (decode → fit to the backbone's size and channels → preprocess → the model)."""
from __future__ import annotations

import argparse
import csv as csvlib
import json
from pathlib import Path

from bench.errors import UserError, check_output_file

CHUNK = 512  # images decoded at once: memory stays bounded for large folders


def add_parser(sub, common) -> None:
    p = sub.add_parser("embed", parents=[common], help="embed images with a checkpoint into an .npz for `bench evaluate`",
                       description="Embed a folder (one sub-folder per class), a CSV manifest (path,label[,role]) or image files.")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, metavar="DIR")
    source.add_argument("--csv", type=Path, metavar="MANIFEST")
    source.add_argument("images", type=Path, nargs="*", default=[], metavar="IMAGE")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=cmd_embed)
    v = sub.add_parser("verify", parents=[common], help="are two images the same class? distance and decision at the checkpoint's threshold")
    v.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    v.add_argument("a", type=Path, metavar="A.png")
    v.add_argument("b", type=Path, metavar="B.png")
    v.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    v.set_defaults(func=cmd_verify)


def list_folder(root: Path) -> tuple[list[Path], list[str]]:
    """Image files and class names as the `folder` dataset reads them (sorted class folders, files
    searched recursively, hidden files skipped), so the order matches a cell's."""
    from bench.data.common import IMAGE_SUFFIXES

    if not root.is_dir():
        raise UserError(f"{root}: is not a folder — give --folder a folder with one sub-folder per class")
    files, labels = [], []
    for c in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(c.rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(c).parts) and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(c.name)
    if not files:
        raise UserError(f"{root}: no images in class sub-folders — put images in one sub-folder per class")
    return files, labels


def list_csv(manifest: Path) -> tuple[list[Path], list[str]]:
    from bench.errors import read_text

    rows = list(csvlib.DictReader(read_text(manifest, "manifest", "give a CSV with columns path,label").splitlines()))
    if not rows or "path" not in rows[0]:
        raise UserError(f"{manifest}: needs a header with a path column (and label) — e.g. path,label")
    return [manifest.parent / r["path"].strip() for r in rows], [(r.get("label") or "").strip() for r in rows]


def embed_files(loaded, files: list[Path], device, progress=None):
    """Embeddings (N, D) float32 of `files`, a chunk of decoded images at a time."""
    import torch

    from bench.data.common import decode_images
    from bench.data.preprocess import fit_to_spec, normalize
    from bench.run.train import embed

    channels, (h, w) = loaded.decoded["channels"], loaded.decoded["size"]
    size = h if h == w else 0  # the training data's decoded size; non-square data must already match it
    cell = loaded.meta["cell"]
    from bench.data.common import parse_background

    # transparent pixels onto the background the training data used (folder/csv: white unless set)
    background = parse_background(cell["dataset_args"].get("background", "white"), "bench embed") if cell["dataset"] in ("folder", "csv") else None
    chunks = []
    loaded.model.to(device)
    for start in range(0, len(files), CHUNK):
        names = [str(f) for f in files[start:start + CHUNK]]
        decoded = decode_images(names, str, "bench embed", size, channels, background)
        fitted, _ = fit_to_spec(decoded, loaded.native)
        chunks.append(embed(loaded.model, fitted, lambda x: normalize(x, loaded.spec), loaded.batch_size, device, loaded.bf16))
        if progress is not None:
            progress(len(names))
    return torch.cat(chunks)


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from rich.progress import Progress

    from bench.run.checkpoint import load_checkpoint

    check_output_file(args.out, "--out")
    loaded = load_checkpoint(args.checkpoint)
    if args.folder:
        files, labels = list_folder(args.folder)
    elif args.csv:
        files, labels = list_csv(args.csv)
    else:
        files, labels = list(args.images), []
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such image ({len(missing)} missing) — check the paths")
    with Progress(transient=True) as bar:
        task = bar.add_task(f"embedding {len(files)} images", total=len(files))
        emb = embed_files(loaded, files, torch.device(args.device), lambda n: bar.advance(task, n))
    arrays = {"embeddings": emb.numpy(), "paths": np.array([str(f) for f in files])}
    if labels:
        names = sorted(set(labels))
        arrays["labels"] = np.array([names.index(x) for x in labels], dtype=np.int64)
        arrays["class_names"] = np.array(names)
    np.savez(args.out, **arrays)
    print(json.dumps({"out": str(args.out), "images": len(files), "dim": int(emb.shape[1]), "distance": loaded.distance,
                      "labels": bool(labels)}))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from bench.eval.knn import distances
    from bench.run.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint)
    for f in (args.a, args.b):
        if not f.is_file():
            raise UserError(f"{f}: no such image — give two image files")
    emb = embed_files(loaded, [args.a, args.b], torch.device(args.device))
    d = float(distances(emb[:1], emb[1:], loaded.distance)[0, 0])
    if loaded.threshold is None:
        print(f"{loaded.distance} distance {d:.6f}; this checkpoint has no validation threshold (its cell had no validation split), so no same/different decision")
    else:
        decision = "same" if d <= loaded.threshold else "different"
        print(f"{loaded.distance} distance {d:.6f} ≤ threshold {loaded.threshold:.6f}: {decision}" if decision == "same"
              else f"{loaded.distance} distance {d:.6f} > threshold {loaded.threshold:.6f}: {decision}")
    return 0
