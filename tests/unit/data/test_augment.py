"""Batched augmentation: shapes, seeding, identities, Koch's ranges, and the warp against a slow per-pixel reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.data.augment import Augment, FlipCrop, KochAffine, make_augment, warp
from bench.errors import UserError


def _batch(n=6, c=1, h=11, w=15, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", ["none", "koch", "flip_crop", "natural"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_seed_determinism(name, channels):
    x = _batch(c=channels)
    a, b, other = make_augment(name, 5), make_augment(name, 5), make_augment(name, 6)
    ya, yb = a(x), b(x)
    assert ya.shape == x.shape and ya.dtype == torch.uint8
    assert torch.equal(ya, yb) and torch.equal(a(x), b(x))  # same seed: same sequence of distortions
    if name == "none":
        assert ya is x
    else:
        assert not torch.equal(other(x), ya) and not torch.equal(ya, x)


@pytest.mark.parametrize(
    "transform",
    [KochAffine(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.0, p=1.0), KochAffine(p=0.0), FlipCrop(flip_p=0.0, area=(1.0, 1.0), ratio=(1.0, 1.0))],
)
def test_zero_ranges_are_the_identity(transform):
    x = _batch(c=3)
    assert torch.equal(Augment("t", transform, 0)(x), x)


def test_koch_parameters_stay_in_the_paper_ranges_each_half_the_time():
    params = KochAffine().sample(4000, torch.Generator().manual_seed(0))
    for key, identity, low, high in (("rotation", 0.0, -10, 10), ("shear", 0.0, -0.3, 0.3), ("scale", 1.0, 0.8, 1.2), ("translate", 0.0, -2, 2)):
        value = params[key]
        assert value.min() >= low and value.max() <= high
        assert value.min() < low + 0.05 * (high - low) and value.max() > high - 0.05 * (high - low)  # the whole range is used
        applied = (value != identity).reshape(4000, -1).any(1).double().mean().item()
        assert abs(applied - 0.5) < 0.04, f"{key} applied to {applied:.3f} of images, expected 0.5"


def test_translation_and_rotation_move_pixels_where_expected():
    k = KochAffine()
    x = torch.zeros((1, 1, 9, 9), dtype=torch.uint8)
    x[0, 0, 2, 6] = 255

    def params(rotation=0.0, translate=(0.0, 0.0)):
        d = torch.float64
        return {
            "rotation": torch.tensor([rotation], dtype=d),
            "shear": torch.zeros((1, 2), dtype=d),
            "scale": torch.ones((1, 2), dtype=d),
            "translate": torch.tensor([translate], dtype=d),
        }

    moved = warp(x, k.theta(params(translate=(2.0, -1.0)), 9, 9), "zeros")
    assert (moved[0, 0] == 255).nonzero().tolist() == [[1, 8]]  # +2 px in x (right), -1 px in y (up)
    assert torch.equal(warp(x, k.theta(params(rotation=90.0), 9, 9), "zeros"), torch.rot90(x, -1, (2, 3)))  # clockwise on screen


def _reference_koch(image: np.ndarray, rotation, shear, scale, translate) -> np.ndarray:
    """Slow and obvious: for each output pixel, invert the forward map and sample bilinearly (edges clamped)."""
    h, w = image.shape
    a = math.radians(rotation)
    forward = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[1, shear[0]], [shear[1], 1]]) @ np.diag(scale)
    inverse = np.linalg.inv(forward)
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            px, py = inverse @ (np.array([j - (w - 1) / 2, i - (h - 1) / 2]) - np.array(translate))
            sx, sy = min(max(px + (w - 1) / 2, 0), w - 1), min(max(py + (h - 1) / 2, 0), h - 1)
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            fx, fy = sx - x0, sy - y0
            out[i, j] = image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x1] * fx * (1 - fy) + image[y1, x0] * (1 - fx) * fy + image[y1, x1] * fx * fy
    return out


def test_koch_warp_matches_a_per_pixel_reference_on_a_non_square_image():
    k = KochAffine(p=1.0)
    x = _batch(n=3, h=11, w=15, seed=1)
    params = k.sample(3, torch.Generator().manual_seed(2))
    y = warp(x, k.theta(params, 11, 15), "border")
    for n in range(3):
        expected = _reference_koch(
            x[n, 0].double().numpy(), params["rotation"][n].item(), params["shear"][n].tolist(), params["scale"][n].tolist(), params["translate"][n].tolist()
        )
        assert np.abs(y[n, 0].double().numpy() - expected).max() <= 1.0  # the warp rounds to uint8


def test_flip_crop_flip_only_mirrors_and_crops_stay_inside():
    x = _batch(c=3)
    flipped = Augment("t", FlipCrop(flip_p=1.0, area=(1.0, 1.0), ratio=(1.0, 1.0)), 0)(x)
    assert torch.equal(flipped, torch.flip(x, dims=[3]))
    p = FlipCrop().sample(2000, torch.Generator().manual_seed(0))
    area = p["size"].prod(1)
    assert p["size"].max() <= 1.0 and area.min() >= 0.8 * 0.75 - 1e-9 and area.max() <= 1.0
    assert (p["centre"].abs() <= 1 - p["size"] + 1e-12).all()  # the crop never leaves the image
    assert abs(p["flip"].double().mean().item() - 0.5) < 0.05


def test_natural_is_the_reality_checks_random_resized_crop_and_flip():
    """16–100 % of the area at aspect 3/4–4/3 (torchvision's RandomResizedCrop(scale=(0.16, 1))) and a coin-flip mirror."""
    augment = make_augment("natural", 0)
    assert augment.record()["params"] == {"flip_p": 0.5, "area": (0.16, 1.0), "ratio": (3 / 4, 4 / 3), "padding": "border"}
    p = augment.transform.sample(4000, torch.Generator().manual_seed(1))
    area, aspect = p["size"].prod(1), p["size"][:, 0] / p["size"][:, 1]
    assert area.min() < 0.2 and area.max() > 0.95 and area.min() >= 0.16 * 0.75 - 1e-9  # sides capped at the image's
    assert aspect.min() >= 3 / 4 * 0.75 - 1e-9 and (p["centre"].abs() <= 1 - p["size"] + 1e-12).all()


def test_unknown_augmentation_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'koch'"):
        make_augment("kosh", 0)
    assert make_augment("koch", 3).record() == {
        "name": "koch",
        "seed": 3,
        "params": {"rotation": 10.0, "shear": 0.3, "scale": (0.8, 1.2), "translate": 2.0, "p": 0.5, "padding": "border"},
    }
