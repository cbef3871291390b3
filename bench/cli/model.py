"""`bench embed` and `bench verify`: use a cell's checkpoint on your own images, with the cell's exact input
pipeline (decode → fit to the backbone's size and channels → preprocess → the model)."""
from __future__ import annotations

import argparse
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


def list_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, labels and class names exactly as the `folder` dataset reads them (same order)."""
    from bench.data.files import folder_files

    _, names, files = folder_files(root, "bench embed --folder")
    return [f for _, f, _ in files], [names.index(c) for c, _, _ in files], list(names)


def list_csv(manifest: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, labels and class names exactly as the `csv` dataset reads them."""
    from bench.data.common import encode_labels
    from bench.data.files import manifest_entries

    where = "bench embed --csv"
    _, _, paths, raw_labels, origins = manifest_entries(manifest, where)
    labels, names = encode_labels(raw_labels, where, origins)
    return [Path(p) for p in paths], labels.tolist(), list(names)


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
        files, labels, names = list_folder(args.folder)
    elif args.csv:
        files, labels, names = list_csv(args.csv)
    else:
        files, labels, names = list(args.images), [], []
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such image ({len(missing)} missing) — check the paths")
    with Progress(transient=True) as bar:
        task = bar.add_task(f"embedding {len(files)} images", total=len(files))
        emb = embed_files(loaded, files, torch.device(args.device), lambda n: bar.advance(task, n))
    arrays = {"embeddings": emb.numpy(), "paths": np.array([str(f) for f in files])}
    if labels:
        arrays["labels"] = np.array(labels, dtype=np.int64)
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
