"""`launch.py tune` on CPU with tiny trials: every trial runs, ASHA stops those behind, the table and best.yaml
are right, and a search interrupted after its first trial resumes and finishes.

Each trial is a Ray Train run (~15-20 s on 2 cores), so the module runs two searches: the smoke space (4 trials)
and a 2-trial search that is interrupted once.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vidfuse import config as config_lib
from vidfuse.cli import main
from vidfuse.commands import train as train_command
from vidfuse.engine import rundir
from vidfuse.tuning.asha import STATE_FILE
from vidfuse.tuning.space import load_space

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tune" / "smoke.yaml"


def _trial_runs(experiment: Path) -> dict[str, list[dict]]:
    """Trial id -> its epoch records, read straight from the run folders."""
    return {path.name: rundir.read_metrics(path) for path in sorted((experiment / "trials").iterdir())}


def _tune_results(experiment: Path, trial_id: str) -> list[dict]:
    """What Tune itself recorded for a trial (`<trial_id>/result.json`, one line per report it received)."""
    path = experiment / trial_id / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _asha_stops(experiment: Path) -> dict[str, bool]:
    """Trial id -> whether ASHA's rule at its first rung (epoch 1) stops it, replayed on the scores Tune received
    in the order the trials ran (one at a time, in trial order): a trial stops when its score is below the
    (1 - 1/rf) quantile of the scores recorded before it."""
    rf = load_space(SMOKE).asha.reduction_factor
    recorded: list[float] = []
    stops = {}
    for trial_id in sorted(path.name for path in (experiment / "trials").iterdir()):
        score = _tune_results(experiment, trial_id)[0]["val_score"]
        stops[trial_id] = bool(recorded) and score < np.nanpercentile(recorded, (1 - 1 / rf) * 100)
        recorded.append(score)
    return stops


@pytest.fixture(scope="module")
def smoke_search(ray_session, tiny_dataset, tmp_path_factory):
    """The smoke search (4 trials). ASHA can only stop a trial that is behind the ones before it at epoch 1, and
    whether one is depends on the scores: in free runs about one in 8 had nothing to stop. Deterministic trials
    (`run.deterministic`: the same clips in the same order) score the same in every run, so one seed decides it:
    seed 0 stops the third trial (measured twice, identical to the last digit). A machine whose arithmetic differs
    could score otherwise; then the next seed is tried (up to 3 runs), so that the tests see ASHA stop a trial."""
    for seed in range(3):
        storage = tmp_path_factory.mktemp("tune")
        code = main(["tune", "--space", str(SMOKE), "--data", str(tiny_dataset.parquet), "--storage", str(storage),
                     "--name", "smoke", "--set", f"run.seed={seed}", "--set", "run.deterministic=true"])
        if code != 0 or any(_asha_stops(storage / "smoke").values()):
            break
    return code, storage / "smoke"


def test_every_trial_runs_and_asha_stops_the_ones_behind(smoke_search):
    code, experiment = smoke_search
    assert code == 0
    runs = _trial_runs(experiment)
    assert len(runs) == 4  # one trial per head of the grid
    max_t = load_space(SMOKE).asha.max_t
    reported = {trial_id: [r["epoch"] for r in _tune_results(experiment, trial_id)] for trial_id in runs}
    assert all(epochs[-1] == len(epochs) for epochs in reported.values()), reported
    stops = _asha_stops(experiment)
    assert {trial_id: len(epochs) < max_t for trial_id, epochs in reported.items()} == stops, reported
    assert any(stops.values()), reported  # ASHA stopped at least one trial early ...
    assert max(len(epochs) for epochs in reported.values()) == max_t, reported  # ... and let the first run to the end
    for trial_id, records in runs.items():
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
        assert len(records) >= len(reported[trial_id])  # the run folder holds every epoch Tune saw
    # Each trial trained the values Tune chose for it (Tune's params.json beside our run folder).
    heads = []
    for trial_id in runs:
        params = json.loads((experiment / trial_id / "params.json").read_text())
        trained = rundir.read_config(experiment / "trials" / trial_id)
        assert (trained.optim.lr, trained.model.fusion) == (params["optim.lr"], params["model.fusion"])
        assert 0.01 <= trained.optim.lr <= 0.1
        assert trained.run.epochs == max_t and trained.model.depth == 10
        heads.append(trained.model.fusion)
    assert sorted(heads) == ["factorized", "gap", "hbp", "temporal"]
    assert (experiment / STATE_FILE).is_file()  # ASHA's rungs, in the folder Tune gave the trials (--resume)


def test_table_lists_every_trial_best_first(smoke_search):
    _, experiment = smoke_search
    runs = _trial_runs(experiment)
    with (experiment / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["run"] for row in rows) == sorted(runs)
    max_t = load_space(SMOKE).asha.max_t
    for row in rows:
        records = runs[row["run"]]
        best = max(r["val_video_acc"] for r in records)
        assert float(row["val video acc %"]) == pytest.approx(100 * best, abs=0.006)
        assert int(row["epochs"]) == len(records)
        seen = len(_tune_results(experiment, row["run"]))
        assert row["status"] == ("finished" if seen == max_t else f"stopped by ASHA at epoch {seen}")
    accuracies = [float(row["val video acc %"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    markdown = (experiment / "trials.md").read_text().splitlines()
    assert markdown[0].startswith("| run | status |") and len(markdown) == 2 + len(rows)


def test_best_yaml_is_the_best_trial_and_loads_into_train(smoke_search):
    _, experiment = smoke_search
    runs = _trial_runs(experiment)
    # best epoch: highest val video accuracy, equal accuracies ordered by lower val loss
    best_id = max(runs, key=lambda trial_id: max((r["val_video_acc"], -r["val_loss"]) for r in runs[trial_id]))
    best = config_lib.load(experiment / "best.yaml")
    trial = rundir.read_config(experiment / "trials" / best_id)
    assert best.run.name == "smoke-best" and best.run.storage == str(experiment.parent)
    trial.run.name, trial.run.storage = best.run.name, best.run.storage
    assert best == trial  # the winner's config, as a new run beside the experiment
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)  # `train --config best.yaml` needs no other argument
    args = parser.parse_args(["--config", str(experiment / "best.yaml")])
    assert config_lib.load(args.config) == best


def test_a_trial_that_diverged_says_so_and_never_wins(smoke_search, tmp_path):
    """A trial whose loss diverged ended normally for Tune (not retried); its status says where it stopped, and
    best.yaml goes to the best of the others even when its epochs before scored best."""
    from ray.tune.experiment import Trial

    from vidfuse.tuning.results import best_config, trial_rows
    from vidfuse.tuning.search import TrialOutcome

    _, experiment = smoke_search
    runs = _trial_runs(experiment)
    ranked = sorted(runs, key=lambda trial_id: max((r["val_video_acc"], -r["val_loss"]) for r in runs[trial_id]))
    winner, runner_up = ranked[-1], ranked[-2]
    outcomes = {trial_id: TrialOutcome(Trial.TERMINATED, len(_tune_results(experiment, trial_id)))
                for trial_id in runs}
    rundir.mark_stopped(experiment / "trials" / winner, rundir.DIVERGED,
                        "epoch 9 batch 1: the training loss is nan: ...")
    try:
        rows = trial_rows(outcomes, experiment, load_space(SMOKE).asha.max_t)
    finally:
        rundir.clear_stop_reasons(experiment / "trials" / winner)
    statuses = {row["run"]: row["status"] for row in rows}
    assert statuses[winner] == f"diverged in epoch {outcomes[winner].epochs + 1}"
    assert not any(status.startswith("diverged") for run, status in statuses.items() if run != winner)
    best = best_config(rows, storage=str(tmp_path), name="best")
    expected = rundir.read_config(experiment / "trials" / runner_up)
    expected.run.storage, expected.run.name = str(tmp_path), "best"
    assert best == expected


DAMAGED = "video v_a_g01_c01: one of its frames 1-8 does not decode (...): the data set is damaged; prepare it again"


def test_a_trial_that_met_vidfuses_own_error_gives_its_line(smoke_search):
    """An errored trial whose run kept vidfuse's own error (failed.txt) shows it as its status; an errored trial
    without one (any other error: Tune printed its traceback) reads `error`."""
    from ray.tune.experiment import Trial

    from vidfuse.tuning.results import trial_rows
    from vidfuse.tuning.search import TrialOutcome

    _, experiment = smoke_search
    damaged, other = sorted(_trial_runs(experiment))[:2]
    outcomes = {trial_id: TrialOutcome(Trial.ERROR if trial_id in (damaged, other) else Trial.TERMINATED, 1)
                for trial_id in _trial_runs(experiment)}
    rundir.mark_stopped(experiment / "trials" / damaged, rundir.FAILED, DAMAGED)
    try:
        rows = trial_rows(outcomes, experiment, load_space(SMOKE).asha.max_t)
    finally:
        rundir.clear_stop_reasons(experiment / "trials" / damaged)
    statuses = {row["run"]: row["status"] for row in rows}
    assert statuses[damaged] == f"error: {DAMAGED}" and statuses[other] == "error"


@pytest.mark.parametrize("fit_raises", [True, False])  # Ray Train's retry off (raises) or on (ends without error)
def test_a_trial_fails_with_its_runs_own_error_however_fit_ends(tmp_path, monkeypatch, fit_raises):
    """`run_trial` raises vidfuse's own error, the line its run kept, in place of the workers' error that fit()
    raises (so that the driver's console hides the traceback); any other error of fit() is left as it is."""
    from types import SimpleNamespace

    from vidfuse.engine import driver
    from vidfuse.errors import VidfuseError
    from vidfuse.tuning import search

    run_dir = tmp_path / "trial_1"
    run_dir.mkdir()

    class Trainer:
        def fit(self) -> None:
            if meets_damage:
                rundir.mark_stopped(run_dir, rundir.FAILED, DAMAGED)
            if fit_raises:
                raise RuntimeError("Training failed due to worker errors: ...")

    monkeypatch.setattr(driver, "build_trainer", lambda *args, **kwargs: Trainer())
    monkeypatch.setattr(search, "TuneReportCallback", object)  # outside a Tune session
    monkeypatch.setattr(search.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "trial_1"))
    space = load_space(SMOKE)

    def run() -> None:
        search.run_trial({"model.fusion": "gap", "optim.lr": 0.05}, space=space, trials_root=str(tmp_path))

    meets_damage = True
    with pytest.raises(VidfuseError) as error:
        run()
    assert str(error.value) == DAMAGED and error.value.__suppress_context__
    rundir.clear_stop_reasons(run_dir)
    meets_damage = False
    if fit_raises:
        with pytest.raises(RuntimeError, match="worker errors"):
            run()
    else:
        run()


