"""Seeded, batched augmentation of uint8 training images: none, Koch et al. 2015's affine distortions, or a
random flip + resized crop (mild, or the Reality Check's natural-image range). One affine warp per batch (affine_grid + grid_sample), on the batch's device."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from bench.errors import UserError


class AffineTransform(Protocol):
    """Draws per-image parameters, then turns them into affine_grid matrices (output → input, normalised)."""

    padding: str  # grid_sample padding_mode for pixels drawn from outside the image

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def theta(self, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor: ...


def _uniform(n: int, low: float, high: float, generator: torch.Generator, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, *shape), generator=generator, dtype=torch.float64)


@dataclass(frozen=True)
class KochAffine:
    """Koch, Zemel & Salakhutdinov 2015, §4.2: T = (θ, ρx, ρy, sx, sy, tx, ty) with θ ∈ [−10°, 10°],
    ρ ∈ [−0.3, 0.3], s ∈ [0.8, 1.2], t ∈ [−2, 2] px; each of rotation, shear, scale and translation is
    included with probability `p` (else it is the identity). A pixel at p (centred coordinates) moves to
    R(θ)·[[1, ρx], [ρy, 1]]·diag(sx, sy)·p + t. Edges are replicated, so Omniglot's white paper stays white."""

    rotation: float = 10.0  # degrees
    shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 2.0  # pixels
    p: float = 0.5
    padding: str = "border"

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        on = torch.rand((n, 4), generator=generator, dtype=torch.float64) < self.p  # rotation, shear, scale, translation
        return {
            "rotation": torch.where(on[:, 0], _uniform(n, -self.rotation, self.rotation, generator), 0.0),
            "shear": torch.where(on[:, 1:2], _uniform(n, -self.shear, self.shear, generator, (2,)), 0.0),
            "scale": torch.where(on[:, 2:3], _uniform(n, *self.scale, generator, (2,)), 1.0),
            "translate": torch.where(on[:, 3:4], _uniform(n, -self.translate, self.translate, generator, (2,)), 0.0),
        }

    def theta(self, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        n = len(params["rotation"])
        angle = torch.deg2rad(params["rotation"])
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotate = torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
        shear = torch.stack([torch.ones(n, dtype=angle.dtype), params["shear"][:, 0], params["shear"][:, 1], torch.ones(n, dtype=angle.dtype)], 1).view(n, 2, 2)
        forward = rotate @ shear @ torch.diag_embed(params["scale"])  # in pixels, (x, y) order
        to_unit = torch.tensor([2.0 / width, 2.0 / height], dtype=angle.dtype)  # pixels → affine_grid's [-1, 1]
        forward = to_unit[:, None] * forward / to_unit[None, :]
        inverse = torch.linalg.inv(forward)  # affine_grid maps each output pixel back to where it came from
        shift = -(inverse @ (params["translate"] * to_unit)[..., None])
        return torch.cat([inverse, shift], 2)


@dataclass(frozen=True)
class FlipCrop:
    """Horizontal flip with probability `flip_p`, then a random crop of `area` × the image area with aspect
    ratio in `ratio` (log-uniform, as torchvision's RandomResizedCrop; sides capped at the image's), resized
    back to the input size. For natural images; characters and digits would change meaning when flipped."""

    flip_p: float = 0.5
    area: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    padding: str = "border"

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        flip = torch.rand(n, generator=generator, dtype=torch.float64) < self.flip_p
        area = _uniform(n, *self.area, generator)
        ratio = torch.exp(_uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), generator))
        size = torch.stack([torch.sqrt(area * ratio), torch.sqrt(area / ratio)], 1).clamp(max=1.0)  # width, height fractions
        centre = (2 * torch.rand((n, 2), generator=generator, dtype=torch.float64) - 1) * (1 - size)
        return {"flip": flip, "size": size, "centre": centre}

    def theta(self, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        n = len(params["flip"])
        theta = torch.zeros((n, 2, 3), dtype=torch.float64)
        theta[:, 0, 0] = torch.where(params["flip"], -1.0, 1.0) * params["size"][:, 0]
        theta[:, 1, 1] = params["size"][:, 1]
        theta[:, :, 2] = params["centre"]
        return theta


def warp(images: torch.Tensor, theta: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Apply one affine matrix per image (bilinear) to uint8 (N, C, H, W); returns uint8 of the same shape."""
    x = images.float()
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class Augment:
    """A seeded batch augmentation: call it on each training batch, uint8 (N, C, H, W) in and out.

    Parameters are drawn on the CPU from a torch.Generator seeded once, so a run's sequence of
    distortions depends only on `seed` and the batches seen; the warp runs on the batch's device.
    """

    def __init__(self, name: str, transform: AffineTransform | None, seed: int):
        self.name = name
        self.transform = transform
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.transform is None or len(images) == 0:
            return images
        params = self.transform.sample(len(images), self.generator)
        return warp(images, self.transform.theta(params, images.shape[-2], images.shape[-1]), self.transform.padding)

    def record(self) -> dict:
        """JSON-safe description for the result row."""
        return {"name": self.name, "seed": self.seed, **({"params": asdict(self.transform)} if self.transform else {})}


def natural() -> FlipCrop:
    """The usual natural-image training augmentation, as "A Metric Learning Reality Check" (Musgrave et al. 2020)
    trains: a horizontal flip (p = 0.5) and a random resized crop of 16–100 % of the area, aspect 3/4–4/3."""
    return FlipCrop(area=(0.16, 1.0))


AUGMENTATIONS = {"none": lambda: None, "koch": KochAffine, "flip_crop": FlipCrop, "natural": natural}


def make_augment(name: str, seed: int) -> Augment:
    """The augmentation called `name` ("none", "koch", "flip_crop", "natural"), seeded; for training batches only."""
    if name not in AUGMENTATIONS:
        close = difflib.get_close_matches(name, AUGMENTATIONS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown augmentation {name!r} — {hint}choose one of {', '.join(AUGMENTATIONS)}")
    return Augment(name, AUGMENTATIONS[name](), seed)
