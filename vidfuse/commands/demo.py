"""`launch.py demo`: the embedded default, the whole workflow on a synthetic action set with a local Ray.

    synthetic motion classes (frames + UCF101-format split files)  -> `prepare --dataset ucf101`
    -> `train` (a small 3D ResNet with an HBP fusion head, 2 CPU workers) -> `test` -> `report`

Each step is the real subcommand, run with the arguments printed before it, so the demo doubles as a worked
example. Everything goes under `--out` (default `demo_output/`), which the demo owns: a later demo replaces it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

from vidfuse.errors import VidfuseError

MARKER = ".vidfuse-demo"  # marks a folder the demo made, so it never deletes anything else

# The demo's training run, sized for ~5 minutes on 2 CPU cores: a resnet-10 with a fusion head (factorized
# bilinear pooling of layer3 and layer4), trained from scratch with AdamW. The synthetic classes differ only by
# motion, so a clip spans all 32 frames (8 x stride 4), crops keep the whole frame (a corner crop can lose the
# moving bar) and flips are off (they would swap MoveLeft and MoveRight).
TRAIN_SETTINGS = {
    "model.arch": "resnet", "model.depth": 10, "model.shortcut": "A", "model.fusion": "factorized",
    "model.fusion_layers": "[layer3, layer4]", "model.fusion_dim": 128, "model.dropout": 0.0,
    "data.sample_duration": 8, "data.sample_stride": 4, "data.sample_size": 32, "data.n_val_clips": 1,
    "data.norm": "imagenet", "data.min_crop_scale": 1.0, "data.hflip": False,
    "optim.optimizer": "adamw", "optim.lr": 0.002, "optim.weight_decay": 1e-4, "optim.scheduler": "cosine",
    "optim.warmup_epochs": 1, "run.epochs": 30, "run.batch_size": 16, "run.workers": 2, "run.checkpoint_every": 5,
    "run.deterministic": True,
}
CLASSES = 6  # the synthetic set's moves, growing and shrinking; spinning (classes 7, 8) needs longer training
VIDEOS_PER_CLASS = 96


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--classes", type=int, default=CLASSES, help="synthetic motion classes (at most 8)")
    parser.add_argument("--videos-per-class", type=int, default=VIDEOS_PER_CLASS, help="synthetic videos per class")
    parser.add_argument("--epochs", type=int, default=TRAIN_SETTINGS["run.epochs"], help="training epochs")


def _fresh_output(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists():
            raise VidfuseError(f"{out} exists and was not made by the demo: pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by `launch.py demo`; the next demo replaces this folder\n")


def _step(title: str, argv: list[str]) -> None:
    from vidfuse.cli import main

    print(f"\n=== {title}: python launch.py {shlex.join(argv)}", flush=True)
    if main(argv) != 0:
        raise VidfuseError(f"demo step failed: {title}")


def run(args: argparse.Namespace) -> int:
    from vidfuse import config as config_lib
    from vidfuse.data.synthetic import check_synthetic_sizes, make_synthetic

    settings = {**TRAIN_SETTINGS, "run.epochs": args.epochs}
    # Every argument is checked before the previous demo's folder is replaced and before minutes of rendering
    check_synthetic_sizes(num_classes=args.classes, videos_per_class=args.videos_per_class)
    config_lib.load(overrides=[f"{key}={value}" for key, value in settings.items()])
    out = Path(args.out).resolve()
    _fresh_output(out)
    print(f"=== synthetic data: {args.classes} classes x {args.videos_per_class} videos under {out / 'synthetic'}",
          flush=True)
    synthetic = make_synthetic(out / "synthetic", num_classes=args.classes, videos_per_class=args.videos_per_class)
    data = out / "synthetic.parquet"
    _step("prepare", ["prepare", "--dataset", "ucf101", "--splits", str(synthetic.splits_dir),
                      "--frames", str(synthetic.frames_root), "--out", str(data), "--short-side", "32"])
    train_argv = ["train", "--data", str(data), "--split", "1", "--name", "demo", "--storage", str(out / "runs")]
    for key, value in settings.items():
        train_argv += ["--set", f"{key}={value}"]
    _step("train", train_argv)
    run_dir = out / "runs" / "demo"
    _step("test", ["test", "--run", str(run_dir)])
    _step("report", ["report", str(run_dir), "--out", str(out / "report")])
    print(f"\nEverything the demo wrote is under {out}:\n"
          f"  data set      {data}\n  run folder    {run_dir}  (config.yaml, metrics.jsonl, best.pt, last.pt)\n"
          f"  test results  {run_dir / 'test'}\n  report        {out / 'report'}")
    return 0
