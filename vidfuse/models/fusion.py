"""Fusion heads: read the outputs of several backbone blocks, fuse them into one vector per clip, classify.

Every head is built the same way, `HEADS[name](in_channels, num_classes=..., dim=..., align=..., dropout=...)`,
where `in_channels` maps the blocks it reads (e.g. `{"layer3": 1024, "layer4": 2048}`) to their channels, `dim`
is its projection / sketch dimension (None: the head's `default_dim`; heads without a projection ignore it) and
`align` the common grid (`finer` or `coarser`) for heads that combine blocks position by position. The fusion
itself runs in float32 with autocast off (see `pooling`); dropout and the classifier `fc` follow.

| name          | fused vector                                                                        |
|---------------|-------------------------------------------------------------------------------------|
| gap           | global average of the deepest block (the original 3D-ResNets model)                 |
| gap_bilinear  | pooled blocks -> linear to d -> outer product per pair -> signed sqrt, L2            |
| bilinear      | 1x1x1 conv + BN to d, common grid, outer product averaged over positions, sqrt, L2    |
| hbp           | 1x1x1 conv + BN to d, common grid, element-wise product summed over positions, sqrt, L2 |
| temporal      | per block: spatial mean, then max over time; concatenated (the no-bilinear control) |
| factorized    | pooled blocks, tanh(U x) * tanh(V y) per pair (MLB); the classifier is P            |
| compact       | common grid, Tensor Sketch of the outer product averaged over positions, sqrt, L2   |

Bilinear heads combine every pair of distinct blocks (or one block with itself) and concatenate the pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from vidfuse.errors import VidfuseError
from vidfuse.models.pooling import ALIGNMENTS, align_grid, block_pairs, full_precision, global_pool, normalized_concat
from vidfuse.models.resnet3d import STAGES
from vidfuse.models.sketch import TensorSketch


class FusionHead(nn.Module):
    """Base class: subclasses define `_build` (their modules), `fused_dim` and `fuse`."""

    default_dim: ClassVar[int | None] = None  # None: the head has no projection dimension
    reads_deepest_only: ClassVar[bool] = False

    def __init__(
        self, in_channels: dict[str, int], *, num_classes: int, dim: int | None = None, align: str = "coarser",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if align not in ALIGNMENTS:
            raise VidfuseError(f"unknown fusion_align {align!r}; valid: {', '.join(ALIGNMENTS)}")
        if dim is not None and dim < 1:
            raise VidfuseError(f"fusion_dim={dim} must be at least 1")
        in_channels = {name: in_channels[name] for name in self.layers_read(list(in_channels))}
        self.layers = tuple(in_channels)
        self.dim = self.default_dim if dim is None else dim
        self.align = align
        self.pairs = block_pairs(len(in_channels))
        channels = list(in_channels.values())
        self._build(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.fused_dim(channels), num_classes)

    @classmethod
    def layers_read(cls, layers: Sequence[str]) -> list[str]:
        """Of `layers` (backbone blocks in backbone order), the ones this head reads: all, or the deepest alone."""
        return list(layers[-1:]) if cls.reads_deepest_only else list(layers)

    def _build(self, channels: list[int]) -> None:
        """Create the head's own modules (nothing by default)."""

    def fused_dim(self, channels: list[int]) -> int:
        raise NotImplementedError

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """float32 blocks (N, C_i, T_i, H_i, W_i) in `layers` order -> (N, fused_dim)."""
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        blocks = [features[name] for name in self.layers]
        with full_precision(blocks[0].device):
            fused = self.fuse([b.float() for b in blocks])  # (N, fused_dim), float32
        return self.fc(self.dropout(fused))  # (N, num_classes)


class GapHead(FusionHead):
    """Global average pool of the deepest block: the original 3D-ResNets-PyTorch classifier."""

    reads_deepest_only = True

    def fused_dim(self, channels: list[int]) -> int:
        return channels[0]

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return global_pool(blocks[0])  # (N, C)


class TemporalHead(FusionHead):
    """Per block: mean over space, max over time; concatenated. The control without any bilinear term."""

    def fused_dim(self, channels: list[int]) -> int:
        return sum(channels)

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([b.mean(dim=(3, 4)).amax(dim=2) for b in blocks], dim=1)  # (N, sum C_i)


class FactorizedHead(FusionHead):
    """Low-rank bilinear pooling (MLB): P^T (tanh(U^T x) * tanh(V^T y)) on pooled block vectors."""

    default_dim = 1024

    def _build(self, channels: list[int]) -> None:
        self.project = nn.ModuleList(nn.Linear(c, self.dim) for c in channels)  # U, V (one per block)

    def fused_dim(self, channels: list[int]) -> int:
        return len(self.pairs) * self.dim

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        z = [torch.tanh(project(global_pool(b))) for project, b in zip(self.project, blocks)]  # (N, d) each
        return torch.cat([z[i] * z[j] for i, j in self.pairs], dim=1)  # (N, pairs * d)


