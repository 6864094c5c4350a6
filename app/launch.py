"""Entry point of the ``fetaliqa-gui`` launcher: the same as ``fetaliqa gui [args]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from app import cli
    from fetaliqa_core.cli import run_command

    return run_command(cli, argv, prog="fetaliqa-gui")


if __name__ == "__main__":
    sys.exit(main())
