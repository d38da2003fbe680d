"""Tensor Sketch (Pham & Pagh 2013): a `dim`-dimensional random projection of the outer product x y^T.

Each input gets a count sketch (every channel c is added, with a random sign s[c], to one random bucket h[c]);
the sketch of x y^T is the circular convolution of the two count sketches, computed as a product of their FFTs.
Its defining property: <TS(x, x), TS(y, y)> approximates <x, y>^2, i.e. the inner product of the full outer
products, at a cost of O(C + dim log dim) instead of O(C^2). Compact bilinear pooling (Gao et al. 2016) averages
it over positions. The hashes and signs are drawn once and kept as persistent buffers, so a checkpoint
reproduces the same projection.
"""

from __future__ import annotations

import torch
from torch import nn


class TensorSketch(nn.Module):
    """Sketch of the outer product of an `in_a`- and an `in_b`-channel input at every position."""

    def __init__(self, in_a: int, in_b: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        for name, channels in (("a", in_a), ("b", in_b)):
            self.register_buffer(f"hash_{name}", torch.randint(dim, (channels,)))
            self.register_buffer(f"sign_{name}", torch.randint(2, (channels,)).float() * 2 - 1)

    def _count_sketch(self, x: torch.Tensor, hash_: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """(N, P, C) -> (N, P, dim): channel c added with sign[c] to bucket hash_[c]."""
        out = x.new_zeros(*x.shape[:-1], self.dim)
        return out.index_add(-1, hash_, x * sign)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a: (N, P, in_a), b: (N, P, in_b) -> (N, P, dim) sketches of a_p b_p^T."""
        fa = torch.fft.rfft(self._count_sketch(a, self.hash_a, self.sign_a), dim=-1)  # (N, P, dim // 2 + 1)
        fb = torch.fft.rfft(self._count_sketch(b, self.hash_b, self.sign_b), dim=-1)
        return torch.fft.irfft(fa * fb, n=self.dim, dim=-1)  # (N, P, dim)
