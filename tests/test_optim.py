"""Optimiser groups and the per-epoch LR schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidfuse.config import OptimConfig
from vidfuse.engine.optim import build_optimizer, build_scheduler, current_lr, step_scheduler


def _tiny_model() -> nn.Module:
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 4, 4, 4))
    model[0].weight.requires_grad_(False)  # a frozen block
    return model


def test_no_weight_decay_on_batchnorm_and_bias_and_frozen_excluded():
    model = _tiny_model()
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.01))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                   id(model[3].bias)}


def _end_epoch(optimizer: torch.optim.Optimizer, scheduler, val_loss: float) -> None:
    """As the training loop ends an epoch: the optimizer has stepped (here with no gradients: a no-op) before the
    schedule does, so torch sees the order it expects."""
    optimizer.step()
    step_scheduler(scheduler, val_loss)


def _lrs(cfg: OptimConfig, epochs: int, val_losses=None) -> list[float]:
    optimizer = build_optimizer(_tiny_model(), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=epochs)
    lrs = []
    for epoch in range(epochs):
        lrs.append(current_lr(optimizer))
        _end_epoch(optimizer, scheduler, val_losses[epoch] if val_losses else 1.0)
    return lrs


def test_multistep():
    assert _lrs(OptimConfig(lr=1.0, scheduler="multistep", milestones=[2, 4], gamma=0.1), 6) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_with_warmup_matches_the_formula():
    lrs = _lrs(OptimConfig(lr=1.0, scheduler="cosine", warmup_epochs=2, min_lr=0.0), 6)
    expected = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected)


def test_plateau_drops_after_patience_epochs_without_improvement():
    lrs = _lrs(OptimConfig(lr=1.0, scheduler="plateau", patience=1, gamma=0.5), 5, val_losses=[1, 1, 1, 1, 1])
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5])


def test_resumed_schedule_continues_the_same_sequence():
    cfg = OptimConfig(lr=1.0, scheduler="cosine", warmup_epochs=1)
    straight = _lrs(cfg, 5)
    optimizer = build_optimizer(_tiny_model(), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=5)
    for _ in range(2):
        _end_epoch(optimizer, scheduler, 1.0)
    state = scheduler.state_dict(), optimizer.state_dict()
    optimizer2 = build_optimizer(_tiny_model(), cfg)
    scheduler2 = build_scheduler(optimizer2, cfg, epochs=5)
    optimizer2.load_state_dict(state[1])
    scheduler2.load_state_dict(state[0])
    resumed = []
    for _ in range(3):
        resumed.append(current_lr(optimizer2))
        _end_epoch(optimizer2, scheduler2, 1.0)
    assert resumed == pytest.approx(straight[2:])
