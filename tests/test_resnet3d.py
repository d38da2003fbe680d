"""Backbones: exact parameter counts of the published models, block shapes, key names, shortcut A/B."""

from __future__ import annotations

import pytest
import torch

from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, count_parameters, list_models
from vidfuse.models.resnet3d import ZeroPadShortcut, build_backbone

# 3D-ResNets-PyTorch models with 400 classes (the gap head is its avgpool + fc).
PUBLISHED_COUNTS = [
    ("resnet", 10, "A", 14_430_800),
    ("resnet", 18, "A", 33_235_280),
    ("resnet", 34, "A", 63_544_912),
    ("resnet", 50, "B", 47_018_576),
    ("resnet", 101, "B", 86_064_720),
    ("resnet", 152, "B", 118_223_440),
    ("resnet", 200, "B", 127_423_056),
    ("resnext", 101, "B", 48_340_816),
]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize(("arch", "depth", "shortcut", "expected"), PUBLISHED_COUNTS)
def test_parameter_count_matches_published_model(arch, depth, shortcut, expected):
    with torch.device("meta"):
        model = build_model(arch=arch, depth=depth, shortcut=shortcut, num_classes=400, fusion="gap")
    assert count_parameters(model) == expected


def test_list_models_names_every_backbone():
    assert list_models() == [f"resnet-{d}" for d in (10, 18, 34, 50, 101, 152, 200)] + ["resnext-101"]


@pytest.mark.parametrize("arch", ["resnet", "resnext"])
def test_block_outputs_at_16x112(arch):
    with torch.device("meta"):
        backbone = build_backbone(arch=arch, depth=50 if arch == "resnet" else 101, shortcut="B")
        features = backbone.forward_features(torch.zeros(2, 3, 16, 112, 112), ["layer1", "layer2", "layer3", "layer4"])
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "layer1": (2, 256, 8, 28, 28),
        "layer2": (2, 512, 4, 14, 14),
        "layer3": (2, 1024, 2, 7, 7),
        "layer4": (2, 2048, 1, 4, 4),
    }


def test_any_clip_size_works_with_one_model():
    backbone = build_backbone(arch="resnet", depth=10, shortcut="A").eval()
    for frames, size, expected in ((8, 32, (1, 1, 1)), (7, 50, (1, 2, 2)), (20, 64, (2, 2, 2))):
        (out,) = backbone.forward_features(torch.randn(1, 3, frames, size, size), ["layer4"]).values()
        assert tuple(out.shape) == (1, 512, *expected)


def test_only_requested_blocks_are_returned_and_deeper_ones_not_run():
    backbone = build_backbone(arch="resnet", depth=10, shortcut="A")
    ran = []
    backbone.layer4.register_forward_hook(lambda *_: ran.append("layer4"))
    features = backbone.forward_features(torch.randn(1, 3, 8, 32, 32), ["layer2"])
    assert list(features) == ["layer2"] and ran == []


def test_state_dict_keys_follow_3d_resnets_pytorch():
    b_keys = set(build_backbone(arch="resnet", depth=18, shortcut="B").state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight"} <= b_keys
    a_keys = set(build_backbone(arch="resnet", depth=18, shortcut="A").state_dict())
    assert not any("downsample" in k for k in a_keys)
    assert a_keys == {k for k in b_keys if "downsample" not in k}


def test_resnext_uses_grouped_bottleneck():
    with torch.device("meta"):
        backbone = build_backbone(arch="resnext", depth=101, shortcut="B", cardinality=32)
    conv2 = backbone.layer1[0].conv2
    assert (conv2.groups, conv2.in_channels, backbone.layer1[0].conv3.out_channels) == (32, 128, 256)


def test_shortcut_a_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 3, 5, 6, 7)
    out = ZeroPadShortcut(out_planes=8, stride=2)(x)
    assert tuple(out.shape) == (2, 8, 3, 3, 4)
    torch.testing.assert_close(out[:, :3], x[:, :, 0::2, 0::2, 0::2])
    assert torch.count_nonzero(out[:, 3:]) == 0


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"arch": "vgg"}, "resnet, resnext"),
        ({"arch": "resnet", "depth": 20}, "10, 18, 34, 50, 101, 152, 200"),
        ({"arch": "resnext", "depth": 50}, "101"),
        ({"shortcut": "C"}, "A, B"),
    ],
)
def test_unknown_backbone_choice_lists_valid_ones(kwargs, names):
    with pytest.raises(VidfuseError, match=names):
        build_backbone(**kwargs)
