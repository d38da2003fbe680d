"""vidfuse's own files: written atomically, read with one-line errors.

Every config, checkpoint, table, metrics record, prediction file and picture is written under a temporary name,
then renamed: a crash or a Ctrl-C never leaves half a file under the final name. A text or JSON file that does not
read all the same (edited by hand, damaged on disk, not UTF-8) is one line that names it, not a traceback.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidfuse.errors import VidfuseError


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that infer formats still work).

    When the block finishes it is renamed to `path`; when it raises, the temporary file is removed. An OSError
    names `path`, which the user gave, not the temporary name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    blocking_file = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)
    if blocking_file is not None:  # mkdir would say "File exists", naming the file to write
        raise NotADirectoryError(errno.ENOTDIR, f"a file, not a folder, so {path} cannot be written",
                                 str(blocking_file))
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
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def read_text(path: str | os.PathLike) -> str:
    """The text of the file `path`, which must be UTF-8 (as every text file vidfuse reads or writes is)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VidfuseError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in the file `path`."""
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise VidfuseError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise VidfuseError(f"{path}: not a JSON object (a {type(value).__name__})")
    return value


def check_numbers(path: str | os.PathLike, record: dict[str, Any], keys: Iterable[str], *, writer: str,
                  where: str = "") -> None:
    """Raise unless each of `keys` that `record` (read from `path`) holds is a number (int or float, not bool): a
    file that vidfuse writes, changed by a hand edit or a damaged disk, is one line naming the file, the key and its
    value, not a TypeError where a number is used. `where` places the record in the file ("record 3: ")."""
    for key in keys:
        if key in record and (isinstance(record[key], bool) or not isinstance(record[key], (int, float))):
            raise VidfuseError(f"{path}: {where}`{key}` is {record[key]!r}, not a number: not what {writer} writes")


def read_json_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON object on each non-blank line of the file `path` (JSON Lines), in order."""
    values = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VidfuseError(f"{path}: line {number} is not valid JSON ({exc.msg}: column {exc.colno})") from None
            if not isinstance(value, dict):
                raise VidfuseError(f"{path}: line {number} is not a JSON object (a {type(value).__name__})")
            values.append(value)
    return values
