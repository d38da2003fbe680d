"""Pictures of a run: training curves and the confusion matrix of the test videos.

Drawn with matplotlib's object API on an Agg canvas (never pyplot): no display is needed, nothing global is
touched, and the figure objects can be inspected by tests before they are saved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vidfuse.engine.rundir import best_record
from vidfuse.files import atomic_output


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one metric, leaving out epochs where it is missing."""
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def curves_figure(records: Sequence[dict[str, Any]], title: str) -> Figure:
    """Train vs val accuracy, train vs val loss and the learning rate, per epoch (metrics.jsonl records).

    The best epoch is marked, with train and val accuracy written next to it: the overfitting gap shows at a glance.
    """
    figure = _new_figure(13, 3.8)
    accuracy, loss, lr = figure.subplots(1, 3)
    figure.suptitle(title)
    accuracies = (("train_acc", "train (clips)"), ("val_clip_acc", "val (clips)"), ("val_video_acc", "val (videos)"))
    for key, label in accuracies:
        epochs, values = _series(records, key)
        accuracy.plot(epochs, [100 * v for v in values], marker=".", label=label)
    accuracy.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    best = best_record(records)
    if best is not None:
        accuracy.axvline(best["epoch"], color="grey", linestyle="--", linewidth=0.8)
        gap = f"best epoch {best['epoch']}\nval {100 * best['val_video_acc']:.1f} %"
        if best.get("train_acc") is not None:
            gap += f"\ntrain {100 * best['train_acc']:.1f} %"
        accuracy.annotate(gap, xy=(0.02, 0.97), xycoords="axes fraction", va="top", fontsize=8)
    accuracy.legend(fontsize=8, loc="lower right")
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        loss.plot(*_series(records, key), marker=".", label=label)
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss.legend(fontsize=8)
    lr.plot(*_series(records, "lr"), marker=".", color="tab:purple")
    lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    for axes in (accuracy, loss, lr):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def confusion_figure(
    confusion: np.ndarray, labels: Sequence[str], pairs: Sequence[tuple[int, int, int]], title: str = ""
) -> Figure:
    """Row-normalised confusion matrix (true class per row) with the most confused pairs listed beside it.

    Sized for 101 classes: the figure grows with the class count and the tick labels shrink, so every class name
    stays legible when zoomed.
    """
    confusion = np.asarray(confusion, dtype=float)
    num_classes = len(labels)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    side = max(6.0, 0.17 * num_classes + 2.5)
    figure = _new_figure(side * 1.4, side)
    matrix_axes, pairs_axes = figure.subplots(1, 2, width_ratios=[3.2, 1])
    image = matrix_axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fontsize = float(np.clip(480 / max(num_classes, 1), 5, 10))
    ticks = np.arange(num_classes)
    matrix_axes.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    matrix_axes.set_yticks(ticks, labels, fontsize=fontsize)
    matrix_axes.set(xlabel="predicted", ylabel="true", title=title or "confusion (rows normalised)")
    figure.colorbar(image, ax=matrix_axes, fraction=0.03, label="fraction of the true class")
    pairs_axes.axis("off")
    lines = [f"{labels[t]} -> {labels[p]}: {n} ({100 * normalised[t, p]:.0f} %)" for t, p, n in pairs]
    pairs_axes.set_title("most confused: true -> predicted", fontsize=10, loc="left")
    pairs_axes.text(0, 1, "\n".join(lines) or "no confusions", va="top", ha="left", fontsize=9, family="monospace",
                    transform=pairs_axes.transAxes)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write the figure as PNG atomically; returns the path."""
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")  # side text fits whole
    return Path(path)
