"""One cell: build the plugins, adapt the backbone, train under the budget, evaluate on held-out classes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.config import Cell
from bench.config.metrics import lower_is_better
from bench.data.augment import make_augment
from bench.data.datasets import split_classes
from bench.data.preprocess import fit_to_spec, normalize
from bench.errors import UserError
from bench.eval.metrics import evaluate
from bench.items import roc_items
from bench.plugins import BACKBONES, LOSSES, InputSpec, LabelledImages
from bench.run.adapt import apply_preprocess, freeze, input_check
from bench.run.checkpoint import checkpoint_meta, save_checkpoint
from bench.run.clock import Meter
from bench.run.diskcache import cached_tensor, content_hash
from bench.run.job import Job
from bench.run.pruning import Pruner
from bench.run.sampling import BatchSampler
from bench.run.train import TrainResult, embed, train


class CellTimeout(Exception):
    pass


def data_key(cell: Cell) -> str:
    return json.dumps([cell.dataset, cell.dataset_args], sort_keys=True)


def measure(
    cell: Cell, job: Job, data: LabelledImages, caches: dict, device: torch.device, report: Callable, warn: Callable[[str], None], deadline: float | None
) -> dict:
    """`train_and_evaluate`; for a search trial with split.folds = K, each fold in turn (the Reality Check's
    cross-validation), its validation metrics averaged over the folds, stopping at a pruned or diverged fold."""
    pruner = Pruner(cell)
    if cell.trial is None or not cell.split.folds:
        return train_and_evaluate(cell, job, data, caches, device, report, warn, deadline, pruner)
    parts = []
    for fold in range(cell.split.folds):
        part = train_and_evaluate(replace(cell, split=replace(cell.split, fold=fold)), job, data, caches, device, report, warn, deadline, pruner)
        if pruner.pruned:  # also at the fold's last point, which training reports after its budget is spent
            part["train"]["stopped_by"] = "pruned"
        parts.append(part)
        if part["train"]["stopped_by"] in ("pruned", "diverged") or "diverged" in part:
            break
    merged = {
        **parts[-1],
        "curve": [{**point, "fold": i} for i, part in enumerate(parts) for point in part.get("curve", [])],
        "folds": [
            {"fold": i, "metrics": part["metrics"], "split": part["split"], "steps": part["train"]["steps"], "stopped_by": part["train"]["stopped_by"]}
            for i, part in enumerate(parts)
        ],
    }
    if len(parts) == cell.split.folds and merged["train"]["stopped_by"] not in ("pruned", "diverged") and "diverged" not in merged:

        def mean(key):  # a figure's mean over the folds; a note (text) as the first fold has it
            values = [part["metrics"].get(key) for part in parts]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            return float(np.mean(values)) if numbers else values[0]

        merged["metrics"] = {k: mean(k) for k in parts[0]["metrics"]}
    return merged


def train_and_evaluate(
    cell: Cell,
    job: Job,
    data: LabelledImages,
    caches: dict,
    device: torch.device,
    report: Callable = lambda *a, **k: None,
    warn: Callable[[str], None] = print,
    deadline: float | None = None,
    pruner: Pruner | None = None,
) -> dict:
    """The whole life of a cell, returned as the row's measured part: build it, train it under its budget (scoring
    the curve points on validation), score the selected weights, keep a checkpoint. `caches` is shared by a
    grid's cells; with train.save, the checkpoint goes to `job.checkpoints`/<cell_id>. A search trial
    (cell.trial) is scored on validation only: the test split never reaches the evaluator."""
    pruner = pruner or Pruner(cell)
    b = build(cell, data, caches, device, report, warn, job.feature_cache)
    scorer = Scorer(cell, b, data, device)
    select = _Selection(cell, b.model)

    def on_step(steps, samples, seconds, loss):
        report(steps, f"loss {loss:.4f}  {samples / max(seconds, 1e-9):.0f} img/s")
        check_deadline(deadline, f"training (step {steps})")

    def on_curve(fraction: float, at) -> bool:
        report(info=f"curve point {fraction:g} on {scorer.curve_on}")
        metrics = scorer.curve_point(fraction, at, keep=select.best["steps"] if select.best else None)
        select.offer(fraction, at.steps, metrics)
        return pruner.report(metrics)  # True stops training: a search trial pruned by the median rule

    result, flops, short = _train(cell, b, caches, device, warn, on_step, on_curve)
    check_deadline(deadline, "training")
    last = {k: v.detach().clone() for k, v in b.model.state_dict().items()} if cell.train.save == "last" and select.state is not None else None
    selected = select.restore()
    # a diverged step ran its forward pass (BatchNorm's running statistics moved) but was never counted
    scorer.weights = selected["steps"] if selected else ("diverged" if result.stopped_by == "diverged" else result.steps)
    report(info="evaluating")
    start = time.perf_counter()
    metrics, nonfinite, items = scorer.final(result, selected)
    # weights gone non-finite are a result of the config (`diverged`), not a failure to rerun
    diverged = f"{nonfinite} test/validation embeddings are NaN or inf after {result.steps} steps" if nonfinite else None
    check_deadline(deadline, "evaluation")
    saved = None
    if cell.train.save != "none" and job.checkpoints and not nonfinite:
        saved = _checkpoint(cell, b, scorer, data, metrics, selected, last, result, Path(job.checkpoints), warn)
    return {
        **({"checkpoint": saved} if saved else {}),
        **({"_items": items} if items else {}),  # numpy arrays, for the coordinator only: never part of the JSONL row
        "metrics": metrics,
        **({"diverged": diverged} if diverged else {}),
        **({"curve": scorer.curve} if scorer.curve else {}),
        "train": _train_record(cell, b, result, flops, short, selected),
        "eval_seconds": round(time.perf_counter() - start, 3),
        "split": b.split,
        "input": {**_spec_record(b.spec), "preprocess": cell.model.preprocess, "native": _spec_record(b.native), **b.conversion, "check": b.check},
        "model": {
            **b.frozen,
            "embed_dim": scorer.scored_dim,
            "trainable_params": sum(p.numel() for m in (b.backbone, b.loss_fn) for p in m.parameters() if p.requires_grad),
        },
        "precision": "bf16" if b.bf16 else "fp32",
    }


@dataclass
class Built:
    """A cell ready to train and score: its plugins on the device, its split, and its input pipeline — what the
    training loop steps on (`train_model` on `train_inputs` through `prepare_train`) and what evaluation embeds
    (`model` on `inputs` through `prepare_eval`): images, or a frozen trunk's cached features."""

    backbone: torch.nn.Module
    loss_fn: torch.nn.Module
    frozen: dict
    bf16: bool
    eval_bf16: bool  # the scoring forward passes' precision (eval.precision)
    spec: InputSpec
    native: InputSpec
    images: torch.Tensor
    conversion: dict
    check: dict
    labels: torch.Tensor
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    split: dict
    trains: bool
    augment: object
    cost_model: str
    cached: bool
    per_image: float  # a frozen trunk's measured forward seconds per image, in this run
    charge_wait: float | None  # the share of that measurement's runnable time its threads waited for a core
    charge: float  # the one-time extraction the head trains on, charged to the budget's clock
    model: torch.nn.Module
    inputs: torch.Tensor
    prepare_images: Callable
    prepare_eval: Callable
    train_model: torch.nn.Module
    train_inputs: torch.Tensor
    prepare_train: Callable
    warmup_prepare: Callable | None


