"""Metrics against plain-Python computations of the same quantities."""

from __future__ import annotations

import math

import torch

from vidfuse.engine import metrics


def _random_scores(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=generator), torch.randint(0, c, (n,), generator=generator)


def test_accumulate_video_scores_matches_a_loop():
    probs, _ = _random_scores(12, 4, seed=0)
    video_index = torch.tensor([2, 0, 2, 1, 1, 1, 0, 2, 2, 0, 1, 2])
    sums, counts = torch.zeros(4, 4, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    metrics.accumulate_video_scores(sums, counts, video_index[:5], probs[:5])
    metrics.accumulate_video_scores(sums, counts, video_index[5:], probs[5:])  # two batches add up

    for video in range(4):
        rows = [probs[i].double() for i in range(12) if video_index[i] == video]
        assert counts[video] == len(rows)
        expected = sum(rows) if rows else torch.zeros(4, dtype=torch.float64)
        torch.testing.assert_close(sums[video], expected)
    means = metrics.video_scores(sums, counts)
    torch.testing.assert_close(means[1], sums[1] / 4)
    assert means[3].abs().sum() == 0  # video 3 has no clips


def test_topk_accuracy_matches_sorting_by_hand():
    scores, labels = _random_scores(50, 10, seed=1)
    for k in (1, 3, 5):
        hits = 0
        for row, label in zip(scores.tolist(), labels.tolist()):
            ranked = sorted(range(10), key=lambda c: -row[c])
            hits += label in ranked[:k]
        assert math.isclose(metrics.topk_accuracy(scores, labels, k), hits / 50, rel_tol=1e-6)
    assert metrics.topk_accuracy(scores, labels, 10) == 1.0
    assert metrics.topk_accuracy(scores, labels, 50) == 1.0  # k beyond the classes: every label is in
    assert metrics.topk_accuracy(scores[:0], labels[:0], 5) == 0.0


def test_confusion_and_class_accuracies():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 1, 0, 2, 1, 1])
    confusion = metrics.confusion_matrix(predictions, labels, num_classes=4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(labels.tolist(), predictions.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion, expected)

    per_class = metrics.per_class_accuracy(confusion)
    torch.testing.assert_close(per_class[:3], torch.tensor([1 / 3, 2 / 2, 1 / 4], dtype=torch.float64))
    assert per_class[3].isnan()  # class 3 has no video: left out of the mean, not counted as 0
    assert math.isclose(metrics.mean_class_accuracy(confusion), (1 / 3 + 1 + 1 / 4) / 3)
    # plain accuracy weighs videos, the class mean weighs classes: 4/9 vs 0.528
    assert not math.isclose(metrics.mean_class_accuracy(confusion), 4 / 9)

    assert metrics.most_confused_pairs(confusion, k=2) == [(0, 1, 2), (2, 1, 2)]
    assert len(metrics.most_confused_pairs(confusion, k=100)) == 3  # only non-zero off-diagonal cells
