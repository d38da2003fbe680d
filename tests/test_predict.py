"""`predict` on real clips from ../shared/data/clips with a tiny fabricated run."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import torch
from test_evaluate import FRAMES, SIZE, make_model_run

from vidfuse.cli import main
from vidfuse.data.pipeline import eval_clips
from vidfuse.data.transforms import to_model_input
from vidfuse.data.video import read_frames
from vidfuse.predict import DEFAULT_SHORT_SIDE

LABELS = ["ApplyEyeMakeup", "BaseballPitch", "Basketball", "SoccerJuggling", "wave", "cartwheel", "Archery"]


@pytest.fixture()
def clips(shared_data):
    return {
        "wave": shared_data / "clips/hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
        "pitch": shared_data / "clips/ucf101/BaseballPitch/v_BaseballPitch_g01_c01.avi",
    }


def _frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _expected_top5(model, path) -> list[tuple[str, float]]:
    frames = read_frames(path)
    windows, _ = eval_clips(frames, sample_duration=FRAMES, sample_size=SIZE, short_side=DEFAULT_SHORT_SIDE)
    with torch.no_grad():
        probs = model(to_model_input(torch.from_numpy(windows), norm="kinetics")).softmax(dim=1).mean(dim=0)
    order = np.argsort(-probs.numpy())[:5]
    return [(LABELS[i], float(probs[i])) for i in order]


def test_predict_prints_top5_and_writes_json_for_real_clips(tmp_path, clips, capsys):
    run_dir, model = make_model_run(tmp_path, LABELS)
    out = tmp_path / "predictions.json"
    assert main(["predict", "--run", str(run_dir), str(clips["wave"]), str(clips["pitch"]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["checkpoint"] == str(run_dir / "best.pt")
    for key, prediction in zip(("wave", "pitch"), written["predictions"]):
        assert prediction["input"] == str(clips[key])
        assert prediction["windows"] == math.ceil(_frame_count(clips[key]) / FRAMES)  # every window, loop-padded
        expected = _expected_top5(model, clips[key])
        assert [p["label"] for p in prediction["top5"]] == [name for name, _ in expected]
        np.testing.assert_allclose([p["prob"] for p in prediction["top5"]], [p for _, p in expected], atol=1e-5)
        assert f"{100 * expected[0][1]:6.2f}%  {expected[0][0]}" in printed
    assert printed.index(str(clips["wave"])) < printed.index(str(clips["pitch"]))


def test_an_input_that_does_not_decode_is_named_and_the_others_still_predicted(tmp_path, clips, capsys):
    run_dir, _ = make_model_run(tmp_path, LABELS)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"this is not a video" * 100)
    out = tmp_path / "predictions.json"
    status = main(["predict", "--run", str(run_dir), str(broken), str(clips["wave"]), "--json", str(out)])
    captured = capsys.readouterr()
    assert status != 0
    errors = [line for line in captured.err.splitlines() if str(broken) in line]
    assert len(errors) == 1 and errors[0].startswith("vidfuse: error:")
    assert "Traceback" not in captured.err
    assert str(clips["wave"]) in captured.out
    written = json.loads(out.read_text())["predictions"]
    assert written[0]["input"] == str(broken) and "error" in written[0]
    assert len(written[1]["top5"]) == 5


def test_a_folder_without_frames_is_named(tmp_path, capsys):
    run_dir, _ = make_model_run(tmp_path, LABELS)
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--run", str(run_dir), str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vidfuse: error: {tmp_path / 'empty'}: no frames (give a video file, or a folder of "
                   "image_00001.jpg ...)", "vidfuse: 1 of 1 inputs could not be read"]


def test_a_json_path_that_cannot_be_written_is_named(tmp_path, clips, capsys):
    run_dir, _ = make_model_run(tmp_path, LABELS)
    (tmp_path / "adir").mkdir()
    assert main(["predict", "--run", str(run_dir), str(clips["pitch"]), "--json", str(tmp_path / "adir")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"vidfuse: error: {tmp_path / 'adir'}: Is a directory"]
    assert list((tmp_path / "adir").iterdir()) == [] and not list(tmp_path.glob(".adir*"))  # no temporary left


def test_an_unforeseen_os_error_is_one_line_naming_the_file(monkeypatch, capsys):
    def fail(args):
        raise NotADirectoryError(20, "Not a directory", "runs/afile.txt/run")

    monkeypatch.setattr("vidfuse.commands.report.run", fail)
    assert main(["report", "runs/x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["vidfuse: error: runs/afile.txt/run: Not a directory"]


def test_predict_on_a_frame_folder(tmp_path, clips):
    """A 3D-ResNets-PyTorch frame folder of the same clip scores the same windows."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = read_frames(clips["wave"])
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"image_{i:05d}.jpg", quality=95)
    run_dir, _ = make_model_run(tmp_path, LABELS)
    out = tmp_path / "p.json"
    assert main(["predict", "--run", str(run_dir), str(folder), "--json", str(out)]) == 0
    prediction = json.loads(out.read_text())["predictions"][0]
    assert prediction["windows"] == math.ceil(len(frames) / FRAMES)
    assert sum(p["prob"] for p in prediction["top5"]) <= 1 + 1e-6
