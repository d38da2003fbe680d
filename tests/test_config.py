"""Config: defaults, presets, overrides, validation, legacy flags, round-trip through YAML."""

from __future__ import annotations

import pytest
import yaml

from vidfuse import config as config_lib
from vidfuse.cli import main
from vidfuse.commands import train as train_command
from vidfuse.errors import VidfuseError


def test_overrides_convert_to_field_types():
    cfg = config_lib.load(None, ["optim.lr=0.01", "model.fusion_layers=[layer2, layer4]", "model.sync_bn=true",
                                 "data.split=2", "run.gpus_per_worker=1"])
    assert cfg.optim.lr == 0.01
    assert cfg.model.fusion_layers == ["layer2", "layer4"]
    assert cfg.model.sync_bn is True
    assert cfg.data.split == 2
    assert cfg.run.gpus_per_worker == 1.0 and isinstance(cfg.run.gpus_per_worker, float)


def test_unknown_key_lists_the_valid_keys_of_its_section():
    with pytest.raises(VidfuseError) as err:
        config_lib.load(None, ["optim.learning_rate=0.1"])
    message = str(err.value)
    assert "optim.learning_rate" in message and "lr" in message and "weight_decay" in message
    assert "\n" not in message


@pytest.mark.parametrize("override, fragment", [
    ("data.split=4", "data.split=4"),
    ("model.fusion=attention", "model.fusion='attention'"),
    ("run.epochs=ten", "run.epochs"),
    ("model.ft_begin_index=6", "ft_begin_index=6"),
    ("optim.lr=-1", "optim.lr=-1"),
    ("run.epochs=2.5", "run.epochs"),
    ("data.min_crop_scale=0.2", "data.min_crop_scale=0.2"),
    ("data.hflip=maybe", "data.hflip"),
    ("run.storage=s3://bucket/runs", "run.storage=s3://bucket/runs"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1 must be at least 0"),
    ("optim.momentum=-1", "optim.momentum=-1.0 must be between 0 and 0.999"),
    ("optim.momentum=1", "optim.momentum=1.0 must be between 0 and 0.999"),
    ("run.gpus_per_worker=-1", "run.gpus_per_worker=-1.0 must be at least 0"),
    ("run.cpus_per_worker=0", "run.cpus_per_worker=0.0 must be above 0"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints=0 must be at least 1"),
    ("data.decode_workers=0", "data.decode_workers=0 must be at least 1"),
    ("run.max_failures=-2", "run.max_failures=-2 must be at least -1"),
    ("run.name=", "run.name='' must name one folder"),
    ("run.name=../../escaped", "run.name='../../escaped' must name one folder"),
    ("run.name=..", "run.name='..' must name one folder"),
    ("optim.lr=.inf", "optim.lr=inf must be a finite number"),
    ("run.cpus_per_worker=.inf", "run.cpus_per_worker=inf must be a finite number"),
    ("run.seed=-1", "run.seed=-1 must be between 0 and 4294967295"),
    ("optim.milestones=[30, -5]", "optim.milestones=[30, -5]: each is an epoch, at least 1"),
    ("optim.milestones=[0]", "optim.milestones=[0]: each is an epoch, at least 1"),
])
def test_bad_values_are_named(override, fragment):
    with pytest.raises(VidfuseError, match=None) as err:
        config_lib.load(None, [override])
    assert fragment in str(err.value)


def test_a_clip_larger_than_the_cap_is_named_with_its_size():
    # The largest legal side at 16 frames, by integer arithmetic: 16 * 1182**2 * 3 bytes <= 64 MiB < 16 * 1183**2 * 3.
    assert 16 * 1182**2 * 3 <= config_lib.MAX_CLIP_MIB * 2**20 < 16 * 1183**2 * 3
    assert config_lib.load(None, ["data.sample_size=1182"]).data.sample_size == 1182
    with pytest.raises(VidfuseError) as err:
        config_lib.load(None, ["data.sample_size=1183"])
    assert str(err.value) == ("data.sample_duration=16 with data.sample_size=1183 makes clips of 64.1 MiB "
                              "(16 x 1183 x 1183 x 3 bytes); at most 64 MiB a clip")
    with pytest.raises(VidfuseError, match=r"^data.sample_duration=512 with data.sample_size=224 makes clips of 73.5"):
        config_lib.load(None, ["data.sample_duration=512", "data.sample_size=224"])


def test_preset_then_override_and_yaml_round_trip(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"model": {"arch": "resnext", "depth": 101, "shortcut": "B"},
                                      "optim": {"lr": 0.001}}))
    cfg = config_lib.load(preset, ["optim.lr=0.005"])
    assert (cfg.model.arch, cfg.model.depth, cfg.optim.lr) == ("resnext", 101, 0.005)
    config_lib.save(cfg, tmp_path / "resolved.yaml")
    assert config_lib.load(tmp_path / "resolved.yaml") == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_preset_errors_name_the_file_and_the_line(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("model:\n  depth: 18\n  fusoin: hbp\n")
    with pytest.raises(VidfuseError, match=rf"^{preset}: unknown config key 'model.fusoin'"):
        config_lib.load(preset)
    preset.write_text("model:\n  depth: 18\n optim: {lr: 0.1}\n")
    with pytest.raises(VidfuseError, match=rf"^{preset}: not valid YAML at line 3, column 2 \("):
        config_lib.load(preset)


def test_a_key_given_twice_is_refused_while_a_merge_override_is_not(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("optim:\n  lr: 0.1\n  weight_decay: 0.001\n  lr: 0.01\n")
    with pytest.raises(VidfuseError, match=rf"^{preset}: not valid YAML at line 4, column 3 \(key 'lr' appears "
                                           r"twice: lines 2 and 4\)$"):
        config_lib.load(preset)
    preset.write_text("model: {depth: 10}\nmodel: {depth: 34}\n")  # whole sections too
    with pytest.raises(VidfuseError, match=r"key 'model' appears twice: lines 1 and 2"):
        config_lib.load(preset)
    preset.write_text("defaults: &sgd {lr: 0.1, momentum: 0.5}\noptim:\n  <<: *sgd\n  lr: 0.01\n")
    assert config_lib.read_yaml(preset)["optim"] == {"lr": 0.01, "momentum": 0.5}


def test_every_preset_in_configs_loads():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert {p.name for p in presets} >= {"r3d50_ucf101.yaml", "resnext101_64f_ucf101.yaml",
                                         "resnext101_64f_hmdb51.yaml"}
    for preset in presets:
        cfg = config_lib.load(preset)
        assert cfg.model.ft_begin_index == 4 and cfg.model.pretrain_path.endswith(".pth")


def test_legacy_main_py_flags_map_to_config_keys():
    import argparse

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--model", "resnext", "--model_depth", "101", "--resnet_shortcut", "B",
                              "--sample_duration", "64", "--learning_rate", "0.001", "--lr_patience", "5",
                              "--n_finetune_classes", "101", "--ft_begin_index", "4", "--n_val_samples", "2",
                              "--batch_size", "16", "--checkpoint", "5", "--data", "x.parquet", "--split", "2"])
    cfg = config_lib.load(None, train_command._overrides(args))
    assert (cfg.model.arch, cfg.model.depth, cfg.model.shortcut) == ("resnext", 101, "B")
    assert (cfg.data.sample_duration, cfg.data.n_val_clips, cfg.data.path, cfg.data.split) == (64, 2, "x.parquet", 2)
    assert (cfg.optim.lr, cfg.optim.patience) == (0.001, 5)
    assert (cfg.model.num_classes, cfg.model.ft_begin_index) == (101, 4)
    assert (cfg.run.batch_size, cfg.run.checkpoint_every) == (16, 5)


