"""Finding run folders and reading what a report needs from each.

`report` accepts run folders and also folders of run folders: a Ray Tune experiment keeps one vidfuse run
folder per trial (e.g. `<experiment>/trials/<trial>/config.yaml`), so run folders are looked for one and two
levels below a folder that is not a run itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidfuse import config as config_lib
from vidfuse.engine import rundir
from vidfuse.errors import VidfuseError
from vidfuse.report import testdir


def find_run_dirs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path as a run folder, or the run folders one or two levels below it (a Tune experiment), in order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise VidfuseError(f"{path} is a file, not a run folder" if path.exists()
                               else f"run folder not found: {path}")
        if (path / rundir.CONFIG).is_file():
            found.append(path)
            continue
        below = sorted(p.parent for pattern in ("*", "*/*") for p in path.glob(f"{pattern}/{rundir.CONFIG}"))
        if not below:
            raise VidfuseError(
                f"{path} is not a vidfuse run folder (no {rundir.CONFIG}) and holds none one or two levels below")
        found.extend(below)
    return list(dict.fromkeys(found))  # a run named twice is reported once


@dataclass
class RunRecord:
    """What one run folder says about itself: config, meta data, epoch metrics, test results (if tested) and
    why it diverged or failed (if it did)."""

    path: Path
    config: config_lib.Config
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] | None = None  # test/summary.json, None when `test` has not run
    diverged: str | None = None  # why its training loss diverged (diverged.txt), None when it did not
    failed: str | None = None  # vidfuse's own error that stopped it (failed.txt, a damaged data set), None when none

    @property
    def name(self) -> str:
        return self.path.name


def read_run(path: str | os.PathLike) -> RunRecord:
    """Read one run folder (clear error when it is not one)."""
    path = rundir.require_run_dir(path)
    return RunRecord(
        path=path,
        config=rundir.read_config(path),
        meta=rundir.read_meta(path),
        metrics=rundir.read_metrics(path),
        test=testdir.read_summary(path),
        diverged=rundir.stop_reason(path, rundir.DIVERGED),
        failed=rundir.stop_reason(path, rundir.FAILED),
    )
