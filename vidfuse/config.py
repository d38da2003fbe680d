"""Typed experiment configuration: defaults, YAML presets, `--set a.b=c` overrides and validation.

One `Config` holds every setting of a run in four sections (`model`, `data`, `optim`, `run`). A preset YAML
file names only what differs from the defaults; `--set section.key=value` overrides any key on top; the
resolved config is saved beside the run so that `test`, `report` and `--resume` read exactly what trained.
Unknown keys and wrong types are a `VidfuseError` that lists the valid keys of the section.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidfuse.errors import VidfuseError, first_line
from vidfuse.files import read_text, write_text


@dataclass
class ModelConfig:
    arch: str = "resnet"  # backbone family: resnet or resnext
    depth: int = 18  # 10/18/34/50/101/152/200 for resnet, 101 for resnext
    shortcut: str = "A"  # A: zero-padded identity, B: 1x1x1 conv + BN on the shortcut
    cardinality: int = 32  # groups of the ResNeXt bottleneck
    num_classes: int = 0  # classes to train; 0 takes the class count of the prepared data set
    fusion: str = "hbp"  # head: gap, gap_bilinear, bilinear, hbp, temporal, factorized, compact
    fusion_layers: list[str] = field(default_factory=lambda: ["layer3", "layer4"])  # blocks the head reads
    fusion_dim: int = 0  # head's projection / sketch dimension; 0 picks the head's own default
    fusion_align: str = "coarser"  # common grid of the fused blocks: finer or coarser
    dropout: float = 0.5  # dropout before the classifier
    pretrain_path: str = ""  # 3D-ResNets-PyTorch or vidfuse checkpoint to start from; empty: from scratch
    ft_begin_index: int = 0  # blocks before layer{k} are frozen (weights and BatchNorm statistics)
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm across workers


@dataclass
class DataConfig:
    path: str = ""  # prepared Parquet data set (a file or a folder of shards)
    split: int = 1  # official split 1, 2 or 3
    sample_duration: int = 16  # frames per clip
    sample_stride: int = 1  # take every n-th frame inside a window
    sample_size: int = 112  # crop size in pixels
    n_val_clips: int = 3  # evenly spaced windows scored per validation video
    min_crop_scale: float = 0.5  # smallest train crop (side / short side) of the multi-scale crop; 1: whole frame
    hflip: bool = True  # random horizontal flips in training; off when direction is the class (left vs right)
    norm: str = "kinetics"  # normalisation preset: kinetics (3D-ResNets mean, 0-255 scale) or imagenet
    val_from_test: bool = False  # old protocol: validate on the official test list (selection on the test set)
    decode_workers: int = 1  # Ray Data read + decode tasks at once (capped at CPUs - 1)
    decode_on: str = "decoders"  # decoders: Ray Data's CPU tasks decode the clips; worker: each Train worker (and
    # test scorer) decodes its batches on its own device (nvjpeg on a GPU), the tasks only read and pick JPEGs
    shuffle_buffer: int = 64  # clips in each worker's local shuffle buffer


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd or adamw
    lr: float = 0.1  # base learning rate (for the whole batch across workers)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum for SGD
    weight_decay: float = 1e-3  # applied to conv / linear weights only, never to BatchNorm or biases
    scheduler: str = "plateau"  # plateau (on val loss), multistep, cosine or constant
    patience: int = 10  # plateau: epochs without val-loss improvement before the LR drops
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])  # multistep: epochs where the LR drops
    gamma: float = 0.1  # factor of each LR drop
    warmup_epochs: int = 0  # cosine: linear warm-up epochs
    min_lr: float = 0.0  # cosine: final learning rate
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping


@dataclass
class RunConfig:
    name: str = "run"  # run name: the folder under storage
    storage: str = "runs"  # local folder, or on a cluster a shared file system path (NFS) mounted on every node
    epochs: int = 30  # training epochs
    batch_size: int = 32  # clips per step across all workers
    workers: int = 2  # Ray Train workers (one per GPU on a cluster)
    gpus_per_worker: float = 0.0  # GPUs each worker takes; 0 trains on CPU with gloo
    cpus_per_worker: float = 1.0  # CPUs each worker reserves
    precision: str = "bf16"  # autocast on GPU: bf16, fp16 (with a GradScaler) or fp32; CPU always trains in fp32
    # (measured on one H200, README: fp16 trained 3D ResNets up to 1.75x as fast as bf16, in the same memory)
    checkpoint_every: int = 1  # keep a checkpoint every n epochs (and always the best)
    keep_checkpoints: int = 2  # periodic checkpoints kept besides the best
    max_failures: int = 1  # worker restarts from the last checkpoint before giving up; -1: no limit
    use_subclusters: bool = False  # cluster.yaml: train on nodes labelled ray-subcluster=training, decode on =data
    seed: int = 0  # seeds model init, clip sampling and crops, and each worker's shuffle
    # The same clips in the same order to the same workers every run (Ray Data keeps its tasks' order, at some
    # throughput cost) and cuDNN's deterministic kernels: a run repeats to the last digit on the same machine
    deterministic: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}

CHOICES = {
    "model.arch": ("resnet", "resnext"),
    "model.shortcut": ("A", "B"),
    "model.fusion": ("gap", "gap_bilinear", "bilinear", "hbp", "temporal", "factorized", "compact"),
    "model.fusion_align": ("finer", "coarser"),
    "data.norm": ("kinetics", "imagenet"),
    "data.decode_on": ("decoders", "worker"),
    "optim.optimizer": ("sgd", "adamw"),
    "optim.scheduler": ("plateau", "multistep", "cosine", "constant"),
    "run.precision": ("bf16", "fp16", "fp32"),
}


def _section_class(section: str) -> type:
    classes = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}
    if section not in classes:
        raise VidfuseError(f"unknown config section {section!r}; valid sections: {', '.join(classes)}")
    return classes[section]


def _field_types(section: str) -> dict[str, Any]:
    cls = _section_class(section)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert `value` (from YAML or a `--set` string) to the field's type, or raise naming the key."""
    origin = typing.get_origin(kind)
    try:
        if origin in (list, tuple):
            (item,) = typing.get_args(kind)[:1]
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [_coerce(key, v, item) for v in value]
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise TypeError
        if kind is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise TypeError
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise TypeError(f"unsupported config type {kind}")
    name = getattr(kind, "__name__", str(kind))
    raise VidfuseError(f"config key {key}: {value!r} is not a valid {name}")