def build(cell: Cell, data: LabelledImages, caches: dict, device: torch.device, report: Callable, warn: Callable[[str], None], feature_cache: bool) -> Built:
    """The cell's plugins (seeded), frozen as asked, on the device; the images fitted to the backbone's input
    (cached per dataset and shape), its class split and input check; a frozen trunk's features (cached per grid)."""
    torch.manual_seed(cell.seed)
    np.random.seed(cell.seed)
    backbone = BACKBONES.get(cell.backbone).factory(**cell.backbone_args)
    frozen = freeze(backbone, cell.model.freeze, cell.model.unfrozen_stages)
    loss_fn = LOSSES.get(cell.loss).factory(backbone.embed_dim, **cell.loss_args)
    bf16 = use_bf16(cell.train.precision, device)
    eval_bf16 = bf16 if cell.eval.precision == "train" else cell.eval.precision == "bf16"
    channels_last = device.type == "cpu"  # oneDNN's convolutions on NHWC (`train.embed` says why)
    backbone.to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    loss_fn.to(device)
    native = backbone.input_spec
    spec = apply_preprocess(native, cell.model.preprocess)
    key = ("images", data_key(cell), tuple(native.size), native.channels)
    content = _content_of(data)
    images, conversion = cached_tensor(caches, key, lambda: fit_to_spec(data.images, native), content)  # once per dataset and input shape
    labels = torch.from_numpy(data.labels)
    train_idx, val_idx, test_idx, split = split_for(cell, data)
    check = input_check(images[_spread_sample(train_idx, 256, cell.split.seed)], spec, native, normalize)
    if check["mismatch"]:
        warn(
            f"input check: {cell.backbone} with preprocess = {cell.model.preprocess!r} is fed inputs {check['mean_shift_in_native_stds']:.1f} "
            f"native stds off and {check['spread_ratio']:.1f}x the spread its pretrained weights expect"
        )

    def prepare_images(batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch, spec)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    trains = getattr(loss_fn, "trains", True)
    if not trains and not isinstance(getattr(backbone, "trunk", None), torch.nn.Module):
        raise UserError(f"loss 'none' scores the backbone's trunk without its head, and {cell.backbone} has no `trunk` — drop it from the baseline")
    augment = make_augment(cell.train.augment, cell.seed)
    cost_model = protocol_cost(cell, trains)
    cached = cost_model == "features_once" and feature_cache
    per_image, charge_wait = 0.0, None
    if cached:  # a frozen trunk sees each image once per grid; only the head trains
        inputs, per_image, charge_wait = _features(caches, cell, backbone, images, prepare_images, device, bf16, report, content)
        model, prepare_train, prepare_eval = backbone.head, _identity, _identity
    elif not trains and feature_cache and backbone.input_spec.pretrained:
        # the untrained baseline of pretrained weights scores the very features its frozen lines train heads on
        cached = True
        inputs, _, _ = _features(caches, cell, backbone, images, prepare_images, device, bf16, report, content, timed=False)
        model, prepare_train, prepare_eval = torch.nn.Identity(), _identity, _identity
    else:
        model, inputs, prepare_eval = (backbone if trains else backbone.trunk), images, prepare_images
        prepare_train = prepare_images if augment.transform is None else (lambda batch: prepare_images(augment(batch)))
    train_model, train_inputs, warmup_prepare = model, inputs[train_idx], None
    if cost_model == "features_once" and not cached:  # the same protocol without the cache: this cell extracts its training images' features
        report(info="embedding the training images once (frozen trunk)")
        train_inputs, per_image, charge_wait = _extract(backbone.trunk, images[train_idx], prepare_images, cell.train.batch_size, device, bf16)
        train_model, prepare_train = backbone.head, _identity
    if augment.transform is not None:  # the warm-up step must not advance the training augmentation's generator
        warm_augment = make_augment(cell.train.augment, cell.seed)
        warmup_prepare = lambda batch: prepare_images(warm_augment(batch))
    charge = len(train_idx) * per_image if cost_model == "features_once" else 0.0
    return Built(
        backbone,
        loss_fn,
        frozen,
        bf16,
        eval_bf16,
        spec,
        native,
        images,
        conversion,
        check,
        labels,
        train_idx,
        val_idx,
        test_idx,
        split,
        trains,
        augment,
        cost_model,
        cached,
        per_image,
        charge_wait,
        charge,
        model,
        inputs,
        prepare_images,
        prepare_eval,
        train_model,
        train_inputs,
        prepare_train,
        warmup_prepare,
    )


