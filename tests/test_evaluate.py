"""`test`: loading a run's model, averaging clips per video, and Ray Data scoring of the tiny prepared set.

The end-to-end test scores with a model whose logits are a fixed function of the clip's pixels, and checks the
written video top-1 / top-5, clip accuracy, mean class accuracy and each video's top-5 probabilities against a
computation written here with numpy.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidfuse import config as config_lib
from vidfuse.cli import main
from vidfuse.data.pipeline import clip_dataset, video_table
from vidfuse.data.prepare import shard_paths
from vidfuse.data.transforms import to_model_input
from vidfuse.engine import rundir
from vidfuse.engine.checkpoint import save_checkpoint
from vidfuse.engine.evaluate import load_run_model, video_scores_from_clips
from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, model_from_config
from vidfuse.report.testdir import write_test_results

FRAMES, SIZE = 8, 32


def make_model_run(root: Path, labels: list[str], *, data_path: str = "", name: str = "tiny") -> tuple[Path, nn.Module]:
    """A run folder with a randomly initialised resnet-10 (gap head) saved as best.pt, as training leaves it."""
    config = config_lib.load(overrides=[
        f"run.name={name}", f"run.storage={root}", "model.arch=resnet", "model.depth=10", "model.shortcut=A",
        f"model.num_classes={len(labels)}", "model.fusion=gap", "model.fusion_layers=[layer4]",
        f"data.sample_duration={FRAMES}", f"data.sample_size={SIZE}", f"data.path={data_path}", "run.batch_size=4",
    ])
    torch.manual_seed(0)
    model = model_from_config(config.model, config.data).eval()
    run_dir = rundir.run_dir_of(config)
    run_dir.mkdir(parents=True)
    config_lib.save(config, run_dir / rundir.CONFIG)
    save_checkpoint(run_dir / "best.pt", {"model": model.state_dict(), "config": config.to_dict(),
                                          "labels": labels, "epoch": 3})
    return run_dir, model


def test_load_run_model_gives_back_the_trained_weights(tmp_path):
    run_dir, model = make_model_run(tmp_path, ["a", "b", "c"])
    loaded, config, labels, path = load_run_model(run_dir)
    assert (labels, path, config.model.depth) == (["a", "b", "c"], run_dir / "best.pt", 10)
    assert not loaded.training
    for (name, value), (name2, value2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and torch.equal(value, value2)
    clips = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    torch.testing.assert_close(loaded(clips), model(clips))


def test_bad_checkpoints_and_folders_are_clear_errors(tmp_path):
    run_dir, model = make_model_run(tmp_path, ["a", "b", "c"])
    other = build_model(arch="resnet", depth=18, shortcut="A", num_classes=3, fusion="gap", fusion_layers=("layer4",))
    save_checkpoint(tmp_path / "other.pt", {"model": other.state_dict(), "labels": ["a", "b", "c"]})
    with pytest.raises(VidfuseError) as error:
        load_run_model(run_dir, str(tmp_path / "other.pt"))
    # the line says what differs (resnet-18 has layers the resnet-10 lacks), not only "Error(s) in loading ..."
    assert str(error.value).startswith(f"{tmp_path / 'other.pt'}: weights do not fit the run's model (resnet-10 "
                                       "with the gap head): Unexpected key(s) in state_dict: ")
    assert len(str(error.value).splitlines()) == 1
    for content, held in (([1, 2, 3], "list"), (torch.zeros(3), "Tensor")):
        torch.save(content, tmp_path / "odd.pt")
        with pytest.raises(VidfuseError, match=rf"odd\.pt: not a checkpoint \(it holds a {held}, not a dict"):
            load_run_model(run_dir, str(tmp_path / "odd.pt"))
    torch.save({"model": [1, 2], "labels": ["a", "b", "c"]}, tmp_path / "odd.pt")
    with pytest.raises(VidfuseError, match=r"odd\.pt: weights do not fit the run's model .*state_dict to be dict"):
        load_run_model(run_dir, str(tmp_path / "odd.pt"))
    for labels in (5, "abc", ["a", 2, "c"]):  # class names that are no list of names
        save_checkpoint(tmp_path / "odd.pt", {"model": model.state_dict(), "labels": labels})
        with pytest.raises(VidfuseError, match=r"odd\.pt: its class names are no list of names"):
            load_run_model(run_dir, str(tmp_path / "odd.pt"))
    diverged = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    diverged[next(iter(diverged))].fill_(float("nan"))  # the stem's convolution
    save_checkpoint(tmp_path / "odd.pt", {"model": diverged, "labels": ["a", "b", "c"]})
    with pytest.raises(VidfuseError, match=r"odd\.pt: 1 of its weight tensors are not finite \(e\.g\. "):
        load_run_model(run_dir, str(tmp_path / "odd.pt"))
    with pytest.raises(VidfuseError, match="checkpoint not found"):
        load_run_model(run_dir, "last")
    save_checkpoint(tmp_path / "odd.pt", {"model": model.state_dict(), "labels": ["a", "b", "c"],
                                          "config": {"model": {"depth": "ten"}}})
    with pytest.raises(VidfuseError, match=r"odd\.pt: the config it holds is not vidfuse's \(config key "
                                           r"model\.depth: 'ten' is not"):
        load_run_model(run_dir, str(tmp_path / "odd.pt"))
    # a hand-edited config.yaml that scores other clips than the model was trained on: the same weights load
    edited = rundir.read_config(run_dir)
    edited.data.norm = "imagenet"
    config_lib.save(edited, run_dir / rundir.CONFIG)
    with pytest.raises(VidfuseError) as error:
        load_run_model(run_dir)
    assert str(error.value) == (f"{run_dir / 'best.pt'} was trained with data.norm='kinetics', but the run's "
                                "config.yaml says 'imagenet': score with the config it was trained with")
    with pytest.raises(VidfuseError, match="not a vidfuse run folder"):
        load_run_model(tmp_path)


def test_clip_probabilities_are_averaged_per_video():
    rng = np.random.default_rng(0)
    videos = [{"video_index": i, "video_id": f"v{i}", "label": i % 3} for i in (10, 11, 12, 13)]
    video_index = np.array([12, 10, 12, 11, 10, 12])  # video 13 yields no clip
    clip_index = np.array([2, 1, 0, 0, 0, 1])
    probs = rng.dirichlet(np.ones(3), size=6)

    scores = video_scores_from_clips(videos, video_index, clip_index, probs)
    assert scores.video_ids == ["v10", "v11", "v12"] and scores.unscored == ["v13"]
    assert scores.windows == [[0, 1], [0], [0, 1, 2]]
    for row, video in enumerate((10, 11, 12)):
        np.testing.assert_allclose(scores.probs[row].numpy(), probs[video_index == video].mean(axis=0), rtol=1e-6)
    assert scores.labels.tolist() == [1, 2, 0]
    clip_labels = np.array([{10: 1, 11: 2, 12: 0}[v] for v in video_index])
    assert scores.clip_correct.tolist() == (probs.argmax(axis=1) == clip_labels).tolist()
    with pytest.raises(ValueError, match="missing from the test list"):
        video_scores_from_clips(videos, np.array([99]), np.array([0]), probs[:1])


def test_test_files_hold_top5_per_class_counts_and_the_confusion(tmp_path):
    labels = [f"class{c}" for c in range(7)]
    rng = np.random.default_rng(3)
    videos = [{"video_index": i, "video_id": f"v{i}", "label": i % 7} for i in range(20)]
    video_index = np.repeat(np.arange(20), 2)  # two windows per video
    probs = rng.dirichlet(np.full(7, 0.3), size=40)
    scores = video_scores_from_clips(videos, video_index, np.tile([0, 1], 20), probs)
    paths = write_test_results(tmp_path, scores, labels, {"split": 1})

    mean = probs.reshape(20, 2, 7).mean(axis=1)
    predictions = [json.loads(line) for line in paths["predictions"].read_text().splitlines()]
    for video, p in enumerate(predictions):
        order = np.argsort(-mean[video])[:5]
        assert [t["label"] for t in p["top5"]] == order.tolist()
        assert [t["name"] for t in p["top5"]] == [labels[c] for c in order]
        np.testing.assert_allclose([t["prob"] for t in p["top5"]], mean[video][order], atol=1e-6)
        assert p["windows"] == [0, 1] and p["correct"] == (order[0] == video % 7)

    predicted = mean.argmax(axis=1)
    truth = np.arange(20) % 7
    with open(paths["per_class"]) as f:
        per_class = list(csv.DictReader(f))
    for c, row in enumerate(per_class):
        mine = predicted[truth == c]
        assert (int(row["videos"]), int(row["correct"])) == (len(mine), int(np.sum(mine == c)))
        assert float(row["accuracy"]) == pytest.approx(np.mean(mine == c), abs=1e-4)
        wrong = [int(x) for x in mine if x != c]
        if wrong:
            counts = np.bincount(wrong, minlength=7)
            assert int(row["times"]) == counts.max() and row["most_confused_with"] == labels[int(counts.argmax())]
    summary = json.loads(paths["summary"].read_text())
    assert summary["split"] == 1 and summary["top1_acc"] == pytest.approx(np.mean(predicted == truth))
    assert paths["confusion"] == tmp_path / "test" / "confusion.png" and paths["confusion"].stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == \
        ["confusion.png", "per_class.csv", "predictions.jsonl", "summary.json"]  # no temporary files left


def _controlled_model(num_classes: int) -> nn.Module:
    """Logits = a fixed linear map of the mean colour of each quarter of each frame: a known function of each
    clip that a misplaced crop, a flip or a wrong frame changes."""

    class QuarterColourModel(nn.Module):  # defined here so that Ray pickles it by value for its actors
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * FRAMES * 4, num_classes)
            torch.manual_seed(1)
            nn.init.normal_(self.linear.weight, std=0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 3, T, H, W)
            features = nn.functional.adaptive_avg_pool3d(x, (FRAMES, 2, 2)).flatten(1) / 50  # (N, 3 * T * 4)
            return self.linear(features)  # (N, classes)

    return QuarterColourModel().eval()


def _expected_metrics(
    path: str, model: nn.Module, num_classes: int,
) -> tuple[dict[str, float], dict[str, list[int]], dict[str, np.ndarray]]:
    """Video top-1 / top-5, clip accuracy and mean class accuracy computed directly from every test clip, with
    each video's windows and mean probabilities."""
    rows = clip_dataset(path, split=1, subset="test", mode="test", sample_duration=FRAMES, sample_size=SIZE).take_all()
    clips = torch.from_numpy(np.stack([row["clip"] for row in rows]))
    with torch.no_grad():
        logits = model(to_model_input(clips, norm="kinetics")).double().numpy()
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([row["label"] for row in rows])
    ids = {v["video_index"]: v["video_id"] for v in video_table(path, split=1, subset="test")}
    per_video: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        per_video.setdefault(ids[int(row["video_index"])], []).append(i)
    top1, top5, truth, video_probs = [], [], [], {}
    for vid, members in per_video.items():
        mean = video_probs[vid] = probs[members].mean(axis=0)
        label = labels[members[0]]
        ranked = list(np.argsort(-mean))
        top1.append(ranked[0] == label)
        top5.append(label in ranked[:5])
        truth.append(label)
    top1, truth = np.array(top1), np.array(truth)
    class_accs = [top1[truth == c].mean() for c in range(num_classes) if (truth == c).any()]
    windows = {vid: sorted(int(rows[i]["clip_index"]) for i in members) for vid, members in per_video.items()}
    return {
        "videos": len(per_video), "clips": len(rows), "top1_acc": top1.mean(), "top5_acc": np.mean(top5),
        "clip_acc": np.mean(probs.argmax(axis=1) == labels), "mean_class_acc": np.mean(class_accs),
    }, windows, video_probs


