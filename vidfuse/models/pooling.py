"""Pooling and normalisation pieces shared by the fusion heads, all meant to run in float32.

Bilinear features are sums of products: in bf16 / fp16 they lose most of their mantissa, so the heads run their
fusion inside `full_precision` on float32 inputs even when the backbone runs under autocast.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

ALIGNMENTS = ("finer", "coarser")
SIGNED_SQRT_EPS = 1e-6


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast switched off on `device` (a no-op where autocast does not exist, e.g. the meta device)."""
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def signed_sqrt(x: torch.Tensor, eps: float = SIGNED_SQRT_EPS) -> torch.Tensor:
    """sign(x) * (sqrt(|x| + eps) - sqrt(eps)): continuous, 0 at 0, and with a finite gradient everywhere.

    Plain sign(x) * sqrt(|x|) has an infinite gradient at 0, which an all-zero feature map (a dead ReLU block)
    turns into NaN weights.
    """
    return torch.sign(x) * (torch.sqrt(x.abs() + eps) - math.sqrt(eps))


def normalized_concat(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Signed square root and L2 normalisation of each (N, F_i) vector, concatenated to (N, sum F_i)."""
    return torch.cat([F.normalize(signed_sqrt(v), dim=1) for v in vectors], dim=1)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N, C): mean over all positions."""
    return x.mean(dim=(2, 3, 4))


def align_grid(blocks: list[torch.Tensor], align: str) -> list[torch.Tensor]:
    """Resample every (N, C_i, T_i, H_i, W_i) block to one T x H x W grid.

    `coarser`: the smallest T, H and W among the blocks, reached by adaptive average pooling; `finer`: the
    largest, reached by trilinear interpolation (the "temporal upsampling" of the research notes).
    """
    sizes = [b.shape[2:] for b in blocks]
    if align == "coarser":
        grid = tuple(min(dims) for dims in zip(*sizes))
        return [F.adaptive_avg_pool3d(b, grid) for b in blocks]
    grid = tuple(max(dims) for dims in zip(*sizes))
    return [F.interpolate(b, size=grid, mode="trilinear", align_corners=False) for b in blocks]


def block_pairs(count: int) -> list[tuple[int, int]]:
    """The block pairs a bilinear head multiplies: every pair of distinct blocks, or the block with itself."""
    return list(itertools.combinations(range(count), 2)) if count > 1 else [(0, 0)]