class Scorer:
    """Scores the cell's model as it is now, on validation (curve points, a trial's objective) or test (the row's
    metrics, with the threshold chosen on validation and each test item's outcome).

    Embeddings are kept by (the weights, as the optimizer steps that made them; which images), so that no images
    are embedded twice with the same weights: the selected curve point's validation embeddings are those the test
    score's threshold needs, and a curve scored on test ends with the final weights' test embeddings. Only the
    current and the selected weights' are kept."""

    def __init__(self, cell: Cell, built: Built, data: LabelledImages, device: torch.device):
        self.cell, self.b, self.device = cell, built, device
        self.groups = data.attributes[cell.eval.episode_group] if cell.eval.episode_group else None
        self.roles = data.attributes.get("role")
        self.embedded: dict = {}
        self.weights: int | str = 0  # optimizer steps behind the weights (and BatchNorm statistics) the model holds now
        self.scored_dim = built.backbone.embed_dim  # what evaluation saw: the head's output, or the trunk's for the untrained baseline
        self.curve: list[dict] = []
        self.curve_on = "val" if len(built.val_idx) else "test"  # the test split is scored on a curve only when there is no validation

    def embed_once(self, what: tuple, idx: np.ndarray) -> torch.Tensor:
        key = (self.weights, *what)
        if key not in self.embedded:
            b = self.b
            self.embedded[key] = embed(b.model, b.inputs[idx], b.prepare_eval, self.cell.eval.batch_size, self.device, b.eval_bf16)
        return self.embedded[key]

    def score(self, idx: np.ndarray, split: str, **extra) -> tuple[dict, int]:
        """Every metric of the images `idx` (the `split`: "val" or "test") as the model embeds them now; (metrics, how
        many embeddings are not finite). When the images have roles, queries are searched against the gallery only
        (the In-Shop protocol)."""
        roles, labels, cell = self.roles, self.b.labels, self.cell
        queries, gallery = (idx[roles[idx] == "query"], idx[roles[idx] == "gallery"]) if roles is not None and (roles[idx] != "").any() else (idx, None)
        emb = self.embed_once((split, "all" if gallery is None else "queries"), queries)
        self.scored_dim = emb.shape[1]
        if gallery is not None:
            extra["gallery"] = self.embed_once((split, "gallery"), gallery)
            extra["gallery_labels"] = labels[gallery]
        bad = sum(int((~torch.isfinite(e).all(1)).sum()) for e in (emb, extra.get("val_embeddings"), extra.get("gallery")) if e is not None)
        if bad:
            return {}, bad
        grouped = {"groups": self.groups[queries], "group_name": cell.eval.episode_group} if self.groups is not None else {}
        return evaluate(emb, labels[queries], self.b.loss_fn.distance, cell.eval, cell.split.seed, **grouped, **extra), 0

    def score_test(self, items: dict | None = None) -> tuple[dict, int]:
        """The test split as the model embeds it now, with a threshold chosen on the validation split when there is
        one; `items` (a dict) collects the per-test-item outcomes (bench.items)."""
        b = self.b
        val = self.embed_once(("val", "all"), b.val_idx) if len(b.val_idx) else None
        return self.score(b.test_idx, "test", items=items, **({"val_embeddings": val, "val_labels": b.labels[b.val_idx]} if val is not None else {}))

    def curve_point(self, fraction: float, at, keep: int | None) -> dict:
        """Score a learning-curve point (no ROC kept) and append it to the curve; the embeddings of weights other
        than these and `keep` (the selected point's) are dropped."""
        self.weights = at.steps
        for key in [key for key in self.embedded if key[0] not in {at.steps, keep}]:
            del self.embedded[key]
        b = self.b
        metrics, bad = self.score(b.val_idx if len(b.val_idx) else b.test_idx, self.curve_on, roc_points=0)
        self.curve.append(
            {
                "fraction": fraction,
                "progress": at.progress,
                "steps": at.steps,
                "samples": at.samples,
                "seconds": at.seconds,
                "on": self.curve_on,
                "metrics": metrics,
                **({"nonfinite": bad} if bad else {}),
            }
        )
        return metrics

    def final(self, result: TrainResult, selected: dict | None) -> tuple[dict, int, dict]:
        """The row's metrics, how many embeddings were not finite, and the test items behind the metrics (with the
        ROC's vertices, which `bench plot` draws: half a tiny cell's row, so kept in its items file). A search trial
        is scored on validation and keeps no items."""
        items: dict = {}
        if self.cell.trial is not None:  # a search trial: its objective is on validation, and test is never scored
            curve = self.curve
            if result.stopped_by == "pruned" or (curve and curve[-1]["fraction"] == 1.0 and selected is None):
                # pruned: the curve point that pruned it is its last score; else the end of training was just scored
                metrics, nonfinite = curve[-1]["metrics"], curve[-1].get("nonfinite", 0)
            else:
                metrics, nonfinite = self.score(self.b.val_idx, "val")
        else:
            metrics, nonfinite = self.score_test(items)
        roc = metrics.pop("verification_roc", None)
        if roc and self.cell.trial is None:
            items.update(roc_items(roc))
        return metrics, nonfinite, items


