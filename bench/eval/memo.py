"""Label-only work remembered across evaluations: verification's pair sample and the few-shot episodes
depend on the labels and the seed alone, and every cell of a grid scores the same test labels with the same
seed (a learning curve scores the same validation labels at each of its points)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def digest(*parts) -> str:
    """A key for labels (tensors or arrays, by dtype, shape and bytes) and plain settings."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.cpu().numpy()
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(part.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


class Memo:
    """The last `keep` results of a pure function of labels and settings; `copy` hands each caller its own copy,
    so a caller that changed a result in place could not change what the next one gets."""

    def __init__(self, copy: Callable[[T], T], keep: int):
        self.copy, self.keep = copy, keep
        self.kept: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str, make: Callable[[], T]) -> T:
        if key in self.kept:
            self.kept.move_to_end(key)
        else:
            self.kept[key] = make()
            while len(self.kept) > self.keep:
                self.kept.popitem(last=False)
        return self.copy(self.kept[key])
