"""The results table over runs, and markdown / CSV writers for it (or any other list of row dicts).

One row per run, sorted by test top-1 error (runs not tested yet come last, with empty test columns). Runs
whose configs are equal except for the split also get one row with mean ± std over their splits, so a gain is
read against the spread between splits. A `config` column lists the settings that differ between the runs
shown (e.g. the tuned keys of a Tune experiment's trials).
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidfuse import config as config_lib
from vidfuse.engine.rundir import best_record
from vidfuse.files import write_text
from vidfuse.models.fusion import layers_read
from vidfuse.report.runs import RunRecord, find_run_dirs, read_run
from vidfuse.report.stats import mean_std


@dataclass(frozen=True)
class MeanStd:
    """A value averaged over splits."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    format: Callable[[Any], str] = str
    optional: bool = False  # left out of a table where every row is empty


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


def significant(value: float) -> str:
    return f"{value:.3g}"


RESULT_COLUMNS = (
    Column("run", "run"),
    Column("architecture", "architecture"),
    Column("head", "head"),
    Column("fusion_layers", "fusion layers"),
    Column("frames", "frames"),
    Column("split", "split"),
    Column("epochs", "epochs", fixed(0)),
    Column("best_epoch", "best epoch", fixed(0)),
    Column("val_video_acc", "val video acc %", percent),
    Column("test_top1_error", "test top-1 err %", percent),
    Column("test_top5_error", "test top-5 err %", percent),
    Column("params_m", "params (M)", fixed(2)),
    Column("gflops", "GFLOPs/clip", significant),
    Column("clips_per_s", "train clips/s", fixed(1)),
    Column("config", "config", optional=True),
    Column("notes", "notes", optional=True),
)
# Shown as columns already, or naming the run rather than what it trained: never listed under `config`.
_NOT_CONFIG = {
    "run.name", "run.storage", "model.arch", "model.depth", "model.fusion", "model.fusion_layers",
    "data.sample_duration", "data.split",
}
_AVERAGED = ("epochs", "best_epoch", "val_video_acc", "test_top1_error", "test_top5_error", "clips_per_s")


def _notes(run: RunRecord) -> str:
    """What makes a row's numbers not what they would normally mean: a run that stopped because its loss diverged or
    on vidfuse's own error (its epochs are all it has), validation on the test list, or test results of another
    checkpoint than best.pt or of fewer windows than all."""
    stops = {"diverged": run.diverged, "failed": run.failed}
    notes = [f"{how} in epoch {len(run.metrics) + 1}" for how, reason in stops.items() if reason is not None]
    if run.config.data.val_from_test:
        notes.append("val on the test list")
    if run.test:
        checkpoint = Path(run.test.get("checkpoint", run.path / "best.pt"))
        if checkpoint.parent.resolve() != run.path.resolve():
            notes.append(f"tested {checkpoint} (another run's)")
        elif checkpoint.name != "best.pt":
            notes.append(f"tested {checkpoint.name}")
        if run.test.get("clips_per_video", "all") != "all":
            notes.append(f"tested {run.test['clips_per_video']} clips/video")
    return "; ".join(notes)


def run_row(run: RunRecord) -> dict[str, Any]:
    """One run's table row: raw numbers (fractions, counts), None where the run has no value yet."""
    model, test, best = run.config.model, run.test or {}, best_record(run.metrics)
    speeds = [r["clips_per_s"] for r in run.metrics if r.get("clips_per_s")]
    parameters = run.meta.get("parameters")
    return {
        "run": run.name,
        "architecture": f"{model.arch}-{model.depth}",
        "head": model.fusion,
        "fusion_layers": "+".join(layers_read(model.fusion, model.fusion_layers)),  # gap: the deepest only
        "frames": run.config.data.sample_duration,
        "split": run.config.data.split,
        "epochs": len(run.metrics),
        "best_epoch": best["epoch"] if best else None,
        "val_video_acc": best["val_video_acc"] if best else None,
        "test_top1_error": test.get("top1_error"),
        "test_top5_error": test.get("top5_error"),
        "params_m": parameters / 1e6 if parameters is not None else None,
        "gflops": run.meta.get("gflops"),
        "clips_per_s": statistics.median(speeds) if speeds else None,
        "config": "",
        "notes": _notes(run),
        "path": str(run.path),
        "diverged": run.diverged is not None,
        "failed": run.failed,  # the one line of vidfuse's own error that ended the run, else None
    }