def set_value(config: Config, dotted_key: str, value: Any) -> None:
    """Set `section.key` on `config`, converting the value to the field's type."""
    if "." not in dotted_key:
        raise VidfuseError(f"config key {dotted_key!r} must be section.key; sections: {', '.join(SECTIONS)}")
    section, key = dotted_key.split(".", 1)
    types_ = _field_types(section)
    if key not in types_:
        raise VidfuseError(f"unknown config key {dotted_key!r}; valid keys of {section}: {', '.join(types_)}")
    setattr(getattr(config, section), key, _coerce(dotted_key, value, types_[key]))


def from_dict(raw: dict[str, Any], base: Config | None = None) -> Config:
    """Apply a nested dict (as read from YAML) on top of `base` (the defaults when None)."""
    config = base if base is not None else Config()
    if not isinstance(raw, dict):
        raise VidfuseError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    for section, values in raw.items():
        _section_class(section)
        if not isinstance(values, dict):
            raise VidfuseError(f"config section {section!r} must be a mapping of keys to values")
        for key, value in values.items():
            set_value(config, f"{section}.{key}", value)
    validate(config)
    return config


def load(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML preset at `path` (if any), then `key=value` overrides; validated."""
    config = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise VidfuseError(f"config file not found: {path}" + (" (a folder)" if path.is_dir() else ""))
        raw = read_yaml(path) or {}
        try:
            config = from_dict(raw, config)
        except VidfuseError as exc:
            raise VidfuseError(f"{path}: {exc}") from None
    apply_overrides(config, overrides)
    return config


MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping naming one key twice is an error: YAML's "the last one wins"
    would drop the first value silently (an `lr:` pasted twice into a preset trains with one of them)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """SafeLoader's mapping, after checking that no key of the mapping's own is written twice."""
    first_lines: dict[Hashable, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue  # `<<: *defaults` and then a key of the defaults is an override, not a repeat
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            continue  # construct_mapping refuses it itself
        if key in first_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice: lines {first_lines[key]} and {line}", key_node.start_mark)
        first_lines[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python values, refusing a mapping that names a key twice (`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: Path) -> Any:
    """The YAML document at `path`; a syntax error or a key given twice is one line with its line and column."""
    try:
        return parse_yaml(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise VidfuseError(f"{path}: not valid YAML{where} ({problem})") from None


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply `section.key=value` strings (values parsed as YAML scalars/lists) and validate."""
    for item in overrides:
        if "=" not in item:
            raise VidfuseError(f"--set expects section.key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = parse_yaml(text) if text else ""
        except yaml.YAMLError:
            value = text
        set_value(config, key.strip(), value)
    validate(config)
    return config


# Numeric ranges: key -> (lowest valid value, whether that value itself is valid, highest valid value or None).
RANGES = {
    **{key: (1, True, None) for key in (
        "run.epochs", "run.batch_size", "run.workers", "run.checkpoint_every", "run.keep_checkpoints",
        "data.sample_duration", "data.sample_size", "data.sample_stride", "data.n_val_clips", "data.decode_workers")},
    **{key: (0, True, None) for key in (
        "model.num_classes", "model.fusion_dim", "data.shuffle_buffer", "optim.weight_decay", "optim.patience",
        "optim.warmup_epochs", "optim.min_lr", "optim.grad_clip", "run.gpus_per_worker")},
    **{key: (0, False, None) for key in ("optim.lr", "optim.gamma", "run.cpus_per_worker")},
    "model.ft_begin_index": (0, True, 5),
    "run.max_failures": (-1, True, None),  # -1: restart without limit, as Ray's FailureConfig
    "run.seed": (0, True, 2**32 - 1),  # NumPy's generators take no negative seed; torch none of 2**64 and more
    "optim.momentum": (0, True, 0.999),
}


def _check_range(dotted: str, value: float) -> None:
    low, low_valid, high = RANGES[dotted]
    if not math.isfinite(value):
        raise VidfuseError(f"{dotted}={value} must be a finite number")
    in_range = (value >= low if low_valid else value > low) and (high is None or value <= high)
    if in_range:
        return
    if high is not None:
        raise VidfuseError(f"{dotted}={value} must be between {low} and {high}")
    raise VidfuseError(f"{dotted}={value} must be " + (f"at least {low}" if low_valid else f"above {low}"))


# The largest uint8 clip (sample_duration x sample_size x sample_size x 3) a run may ask for. Each decoder holds a
# batch of clips and each Train worker `data.shuffle_buffer` of them (64 by default: 4 GiB at this size), so a
# larger one would have Ray's memory monitor kill processes instead of a one-line error. Clips of research
# settings are far below: 64 x 224 x 224 is 9.2 MiB.
MAX_CLIP_MIB = 64


def _check_clip_bytes(data: DataConfig) -> None:
    clip_mib = data.sample_duration * data.sample_size**2 * 3 / 2**20
    if clip_mib > MAX_CLIP_MIB:
        raise VidfuseError(
            f"data.sample_duration={data.sample_duration} with data.sample_size={data.sample_size} makes clips of "
            f"{clip_mib:.1f} MiB ({data.sample_duration} x {data.sample_size} x {data.sample_size} x 3 bytes); "
            f"at most {MAX_CLIP_MIB} MiB a clip")


def check_folder_name(name: str, what: str = "run.name") -> None:
    """A run (or experiment) name is one folder under its storage: not empty, no path separator, not . or .."""
    if name in ("", ".", "..") or "/" in name or os.sep in name:
        raise VidfuseError(f"{what}={name!r} must name one folder under the storage folder (no '/', not empty)")


def validate(config: Config) -> None:
    """Cross-field, range and choice checks; raises `VidfuseError` with the offending key and value."""
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise VidfuseError(f"{dotted}={value!r} is not one of: {', '.join(allowed)}")
    if config.data.split not in (1, 2, 3):
        raise VidfuseError(f"data.split={config.data.split} must be 1, 2 or 3")
    for dotted in RANGES:
        section, key = dotted.split(".")
        _check_range(dotted, getattr(getattr(config, section), key))
    if any(milestone < 1 for milestone in config.optim.milestones):
        raise VidfuseError(f"optim.milestones={config.optim.milestones}: each is an epoch, at least 1")
    check_folder_name(config.run.name)
    _check_clip_bytes(config.data)
    from vidfuse.data.transforms import Augment  # torchvision: imported only when a config is checked

    try:
        Augment(min_crop_scale=config.data.min_crop_scale)
    except VidfuseError as error:
        raise VidfuseError(f"data.{error}") from None
    if "://" in config.run.storage:
        raise VidfuseError(f"run.storage={config.run.storage}: a URI is not supported, as the run folder (config.yaml, "
                           "metrics.jsonl, best.pt, last.pt) is written with file APIs; use a shared file system "
                           "path mounted on every node (NFS)")


# What `--resume` may change: where the run lives and how it executes, not what it trains (the checkpoint's
# model, optimizer and schedule must still fit, and its epochs must stay comparable).
RESUMABLE_KEYS = (
    "run.name", "run.storage", "data.path", "data.decode_workers", "data.decode_on", "run.epochs", "run.workers",
    "run.gpus_per_worker", "run.cpus_per_worker", "run.precision", "run.checkpoint_every", "run.keep_checkpoints",
    "run.max_failures", "run.use_subclusters", "run.deterministic",
)


def resume_config(saved: Config, overrides: list[str] | tuple[str, ...], *, source: str | os.PathLike) -> Config:
    """The config of a run to resume: `saved` (read from `source`) with `overrides` applied. Raises before
    anything is written when an override changes a key outside `RESUMABLE_KEYS`."""
    resumed = apply_overrides(from_dict(saved.to_dict()), overrides)
    before, after = flat(saved), flat(resumed)
    for key in after:
        if after[key] != before[key] and key not in RESUMABLE_KEYS:
            raise VidfuseError(f"--resume cannot change {key} ({before[key]!r} in {source}, {after[key]!r} asked): "
                               "that changes what the run trains; start a new run with another --name")
    return resumed


def flat(config: Config) -> dict[str, Any]:
    """`{"section.key": value}` for every key of `config`."""
    return {f"{section}.{key}": value for section, keys_ in config.to_dict().items() for key, value in keys_.items()}


def save(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically: temporary name, then rename)."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def keys() -> list[str]:
    """Every `section.key` a config accepts (for `--set` and Tune search spaces)."""
    return [f"{section}.{key}" for section in SECTIONS for key in _field_types(section)]


# The old 3D-ResNets-PyTorch `main.py` flags, so the user's habits carry over: flag -> config key.
LEGACY_FLAGS = {
    "model": "model.arch",
    "model_depth": "model.depth",
    "resnet_shortcut": "model.shortcut",
    "resnext_cardinality": "model.cardinality",
    "sample_duration": "data.sample_duration",
    "sample_size": "data.sample_size",
    "n_val_samples": "data.n_val_clips",
    "batch_size": "run.batch_size",
    "n_epochs": "run.epochs",
    "learning_rate": "optim.lr",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "nesterov": "optim.nesterov",
    "lr_patience": "optim.patience",
    "pretrain_path": "model.pretrain_path",
    "n_finetune_classes": "model.num_classes",
    "ft_begin_index": "model.ft_begin_index",
    "checkpoint": "run.checkpoint_every",
}
# `--n_classes` (classes of the pretrained model) and `--resume_path` need no config key: vidfuse reads the class
# count from the checkpoint itself, and resumes from the run folder. The CLI accepts them for compatibility.
