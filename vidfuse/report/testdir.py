"""What `RUN_DIR/test/` holds, written by `test` and read by `report`.

    summary.json       video top-1 / top-5 accuracy and error, clip accuracy, mean class accuracy, counts,
                       checkpoint, split
    predictions.jsonl  one line per video: true label, top-5 with probabilities, the windows scored
    per_class.csv      per class: videos, correct, accuracy, the class it is most often taken for
    confusion.png      row-normalised confusion matrix with the most confused pairs beside it
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from vidfuse.engine import metrics, rundir
from vidfuse.errors import VidfuseError
from vidfuse.files import check_numbers, read_json, read_json_lines, write_json, write_text
from vidfuse.report.plots import confusion_figure, save_figure

if TYPE_CHECKING:  # evaluate pulls in Ray, the data pipeline and the models; `report` only reads files
    from vidfuse.engine.evaluate import VideoScores

SUMMARY = "summary.json"
PREDICTIONS = "predictions.jsonl"
SUMMARY_NUMBERS = ("videos", "clips", "top1_acc", "top1_error", "top5_acc", "top5_error", "clip_acc", "mean_class_acc")
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.png"

TOP_K = 5
CONFUSED_PAIRS = 25  # listed beside the matrix


def test_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / rundir.TEST_DIR


def _prediction_lines(scores: VideoScores, labels: Sequence[str]) -> str:
    k = min(TOP_K, scores.probs.shape[1])
    top_probs, top_labels = scores.probs.topk(k, dim=1)  # (V, k)
    lines = []
    for i, video_id in enumerate(scores.video_ids):
        label = int(scores.labels[i])
        top = [{"label": int(c), "name": labels[int(c)], "prob": round(float(p), 6)}
               for p, c in zip(top_probs[i], top_labels[i])]
        lines.append(json.dumps({
            "video_id": video_id, "label": label, "label_name": labels[label], "correct": top[0]["label"] == label,
            "top5": top, "windows": scores.windows[i],
        }))
    return "\n".join(lines) + "\n"


def _per_class_csv(confusion: Any, labels: Sequence[str]) -> str:
    accuracy = metrics.per_class_accuracy(confusion)
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "name", "videos", "correct", "accuracy", "most_confused_with", "times"])
    for c, name in enumerate(labels):
        videos = int(confusion[c].sum())
        worst = int(off_diagonal[c].argmax())
        times = int(off_diagonal[c, worst])
        writer.writerow([
            c, name, videos, int(confusion[c, c]), "" if videos == 0 else f"{float(accuracy[c]):.4f}",
            labels[worst] if times else "", times or "",
        ])
    return buffer.getvalue()


def write_test_results(
    run_dir: str | os.PathLike, scores: VideoScores, labels: Sequence[str], details: dict[str, Any]
) -> dict[str, Path]:
    """Write the four files (each atomically); `details` (checkpoint, split, ...) goes into the summary."""
    out = test_dir(run_dir)
    confusion = scores.confusion()
    summary = {**details, **scores.summary()}
    write_json(out / SUMMARY, summary)
    figure = confusion_figure(
        confusion.numpy(), labels, metrics.most_confused_pairs(confusion, CONFUSED_PAIRS),
        title=f"{Path(run_dir).name}: test videos, top-1 {100 * summary['top1_acc']:.1f} % (rows normalised)",
    )
    return {
        "summary": out / SUMMARY,
        "predictions": write_text(out / PREDICTIONS, _prediction_lines(scores, labels)),
        "per_class": write_text(out / PER_CLASS, _per_class_csv(confusion, labels)),
        "confusion": save_figure(figure, out / CONFUSION),
    }


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's test summary, or None when `test` has not run. A summary without the errors it exists for is
    damaged, not "untested"."""
    path = test_dir(run_dir) / SUMMARY
    if not path.is_file():
        return None
    summary = read_json(path)
    if not {"top1_error", "top5_error"} <= summary.keys():
        raise VidfuseError(f"{path}: no top1_error or top5_error, not what `test` writes: run `test` again")
    check_numbers(path, summary, SUMMARY_NUMBERS, writer="`test`")
    return summary


def read_top1_correct(run_dir: str | os.PathLike) -> dict[str, bool] | None:
    """video_id -> whether the run's top-1 was right, or None when `test` has not run."""
    path = test_dir(run_dir) / PREDICTIONS
    if not path.is_file():
        return None
    records = read_json_lines(path)
    if not all({"video_id", "correct"} <= record.keys() for record in records):
        raise VidfuseError(f"{path}: a record without `video_id` or `correct`, not what `test` writes")
    return {r["video_id"]: bool(r["correct"]) for r in records}
