"""Mixed precision in one place: `run.precision` (bf16 / fp16 / fp32) as an autocast context.

Autocast applies on GPU only; on CPU everything runs in float32. The fusion heads switch autocast off for their
pooling and normalisation themselves, so only the convolutions and the classifier run in reduced precision.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 / fp16 autocast on a CUDA device; a no-op on CPU or with `fp32`."""
    if device.type != "cuda" or precision not in DTYPES:
        return nullcontext()
    return torch.autocast("cuda", dtype=DTYPES[precision])
