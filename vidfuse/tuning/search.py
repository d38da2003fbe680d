"""Run a Ray Tune search: one Ray Train run per trial, ASHA on val video accuracy, resumable after an interruption.

Ray Train V2 cannot be wrapped by `Tuner(TorchTrainer(...))`; each trial is a small function that builds its own
`TorchTrainer` (with `TuneReportCallback`, so every epoch's report reaches Tune and ASHA) and calls `fit()`.

Experiment folder `<storage>/<name>/`:

    trials/<trial_id>/   one vidfuse run folder per trial (config.yaml, metrics.jsonl, best.pt, ...)
    <trial_id>/          Tune's own record of the trial (params.json, result.json)
    trials.md trials.csv best.yaml      written by `results` when the search ends
    asha_state.pkl       ASHA's rungs, for `--resume` (`asha.ResumableASHA`)

Trial ids are kept by `Tuner.restore`, and a trial's run folder is named by its id, so a trial that was running
when the search stopped resumes its Train run from the last checkpoint instead of starting again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from vidfuse.config import Config
from vidfuse.engine import rundir
from vidfuse.engine.ray_runtime import ensure_ray as start_ray
from vidfuse.errors import VidfuseError
from vidfuse.tuning.asha import ResumableASHA
from vidfuse.tuning.space import TIME_ATTR, SearchSpace

TRIALS = "trials"  # sub-folder of the experiment that holds the trials' run folders
TRIAL_DRIVER_CPU = 0.25  # the trial function only drives its TorchTrainer; its workers reserve their own CPUs


def trials_dir(experiment: Path) -> Path:
    return experiment / TRIALS


def _trial_id(trial: Trial) -> str:
    return trial.trial_id


def run_trial(params: dict[str, Any], *, space: SearchSpace, trials_root: str) -> None:
    """One trial: the space's config with the sampled `params`, trained as the run `<trials_root>/<trial_id>`."""
    from vidfuse.engine.driver import build_trainer  # torch and the models load in the trial's process only

    config = space.trial_config(params)
    config.run.storage = trials_root
    config.run.name = tune.get_context().get_trial_id()
    # resume=True: a restarted trial continues its own run folder (a new trial has none yet and starts fresh).
    trainer = build_trainer(config, callbacks=[TuneReportCallback()], resume=True)
    try:
        trainer.fit()
    except Exception:
        _raise_own_error(config)
        raise
    _raise_own_error(config)


def _raise_own_error(config: Config) -> None:
    """Fail the trial with vidfuse's own error, the one line its run kept (train_loop_per_worker), if it met one:
    whether Ray Train's retry ended without an error (`run.max_failures` > 0) or `fit()` raised the workers'
    errors. The driver's console then hides the error's traceback (`ray_console`), and the trial table shows the
    line."""
    failed = rundir.stop_reason(rundir.run_dir_of(config), rundir.FAILED)
    if failed is not None:
        raise VidfuseError(failed) from None


def _trainable(space: SearchSpace, experiment: Path):
    trainable = tune.with_parameters(run_trial, space=space, trials_root=str(trials_dir(experiment)))
    return tune.with_resources(trainable, {"CPU": TRIAL_DRIVER_CPU})


def ensure_ray(space: SearchSpace) -> None:
    """Join the cluster, or start a local Ray sized for the concurrent trials plus Ray Data."""
    run = space.base.run
    start_ray(space.max_concurrent_trials * (run.workers * run.cpus_per_worker + TRIAL_DRIVER_CPU))


def run_search(space: SearchSpace, experiment: str | os.PathLike, *, samples: int = 1,
               resume: bool = False) -> dict[str, TrialOutcome]:
    """Run (or with `resume`, continue) the search whose experiment folder is `experiment` (absolute path), and
    return how each trial ended (see `trial_outcomes`).

    `samples` draws of the space (times every `grid` combination) are trained; on `resume` the restored search
    keeps its own trials and `samples` is not used. Starts or joins Ray when it is not initialised."""
    experiment = Path(experiment)
    if resume and not tune.Tuner.can_restore(experiment):
        raise VidfuseError(f"nothing to resume: {experiment} holds no Tune search")
    if not resume and experiment.exists():
        raise VidfuseError(f"search folder {experiment} already exists: pass --resume to continue it, "
                           "or another --name")
    if samples < 1:
        raise VidfuseError(f"--samples={samples} must be at least 1")
    ensure_ray(space)
    from vidfuse.engine.driver import check_resources  # torch: only once the inputs are checked

    check_resources(space.largest_trial(), driver_cpus=TRIAL_DRIVER_CPU)
    trainable = _trainable(space, experiment)
    if resume:
        # Errored trials run again too: their Train runs continue from their last checkpoints (and find their data
        # again: a trial that met vidfuse's own error, such as a damaged data set, tries once more).
        for run_dir in trials_dir(experiment).glob("*/"):
            rundir.clear_stop_reasons(run_dir, markers=(rundir.FAILED,))  # a diverged trial stays diverged
        tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True).fit()
        return trial_outcomes(experiment)
    asha = space.asha
    tuner = tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=rundir.VAL_SCORE,
            mode="max",
            scheduler=ResumableASHA(time_attr=TIME_ATTR, max_t=asha.max_t, grace_period=asha.grace_period,
                                    reduction_factor=asha.reduction_factor),
            # The same draws for the same seed. The concurrency limit goes here: TuneConfig's max_concurrent_trials
            # is ignored when a BasicVariantGenerator is passed.
            search_alg=BasicVariantGenerator(max_concurrent=space.max_concurrent_trials,
                                             random_state=space.base.run.seed),
            num_samples=samples,
            trial_name_creator=_trial_id,
            trial_dirname_creator=_trial_id,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            failure_config=tune.FailureConfig(max_failures=space.base.run.max_failures),
        ),
    )
    tuner.fit()
    return trial_outcomes(experiment)


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended, as Tune saved it."""

    status: str  # TERMINATED (completed or stopped by ASHA), ERROR, or PENDING when an interrupt cut it off
    epochs: int  # epochs whose reports Tune received: where ASHA stopped it (its run may have trained a bit further)


def trial_outcomes(experiment: str | os.PathLike) -> dict[str, TrialOutcome]:
    """Trial id -> its outcome, read from the experiment folder. (The in-memory results of an interrupted `fit()`
    call every stopped trial TERMINATED, so only the saved state tells an interrupted search from a finished one.)"""
    return {trial.trial_id: TrialOutcome(trial.status, int(trial.last_result.get(TIME_ATTR, 0)))
            for trial in tune.ExperimentAnalysis(str(experiment)).trials}


def finished(outcomes: dict[str, TrialOutcome]) -> bool:
    """Whether every trial ended (completed, stopped by ASHA, or failed) rather than being cut off by an interrupt."""
    return all(outcome.status in (Trial.TERMINATED, Trial.ERROR) for outcome in outcomes.values())
