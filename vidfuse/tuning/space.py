"""Search-space files (`tune/*.yaml`): what every trial starts from, what is searched, and how ASHA stops trials.

    config:                      # config sections every trial starts from (same format as configs/*.yaml)
      model: {depth: 10}
      run: {workers: 1, gpus_per_worker: 0}     # resources of one trial
    search:                      # any config key -> one distribution
      optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
      model.fusion: {choice: [gap, hbp]}
      model.ft_begin_index: {randint: [0, 5]}   # both ends included
    asha: {grace_period: 1, max_t: 3, reduction_factor: 2}   # in epochs; max_t is the trials' run.epochs
                                 # ASHA compares val video accuracy (ties: lower val loss), see `rundir.val_score`
    max_concurrent_trials: 2

Every value a distribution can produce is checked against the config when the file is read, so a typo in a key,
a distribution name or a choice fails at once with one line naming the file, not hours later in a trial.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from vidfuse import config as config_lib
from vidfuse.errors import VidfuseError

# Distribution name -> Tune's sampler for its argument list. Ranges are [low, high]; randint includes high.
SAMPLERS = {
    "loguniform": lambda args: tune.loguniform(*args),
    "uniform": lambda args: tune.uniform(*args),
    "randint": lambda args: tune.randint(int(args[0]), int(args[1]) + 1),
    "choice": lambda args: tune.choice(args),
    "grid": lambda args: tune.grid_search(args),
}
RANGES = ("loguniform", "uniform", "randint")
MAX_CHECKED_INTS = 64  # a randint range up to this wide has each of its values checked (model.depth: 10 to 18)
RESOURCE_KEYS = ("run.workers", "run.cpus_per_worker", "run.gpus_per_worker")  # what a trial's workers reserve
# Keys the search itself sets: the trial's run folder, and its length (asha.max_t).
RESERVED_KEYS = ("run.name", "run.storage", "run.epochs")
# What `driver.check_data` judges a trial's data by, besides the data set (`--data`, never searched: ASHA would
# compare val accuracies of different data sets): every searched combination is checked before any trial runs.
DATA_CHECK_KEYS = ("data.split", "data.val_from_test", "run.batch_size", "run.workers")
TOP_LEVEL = ("config", "search", "asha", "max_concurrent_trials")

TIME_ATTR = "epoch"  # reported by every epoch and absolute, so a resumed trial keeps its place in ASHA's rungs


@dataclass(frozen=True)
class Asha:
    """ASHA's settings, in epochs: trials run at least `grace_period`, at most `max_t`."""

    grace_period: int
    max_t: int
    reduction_factor: int


@dataclass
class SearchSpace:
    """A parsed, checked search space: `base` plus one distribution per searched key."""

    path: Path
    base: config_lib.Config  # every trial's config before its sampled values (run.epochs = asha.max_t)
    search: dict[str, tuple[str, list[Any]]]  # "optim.lr" -> ("loguniform", [0.0001, 0.1])
    asha: Asha
    max_concurrent_trials: int

    def param_space(self) -> dict[str, Any]:
        """Tune's `param_space`: one sampler per searched config key."""
        return {key: SAMPLERS[kind](args) for key, (kind, args) in self.search.items()}

    def largest_trial(self) -> config_lib.Config:
        """A trial config with the largest value of every searched trial resource (workers, CPUs and GPUs per
        worker): what the biggest trial may ask of the cluster."""
        largest = {key: max(args) for key, (_, args) in self.search.items() if key in RESOURCE_KEYS}
        return self.trial_config(largest)

    def data_check_configs(self) -> list[tuple[str, config_lib.Config]]:
        """(what the trials search, config) for each combination of the searched values of DATA_CHECK_KEYS:
        every choice or grid value, and a range's two ends (the batch and worker checks only grow or shrink
        with them). ("", base) when none is searched. For `tune` to check the data set as every trial sees it."""
        searched = {key: [args[0], args[-1]] if kind in RANGES else args
                    for key, (kind, args) in self.search.items() if key in DATA_CHECK_KEYS}
        return [(", ".join(f"{key}={value}" for key, value in params.items()), self.trial_config(params))
                for params in (dict(zip(searched, values)) for values in itertools.product(*searched.values()))]

    def trial_config(self, params: dict[str, Any]) -> config_lib.Config:
        """The config of one trial: `base` with the trial's sampled values."""
        config = copy.deepcopy(self.base)
        for key, value in params.items():
            config_lib.set_value(config, key, value)
        config_lib.validate(config)
        return config


