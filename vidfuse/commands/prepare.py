"""`launch.py prepare`: official split files + videos or frame folders -> a Parquet data set (see
`vidfuse.data.prepare` for the layout). Prints a progress line, then the counts, skipped videos and unlisted files."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidfuse.data.prepare import DATASETS, DEFAULT_VAL_FRACTION, prepare_dataset
from vidfuse.data.splits import DEFAULT_TEST_FRACTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="format of the split files")
    parser.add_argument("--splits", type=Path,
                        help="split folder (ucf101, hmdb51), Kinetics CSV file or folder; not for folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", type=Path, help="root of <Class>/<video>.avi|mp4|mkv|webm")
    source.add_argument("--frames", type=Path, help="root of <Class>/<video>/image_00001.jpg (3D-ResNets layout)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/ucf101.parquet")
    parser.add_argument("--short-side", type=int, default=128, help="stored frames' short side (default 128)")
    parser.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    parser.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames (default 1)")
    parser.add_argument("--strict", action="store_true", help="stop at the first skipped video instead")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of each training list held out as val: of the groups for ucf101, of each "
                             f"class otherwise (default {DEFAULT_VAL_FRACTION})")
    parser.add_argument("--test-fraction", type=float,
                        help=f"folder data set only: share of each class used as test "
                             f"(default {DEFAULT_TEST_FRACTION})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the val carve-out and row order (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a data set already at --out")


def run(args: argparse.Namespace) -> int:
    summary = prepare_dataset(
        dataset=args.dataset, splits=args.splits, out=args.out, frames=args.frames, videos=args.videos,
        short_side=args.short_side, workers=args.workers, min_frames=args.min_frames, strict=args.strict,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, overwrite=args.overwrite,
    )
    print(summary.report())
    return 0
