"""The recognizer: a 3D ResNet backbone, a fusion head that reads some of its blocks, and fine-tuning freeze.

`ft_begin_index` k freezes the blocks before `layer{k}` (conv1/bn1 count as block 0, so k=0 freezes nothing and
k=5 the whole backbone): their parameters get `requires_grad=False` and their BatchNorm stays in eval mode even
after `model.train()` (MMAction2's `frozen_stages`). 3D-ResNets-PyTorch only set the learning rate of those
blocks to 0, so their BatchNorm running statistics still drifted towards the new data set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vidfuse.config import DataConfig, ModelConfig
from vidfuse.errors import VidfuseError
from vidfuse.models.fusion import FusionHead, build_head
from vidfuse.models.resnet3d import STAGES, ResNet3d, build_backbone


class Recognizer(nn.Module):
    """Clips (N, 3, T, H, W) -> logits (N, num_classes); `sample_duration` x `sample_size` is the clip it was built
    for (any other size works too: all pooling is adaptive)."""

    def __init__(
        self, backbone: ResNet3d, head: FusionHead, *, ft_begin_index: int = 0, sample_size: int = 112,
        sample_duration: int = 16,
    ) -> None:
        super().__init__()
        if not 0 <= ft_begin_index <= len(backbone.blocks()):
            raise VidfuseError(f"ft_begin_index={ft_begin_index} must be between 0 and {len(backbone.blocks())}")
        self.backbone = backbone
        self.head = head
        self.ft_begin_index = ft_begin_index
        self.sample_size = sample_size
        self.sample_duration = sample_duration
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone blocks before `layer{ft_begin_index}`."""
        return [m for block in self.backbone.blocks()[: self.ft_begin_index] for m in block]

    def train(self, mode: bool = True) -> Recognizer:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen BatchNorm keeps its running statistics
        return self

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, T, H, W) -> the outputs of the blocks the head reads, by name."""
        return self.backbone.forward_features(x, self.head.layers)

    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Block outputs by name -> logits (N, num_classes)."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (N, 3, T, H, W) -> (N, num_classes)


def build_model(
    *, arch: str = "resnet", depth: int = 18, shortcut: str = "B", cardinality: int = 32, num_classes: int = 400,
    fusion: str = "gap", fusion_layers: Sequence[str] = ("layer3", "layer4"), fusion_dim: int | None = None,
    fusion_align: str = "coarser", dropout: float = 0.5, ft_begin_index: int = 0, sample_size: int = 112,
    sample_duration: int = 16,
) -> Recognizer:
    """A randomly initialised recognizer. Bad choices raise `VidfuseError` listing the valid ones.

    `fusion_layers` are read in backbone order whatever order they are given in (`gap` reads the deepest);
    `fusion_dim` None takes the head's default and is ignored by heads without a projection (gap, temporal).
    """
    unknown = [name for name in fusion_layers if name not in STAGES]
    if unknown or not fusion_layers:
        raise VidfuseError(f"fusion_layers {list(fusion_layers)} must be a non-empty subset of {', '.join(STAGES)}")
    for name, value in (("num_classes", num_classes), ("sample_size", sample_size),
                        ("sample_duration", sample_duration)):
        if value < 1:
            raise VidfuseError(f"{name}={value} must be at least 1")
    if not 0 <= dropout < 1:
        raise VidfuseError(f"dropout={dropout} must be in [0, 1)")
    backbone = build_backbone(arch=arch, depth=depth, shortcut=shortcut, cardinality=cardinality)
    in_channels = {name: backbone.out_channels[name] for name in STAGES if name in fusion_layers}
    head = build_head(fusion, in_channels, num_classes=num_classes, dim=fusion_dim, align=fusion_align,
                      dropout=dropout)
    return Recognizer(backbone, head, ft_begin_index=ft_begin_index, sample_size=sample_size,
                      sample_duration=sample_duration)


def model_from_config(model_cfg: ModelConfig, data_cfg: DataConfig) -> Recognizer:
    """`build_model` from the config sections (`fusion_dim` 0: the head's default). Does not load
    `pretrain_path`: the caller does, with `load_pretrained`."""
    return build_model(
        arch=model_cfg.arch, depth=model_cfg.depth, shortcut=model_cfg.shortcut, cardinality=model_cfg.cardinality,
        num_classes=model_cfg.num_classes, fusion=model_cfg.fusion, fusion_layers=tuple(model_cfg.fusion_layers),
        fusion_dim=model_cfg.fusion_dim or None, fusion_align=model_cfg.fusion_align, dropout=model_cfg.dropout,
        ft_begin_index=model_cfg.ft_begin_index, sample_size=data_cfg.sample_size,
        sample_duration=data_cfg.sample_duration,
    )
