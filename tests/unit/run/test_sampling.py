"""BatchSampler layouts, checked over many batches of a seeded stream."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import numpy as np
import pytest

from bench.errors import UserError
from bench.run.sampling import BatchSampler

# Classes 0..6 with these image counts; classes 2 and 5 have a single image each. Shuffled so that
# indices and classes are not aligned.
COUNTS = [3, 2, 1, 5, 4, 1, 6]
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))
SINGLETON_INDICES = {int(i) for i in np.flatnonzero(np.isin(LABELS, [2, 5]))}
N_BATCHES = 60


def batches(kind, batch_size, seed=0, labels=LABELS, m=4, n=N_BATCHES):
    return list(islice(BatchSampler(kind, labels, batch_size, seed, m_per_class=m), n))


# ---------------------------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("batch_size", [8, 9, 11, 16, 30])
def test_pairs_layout(batch_size):
    b = batch_size // 2
    for batch in batches("pairs", batch_size):
        assert batch.dtype == np.int64 and batch.shape == (2 * b,)
        assert ((batch >= 0) & (batch < len(LABELS))).all()
        left, right = batch[:b], batch[b:]
        same = LABELS[left] == LABELS[right]
        assert same.sum() == b // 2  # == batch_size // 2 // 2 same-class pairs, the rest different
        assert (left[same] != right[same]).all()  # a positive pair is two distinct images
        assert not SINGLETON_INDICES & {int(i) for i in np.concatenate([left[same], right[same]])}


def test_pairs_are_interleaved_not_same_first():
    positions = Counter()
    for batch in batches("pairs", 16, n=100):
        same = LABELS[batch[:8]] == LABELS[batch[8:]]
        positions.update(np.flatnonzero(same).tolist())
    assert set(positions) == set(range(8))  # same pairs land in every slot, not only the first half


def test_pairs_never_use_single_image_classes_as_positives():
    used = set()
    for batch in batches("pairs", 20, n=200):
        same = LABELS[batch[:10]] == LABELS[batch[10:]]
        used |= set(LABELS[batch[:10]][same].tolist())
    assert used == {0, 1, 3, 4, 6}  # every usable class shows up as a positive, no singleton ever does


# ------------------------------------------------------------------------------------------- triplets


@pytest.mark.parametrize("batch_size", [3, 10, 12, 31])
def test_triplets_layout(batch_size):
    b = batch_size // 3
    anchors_seen = set()
    for batch in batches("triplets", batch_size):
        assert batch.shape == (3 * b,)
        a, p, n = batch[:b], batch[b : 2 * b], batch[2 * b :]
        assert (a != p).all()
        assert (LABELS[a] == LABELS[p]).all()
        assert (LABELS[a] != LABELS[n]).all()
        assert not SINGLETON_INDICES & {int(i) for i in np.concatenate([a, p])}
        anchors_seen |= set(LABELS[a].tolist())
    assert anchors_seen == {0, 1, 3, 4, 6}


# ---------------------------------------------------------------------------------------- m_per_class


@pytest.mark.parametrize("batch_size,m", [(8, 4), (12, 4), (13, 3), (10, 2), (64, 4)])
def test_m_per_class_layout(batch_size, m):
    usable = {0, 1, 3, 4, 6}
    n_classes = min(batch_size // m, len(usable))
    for batch in batches("m_per_class", batch_size, m=m):
        counts = Counter(LABELS[batch].tolist())
        assert len(batch) == n_classes * m
        assert len(counts) == n_classes  # distinct classes
        assert set(counts.values()) == {m}
        assert set(counts) <= usable
        for c in counts:  # no repeated image unless the class has fewer than m images
            idx = batch[LABELS[batch] == c]
            if COUNTS[c] >= m:
                assert len(set(idx.tolist())) == m


def test_m_per_class_repeats_images_of_small_classes():
    labels = np.array([0, 0, 1, 1, 1, 1, 1])
    for batch in batches("m_per_class", 8, labels=labels, m=4):
        assert sorted(Counter(labels[batch].tolist()).values()) == [4, 4]
        assert set(batch[labels[batch] == 0].tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------ determinism, errors


@pytest.mark.parametrize("kind", ["pairs", "triplets", "m_per_class"])
def test_same_seed_same_stream(kind):
    a = batches(kind, 12, seed=7, n=10)
    b = batches(kind, 12, seed=7, n=10)
    c = batches(kind, 12, seed=8, n=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kind", ["pairs", "triplets", "m_per_class"])
@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 2], [0, 1, 2, 3], [4, 4]])
def test_fewer_than_two_usable_classes_is_a_user_error(kind, labels):
    with pytest.raises(UserError, match="fewer than 2 classes"):
        BatchSampler(kind, np.array(labels), 32, 0)


def test_two_usable_classes_are_enough():
    batch = next(BatchSampler("pairs", np.array([0, 0, 1, 1, 2]), 8, 0))
    assert len(batch) == 8


@pytest.mark.parametrize("kind,batch_size,m", [("pairs", 1, 4), ("pairs", 7, 4), ("triplets", 2, 4), ("m_per_class", 7, 4), ("m_per_class", 5, 3)])
def test_batch_size_too_small_is_a_user_error(kind, batch_size, m):
    with pytest.raises(UserError, match="too small"):
        BatchSampler(kind, LABELS, batch_size, 0, m_per_class=m)


@pytest.mark.parametrize("kind,batch_size,m", [("pairs", 8, 4), ("triplets", 3, 4), ("m_per_class", 8, 4), ("m_per_class", 6, 3)])
def test_smallest_allowed_batch_size_works(kind, batch_size, m):
    batch = next(BatchSampler(kind, LABELS, batch_size, 0, m_per_class=m))
    assert len(batch) == batch_size