def _config_differences(flats: Sequence[dict[str, Any]]) -> list[str]:
    """Per run, `key=value` for every setting that is not the same in all runs."""
    varying = [k for k in flats[0] if k not in _NOT_CONFIG and len({repr(f.get(k)) for f in flats}) > 1]
    return [" ".join(f"{k}={f.get(k)}" for k in varying) for f in flats]


def _split_mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row over runs that differ only in split: mean ± std of each measured column (empty unless all have it)."""
    merged = dict(rows[0], run="mean ± std: " + ", ".join(r["run"] for r in rows),
                  split=",".join(str(r["split"]) for r in rows), path="",
                  notes="; ".join(dict.fromkeys(note for r in rows for note in r["notes"].split("; ") if note)))
    for key in _AVERAGED:
        values = [r[key] for r in rows]
        merged[key] = None if None in values else MeanStd(*mean_std(values), n=len(values))
    return merged


def _split_groups(runs: Sequence[RunRecord], flats: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of runs equal in everything but the split (and name), where that covers two or more splits."""
    groups: dict[str, list[int]] = {}
    for i, flat in enumerate(flats):
        key = repr(sorted((k, repr(v)) for k, v in flat.items() if k not in ("run.name", "run.storage", "data.split")))
        groups.setdefault(key, []).append(i)
    return [sorted(g, key=lambda i: runs[i].config.data.split) for g in groups.values()
            if len({runs[i].config.data.split for i in g}) > 1]


def _sort_key(row: dict[str, Any]) -> tuple:
    def number(value: Any) -> float | None:
        return value.mean if isinstance(value, MeanStd) else value

    error, val = number(row["test_top1_error"]), number(row["val_video_acc"])
    return (error is None, error or 0.0, -(val or 0.0), row["run"])


def results_table(run_dirs: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows (dicts keyed by `RESULT_COLUMNS` keys, plus `path`, `diverged`, `failed`) for run folders or folders of runs
    (Tune experiments), plus one mean ± std row per group of runs that differ only in split; sorted by test
    top-1 error. Values are raw: fractions, counts, `MeanStd` for the averaged rows, None where missing."""
    runs = [read_run(path) for path in find_run_dirs(list(run_dirs))]
    flats = [config_lib.flat(run.config) for run in runs]
    rows = [run_row(run) for run in runs]
    for row, config in zip(rows, _config_differences(flats)):
        row["config"] = config
    rows += [_split_mean_row([rows[i] for i in group]) for group in _split_groups(runs, flats)]
    return sorted(rows, key=_sort_key)


def format_cell(value: Any, column: Column) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, MeanStd):
        return f"{column.format(value.mean)} ± {column.format(value.std)}"
    return column.format(value)


def _shown(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[Column]:
    return [c for c in columns if not c.optional or any(row.get(c.key) not in (None, "") for row in rows)]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = RESULT_COLUMNS) -> str:
    """A GitHub markdown table of the rows (cells formatted per column, `|` escaped)."""
    columns = _shown(rows, columns)
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (format_cell(row.get(c.key), c).replace("|", "\\|") for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = RESULT_COLUMNS) -> str:
    """The same table as CSV (same headers and formatted cells as the markdown)."""
    columns = _shown(rows, columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.header for c in columns])
    writer.writerows([format_cell(row.get(c.key), c) for c in columns] for row in rows)
    return buffer.getvalue()


def write_tables(
    rows: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike,
    stem: str = "results",
    columns: Sequence[Column] = RESULT_COLUMNS,
    markdown_extra: str = "",
) -> tuple[Path, Path]:
    """Write `<stem>.csv` and `<stem>.md` (the table, then `markdown_extra`) atomically; returns both paths."""
    out_dir = Path(out_dir)
    csv_path = write_text(out_dir / f"{stem}.csv", csv_table(rows, columns))
    md_path = write_text(out_dir / f"{stem}.md", markdown_table(rows, columns) + markdown_extra)
    return csv_path, md_path
