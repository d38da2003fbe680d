"""3D ResNet / ResNeXt backbones with the architecture and state-dict keys of 3D-ResNets-PyTorch (Hara et al.).

Same layers and key names (`conv1`, `bn1`, `layer1..layer4.N.conv1/bn1/...`, `downsample.0/1`), so that the
published Kinetics checkpoints load; unlike that code there is no fixed-size pooling or classifier here: the
backbone returns the outputs of the requested blocks (`forward_features`) and a fusion head reads them, so one
model accepts any clip length and crop size.

Shortcut A is a parameter-free identity (strided, zero-padded channels); shortcut B is a 1x1x1 conv + BN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidfuse.errors import VidfuseError

STAGES = ("layer1", "layer2", "layer3", "layer4")
SHORTCUTS = ("A", "B")

RESNET_BLOCKS = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
RESNEXT_BLOCKS = {101: (3, 4, 23, 3)}
DEPTHS = {"resnet": RESNET_BLOCKS, "resnext": RESNEXT_BLOCKS}


@dataclass(frozen=True)
class Architecture:
    """Everything that distinguishes the backbones: block type, blocks and widths per stage."""

    bottleneck: bool  # BasicBlock (two 3x3x3 convs) or Bottleneck (1x1x1, 3x3x3, 1x1x1)
    blocks: tuple[int, int, int, int]  # blocks per stage
    planes: tuple[int, int, int, int]  # stage widths before expansion
    inner: tuple[int, int, int, int]  # width inside a bottleneck (its 3x3x3 conv)
    expansion: int  # output channels = planes * expansion
    groups: int  # groups of the 3x3x3 bottleneck conv (ResNeXt cardinality; 1 for ResNet)


def architecture(arch: str, depth: int, cardinality: int = 32) -> Architecture:
    """The `Architecture` of `arch`-`depth`, or a `VidfuseError` listing the valid choices."""
    if arch not in DEPTHS:
        raise VidfuseError(f"unknown architecture {arch!r}; valid: {', '.join(DEPTHS)}")
    if depth not in DEPTHS[arch]:
        valid = ", ".join(str(d) for d in DEPTHS[arch])
        raise VidfuseError(f"unknown depth {depth} for {arch}; valid: {valid}")
    blocks = DEPTHS[arch][depth]
    if arch == "resnext":
        if cardinality < 1:
            raise VidfuseError(f"cardinality={cardinality} must be at least 1")
        planes = (128, 256, 512, 1024)
        return Architecture(True, blocks, planes, tuple(cardinality * (p // 32) for p in planes), 2, cardinality)
    planes = (64, 128, 256, 512)
    if depth < 50:
        return Architecture(False, blocks, planes, planes, 1, 1)
    return Architecture(True, blocks, planes, planes, 4, 1)


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


class ZeroPadShortcut(nn.Module):
    """Shortcut A: take every `stride`-th position and append zero channels up to `out_planes` (no parameters)."""

    def __init__(self, out_planes: int, stride: int) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride, :: self.stride]  # (N, C, T', H', W')
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_planes - x.shape[1]))  # (N, out_planes, T', H', W')


class BasicBlock(nn.Module):
    """Two 3x3x3 convs with a residual connection (ResNet-10/18/34)."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (grouped for ResNeXt), 1x1x1 expand, with a residual connection (ResNet-50+, ResNeXt)."""

    def __init__(
        self, inplanes: int, inner: int, out: int, stride: int, downsample: nn.Module | None, groups: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(inner)
        self.conv2 = _conv3x3x3(inner, inner, stride, groups)
        self.bn2 = nn.BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3d(nn.Module):
    """Stem (conv1 7x7x7 stride (1,2,2), BN, ReLU, max-pool 3x3x3 stride 2) and four residual stages."""

    def __init__(self, arch: Architecture, shortcut: str) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise VidfuseError(f"unknown shortcut {shortcut!r}; valid: {', '.join(SHORTCUTS)}")
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.out_channels: dict[str, int] = {}
        inplanes = 64
        for index, name in enumerate(STAGES):
            stride = 1 if index == 0 else 2
            out = arch.planes[index] * arch.expansion
            blocks = []
            for b in range(arch.blocks[index]):
                block_stride = stride if b == 0 else 1
                downsample = _shortcut(shortcut, inplanes, out, block_stride)
                if arch.bottleneck:
                    blocks.append(Bottleneck(inplanes, arch.inner[index], out, block_stride, downsample, arch.groups))
                else:
                    blocks.append(BasicBlock(inplanes, out, block_stride, downsample))
                inplanes = out
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> list[list[nn.Module]]:
        """The five blocks `ft_begin_index` counts: [conv1, bn1] (block 0), then layer1..layer4."""
        return [[self.conv1, self.bn1]] + [[getattr(self, name)] for name in STAGES]

    def forward_features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Outputs of the stages in `layers` by name; stages after the deepest requested one are not run."""
        unknown = [name for name in layers if name not in STAGES]
        if unknown:
            raise VidfuseError(f"unknown backbone block(s) {', '.join(unknown)}; valid: {', '.join(STAGES)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, ceil(T/2), ceil(H/4), ceil(W/4))
        deepest = max(STAGES.index(name) for name in layers)
        features = {}
        for name in STAGES[: deepest + 1]:
            x = getattr(self, name)(x)  # each stage after layer1 halves T, H and W (rounding up)
            if name in layers:
                features[name] = x  # (N, out_channels[name], T_i, H_i, W_i)
        return features


def _shortcut(kind: str, inplanes: int, out: int, stride: int) -> nn.Module | None:
    """None where the identity fits; otherwise shortcut A or B as in 3D-ResNets-PyTorch."""
    if stride == 1 and inplanes == out:
        return None
    if kind == "A":
        return ZeroPadShortcut(out, stride)
    return nn.Sequential(nn.Conv3d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out))


def build_backbone(*, arch: str = "resnet", depth: int = 18, shortcut: str = "B", cardinality: int = 32) -> ResNet3d:
    """A randomly initialised backbone; unknown arch / depth / shortcut raise `VidfuseError` with the choices."""
    return ResNet3d(architecture(arch, depth, cardinality), shortcut)


def published_shortcut(arch: str, depth: int) -> str:
    """The shortcut of the published Kinetics checkpoints: A for ResNet-10/18/34, B for the bottleneck nets."""
    return "A" if arch == "resnet" and depth < 50 else "B"


def backbone_names() -> list[str]:
    """Every backbone as `arch-depth`, e.g. `resnet-18`, `resnext-101`."""
    return [f"{arch}-{depth}" for arch, depths in DEPTHS.items() for depth in depths]
