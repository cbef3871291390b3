"""Built-in losses checked against slow, obvious per-pair / per-triplet reference loops."""

from __future__ import annotations

import math

import pytest
import torch

from bench.builtins import load_builtins
from bench.plugins import LOSSES, Loss

load_builtins()

EMBED_DIM = 5
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rel=1e-5, abs=1e-6), torch.float64: dict(rel=1e-10, abs=1e-12)}


def build(name: str, **kwargs):
    return LOSSES.get(name).factory(EMBED_DIM, **kwargs)


def _vec(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t]


def _normalise(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _euclid(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _mean_non_zero(values: list[float]) -> float:
    nz = [v for v in values if v > 0]
    return sum(nz) / len(nz) if nz else 0.0


def _pairs_labels(same: list[bool]) -> torch.Tensor:
    """Labels for the pairs layout [x_1..x_B, y_1..y_B] with pair i same-class iff same[i]."""
    left = list(range(len(same)))
    right = [c if s else c + 100 for c, s in zip(left, same)]
    return torch.tensor(left + right)


# ---------------------------------------------------------------------------------------------- bce_l1


def bce_l1_reference(loss, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    w = _vec(loss.head.weight.detach()[0])
    b = float(loss.head.bias.detach()[0])
    n = len(embeddings) // 2
    total = 0.0
    for i in range(n):
        x, y = _vec(embeddings[i]), _vec(embeddings[n + i])
        logit = sum(wk * abs(xk - yk) for wk, xk, yk in zip(w, x, y)) + b
        p = 1.0 / (1.0 + math.exp(-logit))
        same = 1.0 if int(labels[i]) == int(labels[n + i]) else 0.0
        total += -(same * math.log(p) + (1.0 - same) * math.log(1.0 - p))
    return total / n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bce_l1_matches_reference(dtype, seed):
    torch.manual_seed(seed)
    loss = build("bce_l1").to(dtype)
    embeddings = torch.randn(12, EMBED_DIM, dtype=dtype)
    labels = _pairs_labels([True, False, True, False, False, True])
    value = loss(embeddings, labels)
    assert value.dtype == dtype
    assert value.item() == pytest.approx(bce_l1_reference(loss, embeddings, labels), **TOL[dtype])


def test_bce_l1_uses_first_half_vs_second_half_layout():
    # Swapping x_i and y_i within each pair leaves |x - y| unchanged; pairing x_i with x_{i+1} does not.
    torch.manual_seed(3)
    loss = build("bce_l1")
    with torch.no_grad():
        loss.head.weight.copy_(torch.randn(1, EMBED_DIM))
    embeddings = torch.randn(8, EMBED_DIM)
    labels = _pairs_labels([True, False, False, True])
    swapped = torch.cat([embeddings[4:], embeddings[:4]])
    swapped_labels = torch.cat([labels[4:], labels[:4]])
    assert loss(swapped, swapped_labels).item() == pytest.approx(loss(embeddings, labels).item(), rel=1e-6)
    assert loss(embeddings, labels).item() == pytest.approx(bce_l1_reference(loss, embeddings, labels), rel=1e-5)


def test_bce_l1_gradients_reach_head_parameters():
    torch.manual_seed(4)
    loss = build("bce_l1").double()
    embeddings = torch.randn(10, EMBED_DIM, dtype=torch.float64, requires_grad=True)
    labels = _pairs_labels([True, True, False, False, True])
    loss(embeddings, labels).backward()
    assert loss.head.weight.grad is not None and loss.head.bias.grad is not None
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    # d(mean BCE)/dw = mean_i (p_i - s_i) * |x_i - y_i|,   d/db = mean_i (p_i - s_i)
    n = 5
    w, b = _vec(loss.head.weight.detach()[0]), float(loss.head.bias.detach()[0])
    grad_w, grad_b = [0.0] * EMBED_DIM, 0.0
    for i in range(n):
        d = [abs(x - y) for x, y in zip(_vec(embeddings[i].detach()), _vec(embeddings[n + i].detach()))]
        p = 1.0 / (1.0 + math.exp(-(sum(wk * dk for wk, dk in zip(w, d)) + b)))
        s = 1.0 if int(labels[i]) == int(labels[n + i]) else 0.0
        grad_w = [g + (p - s) * dk / n for g, dk in zip(grad_w, d)]
        grad_b += (p - s) / n
    assert _vec(loss.head.weight.grad[0]) == pytest.approx(grad_w, rel=1e-9, abs=1e-12)
    assert float(loss.head.bias.grad[0]) == pytest.approx(grad_b, rel=1e-9, abs=1e-12)


def test_bce_l1_head_is_trainable_parameter_set():
    loss = build("bce_l1")
    params = list(loss.parameters())
    assert len(params) == 2
    assert {tuple(p.shape) for p in params} == {(1, EMBED_DIM), (1,)}
    assert all(p.requires_grad for p in params)


# ----------------------------------------------------------------------------------------- contrastive


def contrastive_reference(embeddings, labels, pos_margin=0.0, neg_margin=1.0) -> float:
    """PML ContrastiveLoss with the default AvgNonZeroReducer: the positive-pair losses and the
    negative-pair losses are each averaged over their own non-zero entries, and the two averages summed."""
    n = len(embeddings) // 2
    pos, neg = [], []
    for i in range(n):
        d = _euclid(_normalise(_vec(embeddings[i])), _normalise(_vec(embeddings[n + i])))
        if int(labels[i]) == int(labels[n + i]):
            pos.append(max(0.0, d - pos_margin))
        else:
            neg.append(max(0.0, neg_margin - d))
    return _mean_non_zero(pos) + _mean_non_zero(neg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "same,margins",
    [
        ([True, False, True, False, False, True], {}),
        ([True, False, True, False, False, True], {"pos_margin": 0.3, "neg_margin": 1.2}),
        ([True, True, False, False, True, False, True, False], {"pos_margin": 0.5, "neg_margin": 0.9}),
        ([True, True, True], {}),  # no negative pairs at all
        ([False, False, False], {"neg_margin": 1.5}),  # no positive pairs at all
    ],
)
def test_contrastive_matches_reference(dtype, same, margins):
    torch.manual_seed(len(same) + len(margins))
    loss = build("contrastive", **margins)
    embeddings = torch.randn(2 * len(same), EMBED_DIM, dtype=dtype)
    labels = _pairs_labels(same)
    expected = contrastive_reference(embeddings, labels, **margins)
    assert expected > 0  # the case is not vacuous
    assert loss(embeddings, labels).item() == pytest.approx(expected, **TOL[dtype])


def test_contrastive_is_scale_invariant_because_embeddings_are_normalised():
    torch.manual_seed(7)
    loss = build("contrastive")
    embeddings = torch.randn(8, EMBED_DIM, dtype=torch.float64)
    labels = _pairs_labels([True, False, False, True])
    scales = torch.tensor([0.1, 3.0, 7.0, 0.5, 2.0, 10.0, 0.01, 1.0], dtype=torch.float64)[:, None]
    assert loss(embeddings * scales, labels).item() == pytest.approx(loss(embeddings, labels).item(), rel=1e-9)


def test_contrastive_only_scores_the_given_pairs():
    # x_1 and y_2 share a class, but (x_1, y_2) is not a pair of the layout: it must not count.
    torch.manual_seed(8)
    loss = build("contrastive")
    embeddings = torch.randn(6, EMBED_DIM, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 5, 0, 2])  # pairs: (0,5) diff, (1,0) diff, (2,2) same
    assert loss(embeddings, labels).item() == pytest.approx(contrastive_reference(embeddings, labels), rel=1e-10)


def test_contrastive_with_one_pair_of_each_kind_scores_nothing_so_the_sampler_refuses_it():
    # PML's pair losses return 0 when each index tensor has <= 1 entry; the pairs sampler therefore
    # demands batch_size >= 8 (2 same + 2 different pairs), which test_sampling checks.
    torch.manual_seed(9)
    loss = build("contrastive")
    embeddings = torch.randn(4, EMBED_DIM)
    labels = _pairs_labels([True, False])
    assert contrastive_reference(embeddings, labels) > 0
    assert loss(embeddings, labels).item() == 0.0
    embeddings = torch.randn(8, EMBED_DIM)
    labels = _pairs_labels([True, False, True, False])
    assert loss(embeddings, labels).item() == pytest.approx(contrastive_reference(embeddings, labels), rel=1e-5)


# --------------------------------------------------------------------------------------------- triplet


def triplet_reference(embeddings, margin=0.05) -> float:
    n = len(embeddings) // 3
    losses = []
    for i in range(n):
        a, p, neg = (_normalise(_vec(embeddings[k * n + i])) for k in range(3))
        losses.append(max(0.0, _euclid(a, p) - _euclid(a, neg) + margin))
    return _mean_non_zero(losses)


def _triplet_labels(n: int) -> torch.Tensor:
    return torch.cat([torch.arange(n), torch.arange(n), torch.arange(n) + 100])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,margins", [(1, {}), (5, {}), (7, {"margin": 0.5}), (4, {"margin": 0.0})])
def test_triplet_matches_reference(dtype, n, margins):
    torch.manual_seed(10 + n)
    loss = build("triplet", **margins)
    embeddings = torch.randn(3 * n, EMBED_DIM, dtype=dtype)
    expected = triplet_reference(embeddings, **margins)
    value = loss(embeddings, _triplet_labels(n))
    assert value.item() == pytest.approx(expected, **TOL[dtype])


def test_triplet_averages_over_non_zero_triplets_only():
    # Triplet 0 is easily satisfied (loss 0); triplet 1 violates the margin. The mean over non-zero
    # triplets is triplet 1's loss, not half of it.
    e = torch.tensor(
        [
            [1.0, 0.0],
            [0.0, 1.0],  # anchors
            [1.0, 0.0],
            [1.0, 0.0],  # positives: identical to a_0; orthogonal to a_1
            [-1.0, 0.0],
            [0.0, 1.0],  # negatives: opposite a_0; identical to a_1
        ],
        dtype=torch.float64,
    )
    loss = LOSSES.get("triplet").factory(2, margin=0.1)
    expected = math.sqrt(2.0) + 0.1  # d(a_1, p_1) - d(a_1, n_1) + margin
    assert triplet_reference(e, margin=0.1) == pytest.approx(expected)
    assert loss(e, _triplet_labels(2)).item() == pytest.approx(expected, rel=1e-12)


def test_triplet_is_zero_when_every_triplet_is_satisfied():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    value = LOSSES.get("triplet").factory(2)(e, _triplet_labels(1))
    assert value.item() == 0.0


def test_triplet_gradient_flows_to_embeddings():
    torch.manual_seed(11)
    loss = build("triplet", margin=1.0)
    embeddings = torch.randn(9, EMBED_DIM, requires_grad=True)
    value = loss(embeddings, _triplet_labels(3))
    assert value.item() > 0
    value.backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ attributes


@pytest.mark.parametrize(
    "name,batch,distance",
    [("bce_l1", "pairs", "l1"), ("contrastive", "pairs", "cosine"), ("triplet", "triplets", "cosine")],
)
def test_batch_and_distance_attributes(name, batch, distance):
    loss = build(name)
    assert loss.batch == batch
    assert loss.distance == distance
    assert isinstance(loss, Loss)
