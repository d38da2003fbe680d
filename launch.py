"""The one entry point: `python launch.py SUBCOMMAND ...` (see `python launch.py --help`)."""

import sys

from vidfuse.cli import main

if __name__ == "__main__":
    sys.exit(main())