RESUME_SPACE = """
config:
  model: {depth: 10, fusion_dim: 16}
  data: {sample_duration: 8, sample_size: 32, n_val_clips: 1, shuffle_buffer: 8}
  optim: {lr: 0.05, scheduler: constant}
  run: {batch_size: 8, workers: 1, cpus_per_worker: 1}
search:
  model.fusion: {grid: [gap, hbp]}
asha: {grace_period: 2, max_t: 2}
max_concurrent_trials: 1
"""


def _interrupt_when_a_trial_finishes(experiment: Path, done: threading.Event) -> threading.Thread:
    """Send this process one SIGINT (a Ctrl-C) as soon as Tune has recorded a trial as done; Tune then saves
    its state and stops the search."""

    def trial_done() -> bool:
        for path in experiment.glob("*/result.json"):
            try:
                if any(json.loads(line).get("done") for line in path.read_text().splitlines()):
                    return True
            except json.JSONDecodeError:  # a line being written; look again
                pass
        return False

    def watch() -> None:
        while not done.is_set():
            if trial_done():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_interrupted_search_resumes_and_finishes(ray_session, tiny_dataset, tmp_path, capsys):
    space_file = tmp_path / "resume.yaml"
    space_file.write_text(RESUME_SPACE)
    argv = ["tune", "--space", str(space_file), "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path),
            "--name", "resumable"]
    experiment = tmp_path / "resumable"
    done = threading.Event()
    watcher = _interrupt_when_a_trial_finishes(experiment, done)
    try:
        code = main(argv)
    finally:
        done.set()
        watcher.join()
    assert code == 130 and "--resume" in capsys.readouterr().err
    first = {trial_id: records for trial_id, records in _trial_runs(experiment).items() if len(records) == 2}
    assert len(first) == 1  # one trial had finished; the other had not
    (first_id,) = first
    first_metrics = (experiment / "trials" / first_id / rundir.METRICS).read_bytes()
    assert not (experiment / "trials.csv").exists()

    assert main(argv + ["--resume"]) == 0
    runs = _trial_runs(experiment)
    assert len(runs) == 2 and all([r["epoch"] for r in records] == [1, 2] for records in runs.values())
    assert (experiment / "trials" / first_id / rundir.METRICS).read_bytes() == first_metrics  # not trained again
    grid_ids = {p.name for p in experiment.iterdir() if (p / "params.json").is_file()}
    assert grid_ids == set(runs)
    with (experiment / "trials.csv").open() as f:
        assert sorted(row["run"] for row in csv.DictReader(f)) == sorted(runs)
    assert config_lib.load(experiment / "best.yaml").run.name == "resumable-best"


