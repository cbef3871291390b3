"""Batch samplers, one per batch shape a loss can declare (see bench.plugins.Loss for the layouts).

Written here rather than taken from PML's MPerClassSampler because the runner draws one batch per
step from an endless seeded stream, and pairs/triplets need the balanced layouts the losses expect.
"""

from __future__ import annotations

import numpy as np

from bench.errors import UserError


def min_batch_size(kind: str, m_per_class: int) -> int:
    # pairs: at least 2 same and 2 different pairs, since PML's pair losses score nothing from one of each
    return {"pairs": 8, "triplets": 3, "m_per_class": 2 * m_per_class}[kind]


class BatchSampler:
    def __init__(self, kind: str, labels: np.ndarray, batch_size: int, seed: int, m_per_class: int = 4):
        self.kind, self.batch_size, self.m = kind, batch_size, m_per_class
        self.rng = np.random.default_rng(seed)
        classes, inverse = np.unique(labels, return_inverse=True)
        by_class = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        self.by_class = [idx for idx in by_class if len(idx) >= 2]  # a positive needs two images
        if len(self.by_class) < 2:
            raise UserError("training split has fewer than 2 classes with 2+ images — use a dataset with more classes or a smaller split.test_fraction")
        need = min_batch_size(kind, m_per_class)
        if batch_size < need:
            raise UserError(f"train.batch_size = {batch_size} is too small for {kind} batches — use at least {need}")

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        return self.draw(self.batch_size)

    def draw(self, size: int) -> np.ndarray:
        """A batch of at most `size` images (the last batch of an exact `max_samples` budget may be smaller)."""
        return {"pairs": self._pairs, "triplets": self._triplets, "m_per_class": self._m_per_class}[self.kind](size)

    def images_per_batch(self, size: int) -> int:
        """How many images `draw(size)` returns: whole pairs, whole triplets, or whole groups of m; 0 when
        `size` is below the smallest batch the loss can learn from."""
        if size < min_batch_size(self.kind, self.m):
            return 0
        if self.kind == "pairs":
            return size // 2 * 2
        if self.kind == "triplets":
            return size // 3 * 3
        return min(size // self.m, len(self.by_class)) * self.m

    def short_classes(self) -> int:
        """Training classes with fewer than m images: in m_per_class batches they are drawn with replacement."""
        return sum(len(idx) < self.m for idx in self.by_class) if self.kind == "m_per_class" else 0

    def _two_from(self, c: int) -> tuple[int, int]:
        a, b = self.rng.choice(self.by_class[c], 2, replace=False)
        return a, b

    def _other(self, c: int) -> int:
        other = self.rng.integers(len(self.by_class) - 1)
        return other + (other >= c)

    def _one_from(self, c: int) -> int:
        return self.rng.choice(self.by_class[c])

    def _pairs(self, size: int) -> np.ndarray:
        b = size // 2
        left, right = np.empty(b, np.int64), np.empty(b, np.int64)
        for i in range(b):
            c = self.rng.integers(len(self.by_class))
            if i < b // 2:  # same-class half
                left[i], right[i] = self._two_from(c)
            else:
                left[i], right[i] = self._one_from(c), self._one_from(self._other(c))
        order = self.rng.permutation(b)  # interleave same and different pairs
        return np.concatenate([left[order], right[order]])

    def _triplets(self, size: int) -> np.ndarray:
        b = size // 3
        out = np.empty((3, b), np.int64)
        for i in range(b):
            c = self.rng.integers(len(self.by_class))
            out[0, i], out[1, i] = self._two_from(c)
            out[2, i] = self._one_from(self._other(c))
        return out.reshape(-1)

    def _m_per_class(self, size: int) -> np.ndarray:
        n_classes = min(size // self.m, len(self.by_class))
        chosen = self.rng.choice(len(self.by_class), n_classes, replace=False)
        return np.concatenate([self.rng.choice(self.by_class[c], self.m, replace=len(self.by_class[c]) < self.m) for c in chosen])
