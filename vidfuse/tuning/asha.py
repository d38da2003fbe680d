"""ASHA whose rungs survive an interrupted search: `tune --resume` goes on stopping the trials that fall behind.

Ray 2.60's Tune controller leaves its scheduler out of the experiment state it saves, and `Tuner.restore` gives
back the scheduler as it was when the search began (pickled with the Tuner): ASHA's record of every score reported
before the interruption is lost. The resumed search then compared only what trials reported after the resume, and
trials the first part would have stopped ran on to `max_t` (an interrupted smoke search ran all 4 trials to the
end, where the uninterrupted one stopped 2 at epoch 1).

`ResumableASHA` writes ASHA's own state (`AsyncHyperBandScheduler.save`, its rungs and the trials' brackets) into the
experiment folder after every result it judges, atomically, and reads it back (`restore`) the first time a restored
search hands it a trial. A search that starts afresh finds no state file: its experiment folder is new. The folder is
the one Tune gives the trials (`Trial.remote_experiment_path`), so a search whose folder was moved before `--resume`
finds its rungs there and goes on writing there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

from vidfuse.files import atomic_output

STATE_FILE = "asha_state.pkl"  # in the experiment folder


class ResumableASHA(ASHAScheduler):
    """`ASHAScheduler` (same keywords) that saves its rungs in the experiment folder and restores them after an
    interruption."""

    def __init__(self, **asha: Any) -> None:
        super().__init__(**asha)
        # STATE_FILE in the experiment folder, learnt from the first trial added. None when pickled with the Tuner,
        # so a restored search reads the saved state once.
        self._state_path: str | None = None

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if self._state_path is None:
            state_path = os.path.join(trial.remote_experiment_path, STATE_FILE)
            if Path(state_path).is_file():
                self.restore(state_path)  # this object's __dict__ as saved, with the folder's path at that time
            self._state_path = state_path
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        self._save_state()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save_state()

    def _save_state(self) -> None:
        with atomic_output(self._state_path) as tmp:
            self.save(str(tmp))
