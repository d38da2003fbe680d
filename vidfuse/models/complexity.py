"""Model size and cost: parameter count and GFLOPs per clip (counted by `torch.utils.flop_counter`).

GFLOPs count multiply and add separately (2 per multiply-accumulate), for one clip (batch 1) in eval mode. The
counter covers convolutions and matrix products; element-wise work, pooling and FFTs (the `compact` head's
sketch) are not counted, which is negligible next to the backbone's convolutions. A model built under
`torch.device("meta")` is counted without computing anything.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or frozen (buffers such as BatchNorm statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, *, frames: int, size: int) -> float:
    """GFLOPs of one forward pass on a (1, 3, frames, size, size) clip, on the model's device."""
    clip = torch.zeros(1, 3, frames, size, size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(clip)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9