def test_resume_without_a_search_and_an_existing_search_are_clear_errors(tiny_dataset, tmp_path, capsys):
    argv = ["tune", "--space", str(SMOKE), "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path)]
    assert main(argv + ["--resume"]) == 2
    assert f"nothing to resume: {tmp_path / 'smoke'} holds no Tune search" in capsys.readouterr().err
    (tmp_path / "smoke").mkdir()
    assert main(argv) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err


def test_missing_or_unusable_data_set_is_one_line_before_any_trial(tmp_path, capsys):
    none = tmp_path / "none.parquet"
    code = main(["tune", "--space", str(SMOKE), "--data", str(none), "--storage", str(tmp_path)])
    assert code == 2 and capsys.readouterr().err.strip() == f"vidfuse: error: data set not found: {none}"
    text = tmp_path / "text.pt"
    text.write_text("not a data set")
    code = main(["tune", "--space", str(SMOKE), "--data", str(text), "--storage", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(text) in err[0]
    assert not (tmp_path / "smoke").exists()  # no search started


@pytest.fixture(scope="module")
def one_split_dataset(tiny_dataset, tmp_path_factory):
    """The tiny data set's videos prepared as a `folder` data set: split 1 only."""
    from vidfuse.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("one-split") / "data.parquet"
    prepare_dataset(dataset="folder", splits=None, frames=tiny_dataset.frames_root, out=out, short_side=48,
                    workers=1, progress=False, val_fraction=0.25, test_fraction=0.25)
    return out


@pytest.mark.parametrize("search, error", [
    ("data.split: {grid: [1, 2]}", "trials with data.split=2: {data} has no split 2 (it has: split1)"),
    ("run.batch_size: {randint: [4, 64]}", "trials with run.batch_size=64: {data}: split 1 has "),
    ("data.path: {choice: [a, b]}", "{space}: data.path cannot be searched"),
])
def test_the_data_set_is_checked_for_every_searched_split_and_batch_before_any_trial(search, error,
                                                                                      one_split_dataset, tmp_path,
                                                                                      capsys):
    """The check judged the base config alone: a searched split the data set lacks, or a batch bigger than its train
    list, failed only inside the trials."""
    space = tmp_path / "space.yaml"
    searched_key = search.split(":")[0].split(".")[1]  # no longer fixed in the space's config
    space.write_text(SMOKE.read_text().replace("  optim.lr: {loguniform: [0.01, 0.1]}", f"  {search}")
                     .replace(f"{searched_key}: 4, ", ""))
    code = main(["tune", "--space", str(space), "--data", str(one_split_dataset), "--storage", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("vidfuse: error: " + error.format(data=one_split_dataset.resolve(), space=space)), err
    assert "not one full batch" in err[0] or "batch_size" not in search
    assert not (tmp_path / "space").exists()  # no search started


def test_split_flag_and_a_searched_split_are_refused_together(tiny_dataset, tmp_path, capsys):
    """--split was set into the base config and the searched data.split overrode it, silently."""
    space = tmp_path / "space.yaml"
    space.write_text(SMOKE.read_text().replace("  optim.lr: {loguniform: [0.01, 0.1]}", "  data.split: {grid: [1, 2]}"))
    argv = ["tune", "--space", str(space), "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path)]
    assert main(argv + ["--split", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vidfuse: error: --split 2 fixes the split that {space} searches (data.split): keep one"]
    assert not (tmp_path / "space").exists()


def test_asha_keeps_its_rungs_across_a_restored_search(tmp_path):
    """Tune pickles the scheduler with the Tuner when the search starts and gives that one back on restore: the
    scores reported before the interruption were lost, so a trial behind them was no longer stopped. The rungs are
    kept in the experiment folder that Tune gives the trials, so they follow the folder when it is moved."""
    import pickle
    import shutil
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from vidfuse.tuning.asha import ResumableASHA

    def fresh() -> ResumableASHA:
        return ResumableASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, metric="val_score",
                             mode="max")

    def trials_in(experiment: Path) -> list[SimpleNamespace]:
        return [SimpleNamespace(trial_id=f"t_0000{i}", remote_experiment_path=str(experiment)) for i in range(3)]

    as_started = pickle.dumps(fresh())  # what Tuner.restore unpickles
    first, moved = tmp_path / "first" / "search", tmp_path / "moved" / "search"
    first.mkdir(parents=True)
    trials = trials_in(first)
    asha = fresh()
    for trial, score in zip(trials[:2], (0.9, 0.8)):
        asha.on_trial_add(None, trial)
        asha.on_trial_result(None, trial, {"epoch": 1, "val_score": score})
    assert (first / STATE_FILE).is_file()
    # the search stops here and its folder is moved; the restored search gets the scheduler as it started, then
    # a trial that is behind
    shutil.move(first, moved)
    trials = trials_in(moved)
    restored = pickle.loads(as_started)
    for trial in trials:
        restored.on_trial_add(None, trial)
    assert restored.on_trial_result(None, trials[2], {"epoch": 1, "val_score": 0.5}) == TrialScheduler.STOP
    assert restored.on_trial_result(None, trials[0], {"epoch": 2, "val_score": 0.95}) == TrialScheduler.CONTINUE
    assert not first.exists() and (moved / STATE_FILE).is_file()  # it went on writing in the moved folder
    unsaved, behind = fresh(), trials_in(tmp_path / "new")[2]  # nothing saved: as plain ASHA did, it went on
    unsaved.on_trial_add(None, behind)
    assert unsaved.on_trial_result(None, behind, {"epoch": 1, "val_score": 0.5}) == TrialScheduler.CONTINUE


def test_trials_on_several_splits_get_a_mean_row_and_the_best_trial_wins(tmp_path):
    """A search over data.split: the table crashed (KeyError) on report's mean ± std row of the trials equal but
    for their split, which no Tune trial owns."""
    from test_report import make_run

    from vidfuse.tuning import results, search

    experiment = tmp_path / "exp"
    for trial_id, split, val_accs in (("t_00000", 1, (0.4, 0.5)), ("t_00001", 2, (0.3, 0.7))):
        make_run(search.trials_dir(experiment), trial_id, split=split, val_accs=val_accs)
    outcomes = {trial_id: search.TrialOutcome("TERMINATED", 2) for trial_id in ("t_00000", "t_00001")}
    rows = results.trial_rows(outcomes, experiment, max_t=2)
    assert [(row["run"], row.get("status")) for row in rows] == [
        ("t_00001", results.FINISHED), ("mean ± std: t_00000, t_00001", None), ("t_00000", results.FINISHED)]
    assert rows[1]["val_video_acc"].mean == pytest.approx(0.6)  # the best epochs: 0.5 and 0.7
    best = results.best_config(rows, storage=str(tmp_path), name="best")
    assert (best.data.split, best.run.name) == (2, "best")


def test_a_storage_uri_is_refused_as_train_refuses_it(tiny_dataset, tmp_path, monkeypatch, capsys):
    """Not made a local folder named `s3:` in the working directory."""
    monkeypatch.chdir(tmp_path)
    code = main(["tune", "--space", str(SMOKE), "--data", str(tiny_dataset.parquet), "--storage", "s3://bucket/exp"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("vidfuse: error: run.storage=s3://bucket/exp: a URI is not supported"), err
    assert list(tmp_path.iterdir()) == []


def test_experiment_name_and_gpus_the_local_ray_lacks_are_refused(tiny_dataset, ray_session, tmp_path, capsys):
    argv = ["tune", "--space", str(SMOKE), "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path / "runs")]
    assert main(argv + ["--name", "../escaped"]) == 2
    assert "--name='../escaped' must name one folder" in capsys.readouterr().err
    assert main(argv + ["--set", "run.gpus_per_worker=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x run.gpus_per_worker=1 needs 1 GPUs but the local Ray has 0" in err[0]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs" / "smoke" / "trials").exists()
