"""Built-in backbones: Koch et al. 2015's siamese CNN and any timm model as `timm/<name>`."""
from backbones import koch, timm_backbone  # noqa: F401  (register on import)
