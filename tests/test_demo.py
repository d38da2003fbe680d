"""`demo`: its arguments are checked before it replaces the folder of the previous demo (or renders anything)."""

from __future__ import annotations

import pytest

from vidfuse.cli import main
from vidfuse.commands.demo import MARKER


@pytest.mark.parametrize("argv, message", [
    (["--classes", "99"], "num_classes=99 must be between 1 and 8"),
    (["--videos-per-class", "2"], "videos_per_class=2 must be at least"),
    (["--epochs", "0"], "run.epochs=0 must be at least 1"),
])
def test_bad_arguments_leave_the_previous_demo_as_it_was(tmp_path, capsys, argv, message):
    out = tmp_path / "demo_output"
    (out / "runs" / "demo").mkdir(parents=True)
    (out / MARKER).write_text("made by `launch.py demo`\n")
    (out / "runs" / "demo" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = sorted(path.relative_to(out) for path in out.rglob("*"))

    assert main(["demo", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidfuse: error: ") and message in err[0], err
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before
    assert (out / "runs" / "demo" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
