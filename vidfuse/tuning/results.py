"""What a finished search leaves behind: the trial table (the `report` table plus each trial's status) and
`best.yaml`, the winning trial's config, which `launch.py train --config best.yaml` trains as is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial

from vidfuse import config as config_lib
from vidfuse.engine import rundir
from vidfuse.errors import VidfuseError
from vidfuse.report.tables import RESULT_COLUMNS, Column, markdown_table, results_table, write_tables
from vidfuse.tuning.search import TrialOutcome, trials_dir

TRIAL_COLUMNS = (RESULT_COLUMNS[0], Column("status", "status"), *RESULT_COLUMNS[1:])
BEST = "best.yaml"
FINISHED, STOPPED, ERROR, DIVERGED = "finished", "stopped by ASHA", "error", "diverged"


@dataclass(frozen=True)
class SearchOutputs:
    table_md: Path
    table_csv: Path
    rows: list[dict[str, Any]]  # the table rows, best first


def trial_rows(outcomes: dict[str, TrialOutcome], experiment: Path, max_t: int) -> list[dict[str, Any]]:
    """One row per trial, sorted like `report` (best val video accuracy first), failed trials last; trials equal
    but for their split (a search over `data.split`) get `report`'s mean ± std row too."""
    run_dirs = sorted(path.parent for path in trials_dir(experiment).glob(f"*/{rundir.CONFIG}"))
    rows = results_table(run_dirs) if run_dirs else []
    for row in rows:
        if row["path"]:  # a trial's own row, not a mean over splits
            row["status"] = trial_status(outcomes[row["run"]], max_t, diverged=row["diverged"], failed=row["failed"])
    failed_early = sorted(set(outcomes) - {row["run"] for row in rows})  # failed before its run folder existed
    return rows + [{"run": trial_id, "status": trial_status(outcomes[trial_id], max_t)} for trial_id in failed_early]


def trial_status(outcome: TrialOutcome, max_t: int, *, diverged: bool = False, failed: str | None = None) -> str:
    """A trial's status in the table. A trial whose training loss diverged ended without error (Ray Train does not
    retry it) after reporting `outcome.epochs` epochs. An errored trial whose run met vidfuse's own error (`failed`,
    such as a damaged data set) gives its one line, which the console showed without Tune's traceback
    (`ray_console`); for any other error, Tune's traceback and error file tell."""
    if outcome.status == Trial.ERROR:
        return f"{ERROR}: {failed}" if failed else ERROR
    if diverged:
        return f"{DIVERGED} in epoch {outcome.epochs + 1}"
    return FINISHED if outcome.epochs >= max_t else f"{STOPPED} at epoch {outcome.epochs}"


def best_config(rows: list[dict[str, Any]], storage: str, name: str) -> config_lib.Config:
    """The config of the trial with the best epoch (highest val video accuracy, ties: lower val loss), as a new
    run `<storage>/<name>`. A trial that diverged is left out: its settings are not safe to train again."""
    best_scores = {row["path"]: rundir.val_score(rundir.best_record(rundir.read_metrics(row["path"])))
                   for row in rows
                   if row.get("path") and row.get("val_video_acc") is not None and not row["diverged"]}
    if not best_scores:
        raise VidfuseError("no trial finished an epoch: no best config (see the trials' statuses and errors above)")
    config = rundir.read_config(max(best_scores, key=best_scores.get))
    config.run.storage, config.run.name = storage, name
    return config


def write_trial_tables(outcomes: dict[str, TrialOutcome], experiment: str | os.PathLike, *,
                       max_t: int) -> SearchOutputs:
    """Write `trials.md` and `trials.csv` into the experiment folder."""
    experiment = Path(experiment)
    rows = trial_rows(outcomes, experiment, max_t)
    csv_path, md_path = write_tables(rows, experiment, stem="trials", columns=TRIAL_COLUMNS)
    return SearchOutputs(table_md=md_path, table_csv=csv_path, rows=rows)


def write_best_config(outputs: SearchOutputs, *, storage: str) -> Path:
    """Write `best.yaml` (see `best_config`) next to the trial tables and return its path."""
    experiment = outputs.table_md.parent
    config = best_config(outputs.rows, storage=storage, name=f"{experiment.name}-best")
    best_path = experiment / BEST
    config_lib.save(config, best_path)  # atomic: temporary name, then rename
    return best_path


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The trial table as markdown, for the terminal."""
    return markdown_table(rows, TRIAL_COLUMNS)
