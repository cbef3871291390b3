"""One cell: build the plugins, adapt the backbone, train under the budget, evaluate on held-out classes."""
from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.config import Cell
from bench.data.augment import make_augment
from bench.data.datasets import split_classes
from bench.data.preprocess import fit_to_spec, normalize
from bench.eval.metrics import evaluate
from bench.plugins import BACKBONES, LOSSES, InputSpec, LabelledImages
from bench.results import SCHEMA
from bench.run.adapt import apply_preprocess, freeze, input_check
from bench.run.sampling import BatchSampler
from bench.run.train import embed, train


class CellTimeout(Exception):
    pass


def data_key(cell: Cell) -> str:
    return json.dumps([cell.dataset, cell.dataset_args], sort_keys=True)


def train_and_evaluate(cell: Cell, data: LabelledImages, caches: dict, device: torch.device, report: Callable,
                       deadline: float | None, feature_cache: bool = True, warn: Callable[[str], None] = print) -> dict:
    """The whole life of a cell, returned as the row's measured part. `caches` is shared by a grid's cells."""
    torch.manual_seed(cell.seed)
    np.random.seed(cell.seed)
    backbone = BACKBONES.get(cell.backbone).factory(**cell.backbone_args)
    frozen = freeze(backbone, cell.model.freeze, cell.model.unfrozen_stages)
    loss_fn = LOSSES.get(cell.loss).factory(backbone.embed_dim, **cell.loss_args)
    bf16 = use_bf16(cell.train.precision, device)
    channels_last = bf16 and device.type == "cpu"
    backbone.to(device)
    if channels_last:  # with bf16 autocast, oneDNN's fast convolutions want NHWC
        backbone.to(memory_format=torch.channels_last)
    loss_fn.to(device)
    native = backbone.input_spec
    spec = apply_preprocess(native, cell.model.preprocess)
    key = ("images", data_key(cell), tuple(native.size), native.channels)
    if key not in caches:  # resize/convert once per dataset and input shape
        caches[key] = fit_to_spec(data.images, native)
    images, conversion = caches[key]
    labels = torch.from_numpy(data.labels)
    train_idx, val_idx, test_idx, split = split_for(cell, data)
    check = input_check(images[_spread_sample(train_idx, 256, cell.split.seed)], spec, native, normalize)
    if check["mismatch"]:
        warn(f"input check: {cell.backbone} with preprocess = {cell.model.preprocess!r} is fed inputs {check['mean_shift_in_native_stds']:.1f} "
             f"native stds off and {check['spread_ratio']:.1f}x the spread its pretrained weights expect")

    def prepare_images(batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch, spec)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    augment = make_augment(cell.train.augment, cell.seed)
    cached = feature_cache and cell.model.freeze == "backbone" and cell.train.augment == "none"
    charge = 0.0  # seconds per image charged to the budget for the cached trunk's forward pass
    if cached:  # a frozen trunk sees each image once per grid; only the head trains
        inputs, charge = _features(caches, cell, backbone, images, prepare_images, device, bf16, report)
        model, prepare_train, prepare_eval = backbone.head, _identity, _identity
    else:
        model, inputs, prepare_eval = backbone, images, prepare_images
        prepare_train = prepare_images if augment.transform is None else (lambda batch: prepare_images(augment(batch)))

    def on_step(steps, samples, seconds, loss):
        report(steps, f"loss {loss:.4f}  {samples / max(seconds, 1e-9):.0f} img/s")
        check_deadline(deadline, f"training (step {steps})")

    sampler = BatchSampler(loss_fn.batch, data.labels[train_idx], cell.train.batch_size, cell.seed, cell.train.m_per_class)
    if sampler.short_classes():
        warn(f"{sampler.short_classes()} of {len(sampler.by_class)} training classes have fewer than train.m_per_class = "
             f"{cell.train.m_per_class} images: their images repeat within a batch (drawn with replacement)")
    flops = _flops_per_image(caches, cell, backbone, prepare_images(images[train_idx[:2]].to(device)))
    result = train(model, loss_fn, inputs[train_idx], labels[train_idx], prepare_train, cell.train, cell.budget, cell.seed,
                   device, bf16, on_step, charge_per_sample=charge, sampler=sampler)
    check_deadline(deadline, "training")
    report(info="evaluating")
    start = time.perf_counter()
    embeddings = embed(model, inputs[test_idx], prepare_eval, cell.eval.batch_size, device, bf16)
    val = embed(model, inputs[val_idx], prepare_eval, cell.eval.batch_size, device, bf16) if len(val_idx) else None
    nonfinite = int((~torch.isfinite(embeddings).all(1)).sum()) + (int((~torch.isfinite(val).all(1)).sum()) if val is not None else 0)
    if nonfinite:  # the weights went non-finite: a result of the config (`diverged`), not a failure to rerun
        metrics = {}
        diverged = f"{nonfinite} test/validation embeddings are NaN or inf after {result.steps} steps"
    else:
        metrics = evaluate(embeddings, labels[test_idx], loss_fn.distance, cell.eval, cell.split.seed,
                           val_embeddings=val, val_labels=labels[val_idx] if val is not None else None)
        diverged = None
    check_deadline(deadline, "evaluation")
    steps = max(result.steps, 1)
    return {
        "metrics": metrics,
        **({"diverged": diverged} if diverged else {}),
        "train": {**asdict(result), "data_time_per_step": result.data_seconds / steps,
                  "compute_time_per_step": result.compute_seconds / steps, "augment": augment.record(), "feature_cache": cached,
                  "charged_seconds_per_image": charge, "m_per_class_short_classes": sampler.short_classes(),
                  "images_per_second": result.samples / max(result.seconds, 1e-9), "gflops_per_image": flops / 1e9,
                  "gflop_per_second": flops * result.samples / max(result.seconds, 1e-9) / 1e9},
        "eval_seconds": round(time.perf_counter() - start, 3),
        "split": split,
        "input": {**_spec_record(spec), "preprocess": cell.model.preprocess, "native": _spec_record(native), **conversion, "check": check},
        "model": {**frozen, "embed_dim": backbone.embed_dim,
                  "trainable_params": sum(p.numel() for m in (backbone, loss_fn) for p in m.parameters() if p.requires_grad)},
        "precision": "bf16" if bf16 else "fp32",
    }