def test_cli_prints_one_line_for_a_bad_key(capsys):
    assert main(["train", "--set", "model.nope=1", "--data", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.nope" in err[0]


def test_a_config_file_that_is_not_text_is_one_line(tmp_path, capsys):
    binary = tmp_path / "best.pt"  # a checkpoint passed as --config by mistake
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x08\x00\x00\xa1")
    assert main(["train", "--config", str(binary), "--data", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidfuse: error: {binary}: not UTF-8 text (byte 10 is 0xa1)"]
    assert main(["train", "--config", str(tmp_path), "--data", "x"]) == 2  # a folder given as --config
    assert capsys.readouterr().err.strip().splitlines() == [f"vidfuse: error: config file not found: {tmp_path} "
                                                            "(a folder)"]


def test_a_resume_path_that_is_not_there_is_one_line(tmp_path, capsys):
    """Not a resume of the run folder above the missing checkpoint."""
    (tmp_path / "run").mkdir()
    missing = tmp_path / "run" / "nope.pt"
    assert main(["train", "--resume_path", str(missing)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"vidfuse: error: --resume_path {missing}: not found"]


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--split", "one"], "launch.py train: error: argument --split: invalid int value: 'one'"),
    (["prepare", "--dataset", "ucf101"], "launch.py prepare: error: the following arguments are required: "),
    (["trian"], "launch.py: error: argument SUBCOMMAND: invalid choice: 'trian'"),
])
def test_argument_errors_are_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(fragment) and "--help)" in err[0]


def test_keys_cover_every_section():
    keys = config_lib.keys()
    assert "optim.lr" in keys and "model.fusion" in keys and "data.split" in keys and "run.epochs" in keys
