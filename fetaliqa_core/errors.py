"""The one exception type for problems a user can cause and fix."""


class FetalIQAError(Exception):
    """A problem with the user's input or environment.

    The message is shown to the user as is (command line: one line on stderr; app: a dialog),
    so it names the file or setting, says what is wrong, and says what to do.
    """


class UsageError(FetalIQAError):
    """The command line itself is wrong: a bad option value or a combination that cannot work.

    Exit status 2 (as argparse's own errors); every other :class:`FetalIQAError` is a failure
    at run time (a missing or unreadable file, a refused overwrite) and exits 1.
    """


def exit_code(exc: FetalIQAError) -> int:
    """The process exit status for an error: 2 for usage errors, 1 for failures at run time."""
    return 2 if isinstance(exc, UsageError) else 1


def first_names(names, first: int = 5) -> str:
    """The first ``first`` of ``names`` for a message, and how many more: ``a, b, c and 4 more``."""
    names = [str(n) for n in names]
    return ", ".join(names[:first]) + (f" and {len(names) - first} more" if len(names) > first else "")
