"""What a run folder holds, in one place: `RUN_DIR = <storage>/<name>`.

    config.yaml      the resolved Config the run trained with
    meta.json        labels, data set path, parameters, GFLOPs per clip (written when training starts)
    metrics.jsonl    one JSON object per finished epoch (see METRIC_KEYS)
    best.pt last.pt  vidfuse checkpoints (see engine/checkpoint.py)
    test/            summary.json, predictions.jsonl, per_class.csv, confusion.png (written by `test`)
    diverged.txt     why training stopped when the loss stopped being finite (train_loop.Diverged)
    failed.txt       vidfuse's own error that stopped a worker (a damaged data set): a retry would meet it again
Ray Train keeps its own `checkpoint_*` folders beside these.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidfuse import config as config_lib
from vidfuse.errors import VidfuseError
from vidfuse.files import check_numbers, read_json, read_json_lines, read_text, write_text

CONFIG = "config.yaml"
META = "meta.json"
METRICS = "metrics.jsonl"
DIVERGED = "diverged.txt"  # why a run stopped training: its loss stopped being finite (train_loop.Diverged)
FAILED = "failed.txt"  # why a run's worker stopped on vidfuse's own error, which a retry would meet again
TEST_DIR = "test"

# Keys of every metrics.jsonl record.
METRIC_KEYS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_clip_acc", "val_video_acc",
    "lr", "clips_per_s", "epoch_seconds",
)


def run_dir_of(config: config_lib.Config) -> Path:
    """The run folder of a config: `<storage>/<name>` with an absolute storage path."""
    return Path(config.run.storage).expanduser().resolve() / config.run.name


def require_run_dir(path: str | os.PathLike) -> Path:
    """`path` as a run folder, or one clear error when it holds no `config.yaml`."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise VidfuseError(f"{path} is not a vidfuse run folder (no {CONFIG})")
    return path


def read_config(run_dir: str | os.PathLike) -> config_lib.Config:
    return config_lib.load(require_run_dir(run_dir) / CONFIG)


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / META
    meta = read_json(path) if path.is_file() else {}
    check_numbers(path, meta, ("parameters", "gflops"), writer="training")
    return meta


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every epoch record of a run, in order; the last record of an epoch wins (a resumed run rewrites it)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = read_json_lines(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("epoch"), int):
            raise VidfuseError(f"{path}: a record without an integer `epoch`, not what training writes")
        check_numbers(path, record, METRIC_KEYS, writer="training", where=f"record {number}: ")
        if "val_video_acc" in record and "val_loss" not in record:  # the two rank the epochs (val_score)
            raise VidfuseError(f"{path}: record {number}: `val_video_acc` without `val_loss`, not what training writes")
    by_epoch = {record["epoch"]: record for record in records}
    return [by_epoch[e] for e in sorted(by_epoch)]


VAL_SCORE = "val_score"  # reported to Ray with each epoch: its kept checkpoints, ASHA and Tune rank by it


def val_score(record: dict[str, Any]) -> float:
    """How good an epoch is on val, higher is better: its val video accuracy, equal accuracies ordered by lower
    val loss. `best.pt`, Ray's kept checkpoints, the report's best epoch and Tune (ASHA and the best trial) all
    rank epochs by it.

    The loss moves the score by less than 1e-6 (one video in a million), so it only orders equal accuracies:
    small validation sets tie often (several epochs at 100 %), and ASHA can only stop a trial that is strictly
    behind. A non-finite loss (a diverged run) ranks last among its ties."""
    loss = record["val_loss"]
    squashed = loss / (1.0 + loss) if math.isfinite(loss) and loss >= 0 else 1.0
    return record["val_video_acc"] - 1e-6 * squashed


def best_record(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch record with the highest `val_score` (the epoch `best.pt` keeps); None without any val record."""
    scored = [r for r in records if r.get("val_video_acc") is not None]
    return max(scored, key=val_score) if scored else None


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Add an epoch record to metrics.jsonl. The file is written anew (atomically) rather than appended to: a crash
    in the middle of an append would leave half a line, and every later read of the run would fail on it."""
    path = Path(run_dir) / METRICS
    written = read_text(path) if path.is_file() else ""
    write_text(path, written + json.dumps(record) + "\n")


def mark_stopped(run_dir: str | os.PathLike, marker: str, reason: str) -> None:
    """Record in the run folder why the run stopped training: `marker` is DIVERGED or FAILED."""
    write_text(Path(run_dir) / marker, reason + "\n")


def stop_reason(run_dir: str | os.PathLike, marker: str) -> str | None:
    """Why the run at `run_dir` stopped (`mark_stopped` with `marker`), or None if it did not."""
    path = Path(run_dir) / marker
    return read_text(path).strip() if path.exists() else None


def clear_stop_reasons(run_dir: str | os.PathLike, *, markers: Sequence[str] = (DIVERGED, FAILED)) -> None:
    """Forget why an earlier attempt stopped (`markers`): a resumed run trains again from its last checkpoint."""
    for marker in markers:
        (Path(run_dir) / marker).unlink(missing_ok=True)
