"""vidfuse: 3D ResNet / ResNeXt action recognition with bilinear fusion heads, trained on Ray."""

__version__ = "0.1.0"
