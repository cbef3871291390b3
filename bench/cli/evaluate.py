"""`bench evaluate EMBEDDINGS.npz`: score embeddings from any model with the harness's metrics."""

from __future__ import annotations

import argparse
import dataclasses
import json
import zipfile
from pathlib import Path

from bench.errors import UserError, check_output_file, finite_float

KEYS = "embeddings, labels; optional gallery_embeddings + gallery_labels, val_embeddings + val_labels"


def add_parser(sub, common) -> None:
    """Register `evaluate` on the `bench` subparsers; `common` holds --debug and --plugin."""
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="print every metric of embeddings saved in an .npz file",
        description=f"Score embeddings from any model. The .npz holds {KEYS}.",
    )
    p.add_argument("npz", type=Path, metavar="EMBEDDINGS.npz")
    p.add_argument("--distance", default="cosine", choices=["cosine", "euclidean", "l1"])
    p.add_argument("--recall-k", type=int, nargs="+", default=[1, 2, 4, 8], metavar="K")
    p.add_argument("--max-pairs", type=int, default=2_000_000, help="verification uses all pairs up to this many, else a stratified sample")
    p.add_argument("--tar-far", type=finite_float, nargs="+", default=[1e-2, 1e-3], metavar="FAR")
    p.add_argument("--n-way", type=int, default=20)
    p.add_argument("--k-shot", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--memory-mb", type=int, default=1024, help="working memory of the chunked kNN")
    p.add_argument("--seed", type=int, default=0, help="draws the pair sample and the few-shot episodes")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the metrics as one JSON object")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bench.config import EvalConfig
    from bench.eval.metrics import evaluate

    config = EvalConfig(
        recall_k=tuple(args.recall_k),
        max_pairs=args.max_pairs,
        tar_far=tuple(args.tar_far),
        n_way=args.n_way,
        k_shot=args.k_shot,
        episodes=args.episodes,
        memory_mb=args.memory_mb,
        distance=args.distance,
    )
    for field in ("recall_k", "max_pairs", "tar_far", "n_way", "k_shot", "episodes", "memory_mb"):
        value = getattr(config, field)
        if any(v <= 0 for v in (value if isinstance(value, tuple) else (value,))):
            raise UserError(f"--{field.replace('_', '-')} {value} must be positive")
    if args.json:
        check_output_file(args.json, "--json")
    arrays = load_npz(args.npz)
    metrics = evaluate(
        arrays["embeddings"],
        arrays["labels"],
        args.distance,
        config,
        args.seed,
        gallery=arrays.get("gallery_embeddings"),
        gallery_labels=arrays.get("gallery_labels"),
        val_embeddings=arrays.get("val_embeddings"),
        val_labels=arrays.get("val_labels"),
    )
    gallery = f" + {len(arrays['gallery_labels'])} gallery" if "gallery_labels" in arrays else ""
    table = Table(title=f"{args.npz}: {len(arrays['labels'])} embeddings{gallery}, {args.distance}", box=None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    notes = {key: value for key, value in metrics.items() if key.endswith("_note")}
    for key, value in metrics.items():
        if key not in notes and not isinstance(value, dict):  # the ROC's points are for plots, not the table
            table.add_row(key, f"{value:.6f}" if isinstance(value, float) else str(value))
    console = Console(width=120)
    console.print(table)
    for key, value in notes.items():  # below the table: a sentence, and the reason a figure above is NaN
        console.print(f"{key.removesuffix('_note')}: {value}", highlight=False, soft_wrap=True)
    if args.json:
        args.json.write_text(json.dumps({"input": str(args.npz), "config": dataclasses.asdict(config), "seed": args.seed, "metrics": metrics}, indent=1) + "\n")
    return 0


def load_npz(path: Path) -> dict:
    """The arrays `evaluate` takes (torch tensors), or a one-line UserError naming the file and what to fix."""
    import numpy as np  # here, not at import: `bench --help` should not load numpy and torch
    import torch

    if not path.is_file():
        raise UserError(f"{path}: no such file — give an .npz written by numpy.savez(path, embeddings=..., labels=...)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array (or a pickle numpy refused)
            raise UserError(f"{path}: holds one bare array, not named arrays — save with numpy.savez(path, embeddings=..., labels=...)")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz ({exc}) — write it with numpy.savez(path, embeddings=..., labels=...)") from None
    missing = [k for k in ("embeddings", "labels") if k not in arrays]
    if missing:
        raise UserError(f"{path}: missing {' and '.join(missing)} (has {', '.join(arrays) or 'nothing'}) — the file needs {KEYS}")
    for prefix in ("gallery", "val"):
        if (f"{prefix}_embeddings" in arrays) != (f"{prefix}_labels" in arrays):
            raise UserError(f"{path}: {prefix}_embeddings and {prefix}_labels come together — add the missing one or drop both")
    for key in ("paths", "gallery_paths", "class_names"):  # written by `bench embed`: which image and class each row is, not scored
        arrays.pop(key, None)
    unknown = sorted(set(arrays) - {"embeddings", "labels", "gallery_embeddings", "gallery_labels", "val_embeddings", "val_labels"})
    if unknown:
        raise UserError(f"{path}: unknown arrays {', '.join(unknown)} — the file holds {KEYS}")
    for key, value in arrays.items():
        if value.dtype.kind not in "iuf":
            raise UserError(f"{path}: {key} has dtype {value.dtype}; {'labels must be integers' if 'labels' in key else 'embeddings must be numbers'}")
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
