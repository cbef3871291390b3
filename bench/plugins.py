"""The plugin interfaces (Protocols) and the three registries every part of the harness shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # annotations only: a grid's errors should not wait for torch to import
    import torch

from bench.registry import Registry

BatchKind = Literal["pairs", "triplets", "m_per_class"]
Distance = Literal["cosine", "euclidean", "l1"]


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects to be fed: the harness resizes, converts channels and normalises to this."""

    size: tuple[int, int]  # (height, width)
    channels: int  # 1 or 3
    mean: tuple[float, ...]  # per channel, for pixels scaled to [0, 1]
    std: tuple[float, ...]
    pretrained: bool = False  # weights trained on inputs normalised this way (the input check compares)
    bgr: bool = False  # feed channels in BGR order (Caffe-style preprocessing)


@runtime_checkable
class Backbone(Protocol):
    """An nn.Module mapping (N, C, H, W) float images to (N, embed_dim) embeddings."""

    embed_dim: int
    input_spec: InputSpec

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def parameters(self): ...


@runtime_checkable
class Loss(Protocol):
    """An nn.Module scoring a batch of embeddings; its own parameters (if any) are trained too.

    Layout of `embeddings`/`labels` by `batch`:
      pairs:       [x_1..x_B, y_1..y_B]           — pair i is (x_i, y_i); half same-class, half not
      triplets:    [a_1..a_B, p_1..p_B, n_1..n_B]  — anchor, positive (same class), negative
      m_per_class: any order, m images of each class in the batch
    """

    batch: BatchKind
    distance: Distance  # how embeddings trained with this loss are compared at evaluation

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class LabelledImages:
    """A whole dataset in memory: uint8 images (N, C, H, W), int64 class ids, class names.

    The images' own channels and size are the dataset's native input (`native`); the harness converts
    them to what a backbone needs. `split` is optional: a dataset that brings its own class-disjoint split
    sets "train", "val" or "test" per image; otherwise the harness splits classes by the grid's seeded
    rule. `attributes` holds per-image metadata arrays of length N (Omniglot: `alphabet`, `drawer`).
    A dataset that decodes image files says how in `meta["decoding"]` ({"background": [r, g, b] | None,
    "max_pixels": n}); a checkpoint keeps it so that `bench embed` decodes new files the same way.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    split: np.ndarray | None = None
    meta: dict = field(default_factory=dict, compare=False)
    attributes: dict[str, np.ndarray] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        # ValueError, not assert: a dataset plugin's mistake must be a clear one-line error (asserts vanish under -O)
        n = len(self.labels)
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a uint8 numpy array (N, C, H, W) with C = 1 or 3, got {getattr(self.images, 'dtype', type(self.images).__name__)} "
                f"of shape {getattr(self.images, 'shape', '?')}"
            )
        if not isinstance(self.labels, np.ndarray) or self.labels.ndim != 1 or self.labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be a 1-D integer numpy array, got {getattr(self.labels, 'dtype', type(self.labels).__name__)}")
        if len(self.images) != n:
            raise ValueError(f"{len(self.images)} images but {n} labels — one label per image")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must index class_names (0..{len(self.class_names) - 1}), got {self.labels.min()}..{self.labels.max()}")
        if self.split is not None and (len(self.split) != n or not set(np.unique(self.split)) <= set(SPLIT_NAMES)):
            raise ValueError(f"split must give one of {SPLIT_NAMES} per image ({len(self.split)} values for {n} images)")
        for key, values in self.attributes.items():
            if len(values) != n:
                raise ValueError(f"attribute {key!r} has {len(values)} values for {n} images — attributes are per image")

    @property
    def native(self) -> dict:
        """The dataset's own channels and (height, width), before any conversion for a backbone."""
        return {"channels": int(self.images.shape[1]), "size": [int(self.images.shape[2]), int(self.images.shape[3])]}


BACKBONES: Registry[Backbone] = Registry("backbone", group="metric_bench.backbones")
LOSSES: Registry[Loss] = Registry("loss", group="metric_bench.losses")
DATASETS: Registry[LabelledImages] = Registry("dataset", group="metric_bench.datasets")
REGISTRIES = {"backbones": BACKBONES, "losses": LOSSES, "datasets": DATASETS}
