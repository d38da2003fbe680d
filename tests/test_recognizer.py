"""Recognizer: fine-tuning freeze (weights and BatchNorm statistics), config wiring, GFLOPs, bad choices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidfuse.config import DataConfig, ModelConfig
from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, count_gflops, model_from_config

BLOCK_PREFIXES = [("conv1.", "bn1."), ("layer1.",), ("layer2.",), ("layer3.",), ("layer4.",)]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "num_batches_tracked" not in k}


@pytest.mark.parametrize("ft_begin_index", [0, 2, 5])
def test_frozen_blocks_keep_weights_and_batchnorm_statistics(ft_begin_index):
    torch.manual_seed(0)
    model = build_model(depth=10, shortcut="A", num_classes=4, fusion="hbp", fusion_dim=8,
                        ft_begin_index=ft_begin_index).train()
    before_backbone, before_head = snapshot(model.backbone), snapshot(model.head)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(torch.randn(2, 3, 8, 32, 32)), torch.tensor([0, 3])).backward()
    optimizer.step()
    after_backbone, after_head = snapshot(model.backbone), snapshot(model.head)

    for block, prefixes in enumerate(BLOCK_PREFIXES):
        keys = [k for k in before_backbone if k.startswith(prefixes)]
        changed = [k for k in keys if not torch.equal(before_backbone[k], after_backbone[k])]
        if block < ft_begin_index:
            assert changed == [], f"frozen block {block} changed"
        else:  # every weight and running statistic of a trained block moves
            assert changed == keys, f"block {block}: unchanged {sorted(set(keys) - set(changed))}"
    assert all(not torch.equal(before_head[k], after_head[k]) for k in before_head)


def test_freeze_sets_requires_grad_and_keeps_batchnorm_in_eval_mode():
    model = build_model(depth=10, shortcut="A", ft_begin_index=2).train()
    assert not model.backbone.conv1.weight.requires_grad and not model.backbone.layer1[0].bn1.weight.requires_grad
    assert model.backbone.layer2[0].conv1.weight.requires_grad and model.head.fc.weight.requires_grad
    assert not model.backbone.bn1.training and not model.backbone.layer1[0].bn2.training
    assert model.backbone.layer2[0].bn1.training and model.head.training
    model.eval().train()
    assert not model.backbone.layer1[0].bn1.training and model.backbone.layer2[0].bn1.training


def test_forward_features_returns_the_blocks_the_head_reads():
    model = build_model(depth=10, shortcut="A", fusion="bilinear", fusion_layers=("layer2", "layer4")).eval()
    clips = torch.randn(1, 3, 8, 32, 32)
    features = model.forward_features(clips)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "layer2": (1, 128, 2, 4, 4), "layer4": (1, 512, 1, 1, 1)}
    torch.testing.assert_close(model.forward_head(features), model(clips))


def test_model_from_config_uses_every_setting():
    model_cfg = ModelConfig(arch="resnet", depth=10, shortcut="B", num_classes=7, fusion="hbp",
                            fusion_layers=["layer2", "layer3"], fusion_dim=0, fusion_align="finer", dropout=0.2,
                            ft_begin_index=3)
    model = model_from_config(model_cfg, DataConfig(sample_size=64, sample_duration=8))
    assert model.head.layers == ("layer2", "layer3") and model.head.dim == 1024 and model.head.align == "finer"
    assert model.head.fc.out_features == 7 and model.head.dropout.p == 0.2
    assert model.ft_begin_index == 3 and (model.sample_duration, model.sample_size) == (8, 64)
    assert model.backbone.layer2[0].downsample is not None  # shortcut B: a conv on the shortcut
    model_cfg.fusion_dim = 32
    assert model_from_config(model_cfg, DataConfig()).head.dim == 32


def test_gflops_equal_the_sum_over_convolutions_and_linear_layers():
    model = build_model(depth=10, shortcut="A", num_classes=10, fusion="gap")
    expected = []

    def conv_flops(module, _inputs, output):
        kernel = module.weight[0].numel()  # in_channels / groups * kT * kH * kW
        expected.append(2 * output.numel() * kernel)

    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            module.register_forward_hook(conv_flops)
    gflops = count_gflops(model, frames=8, size=32)
    assert len(expected) == 1 + 8 + 1  # conv1, 4 stages x 2 convs, fc (forward ran once, batch 1)
    assert gflops == pytest.approx(sum(expected) / 1e9)
    assert model.training  # mode restored


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"arch": "densenet"}, "resnet, resnext"),
    ({"depth": 20}, "10, 18, 34, 50, 101, 152, 200"),
    ({"shortcut": "C"}, "A, B"),
    ({"fusion": "lstm"}, "gap, gap_bilinear"),
    ({"ft_begin_index": 6}, "between 0 and 5"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"dropout": 1.0}, "dropout=1.0"),
])
def test_bad_choices_are_one_clear_error(kwargs, message):
    with pytest.raises(VidfuseError, match=message):
        build_model(**{"depth": 10, "shortcut": "A", **kwargs})


def test_models_command_prints_parameters_and_gflops(capsys):
    from vidfuse.cli import main

    assert main(["models", "--depth", "10", "--fusion", "gap", "hbp", "--frames", "8", "--size", "32"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    gflops = count_gflops(build_model(depth=10, shortcut="A", fusion="hbp"), frames=8, size=32)
    assert rows == [["resnet-10", "A", "gap", "14.43", rows[0][4]], ["resnet-10", "A", "hbp", "15.43", f"{gflops:.1f}"]]
    assert main(["models", "--arch", "resnext", "--depth", "18"]) == 2
    assert "valid: resnet-10" in capsys.readouterr().err
