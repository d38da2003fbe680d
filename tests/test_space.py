"""Search-space files: the shipped spaces, sampling within the declared ranges, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from vidfuse import config as config_lib
from vidfuse.errors import VidfuseError
from vidfuse.tuning.space import load_space

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


VALID = """
config:
  model: {depth: 10}
  run: {workers: 1}
search:
  optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
  optim.momentum: {uniform: [0.5, 0.99]}
  model.ft_begin_index: {randint: [2, 4]}
  model.fusion: {choice: [gap, hbp]}
  optim.weight_decay: {grid: [0.0, 0.001]}
asha: {grace_period: 2, max_t: 7, reduction_factor: 3}
max_concurrent_trials: 3
"""


def test_ucf101_fusion_space_covers_every_head_and_freeze_depth():
    space = load_space(REPO / "tune" / "ucf101_fusion.yaml")
    assert space.search["model.fusion"] == ("choice", list(config_lib.CHOICES["model.fusion"]))
    assert space.search["model.ft_begin_index"] == ("randint", [0, 5])
    assert space.search["optim.lr"][0] == "loguniform"
    assert space.search["optim.weight_decay"][0] == "loguniform"
    assert space.base.run.epochs == space.asha.max_t == 30
    ft = space.param_space()["model.ft_begin_index"]
    assert sorted(set(ft.sample(size=400, random_state=0))) == [0, 1, 2, 3, 4, 5]  # both ends included


def test_smoke_space_is_tiny():
    space = load_space(REPO / "tune" / "smoke.yaml")
    assert (space.base.model.depth, space.base.data.sample_duration, space.base.data.sample_size) == (10, 8, 32)
    assert space.base.run.workers == 1 and space.base.run.gpus_per_worker == 0
    assert (space.asha.grace_period, space.asha.max_t, space.asha.reduction_factor) == (1, 2, 2)
    assert space.search["model.fusion"] == ("grid", ["gap", "hbp", "temporal", "factorized"])


def test_space_parses_every_distribution_and_samples_inside_its_range(tmp_path):
    space = load_space(_write(tmp_path, VALID))
    assert space.base.model.depth == 10 and space.base.run.workers == 1
    assert space.base.run.epochs == 7
    assert space.max_concurrent_trials == 3
    params = space.param_space()
    assert params["optim.weight_decay"] == tune.grid_search([0.0, 0.001])
    lrs = params["optim.lr"].sample(size=500, random_state=1)
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-1
    assert sum(lr < 1e-2 for lr in lrs) > 250  # log-uniform: two of the three decades lie below 1e-2
    momenta = params["optim.momentum"].sample(size=200, random_state=1)
    assert 0.5 <= min(momenta) and max(momenta) <= 0.99
    assert set(params["model.ft_begin_index"].sample(size=200, random_state=1)) == {2, 3, 4}
    assert set(params["model.fusion"].sample(size=50, random_state=1)) == {"gap", "hbp"}


def test_trial_config_applies_the_sampled_values(tmp_path):
    space = load_space(_write(tmp_path, VALID))
    config = space.trial_config({"optim.lr": 0.003, "model.fusion": "hbp", "model.ft_begin_index": 3})
    assert (config.optim.lr, config.model.fusion, config.model.ft_begin_index) == (0.003, "hbp", 3)
    assert config.model.depth == 10 and config.run.epochs == 7
    assert space.base.optim.lr == config_lib.Config().optim.lr  # the base is left untouched


def test_base_config_and_overrides_come_before_the_file(tmp_path):
    base = config_lib.Config()
    base.data.sample_size = 48
    space = load_space(_write(tmp_path, VALID), base=base, overrides=["optim.nesterov=true", "model.depth=18"])
    assert space.base.data.sample_size == 48  # from the preset
    assert space.base.optim.nesterov is True
    assert space.base.model.depth == 18  # --set wins over the file's config


@pytest.mark.parametrize("search, message", [
    ("optim.lrr: {loguniform: [1.0e-4, 1.0e-1]}", "search optim.lrr: unknown config key; valid keys: optim.optimizer"),
    ("optim.lr: {lognormal: [1.0e-4, 1.0e-1]}", "unknown distribution 'lognormal'"),
    ("model.fusion: {choice: [gap, hpb]}", "model.fusion='hpb' is not one of"),
    ("model.ft_begin_index: {randint: [0, 6]}", "model.ft_begin_index=6 must be between 0 and 5"),
    ("model.ft_begin_index: {uniform: [0, 5]}", "uniform needs a float key, but model.ft_begin_index is int"),
    ("optim.lr: {loguniform: [0, 0.1]}", "loguniform needs low > 0"),
    ("optim.lr: {uniform: [0.1, 0.01]}", "uniform needs low < high"),
    ("optim.lr: {loguniform: [0.1]}", "loguniform needs [low, high] numbers"),
    ("optim.lr: {choice: []}", "choice needs a non-empty list"),
    ("optim.lr: 0.1", "expected one distribution like {choice: [a, b]}"),
    ("run.epochs: {choice: [1, 2]}", "run.epochs is set by the search itself"),
    ("model.depth: {choice: [10, 18]}", "model.depth is both searched and fixed"),
    ("model.arch: {choice: [resnet, resnext]}", "unknown depth 10 for resnext; valid: 101"),
    ("model.fusion_layers: {choice: [[layer4], [layer5]]}", "fusion_layers ['layer5'] must be a non-empty subset"),
    ("1: {choice: [1, 2]}", "search key 1 is not a config key like optim.lr"),
    ("model.fusion_dim: {randint: [16, 4096]}", "randint over 4081 values of a model key (at most 65, each checked)"),
    ("run.seed: {randint: [0, 1.0e+10]}", "run.seed=10000000000 must be between 0 and 4294967295"),
])
def test_bad_search_entries_name_the_file_and_key(tmp_path, search, message):
    path = _write(tmp_path, f"config: {{model: {{depth: 10}}}}\nsearch:\n  {search}\nasha: {{max_t: 2}}\n")
    with pytest.raises(VidfuseError) as error:
        load_space(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("search: {optim.lr: {choice: [0.1]}}\n", "'asha' must give at least max_t"),
    ("search: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3, grace_period: 4}\n", "grace_period <= max_t"),
    ("search: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3, patience: 1}\n", "unknown asha key 'patience'"),
    ("search: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3}\nmax_concurrent_trials: 0\n",
     "max_concurrent_trials=0 must be a positive integer"),
    ("search: {}\nasha: {max_t: 3}\n", "'search' must map config keys to distributions"),
    ("search: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3}\nsamples: 4\n", "unknown top-level key 'samples'"),
    ("config: {run: {epochs: 5}}\nsearch: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3}\n",
     "run.epochs is set by the search itself"),
    ("config: {optim: {lr: -1}}\nsearch: {model.fusion: {choice: [gap]}}\nasha: {max_t: 3}\n",
     "config: optim.lr=-1.0 must be above 0"),
    ("config: {model: {depth: 11}}\nsearch: {optim.lr: {choice: [0.1]}}\nasha: {max_t: 3}\n",
     "config: unknown depth 11 for resnet"),
    ("search: {model.depth: {randint: [10, 18]}}\nasha: {max_t: 3}\n", "search model.depth: unknown depth 11"),
    ("search: [optim.lr]\n", "'search' must map config keys"),
    ("- a\n- b\n", "a search space must be a mapping"),
    ("search: {optim.lr: {choice: [0.1]\n", "not valid YAML"),
])
def test_bad_space_files_are_one_clear_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(VidfuseError, match="^" + str(path).replace(".", r"\.")) as error:
        load_space(path)
    assert message in str(error.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(VidfuseError, match="search space file not found: .*nope.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_largest_trial_asks_for_the_most_workers_cpus_and_gpus(tmp_path):
    path = _write(tmp_path, "config: {run: {workers: 1}}\nsearch:\n  run.gpus_per_worker: {choice: [0, 1.0, 0.5]}\n"
                            "  run.cpus_per_worker: {uniform: [1.0, 3.0]}\n  optim.lr: {choice: [0.1, 0.01]}\n"
                            "asha: {max_t: 2}\n")
    largest = load_space(path).largest_trial()
    assert (largest.run.workers, largest.run.gpus_per_worker, largest.run.cpus_per_worker) == (1, 1.0, 3.0)
    assert largest.optim.lr == config_lib.Config().optim.lr  # not a resource: the base value
