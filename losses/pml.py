"""Losses from pytorch-metric-learning: `contrastive` on pairs, `triplet` on triplets, `pml/<Name>` on m-per-class batches."""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from bench.errors import UserError
from bench.plugins import LOSSES
from bench.registry import Prefix


class PMLLoss(nn.Module):
    """Feeds a PML loss the tuples our sampler built (pairs or triplets), or lets it mine all of them."""

    distance = "cosine"  # PML's default LpDistance L2-normalises embeddings; cosine ranks the same

    def __init__(self, loss: nn.Module, batch: str):
        super().__init__()
        self.loss = loss
        self.batch = batch

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels, indices_tuple=self._tuples(labels))

    def _tuples(self, labels: torch.Tensor):
        if self.batch == "pairs":
            b = len(labels) // 2
            i = torch.arange(b, device=labels.device)
            same = labels[:b] == labels[b:]
            return i[same], i[same] + b, i[~same], i[~same] + b  # (anchor, positive, anchor, negative)
        if self.batch == "triplets":
            b = len(labels) // 3
            i = torch.arange(b, device=labels.device)
            return i, i + b, i + 2 * b
        return None  # m_per_class: the loss forms every pair/triplet in the batch itself


@LOSSES.register("contrastive")
def contrastive(embed_dim: int, pos_margin: float = 0.0, neg_margin: float = 1.0) -> PMLLoss:
    """Hadsell et al. 2006 via PML: relu(d − pos_margin) for same pairs, relu(neg_margin − d) for different
    pairs, d the euclidean distance of L2-normalised embeddings. PML averages the non-zero same-pair losses
    and the non-zero different-pair losses separately and adds the two means."""
    from pytorch_metric_learning.losses import ContrastiveLoss

    return PMLLoss(ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin), "pairs")


@LOSSES.register("triplet")
def triplet(embed_dim: int, margin: float = 0.05) -> PMLLoss:
    """relu(d(a, p) − d(a, n) + margin) on L2-normalised embeddings via PML, averaged over non-zero triplets."""
    from pytorch_metric_learning.losses import TripletMarginLoss

    return PMLLoss(TripletMarginLoss(margin=margin), "triplets")


# Not reachable through pml/<Name>: classification losses with per-class weights (they need the number of
# train classes, known only after the split), abstract bases, and losses that take no labels (VICReg, Manifold).
_UNSUPPORTED = {"BaseMetricLossFunction", "GenericPairLoss", "ManifoldLoss", "P2SGradLoss", "VICRegLoss"}


def _supported(cls) -> bool:
    from pytorch_metric_learning.losses import BaseMetricLossFunction
    from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin

    return inspect.isclass(cls) and issubclass(cls, BaseMetricLossFunction) and not issubclass(cls, WeightRegularizerMixin) and cls.__name__ not in _UNSUPPORTED


def _resolve(name: str):
    from pytorch_metric_learning import losses as pml_losses

    cls = getattr(pml_losses, name, None)
    if not _supported(cls):
        import difflib

        close = difflib.get_close_matches(name, _names(), n=3)
        hint = f"did you mean {', '.join('pml/' + c for c in close)}? " if close else ""
        raise UserError(f"unknown pytorch-metric-learning loss {name!r}: {hint}run `bench ls losses 'pml/*'`")

    def factory(embed_dim: int, **kwargs) -> PMLLoss:
        return PMLLoss(cls(**kwargs), "m_per_class")

    params = [inspect.Parameter("embed_dim", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)]
    params += [p for n, p in inspect.signature(cls).parameters.items() if n not in ("self", "args", "kwargs")]
    factory.__signature__ = inspect.Signature(params)
    factory.__doc__ = cls.__doc__
    return factory


@functools.cache
def _names() -> list[str]:
    from pytorch_metric_learning import losses as pml_losses

    return sorted(n for n, c in vars(pml_losses).items() if _supported(c))


def _list(pattern: str) -> list[str]:
    import fnmatch

    return [n for n in _names() if fnmatch.fnmatchcase(n, pattern or "*")]


LOSSES.add_prefix("pml", Prefix(factory=_resolve, lister=_list, source="pytorch-metric-learning"))