def load_space(path: str | os.PathLike, base: config_lib.Config | None = None,
               overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read and check a space file. The trials' base config is `base` (defaults when None), then the file's
    `config:` sections, then the `section.key=value` `overrides`; searched keys may not be overridden."""
    path = Path(path)
    raw = _read_mapping(path)
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise VidfuseError(f"{path}: unknown top-level key {unknown[0]!r}; valid: {', '.join(TOP_LEVEL)}")
    search_raw = raw.get("search")
    if not isinstance(search_raw, dict) or not search_raw:
        raise VidfuseError(f"{path}: 'search' must map config keys to distributions, "
                           "e.g. optim.lr: {loguniform: [1e-4, 1e-1]}")
    asha = _parse_asha(path, raw.get("asha"))
    max_concurrent = raw.get("max_concurrent_trials", 1)
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise VidfuseError(f"{path}: max_concurrent_trials={max_concurrent!r} must be a positive integer")

    sections = raw.get("config") or {}
    if not isinstance(sections, dict):
        raise VidfuseError(f"{path}: 'config' must be a mapping of config sections, like configs/*.yaml")
    fixed_keys = [item.split("=", 1)[0].strip() for item in overrides]
    fixed_keys += [f"{section}.{key}" for section, values in sections.items() if isinstance(values, dict)
                   for key in values]
    reserved = [key for key in fixed_keys + list(search_raw) if key in RESERVED_KEYS]
    if reserved:
        raise VidfuseError(f"{path}: {reserved[0]} is set by the search itself (trial length: asha.max_t)")
    config = copy.deepcopy(base) if base is not None else config_lib.Config()
    try:
        config = config_lib.from_dict(sections, config)
    except VidfuseError as exc:
        raise VidfuseError(f"{path}: config: {exc}") from None
    config_lib.apply_overrides(config, overrides)
    config.run.epochs = asha.max_t
    try:
        _check_model(config)
    except VidfuseError as exc:
        raise VidfuseError(f"{path}: config: {exc}") from None

    search = {}
    for key, spec in search_raw.items():
        if not isinstance(key, str):
            raise VidfuseError(f"{path}: search key {key!r} is not a config key like optim.lr")
        if key in fixed_keys:
            raise VidfuseError(f"{path}: {key} is both searched and fixed (config: or --set); keep one")
        if key == "data.path":
            raise VidfuseError(f"{path}: data.path cannot be searched: a search compares trials on one data set "
                               "(--data); run one search per data set")
        search[key] = _parse_distribution(path, config, key, spec)
    return SearchSpace(path=path, base=config, search=search, asha=asha, max_concurrent_trials=max_concurrent)


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise VidfuseError(f"search space file not found: {path}")
    raw = config_lib.read_yaml(path)
    if not isinstance(raw, dict):
        raise VidfuseError(f"{path}: a search space must be a mapping with keys {', '.join(TOP_LEVEL)}")
    return raw


def _parse_asha(path: Path, raw: Any) -> Asha:
    if not isinstance(raw, dict) or "max_t" not in raw:
        raise VidfuseError(f"{path}: 'asha' must give at least max_t (epochs of a trial that is never stopped)")
    unknown = sorted(set(raw) - {"grace_period", "max_t", "reduction_factor"})
    if unknown:
        raise VidfuseError(f"{path}: unknown asha key {unknown[0]!r}; valid: grace_period, max_t, reduction_factor")
    asha = Asha(grace_period=raw.get("grace_period", 1), max_t=raw["max_t"],
                reduction_factor=raw.get("reduction_factor", 2))
    for name in ("grace_period", "max_t", "reduction_factor"):
        value = getattr(asha, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VidfuseError(f"{path}: asha.{name}={value!r} must be a positive integer")
    if asha.reduction_factor < 2 or asha.grace_period > asha.max_t:
        raise VidfuseError(f"{path}: asha needs reduction_factor >= 2 and grace_period <= max_t, got {raw}")
    return asha


def _parse_distribution(path: Path, config: config_lib.Config, key: str, spec: Any) -> tuple[str, list[Any]]:
    """Check one `key: {kind: args}` entry; every value it can produce must be valid for `key`."""
    where = f"{path}: search {key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise VidfuseError(f"{where}: expected one distribution like {{choice: [a, b]}}, got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in SAMPLERS:
        raise VidfuseError(f"{where}: unknown distribution {kind!r}; valid: {', '.join(SAMPLERS)}")
    if key not in config_lib.keys():
        section = key.partition(".")[0]
        valid = [k for k in config_lib.keys() if k.startswith(f"{section}.")] or config_lib.keys()
        raise VidfuseError(f"{where}: unknown config key; valid keys: {', '.join(valid)}")
    if not isinstance(args, list) or not args:
        raise VidfuseError(f"{where}: {kind} needs a non-empty list, got {args!r}")
    if kind in RANGES:
        _check_range(where, config, key, kind, args)
    small_int_range = kind == "randint" and args[1] - args[0] <= MAX_CHECKED_INTS
    if kind == "randint" and not small_int_range and key.startswith("model."):
        raise VidfuseError(f"{where}: randint over {int(args[1] - args[0]) + 1} values of a model key (at most "
                           f"{MAX_CHECKED_INTS + 1}, each checked); use choice over the values you mean")
    for value in range(int(args[0]), int(args[1]) + 1) if small_int_range else args:  # else choices, or the ends
        trial = copy.deepcopy(config)
        try:
            config_lib.set_value(trial, key, value)
            config_lib.validate(trial)
            _check_model(trial)
        except VidfuseError as exc:
            raise VidfuseError(f"{where}: {exc}") from None
    return kind, args


def _check_model(config: config_lib.Config) -> None:
    """Build the trial's model on the meta device (no memory, no compute), so that a depth, head or block the
    model builder rejects fails when the space is read. The class count comes from the data later: any will do."""
    import torch

    from vidfuse.models import model_from_config

    model = copy.copy(config.model)
    model.num_classes = model.num_classes or 1
    with torch.device("meta"):
        model_from_config(model, config.data)


def _check_range(where: str, config: config_lib.Config, key: str, kind: str, args: list[Any]) -> None:
    """`[low, high]` of the right number type: floats for (log)uniform, integers for randint."""
    section, _, name = key.partition(".")
    number = int if kind == "randint" else float
    current = getattr(getattr(config, section), name)
    if type(current) is not number:
        raise VidfuseError(f"{where}: {kind} needs a {number.__name__} key, but {key} is {type(current).__name__}")
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise VidfuseError(f"{where}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if kind == "randint":
        if not (float(low).is_integer() and float(high).is_integer()) or low > high:
            raise VidfuseError(f"{where}: randint needs integers low <= high, got {args!r}")
    elif not low < high:
        raise VidfuseError(f"{where}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise VidfuseError(f"{where}: loguniform needs low > 0, got {args!r}")
