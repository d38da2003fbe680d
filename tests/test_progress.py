"""The progress line of `prepare` and `test` (vidfuse/progress.py), on a scripted clock."""

from __future__ import annotations

import pytest

from vidfuse import progress
from vidfuse.progress import Progress


@pytest.fixture
def clock(monkeypatch):
    """A clock the test sets: `clock.now` seconds."""

    class Clock:
        now = 100.0

    monkeypatch.setattr(progress.time, "monotonic", lambda: Clock.now)
    return Clock


def test_the_line_is_redrawn_at_most_every_interval_and_ends_with_a_newline(clock, capsys):
    with Progress(10, label="test", unit="clips", interval=0.5) as meter:
        clock.now += 0.2
        meter.update(1)  # too soon: nothing drawn
        clock.now += 0.8
        meter.update(4)  # 4 clips in 1 s: 6 to go at 4 a second
        clock.now += 0.1
        meter.update(5)  # too soon again
        clock.now += 1.4
        meter.update(10)  # the last one is always drawn, then the line ends: 10 clips in 2.5 s
    assert capsys.readouterr().err == ("\rtest: 4/10 clips, 4.0 clips/s, ETA 2 s "
                                       "\rtest: 10/10 clips, 4.0 clips/s, ETA 0 s \n")


def test_a_line_left_unfinished_by_an_error_is_ended_so_the_error_gets_its_own_line(clock, capsys):
    with pytest.raises(RuntimeError), Progress(8, label="prepare", unit="videos") as meter:
        clock.now += 2.0
        meter.update(2)
        raise RuntimeError("damaged")
    assert capsys.readouterr().err == "\rprepare: 2/8 videos, 1.0 videos/s, ETA 6 s \n"


def test_a_disabled_meter_prints_nothing(clock, capsys):
    with Progress(3, label="prepare", unit="videos", enabled=False) as meter:
        clock.now += 1.0
        meter.update(3)
    assert capsys.readouterr().err == ""
