"""vidfuse checkpoints: one plain dict saved with `torch.save`, loadable with `torch.load(weights_only=True)`.

Layout: `{"model": state_dict, "optimizer", "scheduler", "scaler": state dicts or None, "epoch": int (last
finished, 1-based), "config": Config.to_dict(), "labels": [class names], "vidfuse_version": str, "metrics":
{...}}`. Files are written under a temporary name and renamed, so a crash never leaves half a checkpoint.
A run folder holds `best.pt` (best val video accuracy, ties: lower val loss: `rundir.val_score`) and `last.pt`,
which `test` and `predict` read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vidfuse.errors import VidfuseError, first_line
from vidfuse.files import atomic_output

CHECKPOINT_NAMES = ("best", "last")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write `state` to `path`."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def copy_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically copy a saved checkpoint file (no second serialisation of the same state)."""
    with atomic_output(path) as tmp:
        shutil.copyfile(source, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (or any weights-only file) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise VidfuseError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors: not a checkpoint at all
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise VidfuseError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise VidfuseError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict of weights)")
    return state


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """`best` / `last` inside a run folder, or an explicit path."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt" if which in CHECKPOINT_NAMES else Path(which)
    if not path.is_file():
        raise VidfuseError(f"checkpoint not found: {path}")
    return path
