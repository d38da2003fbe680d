"""`launch.py report RUN_DIR... [--baseline RUN_DIR] [--out DIR]`: results table, curves, significance tests.

Prints the table as markdown and writes it as `OUT/results.csv` and `OUT/results.md`; draws `curves.png` in
each run folder that has trained epochs; with `--baseline`, adds the paired McNemar exact test of every run
against it on the same test videos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidfuse.engine import rundir
from vidfuse.report import (
    COMPARISON_COLUMNS,
    compare_to_baseline,
    comparison_sentences,
    markdown_table,
    results_table,
    testdir,
    write_tables,
)
from vidfuse.report.plots import curves_figure, save_figure
from vidfuse.report.runs import find_run_dirs

CURVES = "curves.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folders, or folders holding run folders (a Tune experiment: one row per trial)")
    parser.add_argument("--baseline", metavar="RUN_DIR",
                        help="tested run to compare every other run against (McNemar exact test, bootstrap interval)")
    parser.add_argument("--out", default="report", metavar="DIR",
                        help="folder for results.csv and results.md (default: ./report)")


def _draw_curves(run_dirs: list[Path]) -> list[Path]:
    drawn = []
    for run_dir in run_dirs:
        records = rundir.read_metrics(run_dir)
        if records:
            drawn.append(save_figure(curves_figure(records, title=run_dir.name), run_dir / CURVES))
    return drawn


def run(args: argparse.Namespace) -> int:
    run_dirs = find_run_dirs(args.runs)
    rows = results_table(run_dirs)
    comparison = ""
    if args.baseline:
        comparisons = compare_to_baseline(args.baseline, run_dirs)
        against = f"\nAgainst the baseline {Path(args.baseline).name}"
        comparison = (f"{against} (paired, same test videos):\n\n" + markdown_table(comparisons, COMPARISON_COLUMNS)
                      + "\n" + comparison_sentences(comparisons) if comparisons
                      else f"{against}: the runs given hold no other run to compare with it.\n")
    csv_path, md_path = write_tables(rows, args.out, markdown_extra=comparison)
    print(markdown_table(rows) + comparison)
    print(f"table: {md_path}  {csv_path}")
    for path in _draw_curves(run_dirs):
        print(f"curves: {path}")
    for run_dir in run_dirs:
        confusion = testdir.test_dir(run_dir) / testdir.CONFUSION
        if confusion.is_file():
            print(f"confusion: {confusion}")
    return 0
