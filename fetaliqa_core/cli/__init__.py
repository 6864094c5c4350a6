"""``fetaliqa`` command line: parses arguments and calls the layers that do the work.

Every subcommand lives in its own module exposing ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only to build the parser; heavy imports (torch,
Qt) happen inside ``run`` so that ``fetaliqa --help`` stays instant. The core's commands are
listed below; the viewer and training register theirs as entry points (``fetaliqa.commands``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from fetaliqa_core import __version__, plugins
from fetaliqa_core.errors import FetalIQAError, exit_code

# The core's own commands. Other packages add theirs (the viewer, training) as entry points in the
# group ``fetaliqa.commands`` (fetaliqa_core.plugins): the core depends on none of them.
BUILTIN_COMMANDS: dict[str, str] = {
    "synth": "fetaliqa_core.cli.synth",
    "score": "fetaliqa_core.cli.score",
    "ac": "fetaliqa_core.cli.ac",
    "bench": "fetaliqa_core.cli.bench",
    "review": "fetaliqa_core.cli.review",
}
# ``fetaliqa`` alone, or ``fetaliqa FILE``, runs this command where it is registered.
DEFAULT_COMMAND = "gui"


def _import_tolerant(module_name: str, load):
    """``load()``, or None where the command's own module is absent (a partial install); a
    missing dependency inside it is a real error and surfaces."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise


def _available_commands() -> dict[str, object]:
    """Command name -> module: the default command and the other registered ones, then the core's
    own (which win a name)."""
    modules: dict[str, object] = {}
    registered = plugins.registered(plugins.COMMANDS)
    for name, ep in sorted(registered.items(), key=lambda item: item[0] != DEFAULT_COMMAND):
        if name in BUILTIN_COMMANDS:
            continue
        module = _import_tolerant(ep.module, ep.load)
        if module is not None:
            modules[name] = module
    for name, module_name in BUILTIN_COMMANDS.items():
        module = _import_tolerant(module_name, lambda m=module_name: importlib.import_module(m))
        if module is not None:
            modules[name] = module
    return modules


def _add_command(parser: argparse.ArgumentParser, module) -> None:
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)


