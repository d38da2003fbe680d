"""`report`: results table, split mean ± std, baseline comparison, curves and confusion pictures.

Run folders are fabricated here (config.yaml, meta.json, metrics.jsonl, test/ files in their documented
format), so these tests do not depend on training or on `test`.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from fractions import Fraction
from math import comb
from pathlib import Path

import numpy as np
import pytest

from vidfuse import config as config_lib
from vidfuse.cli import main
from vidfuse.engine import rundir
from vidfuse.errors import VidfuseError
from vidfuse.files import write_json
from vidfuse.report import compare_to_baseline, markdown_table, results_table
from vidfuse.report.plots import confusion_figure, curves_figure
from vidfuse.report.stats import NOT_DISTINGUISHABLE
from vidfuse.report.tables import MeanStd
from vidfuse.report.testdir import read_top1_correct

VIDEOS = [f"v_{i:03d}" for i in range(60)]


def make_run(
    root: Path,
    name: str,
    *,
    split: int = 1,
    lr: float = 0.1,
    val_accs: tuple[float, ...] = (0.4, 0.6, 0.5),
    correct: list[bool] | None = None,
    videos: list[str] = VIDEOS,
    overrides: tuple[str, ...] = (),
    tested: dict[str, object] | None = None,
) -> Path:
    """A run folder as training and `test` leave it; `correct` (per video) adds test results."""
    config = config_lib.load(overrides=[
        f"run.name={name}", f"run.storage={root}", f"data.split={split}", f"optim.lr={lr}",
        "model.arch=resnet", "model.depth=10", "model.fusion=hbp", "data.sample_duration=8", *overrides,
    ])
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config_lib.save(config, run_dir / rundir.CONFIG)
    write_json(run_dir / rundir.META, {"labels": ["a", "b"], "parameters": 2_500_000, "gflops": 0.0123})
    for epoch, val in enumerate(val_accs, start=1):
        rundir.append_metrics(run_dir, {
            "epoch": epoch, "train_loss": 2.0 / epoch, "train_acc": 0.3 + 0.2 * epoch, "val_loss": 1.5 / epoch,
            "val_clip_acc": val - 0.05, "val_video_acc": val, "lr": lr / 10 ** (epoch - 1),
            "clips_per_s": 10.0 * epoch, "epoch_seconds": 5.0,
        })
    if correct is not None:
        accuracy = sum(correct) / len(correct)
        write_json(run_dir / "test" / "summary.json", {
            "top1_acc": accuracy, "top1_error": 1 - accuracy, "top5_acc": 1.0, "top5_error": 0.0,
            "videos": len(correct), "split": split, **(tested or {}),
        })
        lines = [json.dumps({"video_id": v, "label": 0, "correct": ok}) for v, ok in zip(videos, correct)]
        (run_dir / "test" / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def correctness(right: int, total: int = len(VIDEOS)) -> list[bool]:
    return [True] * right + [False] * (total - right)


def test_rows_hold_the_runs_numbers_sorted_by_test_error(tmp_path):
    worse = make_run(tmp_path, "worse", correct=correctness(30))
    better = make_run(tmp_path, "better", lr=0.01, val_accs=(0.5, 0.8, 0.7, 0.75), correct=correctness(45))
    untested = make_run(tmp_path, "untested", lr=0.05, val_accs=(0.9,))

    rows = results_table([untested, worse, better])
    assert [r["run"] for r in rows] == ["better", "worse", "untested"]
    best = rows[0]
    assert best["test_top1_error"] == pytest.approx(15 / 60)
    assert (best["best_epoch"], best["val_video_acc"], best["epochs"]) == (2, 0.8, 4)
    assert best["clips_per_s"] == pytest.approx(statistics.median([10, 20, 30, 40]))
    assert (best["params_m"], best["gflops"]) == (2.5, 0.0123)
    assert (best["architecture"], best["head"], best["fusion_layers"], best["frames"]) == \
        ("resnet-10", "hbp", "layer3+layer4", 8)
    assert best["config"] == "optim.lr=0.01"  # the one setting that differs between the runs
    gap = make_run(tmp_path, "gap", overrides=("model.fusion=gap", "model.fusion_layers=[layer4, layer2]"))
    assert results_table([gap])[0]["fusion_layers"] == "layer4"  # what a gap head reads, not its config's list

    assert rows[2]["test_top1_error"] is None and rows[2]["val_video_acc"] == 0.9
    table = markdown_table(rows).splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    untested_cells = dict(zip(header, (cell.strip() for cell in table[4].strip("|").split("|"))))
    assert untested_cells["run"] == "untested"
    assert untested_cells["test top-1 err %"] == "" and untested_cells["test top-5 err %"] == ""
    assert untested_cells["val video acc %"] == "90.00"


def test_notes_flag_divergence_failure_val_on_the_test_list_and_tests_of_another_checkpoint(tmp_path):
    plain = make_run(tmp_path, "plain", correct=correctness(40),
                     tested={"checkpoint": str(tmp_path / "plain" / "best.pt"), "clips_per_video": "all"})
    old = make_run(tmp_path, "old", overrides=("data.val_from_test=true",), correct=correctness(30),
                   tested={"checkpoint": str(tmp_path / "old" / "last.pt"), "clips_per_video": 10})
    borrowed = make_run(tmp_path, "borrowed", correct=correctness(35),
                        tested={"checkpoint": str(tmp_path / "old" / "best.pt"), "clips_per_video": "all"})
    diverged = make_run(tmp_path, "diverged", overrides=("data.val_from_test=true",))
    rundir.mark_stopped(diverged, rundir.DIVERGED, "epoch 4 batch 2: the training loss is nan: ...")
    failed = make_run(tmp_path, "failed")
    rundir.mark_stopped(failed, rundir.FAILED, "video v_a_g01_c01: one of its frames 1-8 does not decode (...)")
    rows = {r["run"]: r for r in results_table([plain, old, borrowed, diverged, failed])}
    assert rows["plain"]["notes"] == ""
    assert rows["old"]["notes"] == "val on the test list; tested last.pt; tested 10 clips/video"
    assert rows["diverged"]["notes"] == "diverged in epoch 4; val on the test list"  # 3 epochs finished
    assert rows["failed"]["notes"] == "failed in epoch 4"
    assert rows["borrowed"]["notes"] == f"tested {tmp_path / 'old' / 'best.pt'} (another run's)"
    assert markdown_table(list(rows.values())).splitlines()[0].endswith("| notes |")
    assert "notes" not in markdown_table([rows["plain"]]).splitlines()[0]  # an empty column is left out


def test_runs_differing_only_in_split_get_a_mean_and_std_row(tmp_path):
    rights = {1: 42, 2: 45, 3: 39}
    splits = [make_run(tmp_path, f"hbp_s{s}", split=s, val_accs=(0.5, 0.6 + 0.01 * s), correct=correctness(r))
              for s, r in rights.items()]
    other = make_run(tmp_path, "other_lr", lr=0.5, correct=correctness(50))

    rows = results_table([*splits, other])
    merged = [r for r in rows if isinstance(r["test_top1_error"], MeanStd)]
    assert len(merged) == 1 and len(rows) == 5
    row = merged[0]
    errors = [1 - r / 60 for r in rights.values()]
    assert row["test_top1_error"].mean == pytest.approx(statistics.mean(errors))
    assert row["test_top1_error"].std == pytest.approx(statistics.stdev(errors))
    assert row["val_video_acc"].mean == pytest.approx(statistics.mean([0.61, 0.62, 0.63]))
    assert row["val_video_acc"].std == pytest.approx(0.01)
    assert row["split"] == "1,2,3"
    assert "hbp_s1" in row["run"] and "other_lr" not in row["run"]
    cell = next(line for line in markdown_table(rows).splitlines() if "mean ± std" in line)
    assert f"{100 * statistics.mean(errors):.2f} ± {100 * statistics.stdev(errors):.2f}" in cell


def test_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidfuseError, match="not a vidfuse run folder"):
        results_table([tmp_path / "empty"])
    with pytest.raises(VidfuseError, match="not found"):
        results_table([tmp_path / "missing"])
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(VidfuseError, match="afile.txt is a file, not a run folder"):
        results_table([tmp_path / "afile.txt"])
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "empty") in err[0]


def test_damaged_json_files_of_a_run_are_one_line_each(tmp_path, capsys):
    """metrics.jsonl, meta.json and the test files are vidfuse's own, but a hand edit or a damaged disk can still
    break them: the error names the file (and the line of a JSON Lines file)."""
    run_dir = make_run(tmp_path, "damaged", correct=correctness(30))
    metrics = run_dir / rundir.METRICS
    half_line = '{"epoch": 4, "train_lo'  # a write cut short: the string "train_lo starts at column 14
    metrics.write_text(metrics.read_text() + half_line + "\n")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    column = half_line.index('"train') + 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidfuse: error: {metrics}: line 4 is not valid JSON (Unterminated string starting at: column {column})"]
    metrics.write_text("\n".join(metrics.read_text().splitlines()[:3]) + "\n")
    (run_dir / "test" / "summary.json").write_text("{")
    with pytest.raises(VidfuseError) as error:
        results_table([run_dir])
    assert str(error.value) == (f"{run_dir / 'test' / 'summary.json'}: not valid JSON "
                                "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")
    (run_dir / "test" / "summary.json").write_text("[1]")  # valid JSON, but not what `test` writes
    with pytest.raises(VidfuseError, match=r"summary\.json: not a JSON object \(a list\)"):
        results_table([run_dir])
    (run_dir / "test" / "summary.json").write_text("{}")  # not an untested run: a damaged summary
    with pytest.raises(VidfuseError, match=r"summary\.json: no top1_error or top5_error, not what `test` writes"):
        results_table([run_dir])
    (run_dir / "test" / "summary.json").write_bytes(b'{"top1_error": "\xff"}')
    with pytest.raises(VidfuseError, match=r"summary\.json: not UTF-8 text \(byte 16 is 0xff\)"):
        results_table([run_dir])
    (run_dir / "test" / "summary.json").unlink()
    (run_dir / "test" / "predictions.jsonl").write_text('{"video_id": "v_000"}\n')
    with pytest.raises(VidfuseError, match=r"predictions\.jsonl: a record without `video_id` or `correct`"):
        read_top1_correct(run_dir)
    three_epochs = metrics.read_text()
    metrics.write_text(three_epochs + '{"epoch": "4"}\n')
    with pytest.raises(VidfuseError, match=r"metrics\.jsonl: a record without an integer `epoch`"):
        results_table([run_dir])
    # valid JSON with a value that is no number where one is used: one line naming the record, key and value
    for edit, message in (({"val_video_acc": "high"}, "record 2: `val_video_acc` is 'high', not a number"),
                          ({"val_loss": None}, "record 2: `val_loss` is None, not a number"),
                          ({"lr": True}, "record 2: `lr` is True, not a number")):
        records = [json.loads(line) for line in three_epochs.splitlines()]
        records[1].update(edit)
        metrics.write_text("".join(json.dumps(record) + "\n" for record in records))
        assert main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"vidfuse: error: {metrics}: {message}: not what training writes"]
    records = [json.loads(line) for line in three_epochs.splitlines()]
    del records[1]["val_loss"]
    metrics.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(VidfuseError, match=r"metrics\.jsonl: record 2: `val_video_acc` without `val_loss`"):
        results_table([run_dir])
    metrics.write_text(three_epochs)
    (run_dir / "test" / "summary.json").write_text('{"top1_error": "x", "top5_error": 0.1}')
    with pytest.raises(VidfuseError, match=r"summary\.json: `top1_error` is 'x', not a number: not what `test` wri"):
        results_table([run_dir])
    (run_dir / "test" / "summary.json").unlink()
    meta = json.loads((run_dir / rundir.META).read_text())
    (run_dir / rundir.META).write_text(json.dumps({**meta, "parameters": "many"}))
    with pytest.raises(VidfuseError, match=r"meta\.json: `parameters` is 'many', not a number: not what training"):
        results_table([run_dir])


def test_metrics_are_added_by_rewriting_the_file_atomically(tmp_path, monkeypatch):
    """An epoch record is added by writing metrics.jsonl anew under a temporary name: an interrupted write leaves
    the records before it whole, with no half line (an append would leave one)."""
    run_dir = make_run(tmp_path, "atomic", val_accs=(0.4, 0.6))
    before = (run_dir / rundir.METRICS).read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("vidfuse.files.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rundir.append_metrics(run_dir, {"epoch": 3, "val_video_acc": 0.7, "val_loss": 0.5})
    assert (run_dir / rundir.METRICS).read_text() == before
    assert sorted(path.name for path in run_dir.iterdir()) == sorted([rundir.CONFIG, rundir.META, rundir.METRICS])
    monkeypatch.undo()
    rundir.append_metrics(run_dir, {"epoch": 3, "val_video_acc": 0.7, "val_loss": 0.5})
    assert [r["epoch"] for r in rundir.read_metrics(run_dir)] == [1, 2, 3]


def test_tune_experiment_gives_one_row_per_trial_with_its_config(tmp_path):
    trials = tmp_path / "exp" / "trials"
    make_run(trials, "trial_a", lr=0.01)
    make_run(trials, "trial_b", lr=0.03)
    rows = results_table([tmp_path / "exp"])
    assert sorted((r["run"], r["config"]) for r in rows) == [("trial_a", "optim.lr=0.01"), ("trial_b", "optim.lr=0.03")]


def _exact_binomial_p(b: int, c: int) -> float:
    pmf = [Fraction(comb(b + c, k), 2 ** (b + c)) for k in range(b + c + 1)]
    return float(sum(p for p in pmf if p <= pmf[b]))


def test_baseline_comparison_is_mcnemar_on_the_same_videos(tmp_path):
    base = [True] * 40 + [False] * 20
    close = base.copy()  # b = 2, c = 4
    close[0] = close[1] = False
    for i in (40, 41, 42, 43):
        close[i] = True
    far = [True] * 59 + [False]  # b = 1 (video 0 flipped below), c = 20
    far[0], far[59] = False, True
    baseline = make_run(tmp_path, "baseline", correct=base)
    runs = [make_run(tmp_path, "close", lr=0.2, correct=close), make_run(tmp_path, "far", lr=0.3, correct=far),
            make_run(tmp_path, "untested", lr=0.4),
            make_run(tmp_path, "split2", split=2, correct=base[:50], videos=[f"w_{i}" for i in range(50)])]

    rows = {r["run"]: r for r in compare_to_baseline(baseline, [baseline, *runs])}
    assert set(rows) == {"close", "far", "untested", "split2"}
    assert (rows["close"]["b"], rows["close"]["c"]) == (2, 4)
    assert rows["close"]["p_value"] == pytest.approx(_exact_binomial_p(2, 4))
    assert rows["close"]["difference"] == pytest.approx(2 / 60)
    assert rows["close"]["verdict"] == NOT_DISTINGUISHABLE
    assert (rows["far"]["b"], rows["far"]["c"]) == (1, 20)
    assert rows["far"]["p_value"] == pytest.approx(_exact_binomial_p(1, 20))
    assert rows["far"]["p_value"] < 0.05 and rows["far"]["verdict"] == "better than the baseline"
    low, high = rows["far"]["interval"]
    assert 0 < low < 19 / 60 < high
    assert rows["untested"]["verdict"] == "not tested yet"
    assert rows["split2"]["verdict"].startswith("not comparable")
    with pytest.raises(VidfuseError, match="baseline .*untested has no test results"):
        compare_to_baseline(runs[2], [baseline])
    with pytest.raises(VidfuseError, match=f"^{tmp_path / 'nowhere'} is not a vidfuse run folder"):
        compare_to_baseline(tmp_path / "nowhere", [baseline])  # not "has no test results: run test" on it


def test_report_command_prints_and_writes_table_comparison_and_curves(tmp_path, capsys):
    baseline = make_run(tmp_path / "runs", "baseline", correct=correctness(40))
    other = make_run(tmp_path / "runs", "other", lr=0.2, correct=correctness(41))
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "runs"), "--baseline", str(baseline), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run | architecture | head |" in printed
    assert "other vs baseline: +1.67 points" in printed and NOT_DISTINGUISHABLE in printed

    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["other", "baseline"]  # 19 vs 20 errors of 60
    assert table[0]["test top-1 err %"] == f"{100 * 19 / 60:.2f}" and table[0]["params (M)"] == "2.50"
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("| run |") and "McNemar p" in markdown
    for run_dir in (baseline, other):
        assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"curves: {run_dir / 'curves.png'}" in printed
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files

    # runs that hold the baseline alone: a sentence, not an empty comparison table
    assert main(["report", str(baseline), "--baseline", str(baseline), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Against the baseline baseline: the runs given hold no other run to compare with it." in printed
    assert "McNemar" not in printed and "McNemar" not in (out / "results.md").read_text()


def test_report_out_on_a_file_says_it_is_a_file(tmp_path, capsys):
    """It said "<file>/results.csv: File exists", which mkdir meant of the file given as --out."""
    run_dir = make_run(tmp_path / "runs", "one", correct=correctness(40))
    out = tmp_path / "notes.txt"
    out.write_text("kept")
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vidfuse: error: {out}: a file, not a folder, so {out / 'results.csv'} cannot be written"]
    assert out.read_text() == "kept"


def test_curves_figure_plots_the_epoch_metrics():
    records = [{"epoch": e, "train_acc": 0.5 + 0.15 * e, "val_clip_acc": 0.4, "val_video_acc": 0.45 + 0.1 * (e == 2),
                "train_loss": 3.0 - e, "val_loss": 2.5, "lr": 0.1 / 10 ** e} for e in (1, 2, 3)]
    figure = curves_figure(records, title="r")
    accuracy, loss, lr = figure.axes
    lines = {line.get_label(): line for line in accuracy.get_lines()}
    np.testing.assert_allclose(lines["train (clips)"].get_ydata(), [65, 80, 95])
    np.testing.assert_allclose(lines["val (videos)"].get_ydata(), [45, 55, 45])
    assert "best epoch 2" in accuracy.texts[0].get_text() and "train 80.0 %" in accuracy.texts[0].get_text()
    np.testing.assert_allclose(loss.get_lines()[0].get_ydata(), [2, 1, 0])
    assert lr.get_yscale() == "log"
    np.testing.assert_allclose(lr.get_lines()[0].get_ydata(), [0.01, 0.001, 0.0001])


def test_confusion_figure_is_row_normalised_and_lists_pairs():
    confusion = np.array([[8, 2, 0], [1, 0, 3], [0, 0, 0]])
    figure = confusion_figure(confusion, ["Archery", "Bowling", "Diving"], [(1, 2, 3), (0, 1, 2)])
    matrix_axes, pairs_axes = figure.axes[:2]
    image = matrix_axes.get_images()[0].get_array()
    np.testing.assert_allclose(image, [[0.8, 0.2, 0], [0.25, 0, 0.75], [0, 0, 0]])
    assert [t.get_text() for t in matrix_axes.get_yticklabels()] == ["Archery", "Bowling", "Diving"]
    listed = pairs_axes.texts[0].get_text().splitlines()
    assert listed == ["Bowling -> Diving: 3 (75 %)", "Archery -> Bowling: 2 (20 %)"]


def test_val_score_orders_by_accuracy_then_by_lower_loss():
    records = [
        {"val_video_acc": 0.5, "val_loss": 0.1},
        {"val_video_acc": 0.25, "val_loss": 0.01},
        {"val_video_acc": 0.25, "val_loss": 3.0},
        {"val_video_acc": 0.25, "val_loss": 8209.0},
        {"val_video_acc": 0.25, "val_loss": math.nan},
        {"val_video_acc": 0.125, "val_loss": 0.0},
    ]
    assert sorted(records, key=rundir.val_score, reverse=True) == records
    assert all(0 <= r["val_video_acc"] - rundir.val_score(r) < 1.001e-6 for r in records)  # the loss only breaks ties


def test_best_epoch_breaks_accuracy_ties_by_lower_val_loss(tmp_path):
    run = make_run(tmp_path, "tied", val_accs=(0.5, 0.8, 0.8, 0.7))  # val loss 1.5 / epoch
    assert results_table([run])[0]["best_epoch"] == 3
