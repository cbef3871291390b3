"""Built-in losses: Koch's BCE on the L1 distance, contrastive, triplet, any PML loss as `pml/<Name>`, and
`none`, the untrained baseline."""

from bench.losses import bce_l1, pml, untrained  # noqa: F401  (register on import)
