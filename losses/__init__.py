"""Built-in losses: Koch's BCE on the L1 distance, contrastive, triplet, and any PML loss as `pml/<Name>`."""
from losses import bce_l1, pml  # noqa: F401  (register on import)