def _train(cell: Cell, b: Built, caches: dict, device: torch.device, warn, on_step, on_curve) -> tuple[TrainResult, int, int]:
    """Train under the budget (nothing for the untrained baseline); (result, FLOPs per image, short classes)."""
    if not b.trains:  # the untrained baseline: no optimizer, no budget; the trunk's features as they are
        return TrainResult(0, 0, 0.0, "untrained", float("nan"), 0.0, 0.0, 0.0, 0.0), 0, 0
    sampler = BatchSampler(b.loss_fn.batch, b.labels.numpy()[b.train_idx], cell.train.batch_size, cell.seed, cell.train.m_per_class)
    if sampler.short_classes():
        warn(
            f"{sampler.short_classes()} of {len(sampler.by_class)} training classes have fewer than train.m_per_class = "
            f"{cell.train.m_per_class} images: their images repeat within a batch (drawn with replacement)"
        )
    flops = _flops_per_image(caches, cell, b.backbone, b.prepare_images(b.images[b.train_idx[:2]].to(device)))
    result = train(
        b.train_model,
        b.loss_fn,
        b.train_inputs,
        b.labels[b.train_idx],
        b.prepare_train,
        cell.train,
        cell.budget,
        cell.seed,
        device,
        b.bf16,
        on_step,
        charge_at_start=b.charge,
        charge_wait=b.charge_wait,
        sampler=sampler,
        curve=cell.eval.curve,
        on_curve=on_curve,
        warmup_prepare=b.warmup_prepare,
    )
    return result, flops, sampler.short_classes()


