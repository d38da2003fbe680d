"""Each run against a baseline run on the same test videos: McNemar exact test and bootstrap interval."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidfuse.engine import rundir
from vidfuse.errors import VidfuseError
from vidfuse.report import testdir
from vidfuse.report.stats import compare_paired
from vidfuse.report.tables import Column


def _interval(value: tuple[float, float]) -> str:
    low, high = value
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]"


COMPARISON_COLUMNS = (
    Column("run", "run"),
    Column("baseline", "baseline"),
    Column("videos", "videos"),
    Column("b", "b (baseline right only)"),
    Column("c", "c (run right only)"),
    Column("p_value", "McNemar p", lambda p: f"{p:.4g}"),
    Column("difference", "top-1 acc diff (points)", lambda d: f"{100 * d:+.2f}"),
    Column("interval", "95 % bootstrap interval", _interval),
    Column("verdict", "verdict"),
)


def compare_to_baseline(baseline_dir: str | os.PathLike, run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """One row per run (the baseline itself left out): paired McNemar exact test on the videos both scored.

    The two runs must have scored the same test videos; otherwise (another split) the row says so instead of
    testing anything. A run not tested yet gets a row saying that too.
    """
    baseline_dir = rundir.require_run_dir(baseline_dir)  # one that is no run folder is named as such
    baseline = testdir.read_top1_correct(baseline_dir)
    if baseline is None:
        raise VidfuseError(
            f"baseline {baseline_dir} has no test results: run `launch.py test --run {baseline_dir}` first")
    rows = []
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() == baseline_dir.resolve():
            continue
        row: dict[str, Any] = {"run": run_dir.name, "baseline": baseline_dir.name}
        run = testdir.read_top1_correct(run_dir)
        if run is None:
            row["verdict"] = "not tested yet"
        elif set(run) != set(baseline):
            row["verdict"] = "not comparable: scored other test videos (another split?)"
        else:
            videos = sorted(baseline)
            result = compare_paired([baseline[v] for v in videos], [run[v] for v in videos])
            row.update(videos=result.n, b=result.b, c=result.c, p_value=result.p_value,
                       difference=result.difference, interval=result.interval, verdict=result.verdict)
        rows.append(row)
    return rows


def comparison_sentences(rows: Sequence[dict[str, Any]]) -> str:
    """One plain markdown bullet per compared run, e.g. "...: not distinguishable from the baseline"."""
    lines = []
    for row in rows:
        if "p_value" not in row:
            lines.append(f"- {row['run']}: {row['verdict']}.")
            continue
        lines.append(
            f"- {row['run']} vs {row['baseline']}: {100 * row['difference']:+.2f} points of top-1 accuracy on "
            f"{row['videos']} videos (95 % interval {_interval(row['interval'])}; McNemar b={row['b']}, "
            f"c={row['c']}, p={row['p_value']:.3g}): {row['verdict']}.")
    return "\n".join(lines) + "\n"
