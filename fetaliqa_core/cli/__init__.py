"""``fetaliqa`` command line: parses arguments and calls the layers that do the work.

Every subcommand lives in its own module exposing ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only to build the parser; heavy imports (torch,
Qt) happen inside ``run`` so that ``fetaliqa --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fetaliqa_core import __version__
from fetaliqa_core.errors import FetalIQAError, exit_code

# name -> module. ``gui`` and the training commands live outside fetaliqa_core (the app and
# training packages depend on the core, never the other way round), so they are looked up by
# name at run time.
COMMANDS: dict[str, str] = {
    "gui": "app.cli",
    "demo": "app.cli_demo",
    "synth": "fetaliqa_core.cli.synth",
    "score": "fetaliqa_core.cli.score",
    "ac": "fetaliqa_core.cli.ac",
    "train": "training.cli_train",
    "eval": "training.cli_eval",
    "bench": "fetaliqa_core.cli.bench",
    "review": "fetaliqa_core.cli.review",
}
DEFAULT_COMMAND = "gui"


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only tolerate the command's own module being absent (a partial install);
            # a missing dependency inside it is a real error and must surface.
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetaliqa",
        description="Find the frames of a fetal ultrasound blind sweep that show the abdomen "
        "well enough to measure its circumference.",
    )
    parser.add_argument("--version", action="version", version=f"fetaliqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    if not argv:
        return [DEFAULT_COMMAND]
    first = argv[0]
    if first in COMMANDS or first.startswith("-"):
        return argv
    # ``fetaliqa case.mha`` opens the file in the app.
    return [DEFAULT_COMMAND, *argv]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_with_default_command(argv))
    try:
        return int(args._run(args) or 0)
    except FetalIQAError as exc:
        print(f"fetaliqa: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("fetaliqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