def _checkpoint(
    cell: Cell, b: Built, scorer: Scorer, data: LabelledImages, metrics: dict, selected: dict | None, last: dict | None, result: TrainResult, root: Path, warn
) -> dict | None:
    """Save the checkpoint train.save asks for; its record for the row, or None when the weights it would keep are
    not finite. save = "last" while the test split scored the validation-selected weights: a checkpoint's metadata
    describes the weights in it, so the last weights get their own validation threshold and test metrics."""
    kept, bad = metrics, 0
    if last is not None:
        b.model.load_state_dict(last)
        scorer.weights = "diverged" if result.stopped_by == "diverged" else result.steps
        kept, bad = scorer.score_test()
        if bad:
            warn(f'train.save = "last": the last weights give {bad} NaN or inf embeddings (the selected ones were scored), so no checkpoint is kept')
            return None
    weights_from = f"best@{selected['fraction']:g}" if selected and last is None else "last"
    meta = checkpoint_meta(
        cell,
        b.spec,
        b.native,
        {"channels": b.conversion["from"][0], "size": b.conversion["from"][1:]},
        cell.eval.distance or b.loss_fn.distance,
        kept,
        "bf16" if b.eval_bf16 else "fp32",  # what the kept metrics were scored in, and what `bench embed` embeds in
        b.trains,
        weights_from,
        data.meta.get("decoding"),
    )
    return {"path": f"{root.name}/{cell.cell_id}", "weights_from": weights_from, "sha256": save_checkpoint(root / cell.cell_id, meta, b.backbone, b.loss_fn)}


def _train_record(cell: Cell, b: Built, result: TrainResult, flops: int, short: int, selected: dict | None) -> dict:
    """The row's `train`: what the budget bought, at what speed and cost, and the curve point selected."""
    steps = max(result.steps, 1)
    return {
        **asdict(result),
        "data_time_per_step": result.data_seconds / steps,
        "compute_time_per_step": result.compute_seconds / steps,
        "augment": b.augment.record(),
        "feature_cache": b.cached,
        "cost_model": b.cost_model,
        "charged_images": len(b.train_idx) if b.cost_model == "features_once" else 0,
        "charged_seconds_per_image": b.per_image,
        "m_per_class_short_classes": short,
        "images_per_second": result.samples / max(result.seconds, 1e-9),
        "gflops_per_image": flops / 1e9,
        "gflop_per_second": flops * result.samples / max(result.seconds, 1e-9) / 1e9,
        "schedule": {"name": cell.train.schedule, "warmup": cell.train.warmup},
        **({"selected": selected} if selected else {}),
    }


class _Selection:
    """train.select = "best": keep the weights of the curve point best on validation (eval.select_metric),
    and put them back before the test split is scored ("A Metric Learning Reality Check"'s protocol)."""

    def __init__(self, cell: Cell, model: torch.nn.Module):
        self.on = cell.train.select == "best"
        self.metric, self.model = cell.eval.select_metric, model
        self.lower = lower_is_better(self.metric)
        self.best: dict | None = None
        self.state: dict | None = None

    def offer(self, fraction: float, steps: int, metrics: dict) -> None:
        value = metrics.get(self.metric, float("nan"))
        if not self.on or not math.isfinite(value):
            return
        if self.best is None or (value < self.best["value"] if self.lower else value > self.best["value"]):
            self.best = {"fraction": fraction, "steps": steps, "metric": self.metric, "value": value}
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self) -> dict | None:
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return self.best


