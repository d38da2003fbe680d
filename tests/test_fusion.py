"""Fusion heads: shapes, finite gradients (also on all-zero clips), float32 under autocast, the maths of each piece."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, list_heads
from vidfuse.models.pooling import align_grid, signed_sqrt
from vidfuse.models.sketch import TensorSketch

NUM_CLASSES = 5

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_model(fusion: str, **kwargs):
    torch.manual_seed(0)
    return build_model(arch="resnet", depth=10, shortcut="A", num_classes=NUM_CLASSES, fusion=fusion, **kwargs)


def test_all_seven_heads_are_registered():
    assert list_heads() == ["gap", "gap_bilinear", "bilinear", "hbp", "temporal", "factorized", "compact"]


@pytest.mark.parametrize("fusion", list_heads())
def test_head_output_shape_and_gradients(fusion):
    model = tiny_model(fusion).train()
    for clips in (torch.randn(2, 3, 8, 32, 32), torch.zeros(2, 3, 8, 32, 32)):
        model.zero_grad()
        logits = model(clips)
        assert tuple(logits.shape) == (2, NUM_CLASSES)
        F.cross_entropy(logits, torch.tensor([1, 3])).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if clips.any():  # on a real clip every parameter of the head receives a gradient
            for name, p in model.head.named_parameters():
                assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("fusion", "fused"), [
    ("gap", 512), ("gap_bilinear", 64 * 64), ("bilinear", 128 * 128), ("hbp", 1024), ("temporal", 256 + 512),
    ("factorized", 1024), ("compact", 8192),
])
def test_default_fused_dimension(fusion, fused):
    assert tiny_model(fusion).head.fc.in_features == fused


def test_pairs_of_three_blocks_are_concatenated():
    head = tiny_model("hbp", fusion_layers=("layer4", "layer2", "layer3"), fusion_dim=16).head
    assert head.layers == ("layer2", "layer3", "layer4")
    assert head.pairs == [(0, 1), (0, 2), (1, 2)]
    assert head.fc.in_features == 3 * 16


def test_gap_reads_the_deepest_block():
    assert tiny_model("gap", fusion_layers=("layer2", "layer3")).head.layers == ("layer3",)


def test_bilinear_head_matches_a_direct_computation():
    head = tiny_model("bilinear", fusion_dim=3, fusion_align="coarser").head.eval()
    features = {"layer3": torch.randn(2, 256, 2, 4, 4), "layer4": torch.randn(2, 512, 1, 2, 2)}
    a = head.project[0](features["layer3"])
    a = a.reshape(2, 3, 1, 2, 2, 2, 2, 2).mean(dim=(3, 5, 7))  # 2x2x2 average pooling to layer4's grid (1, 2, 2)
    a = a.reshape(2, 3, 4)
    b = head.project[1](features["layer4"]).reshape(2, 3, 4)
    expected = []
    for n in range(2):
        outer = sum(torch.outer(a[n, :, p], b[n, :, p]) for p in range(4)) / 4
        v = torch.sign(outer) * (torch.sqrt(outer.abs() + 1e-6) - 1e-3)
        expected.append((v / v.norm()).flatten())
    torch.testing.assert_close(head.fuse([features["layer3"], features["layer4"]]), torch.stack(expected))


def test_factorized_head_is_low_rank_bilinear():
    head = tiny_model("factorized", fusion_dim=4).head.eval()
    x, y = torch.randn(2, 256, 2, 2, 2), torch.randn(2, 512, 1, 1, 1)
    u, v = head.project
    expected = torch.tanh(u(x.mean(dim=(2, 3, 4)))) * torch.tanh(v(y.flatten(1)))
    torch.testing.assert_close(head.fuse([x, y]), expected)


def test_temporal_head_pools_space_then_time():
    head = tiny_model("temporal", fusion_layers=("layer4",)).head
    x = torch.zeros(1, 512, 3, 2, 2)
    x[0, 0, 1] = 4.0  # channel 0: spatial mean 4 at t=1 and 0 elsewhere -> max over time 4
    x[0, 1] = -1.0
    fused = head.fuse([x])
    assert fused[0, 0] == 4.0 and fused[0, 1] == -1.0 and fused[0, 2] == 0.0


def test_fusion_runs_in_float32_under_autocast():
    for fusion in ("bilinear", "hbp", "compact"):
        model = tiny_model(fusion).eval()
        fused_dtypes = []
        model.head.dropout.register_forward_hook(lambda _m, inputs, _o: fused_dtypes.append(inputs[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(torch.randn(2, 3, 8, 32, 32))
        assert fused_dtypes == [torch.float32] and logits.dtype == torch.bfloat16


def test_signed_sqrt_values_and_finite_gradient_at_zero():
    x = torch.tensor([4.0, -9.0, 0.0, 1e-12], requires_grad=True)
    y = signed_sqrt(x)
    torch.testing.assert_close(y[:2], torch.tensor([2.0, -3.0]), atol=1e-3, rtol=0)
    assert y[2] == 0 and abs(y[3]) < 1e-8  # continuous at 0
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0] == pytest.approx(1 / (2 * math.sqrt(4 + 1e-6)))


def test_align_grid_to_coarser_and_finer():
    fine, coarse = torch.randn(1, 2, 2, 8, 8), torch.randn(1, 3, 1, 4, 4)
    down = align_grid([fine, coarse], "coarser")
    assert [tuple(b.shape) for b in down] == [(1, 2, 1, 4, 4), (1, 3, 1, 4, 4)]
    torch.testing.assert_close(down[0][0, 0, 0, 0, 0], fine[0, 0, :, :2, :2].mean())
    torch.testing.assert_close(down[1], coarse)  # already on the grid: unchanged
    up = align_grid([fine, coarse], "finer")
    assert [tuple(b.shape) for b in up] == [(1, 2, 2, 8, 8), (1, 3, 2, 8, 8)]
    torch.testing.assert_close(up[0], fine)


def test_tensor_sketch_inner_product_approximates_squared_inner_product():
    torch.manual_seed(1)
    sketch = TensorSketch(512, 512, 8192)
    errors = []
    for _ in range(10):
        x = torch.randn(512)
        y = x + 0.5 * torch.randn(512)  # correlated, so <x, y>^2 is far from 0
        sx = sketch(x.view(1, 1, -1), x.view(1, 1, -1)).flatten()
        sy = sketch(y.view(1, 1, -1), y.view(1, 1, -1)).flatten()
        exact = torch.dot(x, y) ** 2
        errors.append(((torch.dot(sx, sy) - exact) / exact).abs().item())
    assert sum(errors) / len(errors) < 0.05 and max(errors) < 0.15


def test_compact_sketch_is_saved_in_the_state_dict():
    source = tiny_model("compact", fusion_dim=64).eval()
    state = source.state_dict()
    assert {"head.sketch.0.hash_a", "head.sketch.0.sign_b"} <= set(state)
    torch.manual_seed(123)  # different random hashes at construction ...
    target = build_model(depth=10, shortcut="A", num_classes=NUM_CLASSES, fusion="compact", fusion_dim=64).eval()
    assert not torch.equal(target.head.sketch[0].hash_a, source.head.sketch[0].hash_a)
    target.load_state_dict(state)  # ... replaced by the saved ones
    clips = torch.randn(2, 3, 8, 32, 32)
    torch.testing.assert_close(target(clips), source(clips))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fusion": "attention"}, "gap, gap_bilinear, bilinear, hbp, temporal, factorized, compact"),
    ({"fusion": "hbp", "fusion_align": "middle"}, "finer, coarser"),
    ({"fusion": "hbp", "fusion_layers": ("layer5",)}, "layer1, layer2, layer3, layer4"),
    ({"fusion": "hbp", "fusion_layers": ()}, "non-empty"),
    ({"fusion": "hbp", "fusion_dim": -3}, "fusion_dim=-3"),
])
def test_bad_head_settings_are_clear_errors(kwargs, message):
    with pytest.raises(VidfuseError, match=message):
        build_model(depth=10, shortcut="A", **kwargs)
