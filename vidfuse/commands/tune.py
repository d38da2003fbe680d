"""`launch.py tune`: a Ray Tune search over a space in `tune/*.yaml`; each trial is one Ray Train run.

Writes the experiment folder STORAGE/NAME with one run folder per trial (`trials/<trial_id>/`), the trial table
(`trials.md`, `trials.csv`, the same columns as `report` plus the trial's status) and `best.yaml`, the winning
trial's config: `launch.py train --config STORAGE/NAME/best.yaml --data ... --split ... --name ...` trains it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidfuse import config as config_lib
from vidfuse.engine.ray_runtime import check_storage_in_job
from vidfuse.errors import VidfuseError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True, help="search space YAML (e.g. tune/ucf101_fusion.yaml)")
    parser.add_argument("--data", required=True, help="prepared data set (DATA.parquet from `launch.py prepare`)")
    parser.add_argument("--samples", type=int, default=1,
                        help="draws of the space; each `grid` entry multiplies them (default 1)")
    parser.add_argument("--split", type=int, default=None,
                        help="official split: 1, 2 or 3 (default: the config's, 1 unless a preset says otherwise)")
    parser.add_argument("--config", help="preset YAML the trials start from, before the space's own config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every trial (not a searched one), repeatable")
    parser.add_argument("--name", help="experiment name: the folder STORAGE/NAME (default: the space file's name)")
    parser.add_argument("--storage", default="runs",
                        help="where the experiment folder goes: a local folder (default runs/) or a shared NFS path")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search STORAGE/NAME")


def _base_config(args: argparse.Namespace) -> config_lib.Config:
    """Defaults, then `--config`, then the data set and split. Paths are made absolute: trials run elsewhere."""
    data = Path(args.data)
    if not data.exists():
        raise VidfuseError(f"data set not found: {data}")
    base = config_lib.load(args.config)
    config_lib.set_value(base, "data.path", str(data.resolve()))
    if args.split is not None:
        config_lib.set_value(base, "data.split", args.split)
    config_lib.set_value(base, "run.storage", args.storage)
    config_lib.validate(base)  # as `train` does: a URI is refused before it would be made a local path below
    check_storage_in_job(args.storage)
    config_lib.set_value(base, "run.storage", str(Path(args.storage).resolve()))
    return base


def run(args: argparse.Namespace) -> int:
    from vidfuse.engine.driver import check_data, resolve_pretrained
    from vidfuse.tuning import results, search
    from vidfuse.tuning.space import load_space

    space = load_space(args.space, base=_base_config(args), overrides=args.overrides)
    if args.split is not None and "data.split" in space.search:
        raise VidfuseError(f"--split {args.split} fixes the split that {args.space} searches (data.split): keep one")
    for searched, trial in space.data_check_configs():  # as `train` does, for every searched split and batch
        try:
            check_data(trial)
        except VidfuseError as exc:
            raise VidfuseError(f"trials with {searched}: {exc}" if searched else str(exc)) from None
    resolve_pretrained(space.base)
    name = Path(args.space).stem if args.name is None else args.name
    config_lib.check_folder_name(name, "--name")
    experiment = Path(space.base.run.storage) / name

    outcomes = search.run_search(space, experiment, samples=args.samples, resume=args.resume)
    if not search.finished(outcomes):
        print(f"vidfuse: search interrupted; continue it with the same command and --resume ({experiment})",
              file=sys.stderr)
        return 130
    outputs = results.write_trial_tables(outcomes, experiment, max_t=space.asha.max_t)
    print(results.format_rows(outputs.rows), end="")  # first: it tells why trials failed, when none finished
    print(f"trials: {outputs.table_md}, {outputs.table_csv}")
    best_yaml = results.write_best_config(outputs, storage=space.base.run.storage)
    print(f"best config: {best_yaml}  (train it: python launch.py train --config {best_yaml})")
    return 0