def split_for(cell: Cell, data: LabelledImages):
    s = cell.split
    return split_classes(data, s.test_fraction, s.seed, s.val_fraction, list(s.test_classes) or None, list(s.val_classes) or None, s.folds, s.fold)


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


def protocol_cost(cell: Cell, trains: bool) -> str:
    """What a cell's budget clock pays for (docs/grids.md, *Budgets*): "end_to_end", every step's forward and backward
    pass through what trains; "features_once", a frozen trunk without augmentation: one extraction of the
    training images' features (charged at the start), then the head's steps; "trunk_per_step", a frozen trunk
    with augmentation: its forward pass on each step's augmented images; "untrained", no training at all."""
    if not trains:
        return "untrained"
    if cell.model.freeze != "backbone":
        return "end_to_end"
    return "features_once" if cell.train.augment == "none" else "trunk_per_step"


def _extract(trunk, images, prepare, size, device, bf16) -> tuple[torch.Tensor, float, float | None]:
    """The trunk's features of `images` in chunks of the training batch size, its forward seconds per image,
    timed after the first (warm-up) chunk (on that chunk again when there is no other): what the trunk's forward
    costs per image inside a training step on this run's device, threads and precision — and the share of the
    timed part's runnable time its threads waited for a core (a busy neighbour inflates the charge too)."""
    head = embed(trunk, images[:size], prepare, size, device, bf16)
    timed = images[size:] if len(images) > size else images[:size]
    meter = Meter(torch.get_num_threads())
    start = time.perf_counter()
    rest = embed(trunk, timed, prepare, size, device, bf16)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_image = (time.perf_counter() - start) / max(len(timed), 1)
    wait = meter.record()["core_wait_share"]
    return (torch.cat([head, rest]) if len(images) > size else head), per_image, wait


def _features(
    caches: dict, cell: Cell, backbone, images, prepare, device, bf16, report, content, timed: bool = True
) -> tuple[torch.Tensor, float, float | None]:
    """Trunk features of every image, cached per (backbone and its weights, preprocess, data, input, precision),
    and the trunk's forward seconds per image measured in this run. A trunk that is not pretrained depends on the
    seed's initialisation, so the seed joins the key. The timing depends on the device, the threads, the
    precision and the batch size, so it is never taken from the disk cache: it is the extraction's own when the
    features are made here, else measured on a sample of the images (once per process and batch size)."""
    args = {k: v for k, v in cell.backbone_args.items() if k not in ("head", "embed_dim")}
    seed = None if backbone.input_spec.pretrained else cell.seed
    key = ("features", cell.backbone, json.dumps(args, sort_keys=True), cell.model.preprocess, data_key(cell), bf16, seed)
    size, made = cell.train.batch_size, {}

    def make():
        report(info="embedding every image once (frozen-feature cache)")
        features, *made["timing"] = _extract(backbone.trunk, images, prepare, size, device, bf16)
        return features, {}

    features, _ = cached_tensor(caches, key, make, content)
    timing = ("trunk seconds per image", key, size, str(device), torch.get_num_threads())
    if not timed:  # an untrained baseline charges nothing
        return features, 0.0, None
    if "timing" in made:
        caches[timing] = tuple(made["timing"])
    elif timing not in caches:
        report(info="timing the frozen trunk")
        caches[timing] = _extract(backbone.trunk, images[: size + max(size, 256)], prepare, size, device, bf16)[1:]
    return features, *caches[timing]


def _content_of(data: LabelledImages) -> Callable[[], str]:
    """A lazy content hash of the dataset, computed once per dataset object and only when a disk cache asks
    (memoised in its `meta`, which plugins fill and nothing compares)."""

    def content() -> str:
        if "content_sha256" not in data.meta:
            data.meta["content_sha256"] = content_hash(data.images, data.labels)
        return data.meta["content_sha256"]

    return content


def _spec_record(spec: InputSpec) -> dict:
    return {"size": list(spec.size), "channels": spec.channels, "mean": list(spec.mean), "std": list(spec.std), "bgr": spec.bgr, "pretrained": spec.pretrained}


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
