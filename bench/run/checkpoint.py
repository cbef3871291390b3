"""Checkpoints: a trained cell's weights and everything needed to use them again (`bench embed`, `bench verify`).

A checkpoint is a folder: `model.safetensors` (the backbone with its head, and the loss's own parameters such
as Koch's L1 weights) and `checkpoint.json` (the cell's config, the input pipeline — decoded size and
channels, the backbone's input spec and the preprocessing —, how the dataset decoded image files (its
`meta["decoding"]`: background, max_pixels), the distance, and the weights' sha256) with the validation
threshold and test metrics *of the weights in the folder*, whichever weights the cell's row was scored with.
Loading never unpickles code: the backbone is rebuilt from the registry with the cell's arguments and freeze
mode, and the tensors are loaded strictly after their hash is checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bench.errors import UserError
from bench.plugins import InputSpec

WEIGHTS, META = "model.safetensors", "checkpoint.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(folder: Path, meta: dict, backbone: nn.Module, loss_fn: nn.Module) -> str:
    """Write the folder (weights first, then the JSON naming their hash); returns the weights' sha256."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()} | {f"loss.{k}": v for k, v in loss_fn.state_dict().items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}  # no shared storage in safetensors
    handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(handle)
    save_file(tensors, tmp)
    os.replace(tmp, folder / WEIGHTS)
    sha = file_sha256(folder / WEIGHTS)
    (folder / META).write_text(json.dumps({**meta, "weights": WEIGHTS, "sha256": sha}, indent=1, sort_keys=True) + "\n")
    return sha


@dataclass
class Loaded:
    model: nn.Module  # what embeds: the backbone, or its trunk for an untrained baseline
    spec: InputSpec  # what is fed (after preprocessing)
    native: InputSpec  # the backbone's own input: size and channels images are fitted to
    decoded: dict  # {"channels", "size"}: how the training data was decoded, before fitting
    decoding: dict  # {"background": [r, g, b] | None, "max_pixels": int[, "resize": str]}: how the dataset decoded image files
    distance: str
    threshold: float | None  # the validation split's verification threshold, if the cell had one
    bf16: bool
    batch_size: int
    meta: dict


def load_checkpoint(path: str | Path) -> Loaded:
    """A checkpoint folder (or its checkpoint.json), rebuilt and checked; one-line UserErrors otherwise."""
    from safetensors.torch import load_file

    from bench.builtins import load_builtins
    from bench.errors import read_text
    from bench.plugins import BACKBONES, LOSSES
    from bench.run.adapt import freeze

    folder = Path(path)
    folder = folder.parent if folder.name == META else folder
    text = read_text(folder / META, "checkpoint (checkpoint.json)", "give a checkpoint folder written by `bench run` with train.save")
    try:
        meta = json.loads(text)
        cell = meta["cell"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{folder / META}: not a metric-bench checkpoint — give a folder written by `bench run` with train.save") from None
    weights = folder / meta.get("weights", WEIGHTS)
    if not weights.is_file():
        raise UserError(f"{weights}: the checkpoint's weights are missing — copy the whole checkpoint folder")
    if file_sha256(weights) != meta.get("sha256"):
        raise UserError(f"{weights}: sha256 does not match checkpoint.json — the weights were changed or truncated; use the original folder")
    load_builtins()
    backbone = BACKBONES.get(cell["backbone"]).factory(**cell["backbone_args"])
    freeze(backbone, cell["model"]["freeze"], cell["model"]["unfrozen_stages"])
    loss_fn = LOSSES.get(cell["loss"]).factory(backbone.embed_dim, **cell["loss_args"])
    tensors = load_file(str(weights))
    for prefix, module in (("backbone.", backbone), ("loss.", loss_fn)):
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(
                f"{weights}: does not fit {cell['backbone']} as configured ({' '.join(str(exc).split())[:300]}) — the plugin changed since the checkpoint was written"
            ) from None
    model = backbone if meta["embed_with"] == "backbone" else backbone.trunk
    model.eval()
    spec, native = (InputSpec(**{**d, "size": tuple(d["size"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])}) for d in (meta["spec"], meta["native"]))
    return Loaded(
        model,
        spec,
        native,
        meta["decoded"],
        meta.get("decoding") or _legacy_decoding(cell),
        meta["distance"],
        meta.get("val_threshold"),
        meta["precision"] == "bf16",
        cell["eval"]["batch_size"],
        meta,
    )


def _legacy_decoding(cell: dict) -> dict:
    """A checkpoint written before `decoding` was recorded: the folder/csv datasets' arguments as they were then read."""
    from bench.data.common import parse_background

    if cell["dataset"] not in ("folder", "csv"):
        return {"background": None, "max_pixels": 0}
    args = cell["dataset_args"]
    return {"background": list(parse_background(args.get("background", "white"), "checkpoint")), "max_pixels": int(args.get("max_pixels", 0))}


KEPT_METRICS = ("verification_roc_auc", "verification_balanced_accuracy_val_threshold", "recall_at_1", "map_at_r")


def checkpoint_meta(
    cell,
    spec: InputSpec,
    native: InputSpec,
    decoded: dict,
    distance: str,
    metrics: dict,
    precision: str,
    trains: bool,
    weights_from: str,
    decoding: dict | None = None,
) -> dict:
    """checkpoint.json's content; `metrics` must be the test metrics of the weights saved beside it, and
    `decoding` how the dataset decoded its files (None: a dataset of arrays, decoded with no background)."""
    threshold = metrics.get("verification_val_threshold")
    return {
        "cell": cell.to_dict(),
        "cell_id": cell.cell_id,
        "spec": dataclasses.asdict(spec),
        "native": dataclasses.asdict(native),
        "decoded": decoded,
        "decoding": decoding or {"background": None, "max_pixels": 0},
        "preprocess": cell.model.preprocess,
        "distance": distance,
        "precision": precision,
        "val_threshold": threshold if threshold is not None and threshold == threshold else None,
        "embed_with": "backbone" if trains else "trunk",
        "weights_from": weights_from,
        "metrics": {k: v for k, v in metrics.items() if k in KEPT_METRICS},
    }
