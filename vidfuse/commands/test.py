"""`launch.py test --run RUN_DIR [--checkpoint best|last|PATH] [--clips all|N] [--workers N]`.

Scores the official test list of the run's split with Ray Data batch inference (every window of every video,
or N evenly spaced ones), averages the softmax per video and writes RUN_DIR/test/: summary.json,
predictions.jsonl, per_class.csv and confusion.png. Joins the cluster named by RAY_ADDRESS, or starts a local Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidfuse import config as config_lib
from vidfuse.data.prepare import check_same_classes
from vidfuse.engine.evaluate import load_run_model, score_test_set
from vidfuse.engine.ray_runtime import ensure_ray
from vidfuse.engine.rundir import CONFIG
from vidfuse.errors import VidfuseError
from vidfuse.report.testdir import write_test_results


def clips_per_video(text: str) -> int | None:
    """`all` -> None (every window), or a positive number of evenly spaced windows."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--clips must be 'all' or a positive integer, got {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                        help="weights to score (default: best, the epoch with the best val video accuracy; "
                             "ties: lower val loss)")
    parser.add_argument("--clips", type=clips_per_video, default=None, metavar="all|N",
                        help="windows per video: all non-overlapping ones (default) or N evenly spaced")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="most scorer actors (default: one per GPU, or the CPUs left after decoding)")


def check_run_data_path(run_dir: Path, config: config_lib.Config) -> None:
    """Raise unless the run's `data.path` (the data set whose test list `test` scores) is set and exists: one line
    naming the run's config.yaml, where a moved data set's new place goes."""
    if not config.data.path:
        raise VidfuseError(f"{run_dir / CONFIG}: data.path is empty: it names the data set whose test videos are "
                           "scored")
    if not Path(config.data.path).exists():
        raise VidfuseError(f"{run_dir / CONFIG}: data.path {config.data.path} does not exist (if the data set moved, "
                           "set its new path there)")


def run(args: argparse.Namespace) -> int:
    model, config, labels, checkpoint = load_run_model(args.run, args.checkpoint)
    check_run_data_path(Path(args.run), config)
    check_same_classes(config.data.path, labels)
    ensure_ray(config.run.workers * config.run.cpus_per_worker)  # room for scorers beside the decoders
    scores = score_test_set(model, config, clips=args.clips, workers=args.workers)
    details = {"checkpoint": str(checkpoint.resolve()), "data": config.data.path, "split": config.data.split,
               "subset": "test", "clips_per_video": "all" if args.clips is None else args.clips}
    paths = write_test_results(args.run, scores, labels, details)
    summary = scores.summary()
    print(f"{summary['videos']} test videos ({summary['clips']} clips) of split {config.data.split}, "
          f"{checkpoint.name}: top-1 error {100 * summary['top1_error']:.2f} %, "
          f"top-5 error {100 * summary['top5_error']:.2f} %, clip accuracy {100 * summary['clip_acc']:.2f} %, "
          f"mean class accuracy {100 * summary['mean_class_acc']:.2f} %")
    if scores.unscored:
        print(f"warning: {len(scores.unscored)} test videos gave no clip and are not scored: {scores.unscored[:5]}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
