"""Classification metrics shared by the training loop (val), `test` and `report`.

Pure functions on torch tensors, so the training workers, the test scorer and the report compute accuracy the
same way. Video-level scores are the mean of the clip softmax per video: the workers add clip probabilities into
per-video sums with `accumulate_video_scores` (which can be all-reduced across workers as plain tensors), and
`video_scores` turns sums into means.
"""

from __future__ import annotations

import torch
from torch import Tensor


def accumulate_video_scores(sums: Tensor, counts: Tensor, video_index: Tensor, probs: Tensor) -> None:
    """Add clip probabilities into per-video sums, in place.

    sums: (V, C) running sum of clip softmax per video; counts: (V,) clips seen per video;
    video_index: (N,) long, the video of each clip; probs: (N, C) clip softmax.
    """
    sums.index_add_(0, video_index, probs.to(sums.dtype))
    counts.index_add_(0, video_index, torch.ones_like(video_index, dtype=counts.dtype))


def video_scores(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean clip softmax per video, (V, C); videos without clips get all-zero rows."""
    return sums / counts.clamp_min(1).to(sums.dtype).unsqueeze(1)


def topk_correct(scores: Tensor, labels: Tensor, k: int = 1) -> Tensor:
    """(N,) bool: whether the true label is among the k highest scores of each row of (N, C) `scores`."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels.unsqueeze(1)).any(dim=1)


def topk_accuracy(scores: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among their k highest scores (k=1: plain accuracy); 0 for no rows."""
    if labels.numel() == 0:
        return 0.0
    return topk_correct(scores, labels, k).float().mean().item()


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) long counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """(C,) float: recall of each class; NaN for classes without any sample."""
    totals = confusion.sum(dim=1).double()
    return torch.where(totals > 0, confusion.diagonal().double() / totals.clamp_min(1), float("nan"))


def mean_class_accuracy(confusion: Tensor) -> float:
    """Mean of the per-class accuracies over the classes that have samples (classes count equally)."""
    accuracy = per_class_accuracy(confusion)
    present = ~accuracy.isnan()
    return accuracy[present].mean().item() if present.any() else 0.0


def most_confused_pairs(confusion: Tensor, k: int = 20) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true class, predicted class, count): largest first, ties by class."""
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    cells = [(int(t), int(p), int(off_diagonal[t, p])) for t, p in off_diagonal.nonzero()]
    return sorted(cells, key=lambda cell: (-cell[2], cell[0], cell[1]))[:k]