def build_parser(commands: dict[str, object] | None = None) -> argparse.ArgumentParser:
    commands = _available_commands() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="fetaliqa",
        description="Find the frames of a fetal ultrasound blind sweep that show the abdomen "
        "well enough to measure its circumference.",
    )
    parser.add_argument("--version", action="version", version=f"fetaliqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        _add_command(command, module)
        _remember_parsers(command)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser in its own defaults, so that an unknown option is told with the
    usage of the command it was given to (``review export``'s, not ``review``'s)."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                _remember_parsers(nested)


def _with_default_command(argv: list[str], commands) -> list[str]:
    if DEFAULT_COMMAND not in commands:
        return argv or ["--help"]
    if not argv:
        return [DEFAULT_COMMAND]
    first = argv[0]
    if first in commands or first in ("-h", "--help", "--version"):
        return argv
    if first == "help":  # "help" or "help score"
        return [*argv[1:2], "--help"] if argv[1:2] and argv[1] in commands else ["--help"]
    if not first.startswith("-") and not _looks_like_a_path(first):
        # a mistyped command was taken for a file to open ("scor: no such file or folder")
        import difflib

        close = difflib.get_close_matches(first, list(commands), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        from fetaliqa_core.cli._args import shown

        print(f"fetaliqa: unknown command '{shown(first)}'{hint}; the commands are "
              f"{', '.join(commands)} (fetaliqa --help), or give a sweep file to open it.", file=sys.stderr)
        raise SystemExit(2)
    if first.startswith("-"):
        # ``fetaliqa --device cpu score x``: the options went before the command, and the viewer's
        # parser said "fetaliqa gui: unrecognized arguments: x", a command never typed
        # (not an option's value: "fetaliqa --save-scores review case.mha" saves into ./review)
        values = _options_with_values(commands[DEFAULT_COMMAND])
        named = next((a for k, a in enumerate(argv[1:], 1) if a in commands and a != DEFAULT_COMMAND
                      and argv[k - 1] not in values and not _looks_like_a_path(a)), None)
        if named is not None:
            from fetaliqa_core.cli._args import shown

            k = argv.index(named)
            fixed = " ".join(shown(a) for a in [named, *argv[:k], *argv[k + 1:]])
            print(f"fetaliqa: options go after the command: fetaliqa {fixed}", file=sys.stderr)
            raise SystemExit(2)
    # ``fetaliqa case.mha`` (or ``fetaliqa --threshold 0.3 case.mha``) opens the file in the viewer.
    return [DEFAULT_COMMAND, *argv]


def _options_with_values(module) -> set[str]:
    """The option strings of a command that take a value."""
    parser = argparse.ArgumentParser(add_help=False)
    try:
        module.add_arguments(parser)
    except Exception:  # noqa: BLE001 - a command that cannot say: none known
        return set()
    return {o for action in parser._actions if action.nargs != 0 for o in action.option_strings}


def _looks_like_a_path(arg: str) -> bool:
    """A file or folder that exists, or a name with a folder or a file suffix in it."""
    import os

    return os.path.lexists(arg) or "/" in arg or os.sep in arg or bool(Path(arg).suffix)


class _ClosedPipeTolerant:
    """The program's stdout, which stops writing (instead of failing the command) once the program
    reading it has gone (`fetaliqa eval ... | head -2`): the command finishes its work and its
    files; 'Broken pipe; check the path and try again' was printed, and a folder's sweeps were
    recorded as failed. A file name that is not UTF-8, or a character the stream's encoding lacks,
    is printed escaped (it ended a folder's run in a traceback after all its sweeps were scored)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text):
        if not self._closed:
            try:
                try:
                    return self._stream.write(text)
                except UnicodeEncodeError:
                    from fetaliqa_core.files import plain_text

                    # plain_text escapes only what is not UTF-8; a stream in another encoding
                    # (PYTHONIOENCODING=ascii, a Latin-1 terminal) failed again on a valid "é"
                    encoding = getattr(self._stream, "encoding", None) or "utf-8"
                    shown = plain_text(text).encode(encoding, "backslashreplace").decode(encoding)
                    self._stream.write(shown)
                    return len(text)
            except BrokenPipeError:
                self._closed = True
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed = True

    def __getattr__(self, name):
        return getattr(self._stream, name)


_PROGRAM = {"running": False}


def running_as_program() -> bool:
    """Whether ``fetaliqa`` runs as the program itself (``main()`` with the process's arguments),
    which may end the process when its command is done, rather than called by a host (a test)."""
    return _PROGRAM["running"]


def main(argv: list[str] | None = None) -> int:
    process = argv is None  # the program itself (not a caller in the same process)
    if process:
        _PROGRAM["running"] = True
    if process:  # (stderr too: `2>&1 | head` closed the progress bar's stream)
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _ClosedPipeTolerant):
                setattr(sys, name, _ClosedPipeTolerant(stream))
    argv = list(sys.argv[1:] if argv is None else argv)
    terminate_as_interrupt()  # SIGTERM as Ctrl-C from the start, while the commands load too
    try:
        commands = _available_commands()
        parser = build_parser(commands)
    except KeyboardInterrupt:  # Ctrl-C while the commands load: the same line as later on
        print("fetaliqa: interrupted", file=sys.stderr)
        return 130
    code = _run_parsed(parser, _with_default_command(argv, commands))
    if process:
        end_with_on_terminate(code)
    return code


def exit_now(code: int) -> None:
    """End the process at once with ``code``, its output flushed first (no interpreter shutdown:
    nothing else runs, nothing is waited for)."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def end_with_on_terminate(code: int) -> None:
    """Once a command has ended, SIGTERM ends the process with that command's status: arriving
    while the interpreter shut down, it killed a finished run (status 143, after 'scored 3 of 3
    sweeps' was printed)."""
    import signal
    import threading

    def finished(*_) -> None:
        exit_now(code)

    if threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGTERM, finished)
        except (ValueError, OSError):
            pass


def run_command(module, argv: list[str] | None = None, prog: str | None = None) -> int:
    """One command module (``HELP``, ``add_arguments``, ``run``) as a program of its own, with the
    dispatcher's error handling: for launchers and ``python -m`` entry points."""
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    _add_command(parser, module)
    return _run_parsed(parser, list(sys.argv[1:] if argv is None else argv))


def terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a job scheduler, a closing session) stops a command the way Ctrl-C
    does: ``KeyboardInterrupt`` in the main thread, so finished work is kept and the exit
    status is 130."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        except (ValueError, OSError):  # no signals here (an embedding host)
            pass


def _unknown_option(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """The first unknown option, with the command's option it is closest to: "--thresold 0.5" got
    no suggestion (a mistyped command does), and "--treshold 0.5 x.mha" blamed "x.mha", the value
    having been taken for the sweep. Empty when no option is among ``unknown``."""
    import difflib

    from fetaliqa_core.cli._args import shown

    for arg in unknown:
        word = arg.split("=", 1)[0]
        if word.startswith("-") and len(word) > 1 and not word[1:2].isdigit():
            known = [o for action in parser._actions for o in action.option_strings]
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
            return f"unknown option {shown(word)}" + (f" (did you mean {close[0]}?)" if close else "")
    return ""


def _values_starting_with_a_dash(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with each value that starts like a negative number but is none ("-1/2", "-1e-3")
    joined to the option before it that takes one value (``--shard=-1/2``): argparse took it for
    an unknown option and said only "argument --shard: expected one argument"; joined, the
    option's own check says what is wrong with the value."""
    import re

    def options(p: argparse.ArgumentParser) -> tuple[set[str], set[str], dict]:
        single = {o for a in p._actions if a.nargs is None and a.option_strings for o in a.option_strings}
        every = {o for a in p._actions for o in a.option_strings}
        subs = {name: sub for a in p._actions if isinstance(a, argparse._SubParsersAction)
                for name, sub in a.choices.items()}
        return single, every, subs

    single, every, subs = options(parser)
    fixed: list[str] = []
    k = 0
    while k < len(argv):
        arg = argv[k]
        if arg == "--":
            fixed += argv[k:]
            break
        if arg in subs:  # a (nested) command: its own options from here on
            single, every, subs = options(subs[arg])
        value = argv[k + 1] if k + 1 < len(argv) else None
        if arg in single and value is not None and value not in every:  # (its value: never a command)
            dashed = re.match(r"-\d", value) and not re.fullmatch(r"-\d+|-\d*\.\d+", value)
            fixed += [f"{arg}={value}"] if dashed else [arg, value]  # (argparse takes -1 and -0.5 itself)
            k += 2
            continue
        fixed.append(arg)
        k += 1
    return fixed


def _run_parsed(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args, unknown = parser.parse_known_args(_values_starting_with_a_dash(parser, argv))
    if unknown:  # told with the command's own usage (a mistyped option of `score` shows score's options)
        told = getattr(args, "_parser", parser)
        told.error(_unknown_option(told, unknown) or f"unrecognized arguments: {' '.join(unknown)}")
    from fetaliqa_core.paths import NOT_TEXT_PATH, is_text_path

    for name in ("out", "save_scores", "screenshot", "json"):
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and not is_text_path(value):
            # the image library aborts the process on such a name (after the work, leaving it half-written)
            getattr(args, "_parser", parser).error(f"--{name.replace('_', '-')}: {NOT_TEXT_PATH}")
    return run_guarded(lambda: args._run(args))


def run_guarded(run, interrupted: str = "interrupted") -> int:
    """Run a command's body the way every ``fetaliqa`` command ends: a project error or an OS
    error (disk full, read-only, permission, not a folder) or running out of memory as one line
    and its exit status, SIGTERM and Ctrl-C as ``interrupted`` with status 130, never a traceback."""
    from fetaliqa_core.paths import os_error_message

    terminate_as_interrupt()
    try:
        return int(run() or 0)
    except FetalIQAError as exc:
        from fetaliqa_core.cli._args import shown

        print(f"fetaliqa: {shown(exc)}", file=sys.stderr)  # one line, whatever a file name holds
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"fetaliqa: {interrupted}", file=sys.stderr)
        return 130
    except (ImportError, OSError) as exc:
        if libraries_out_of_memory(exc):
            print(libraries_memory_line(exc), file=sys.stderr)
            return 1
        if not isinstance(exc, OSError):
            raise
        from fetaliqa_core.cli._args import shown

        print(f"fetaliqa: {shown(os_error_message(exc))}", file=sys.stderr)
        return 1
    except MemoryError:
        print(out_of_memory_line(), file=sys.stderr)
        return 1
    except RuntimeError as exc:  # PyTorch reports a failed allocation as a RuntimeError
        if "allocate" not in str(exc) and "out of memory" not in str(exc):
            raise
        print(out_of_memory_line(), file=sys.stderr)
        return 1


def libraries_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a library (PyTorch's, loaded with the models) that could not be mapped
    into memory: the system's loader says "failed to map segment from shared object" or "cannot
    allocate memory" of a shared object where a limit on the process's address space (ulimit -v)
    or the machine's free memory leaves too little for it. The user got a 27-line traceback."""
    text = str(exc).lower()
    return (isinstance(exc, (ImportError, OSError)) and (".so" in text or "shared object" in text)
            and ("failed to map segment" in text or "cannot allocate memory" in text))


def libraries_memory_line(exc: BaseException | None) -> str:
    """The one line for :func:`libraries_out_of_memory` (``exc``; None: said before trying): what
    failed, and what to do (the limit in force, where there is one)."""
    import re

    from fetaliqa_core.validate import address_space_limit

    limit = address_space_limit()
    library = re.search(r"[\w.+-]+\.so\b[\w.]*", str(exc))
    what = f" ({library.group(0)})" if library else ""
    todo = (f"this process may use only {limit / (1 << 30):.1f} GB of address space (ulimit -v), and the model "
            f"libraries alone take about {MODEL_LIBRARIES_GB} GB of it: raise the limit to {MODEL_LIBRARIES_GB * 2} GB "
            f"or more (ulimit -v {MODEL_LIBRARIES_GB * 2 << 20}) or remove it, and try again" if limit is not None else
            "close other programs, or use a machine with more memory")
    return f"fetaliqa: out of memory: the model libraries{what} could not be loaded; {todo}."


#: Address space the model libraries (PyTorch) take once loaded, in GB (3.1 measured, most of it
#: mapped and never resident): what a limit on the process's address space must leave them.
MODEL_LIBRARIES_GB = 4


OUT_OF_MEMORY = ("fetaliqa: out of memory: this machine has not enough free memory for the file and the "
                 "models. Close other programs, or use a machine with more memory.")
OUT_OF_MEMORY_LIMITED = ("fetaliqa: out of memory: this process's address-space limit (ulimit -v) leaves too little "
                         "for the file and the models (closing other programs would not help): raise the limit to "
                         f"{MODEL_LIBRARIES_GB * 2} GB or more, or remove it, and try again.")


def out_of_memory_line() -> str:
    """The line for an allocation that failed: under a limit on the process's address space, the
    limit (with the machine's advice, "close other programs", a user under `ulimit -v` ran out while
    the models loaded and was told what would not help)."""
    from fetaliqa_core.validate import address_space_left

    return OUT_OF_MEMORY if address_space_left() is None else OUT_OF_MEMORY_LIMITED


if __name__ == "__main__":
    sys.exit(main())
