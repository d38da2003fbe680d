"""Networks: 3D ResNet / ResNeXt backbones, fusion heads, the recognizer, pretrained weights, size and cost."""

from vidfuse.models.complexity import count_gflops, count_parameters
from vidfuse.models.fusion import HEADS, FusionHead
from vidfuse.models.recognizer import Recognizer, build_model, model_from_config
from vidfuse.models.resnet3d import backbone_names
from vidfuse.models.weights import LoadResult, load_pretrained


def list_models() -> list[str]:
    """Every backbone as `arch-depth` (e.g. `resnet-50`, `resnext-101`); `list_heads()` gives the fusion heads."""
    return backbone_names()


def list_heads() -> list[str]:
    """Every fusion head name accepted by `build_model(fusion=...)`."""
    return list(HEADS)


__all__ = [
    "FusionHead", "LoadResult", "Recognizer", "build_model", "count_gflops", "count_parameters", "list_heads",
    "list_models", "load_pretrained", "model_from_config",
]
