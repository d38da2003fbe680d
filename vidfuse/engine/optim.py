"""Optimiser and learning-rate schedule from an `OptimConfig`.

Weight decay applies to conv and linear weights only: BatchNorm parameters and biases (every parameter with
fewer than two dimensions) are excluded, as in timm / MMAction2. Frozen parameters (`ft_begin_index`) are not
handed to the optimiser at all. Every schedule steps once per epoch, so the LR sequence of a resumed run is the
sequence of a straight run (the scheduler's state travels in the checkpoint).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidfuse.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of trainable parameters: with weight decay (>= 2-D weights) and without (BN, biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def cosine_with_warmup(epoch: int, *, epochs: int, warmup_epochs: int, min_ratio: float) -> float:
    """LR factor for `epoch` (0-based): linear warm-up to 1, then half a cosine down to `min_ratio`."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, epochs: int):
    """The per-epoch schedule; `plateau` must be stepped with the val loss, the others without argument."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.gamma,
                                                          patience=cfg.patience)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        min_ratio = cfg.min_lr / cfg.lr
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda epoch: cosine_with_warmup(epoch, epochs=epochs, warmup_epochs=cfg.warmup_epochs,
                                             min_ratio=min_ratio),
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step_scheduler(scheduler, val_loss: float) -> None:
    """Advance the schedule by one epoch."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
