"""load_pretrained: 3D-ResNets-PyTorch checkpoints, bare state dicts, vidfuse checkpoints, mismatches."""

from __future__ import annotations

import pytest
import torch

from vidfuse.engine.checkpoint import save_checkpoint
from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, load_pretrained

CLIPS = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def model(**kwargs):
    return build_model(**{"depth": 10, "shortcut": "A", "num_classes": 400, "fusion": "gap", **kwargs}).eval()


def randomize_batchnorm_statistics(net: torch.nn.Module) -> None:
    """Non-default running statistics, so that loading them is visible in the features."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def write_3d_resnets_checkpoint(source, path) -> None:
    """The layout of 3D-ResNets-PyTorch's `main.py` under `nn.DataParallel` (PyTorch 0.3: no num_batches_tracked)."""
    state = {}
    for key, value in source.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        original = key.removeprefix("backbone.").replace("head.fc.", "fc.")
        state[f"module.{original}"] = value
    assert {"module.conv1.weight", "module.layer1.0.conv1.weight", "module.fc.weight"} <= set(state)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 200, "arch": "resnet-10", "state_dict": state, "optimizer": optimizer.state_dict()}, path)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    net = model()
    randomize_batchnorm_statistics(net)
    return net


def features(net):
    with torch.no_grad():
        return net.forward_features(CLIPS)


def test_3d_resnets_checkpoint_loads_backbone_and_classifier(source, tmp_path, capsys):
    path = tmp_path / "resnet-10-kinetics.pth"
    write_3d_resnets_checkpoint(source, path)
    torch.manual_seed(2)
    target = model()
    result = load_pretrained(target, path)
    torch.testing.assert_close(features(target), features(source), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(target(CLIPS), source(CLIPS), rtol=0, atol=0)
    assert not result.new_classifier and result.unexpected == []
    written = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    assert result.loaded == len(written)
    assert capsys.readouterr().out == ""


def test_other_class_count_keeps_backbone_and_starts_new_classifier(source, tmp_path, capsys):
    path = tmp_path / "kinetics.pth"
    write_3d_resnets_checkpoint(source, path)
    torch.manual_seed(3)
    target = model(num_classes=101)
    fresh_fc = target.head.fc.weight.detach().clone()
    result = load_pretrained(target, path)
    torch.testing.assert_close(features(target), features(source), rtol=0, atol=0)
    assert result.new_classifier and "head.fc.weight" in result.missing and "head.fc.weight" in result.unexpected
    assert torch.equal(target.head.fc.weight, fresh_fc)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "101 classes" in lines[0] and "400" in lines[0] and str(path) in lines[0]


def test_3d_resnets_checkpoint_into_a_fusion_head_model(source, tmp_path, capsys):
    path = tmp_path / "kinetics.pth"
    write_3d_resnets_checkpoint(source, path)
    target = model(fusion="hbp", fusion_dim=16)
    result = load_pretrained(target, path)
    torch.testing.assert_close(features(target)["layer4"], features(source)["layer4"], rtol=0, atol=0)
    assert result.new_classifier and "another head" in capsys.readouterr().out


def test_bare_state_dict_with_module_prefix(source, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = model()
    assert not load_pretrained(target, path).new_classifier
    torch.testing.assert_close(target.state_dict(), source.state_dict(), rtol=0, atol=0)


def test_vidfuse_checkpoint_restores_the_whole_fusion_model(tmp_path):
    torch.manual_seed(4)
    trained = model(fusion="compact", fusion_dim=32, num_classes=7)
    randomize_batchnorm_statistics(trained)
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": trained.state_dict(), "epoch": 3, "vidfuse_version": "0.1.0", "config": {}})
    torch.manual_seed(5)
    target = model(fusion="compact", fusion_dim=32, num_classes=7)
    result = load_pretrained(target, path)
    assert not result.new_classifier and result.missing == [] and result.unexpected == []
    with torch.no_grad():
        torch.testing.assert_close(target(CLIPS), trained(CLIPS), rtol=0, atol=0)


def test_shortcut_a_checkpoint_into_shortcut_b_model_is_a_clear_error(source, tmp_path):
    path = tmp_path / "resnet-10-A.pth"
    write_3d_resnets_checkpoint(source, path)
    with pytest.raises(VidfuseError) as info:
        load_pretrained(model(shortcut="B"), path)
    message = str(info.value)
    assert str(path) in message and "missing keys backbone.layer2.0.downsample.0.weight" in message
    assert "more)" in message and "\n" not in message


def test_other_depth_names_unexpected_keys(tmp_path):
    path = tmp_path / "resnet-18.pth"
    torch.save({"state_dict": build_model(depth=18, shortcut="A").state_dict()}, path)
    with pytest.raises(VidfuseError, match="unexpected keys backbone.layer1.1"):
        load_pretrained(model(), path)


def test_not_a_model_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "notes": "hello"}, path)
    with pytest.raises(VidfuseError, match="not a model checkpoint"):
        load_pretrained(model(), path)
    with pytest.raises(VidfuseError, match="checkpoint not found"):
        load_pretrained(model(), tmp_path / "missing.pth")
