"""Atomic outputs: every config, checkpoint, table, prediction file and picture is written under a temporary
name, then renamed.

A crash or a Ctrl-C therefore never leaves half a file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that infer formats still work).

    When the block finishes it is renamed to `path`; when it raises, the temporary file is removed. An OSError
    names `path`, which the user gave, not the temporary name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    finally:
        if tmp.is_file():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)