def split_for(cell: Cell, data: LabelledImages):
    s = cell.split
    return split_classes(data, s.test_fraction, s.seed, s.val_fraction, list(s.test_classes) or None,
                         list(s.val_classes) or None, s.folds, s.fold)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _flops_per_image(caches: dict, cell: Cell, backbone: torch.nn.Module, sample: torch.Tensor) -> int:
    """FLOPs one training image costs the backbone: the forward pass, and the backward pass through what
    trains (torch.utils.flop_counter). Counted once per backbone configuration, on two images in eval mode so
    that BatchNorm statistics and the random state are untouched; the head-only step of a cached cell is
    counted the same way, so its achieved GFLOP/s (over the charged clock) compares with an uncached cell's."""
    key = ("flops", cell.backbone, json.dumps(cell.backbone_args, sort_keys=True), json.dumps(asdict(cell.model), sort_keys=True))
    if key not in caches:
        from torch.utils.flop_counter import FlopCounterMode

        was_training = backbone.training
        backbone.eval()
        with FlopCounterMode(display=False) as counter:
            out = backbone(sample)
            if out.requires_grad:
                out.float().sum().backward()
        backbone.zero_grad(set_to_none=True)
        backbone.train(was_training)
        caches[key] = counter.get_total_flops() // max(len(sample), 1)
    return caches[key]


def _spread_sample(idx: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sample of `size` indices from across `idx` (its first entries are often a few classes only)."""
    return np.sort(np.random.default_rng(seed).choice(idx, min(size, len(idx)), replace=False))


def _features(caches: dict, cell: Cell, backbone, images, prepare, device, bf16, report) -> tuple[torch.Tensor, float]:
    """Trunk features of every image and the trunk's measured forward seconds per image, cached per (backbone
    and its weights, preprocess, data, input, precision). A trunk that is not pretrained depends on the seed's
    initialisation, so the seed joins the key. The time is charged to training's clock per image consumed."""
    args = {k: v for k, v in cell.backbone_args.items() if k not in ("head", "embed_dim")}
    seed = None if backbone.input_spec.pretrained else cell.seed
    key = ("features", cell.backbone, json.dumps(args, sort_keys=True), cell.model.preprocess, data_key(cell), bf16, seed)
    if key not in caches:
        report(info="embedding every image once (frozen-feature cache)")
        # Chunks of the training batch size, timed after the first (warm-up) chunk: the charge should be what
        # the trunk's forward costs per image inside a training step.
        size = cell.train.batch_size
        head = embed(backbone.trunk, images[:size], prepare, size, device, bf16)
        start = time.perf_counter()
        rest = embed(backbone.trunk, images[size:], prepare, size, device, bf16)
        per_image = (time.perf_counter() - start) / len(rest) if len(rest) else 0.0
        caches[key] = (torch.cat([head, rest]) if len(rest) else head, per_image)
    return caches[key]


def _spec_record(spec: InputSpec) -> dict:
    return {"size": list(spec.size), "channels": spec.channels, "mean": list(spec.mean), "std": list(spec.std),
            "bgr": spec.bgr, "pretrained": spec.pretrained}


def check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise CellTimeout(f"cell exceeded the --cell-timeout limit during {what}")


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # On CPUs without AMX or AVX512-BF16 autocast bf16 is emulated and many times slower than fp32.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def run_cell(cell: Cell, grid_name: str, data: LabelledImages, caches: dict, device: torch.device,
             cell_timeout: float | None = None, report=lambda steps=None, info="": None, feature_cache: bool = True,
             warn=print) -> dict:
    """Train and evaluate one cell; any failure becomes the row's status, never an exception."""
    row = _row_start(cell, grid_name)
    deadline = time.monotonic() + cell_timeout if cell_timeout else None
    try:
        row.update(train_and_evaluate(cell, data, caches, device, report, deadline, feature_cache, warn))
        if "diverged" in row:  # non-finite embeddings: say why in the row's error
            row["error"] = row.pop("diverged")
        row["status"] = "diverged" if row["train"]["stopped_by"] == "diverged" or "error" in row else "ok"
    except CellTimeout as exc:
        row.update(status="timeout", error=str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        row.update(status="oom", error=f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as exc:  # one broken cell must not cost the rest of the grid
        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc(limit=8))
    return _row_end(row, device, row.get("precision", cell.train.precision))


def failed_row(cell: Cell, grid_name: str, device: torch.device, status: str, error: str) -> dict:
    return _row_end({**_row_start(cell, grid_name), "status": status, "error": error}, device, cell.train.precision)


def _row_start(cell: Cell, grid_name: str) -> dict:
    return {"schema": SCHEMA, "grid": grid_name, "cell_id": cell.cell_id, "config": cell.to_dict()}


def _row_end(row: dict, device: torch.device, precision: str) -> dict:
    row["env"] = environment(device, precision)
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def environment(device: torch.device, precision: str) -> dict:
    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    packages = ["metric-bench", "torch", "torchvision", "timm", "pytorch-metric-learning", "scikit-learn", "numpy", "pandas"]
    return {
        "versions": {p: v(p) for p in packages},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
    }
