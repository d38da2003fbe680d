"""Command line: `python launch.py SUBCOMMAND ...`.

Each subcommand lives in `vidfuse/commands/<name>.py`, which defines `add_arguments(parser)` and
`run(args) -> int`. Only the chosen subcommand's module is imported, so `--help` stays fast. Bad input raises
`VidfuseError`; it is printed here as one line (`vidfuse: error: ...`) with exit status 2, as is an `OSError`
(with its file name) that no check foresaw. The line comes last: the Ray that the command started or joined
is shut down first, so that the log lines its workers are still streaming to this process cannot follow it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vidfuse.engine.ray_console import skip_ray_worker_lines
from vidfuse.errors import first_line, own_error

COMMANDS = {
    "prepare": "official split files + videos or frame folders -> Parquet data set",
    "train": "train a model on Ray Train (local or on a cluster)",
    "test": "score every test video of a run; writes RUN_DIR/test/",
    "tune": "Ray Tune search over a space in tune/*.yaml",
    "report": "results table, curves and significance tests over runs",
    "predict": "top-5 labels for videos or frame folders with a trained run",
    "models": "table of backbones x heads with parameters and GFLOPs",
    "demo": "synthetic data -> prepare -> train -> test -> report, all local",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line (argparse's default prints the usage block first)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> int:
    """Print `message` as the command's last line (see the module docstring); the exit status of bad input."""
    ray_runtime = sys.modules.get("vidfuse.engine.ray_runtime")  # imported only by commands that use Ray
    if ray_runtime is not None:
        ray_runtime.release_ray()
    print(f"vidfuse: error: {message}", file=sys.stderr)
    return 2


def _top_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="launch.py",
        description="vidfuse: video action recognition with bilinear fusion heads on Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items()),
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="SUBCOMMAND", help="one of the commands below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # prints usage and exits 2 for a missing or unknown subcommand, 0 for --help
        return 2
    name, rest = argv[0], argv[1:]
    skip_ray_worker_lines()  # before the command imports Ray
    module = importlib.import_module(f"vidfuse.commands.{name}")
    parser = OneLineErrorParser(prog=f"launch.py {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("vidfuse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `launch.py models | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as the Python docs advise on SIGPIPE
        return 0
    except Exception as exc:
        own = own_error(exc)  # one raised in a Ray task arrives in Ray's RayTaskError, whose text is a traceback
        if own is not None:
            return _fail(first_line(own))
        if isinstance(exc, OSError):  # a path the checks did not foresee (not a folder, no permission, disk full)
            where = f"{exc.filename}: " if exc.filename else ""
            return _fail(f"{where}{exc.strerror or exc}")
        raise
