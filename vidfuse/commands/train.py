"""`launch.py train`: one training run on Ray Train, locally or on a cluster (under `ray job submit`).

Settings come from the defaults, then `--config PRESET.yaml`, then `--set section.key=value`, then the
shorthand flags (`--data`, `--split`, `--workers`, ...) and the old 3D-ResNets-PyTorch `main.py` flags
(`--model resnext --model_depth 101 ...`), which are aliases of config keys.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidfuse import config as config_lib
from vidfuse.engine import rundir
from vidfuse.errors import VidfuseError

# Shorthand flag -> config key.
SHORTHANDS = {
    "data": "data.path",
    "split": "data.split",
    "name": "run.name",
    "storage": "run.storage",
    "workers": "run.workers",
    "gpus_per_worker": "run.gpus_per_worker",
    "epochs": "run.epochs",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="preset YAML (e.g. configs/r3d50_ucf101.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set optim.lr=0.01 (repeatable)")
    parser.add_argument("--data", help="prepared data set (DATA.parquet from `launch.py prepare`)")
    parser.add_argument("--split", type=int, help="official split: 1, 2 or 3")
    parser.add_argument("--name", help="run name: the run folder is STORAGE/NAME")
    parser.add_argument("--storage", help="where runs live: a local folder (default runs/) or a shared NFS path")
    parser.add_argument("--workers", type=int, help="Ray Train workers (one per GPU)")
    parser.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float, help="GPUs per worker (0: CPU)")
    parser.add_argument("--epochs", type=int, help="training epochs")
    parser.add_argument("--resume", action="store_true", help="continue the run STORAGE/NAME from its last checkpoint")
    legacy = parser.add_argument_group("3D-ResNets-PyTorch main.py flags (aliases of config keys)")
    for flag, key in config_lib.LEGACY_FLAGS.items():
        legacy.add_argument(f"--{flag}", dest=f"legacy_{flag}", metavar="V", help=f"= --set {key}=V")
    legacy.add_argument("--n_classes", metavar="N",
                        help="accepted for compatibility: the pretrained class count is read from the checkpoint")
    legacy.add_argument("--resume_path", metavar="RUN_OR_CHECKPOINT",
                        help="continue the run that holds this folder or checkpoint (= --storage/--name + --resume)")


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides)
    for flag, key in SHORTHANDS.items():
        value = getattr(args, flag)
        if value is not None:
            items.append(f"{key}={value}")
    for flag, key in config_lib.LEGACY_FLAGS.items():
        value = getattr(args, f"legacy_{flag}")
        if value is not None:
            items.append(f"{key}={value}")
    return items


def run(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    resume = args.resume
    if args.resume_path:
        folder = Path(args.resume_path)
        if not folder.exists():
            raise VidfuseError(f"--resume_path {folder}: not found")
        folder = folder.parent if folder.suffix == ".pt" else folder
        overrides += [f"run.storage={folder.resolve().parent}", f"run.name={folder.name}"]
        resume = True
    config = config_lib.load(args.config, overrides)
    run_dir = rundir.run_dir_of(config)
    if resume and (run_dir / rundir.CONFIG).exists():
        config = config_lib.resume_config(rundir.read_config(run_dir), overrides, source=run_dir / rundir.CONFIG)
    from vidfuse.engine.driver import train  # Ray and torch load only once the config is valid

    run_dir = train(config, resume=resume)
    records = rundir.read_metrics(run_dir)
    best = rundir.best_record(records)
    if best is not None:
        print(f"best val video accuracy {best['val_video_acc']:.4f} at epoch {best['epoch']} of {len(records)}")
    print(f"run folder: {run_dir}")
    print(f"  metrics: {run_dir / rundir.METRICS}")
    print(f"  checkpoints: {run_dir / 'best.pt'}, {run_dir / 'last.pt'}")
    return 0
