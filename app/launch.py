"""Entry point of the ``fetaliqa-gui`` launcher: the same as ``fetaliqa gui [args]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from fetaliqa_core.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["gui", *args])


if __name__ == "__main__":
    sys.exit(main())
