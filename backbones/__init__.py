"""Built-in backbones: Koch et al. 2015's CNN, the few-shot Conv-4, any timm model as `timm/<name>`, offline ImageNet EfficientNet-Lite."""

from bench.backbones import conv4, efficientnet_lite, koch, timm_backbone  # noqa: F401  (register on import)
