"""`bench embed` and `bench verify`: use a cell's checkpoint on your own images, with the cell's exact input
pipeline (decode → fit to the backbone's size and channels → preprocess → the model)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from bench.errors import UserError, check_output_file

CHUNK = 512  # images decoded at once: memory stays bounded for large folders


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "embed",
        parents=[common],
        help="embed images with a checkpoint into an .npz for `bench evaluate`",
        description="Embed a folder (one sub-folder per class, optionally with query/ and gallery/ inside), a CSV manifest "
        "(path,label[,role]) or image files. Images with roles go to the .npz as queries (embeddings) and a gallery "
        "(gallery_embeddings), so `bench evaluate` searches queries against the gallery as the cell did.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, metavar="DIR")
    source.add_argument("--csv", type=Path, metavar="MANIFEST")
    source.add_argument("images", type=Path, nargs="*", default=[], metavar="IMAGE")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--max-pixels", type=int, metavar="N", help="decompression-bomb limit in pixels (default: the checkpoint's dataset's max_pixels)")
    p.set_defaults(func=cmd_embed)
    v = sub.add_parser("verify", parents=[common], help="are two images the same class? distance and decision at the checkpoint's threshold")
    v.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    v.add_argument("a", type=Path, metavar="A.png")
    v.add_argument("b", type=Path, metavar="B.png")
    v.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    v.add_argument("--max-pixels", type=int, metavar="N", help="decompression-bomb limit in pixels (default: the checkpoint's dataset's max_pixels)")
    v.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="decide at this distance instead of the checkpoint's validation threshold (a smaller one is a stricter operating point: fewer false accepts)",
    )
    v.set_defaults(func=cmd_verify)


def list_folder(root: Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """Image files, labels, class names and roles ("" without) exactly as the `folder` dataset reads them (same order)."""
    from bench.data.files import folder_files

    _, names, files = folder_files(root, "bench embed --folder")
    return [f for _, f, _ in files], [names.index(c) for c, _, _ in files], list(names), [role for _, _, role in files]


def list_csv(manifest: Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """Image files, labels, class names and roles ("" without) exactly as the `csv` dataset reads them."""
    from bench.data.common import ROLE_NAMES, encode_labels
    from bench.data.files import _all_or_none, manifest_entries

    where = "bench embed --csv"
    _, rows, paths, raw_labels, origins = manifest_entries(manifest, where)
    labels, names = encode_labels(raw_labels, where, origins)
    roles = _all_or_none("role", [row.get("role") for _, row in rows], ROLE_NAMES, origins, where)
    return [Path(p) for p in paths], labels.tolist(), list(names), roles.tolist() if roles is not None else [""] * len(paths)


def query_gallery(files: list[Path], roles: list[str], where: str) -> tuple[list[int], list[int]] | None:
    """(query rows, gallery rows) when the images have roles, as a cell scores its test split; None without roles."""
    if not any(roles):
        return None
    roleless = [f for f, role in zip(files, roles) if not role]
    if roleless:
        raise UserError(
            f"{where}: {len(roleless)} images (e.g. {str(roleless[0])!r}) have no role while others have one — embed the classes "
            "with query/ and gallery/ images on their own (a cell searches its test queries against their gallery), or give every image a role"
        )
    queries, gallery = [i for i, r in enumerate(roles) if r == "query"], [i for i, r in enumerate(roles) if r == "gallery"]
    if not queries or not gallery:
        raise UserError(f"{where}: every image is a {roles[0]} image — queries are searched against a gallery, so give both query and gallery images")
    return queries, gallery


def embed_files(loaded, files: list[Path], device, progress=None, max_pixels: int | None = None):
    """Embeddings (N, D) float32 of `files`, a chunk of decoded images at a time, decoded as the checkpoint's
    dataset decoded its files (background, pixel limit, resize) and fitted to the training data's size and channels."""
    import torch

    from bench.data.common import check_max_pixels, decode_images
    from bench.data.preprocess import fit_to_spec, normalize
    from bench.run.train import embed

    channels, (h, w) = loaded.decoded["channels"], loaded.decoded["size"]
    size = h if h == w else 0  # the training data's decoded size; non-square data must already match it
    background = tuple(loaded.decoding["background"]) if loaded.decoding.get("background") is not None else None
    limit = loaded.decoding.get("max_pixels", 0) if max_pixels is None else check_max_pixels(max_pixels, "bench embed --max-pixels")
    chunks = []
    loaded.model.to(device)
    for start in range(0, len(files), CHUNK):
        names = [str(f) for f in files[start : start + CHUNK]]
        decoded = decode_images(
            names, str, "bench embed", size, channels, background, limit, raise_limit="--max-pixels {n}", resize=loaded.decoding.get("resize", "square")
        )
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
    roles: list[str] = []
    if args.folder:
        files, labels, names, roles = list_folder(args.folder)
    elif args.csv:
        files, labels, names, roles = list_csv(args.csv)
    else:
        files, labels, names = list(args.images), [], []
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such image ({len(missing)} missing) — check the paths")
    split = query_gallery(files, roles, "bench embed --folder" if args.folder else "bench embed --csv") if roles else None
    with Progress(transient=True) as bar:
        task = bar.add_task(f"embedding {len(files)} images", total=len(files))
        emb = embed_files(loaded, files, torch.device(args.device), lambda n: bar.advance(task, n), args.max_pixels)
    paths, labels = np.array([str(f) for f in files]), np.array(labels, dtype=np.int64)
    if split is None:
        arrays = {"embeddings": emb.numpy(), "paths": paths} | ({"labels": labels} if len(labels) else {})
    else:  # queries and gallery as `bench evaluate` takes them: the query→gallery protocol the cell scored
        queries, gallery = split
        arrays = {
            "embeddings": emb[queries].numpy(),
            "labels": labels[queries],
            "paths": paths[queries],
            "gallery_embeddings": emb[gallery].numpy(),
            "gallery_labels": labels[gallery],
            "gallery_paths": paths[gallery],
        }
    if len(labels):
        arrays["class_names"] = np.array(names)
    np.savez(args.out, **arrays)
    counts = {"queries": len(split[0]), "gallery": len(split[1])} if split else {}
    print(
        json.dumps({"out": str(args.out), "images": len(files), **counts, "dim": int(emb.shape[1]), "distance": loaded.distance, "labels": bool(len(labels))})
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from bench.eval.knn import distances
    from bench.run.checkpoint import load_checkpoint

    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UserError(f"--threshold {args.threshold}: not a finite number — give a distance, e.g. --threshold 0.35")
    loaded = load_checkpoint(args.checkpoint)
    for f in (args.a, args.b):
        if not f.is_file():
            raise UserError(f"{f}: no such image — give two image files")
    emb = embed_files(loaded, [args.a, args.b], torch.device(args.device), max_pixels=args.max_pixels)
    d = float(distances(emb[:1], emb[1:], loaded.distance)[0, 0])
    pair = f"{args.a} vs {args.b}: {loaded.distance} distance {d:.6f}"
    if args.threshold is not None:
        threshold, source = args.threshold, "--threshold"
    elif loaded.threshold is not None:
        threshold, source = loaded.threshold, "the checkpoint's validation threshold"
    else:
        print(
            f"{pair}; this checkpoint has no validation threshold (its cell had no validation split), so no same/different decision — give one with --threshold"
        )
        return 0
    decision = "same" if d <= threshold else "different"
    print(f"{pair} {'≤' if decision == 'same' else '>'} threshold {threshold:.6f} ({source}): {decision}")
    return 0