@pytest.mark.parametrize("decode_on", ["decoders", "worker"])  # worker: the scorers decode the JPEGs themselves
def test_test_command_scores_every_window_with_ray_data(tiny_dataset, ray_session, tmp_path, monkeypatch, capsys,
                                                        ray_data_console, ray_data_logged, decode_on):
    labels = list(tiny_dataset.labels)
    run_dir, _ = make_model_run(tmp_path, labels, data_path=str(tiny_dataset.parquet))
    model = _controlled_model(len(labels))
    config = rundir.read_config(run_dir)
    config.data.decode_on = decode_on
    monkeypatch.setattr("vidfuse.commands.test.load_run_model",
                        lambda run, checkpoint: (model, config, labels, run_dir / "best.pt"))

    assert main(["test", "--run", str(run_dir), "--workers", "2"]) == 0
    summary = json.loads((run_dir / "test" / "summary.json").read_text())
    expected, windows, video_probs = _expected_metrics(str(tiny_dataset.parquet), model, len(labels))
    assert 0 < expected["clip_acc"] < 1  # the controlled model is right on some clips only: a real check
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-6), key
    assert summary["top1_error"] == pytest.approx(1 - expected["top1_acc"])
    assert (summary["split"], summary["clips_per_video"]) == (1, "all")

    predictions = [json.loads(line) for line in (run_dir / "test" / "predictions.jsonl").read_text().splitlines()]
    assert {p["video_id"]: p["windows"] for p in predictions} == windows
    for p in predictions:  # the very scores: every pixel of every window counts
        top5 = [t["label"] for t in p["top5"]]
        np.testing.assert_allclose([t["prob"] for t in p["top5"]], video_probs[p["video_id"]][top5], atol=2e-6)
    first = predictions[0]
    assert len(first["top5"]) == min(5, len(labels)) and first["label_name"] == labels[first["label"]]
    assert [t["prob"] for t in first["top5"]] == sorted((t["prob"] for t in first["top5"]), reverse=True)
    assert first["correct"] == (first["top5"][0]["label"] == first["label"])

    with open(run_dir / "test" / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [row["name"] for row in per_class] == labels
    assert sum(int(row["videos"]) for row in per_class) == expected["videos"]
    assert sum(int(row["correct"]) for row in per_class) == round(expected["top1_acc"] * expected["videos"])
    assert (run_dir / "test" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr()
    assert f"confusion: {run_dir / 'test' / 'confusion.png'}" in printed.out
    # the progress line ends on every window the test list has, counted without Ray
    assert re.search(rf"\rtest: {expected['clips']}/{expected['clips']} clips, [\d.]+ clips/s, ETA 0 s \n$",
                     printed.err), printed.err
    logged = ray_data_logged()  # Ray Data's notices: in its log file, not the console
    for notice in ("Starting execution of Dataset", "execution finished"):
        assert notice in logged and notice not in ray_data_console.getvalue(), notice


def test_test_command_rejects_a_bad_clip_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--run", "somewhere", "--clips", "0"])
    assert exit_info.value.code == 2 and "--clips must be 'all' or a positive integer" in capsys.readouterr().err


def test_test_command_rejects_a_data_set_with_other_classes(tiny_dataset, tmp_path, capsys):
    """The run's data path may now hold another data set (prepared again with --overwrite, or another one)."""
    labels = list(tiny_dataset.labels)
    swapped = [labels[1], labels[0], *labels[2:]]
    run_dir, _ = make_model_run(tmp_path, swapped, data_path=str(tiny_dataset.parquet))
    assert main(["test", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tiny_dataset.parquet} does not hold the classes the run was trained on" in err[0]
    assert f"class 0 is {labels[0]!r} there, {labels[1]!r} in the run" in err[0]
    assert not (run_dir / "test").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--run", str(run_dir), "--workers", "0"])
    assert exit_info.value.code == 2 and "must be a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("data_path, reason", [("", "data.path is empty"), ("moved", "data.path {} does not exist")])
def test_test_command_names_a_run_config_without_its_data_set(data_path, reason, tmp_path, capsys):
    """A hand-edited or moved `data.path` said "not a prepared data set (no _meta.json): ." (the empty path)."""
    data_path = str(tmp_path / data_path) if data_path else ""
    run_dir, _ = make_model_run(tmp_path, ["a", "b"], data_path=data_path)
    assert main(["test", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vidfuse: error: {run_dir / 'config.yaml'}: {reason.format(data_path)}")
    assert not (run_dir / "test").exists()


def test_test_command_on_a_damaged_data_set_ends_on_one_line(damaged_dataset, tiny_dataset, ray_session, tmp_path,
                                                             capsys, ray_data_console, ray_data_logged):
    """The pipeline executes in this process, so Ray Data logs here what it meets. vidfuse's own error, a
    RayTaskError of it whose text is the decoder's traceback, shows as vidfuse's one line and nothing else: Ray
    Data's console gets neither its traceback nor "Exception occurred in Ray Data or Ray Core internal code"; its
    log file gets what it logged."""
    run_dir, _ = make_model_run(tmp_path, list(tiny_dataset.labels), data_path=str(damaged_dataset("test")))
    assert main(["test", "--run", str(run_dir), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        r"vidfuse: error: video v_\w+: one of its frames \d+-\d+ does not decode \(.+\): the data set is damaged; "
        r"prepare it again", err[0]), err
    ray_data_lines = ray_data_console.getvalue()
    assert "Traceback" not in ray_data_lines and "internal code" not in ray_data_lines
    logged = ray_data_logged()  # what Ray Data logged meanwhile, through these handlers
    assert "execution failed" in logged and "Traceback" in logged and "execution failed" not in ray_data_lines
    assert not (run_dir / "test").exists()


def test_test_command_on_a_shard_with_a_damaged_page_ends_on_one_line(shard_with_damaged_pages, tiny_dataset,
                                                                    ray_session, tmp_path, capsys, ray_data_console):
    """A page that does not parse fails in Ray Data's own Parquet reader, not in vidfuse's code: the command printed
    Ray's remote traceback (~160 lines) as its "one line". It is a damaged data set naming the shard now."""
    run_dir, _ = make_model_run(tmp_path, list(tiny_dataset.labels), data_path=str(shard_with_damaged_pages))
    assert main(["test", "--run", str(run_dir), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    shard = re.fullmatch(r"vidfuse: error: (\S+): not a readable Parquet shard \(.+\): the data set is damaged; "
                         r"prepare it again", err[0])
    assert shard is not None and Path(shard[1]) in shard_paths(shard_with_damaged_pages), err
    assert "Traceback" not in ray_data_console.getvalue()
    assert not (run_dir / "test").exists()


def test_test_command_with_n_clips_scores_n_evenly_spaced_windows(tiny_dataset, ray_session, tmp_path):
    run_dir, _ = make_model_run(tmp_path, list(tiny_dataset.labels), data_path=str(tiny_dataset.parquet))
    assert main(["test", "--run", str(run_dir), "--clips", "3", "--workers", "1"]) == 0
    predictions = [json.loads(line) for line in (run_dir / "test" / "predictions.jsonl").read_text().splitlines()]
    n_frames = {v["video_id"]: v["n_frames"] for v in video_table(str(tiny_dataset.parquet), split=1, subset="test")}
    assert len(predictions) == len(n_frames)
    for p in predictions:  # starts spread from the first to the last full window, without duplicates
        starts = {round(s) for s in np.linspace(0, max(n_frames[p["video_id"]] - FRAMES, 0), 3)}
        assert len(p["windows"]) == len(starts)
    assert any(len(p["windows"]) == 3 for p in predictions)  # not what "all" gives for 16 frames (2 windows)
    summary = json.loads((run_dir / "test" / "summary.json").read_text())
    assert summary["clips_per_video"] == 3 and summary["clips"] == sum(len(p["windows"]) for p in predictions)
