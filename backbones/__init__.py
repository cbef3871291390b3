"""Built-in backbones: Koch et al. 2015's CNN, any timm model as `timm/<name>`, offline ImageNet EfficientNet-Lite."""
from backbones import efficientnet_lite, koch, timm_backbone  # noqa: F401  (register on import)