class PairwiseHead(FusionHead):
    """Bilinear family: blocks as (N, P, C) positions, an interaction per block pair, signed sqrt + L2 per pair."""

    def positions(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def interact(self, pair: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, P, C_a), (N, P, C_b) -> (N, F) for pair number `pair`."""
        raise NotImplementedError

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        x = self.positions(blocks)
        return normalized_concat([self.interact(k, x[i], x[j]) for k, (i, j) in enumerate(self.pairs)])


def outer_product_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, P, C), (N, P, M) -> (N, C * M): the outer product a_p b_p^T averaged over the P positions."""
    return (torch.einsum("npc,npm->ncm", a, b) / a.shape[1]).flatten(1)


def on_grid(blocks: list[torch.Tensor], align: str) -> list[torch.Tensor]:
    """Blocks resampled to a common grid, as (N, P, C) positions."""
    return [b.flatten(2).transpose(1, 2) for b in align_grid(blocks, align)]


class GapBilinearHead(PairwiseHead):
    """Outer product of the globally pooled, linearly reduced block vectors."""

    default_dim = 64

    def _build(self, channels: list[int]) -> None:
        self.reduce = nn.ModuleList(nn.Linear(c, self.dim) for c in channels)

    def fused_dim(self, channels: list[int]) -> int:
        return len(self.pairs) * self.dim**2

    def positions(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        return [reduce(global_pool(b)).unsqueeze(1) for reduce, b in zip(self.reduce, blocks)]  # (N, 1, d)

    def interact(self, pair: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return outer_product_mean(a, b)  # (N, d * d)


class BilinearHead(PairwiseHead):
    """Outer product of 1x1x1-projected blocks, averaged over the positions of a common grid."""

    default_dim = 128

    def _build(self, channels: list[int]) -> None:
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv3d(c, self.dim, 1, bias=False), nn.BatchNorm3d(self.dim)) for c in channels
        )

    def fused_dim(self, channels: list[int]) -> int:
        return len(self.pairs) * self.dim**2

    def positions(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        return on_grid([project(b) for project, b in zip(self.project, blocks)], self.align)  # (N, P, d)

    def interact(self, pair: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return outer_product_mean(a, b)  # (N, d * d)


class HbpHead(BilinearHead):
    """Hierarchical bilinear pooling: element-wise product of projected blocks, summed over positions."""

    default_dim = 1024

    def fused_dim(self, channels: list[int]) -> int:
        return len(self.pairs) * self.dim

    def interact(self, pair: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=1)  # (N, d)


class CompactHead(PairwiseHead):
    """Compact bilinear pooling: Tensor Sketch of the outer product of raw blocks, averaged over positions."""

    default_dim = 8192

    def _build(self, channels: list[int]) -> None:
        self.sketch = nn.ModuleList(TensorSketch(channels[i], channels[j], self.dim) for i, j in self.pairs)

    def fused_dim(self, channels: list[int]) -> int:
        return len(self.pairs) * self.dim

    def positions(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        return on_grid(blocks, self.align)  # (N, P, C_i)

    def interact(self, pair: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.sketch[pair](a, b).mean(dim=1)  # (N, d)


HEADS: dict[str, type[FusionHead]] = {
    "gap": GapHead,
    "gap_bilinear": GapBilinearHead,
    "bilinear": BilinearHead,
    "hbp": HbpHead,
    "temporal": TemporalHead,
    "factorized": FactorizedHead,
    "compact": CompactHead,
}


def layers_read(fusion: str, fusion_layers: Sequence[str]) -> list[str]:
    """The blocks that the head `fusion` reads of `fusion_layers`, in backbone order (`FusionHead.layers_read`). An
    unknown head reads them all here (`build_head` refuses it)."""
    ordered = [name for name in STAGES if name in fusion_layers]
    return HEADS[fusion].layers_read(ordered) if fusion in HEADS else ordered


def build_head(
    name: str, in_channels: dict[str, int], *, num_classes: int, dim: int | None = None, align: str = "coarser",
    dropout: float = 0.5,
) -> FusionHead:
    """The head called `name` (a key of `HEADS`), or a `VidfuseError` listing the valid names."""
    if name not in HEADS:
        raise VidfuseError(f"unknown fusion head {name!r}; valid: {', '.join(HEADS)}")
    return HEADS[name](in_channels, num_classes=num_classes, dim=dim, align=align, dropout=dropout)
