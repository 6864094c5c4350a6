"""The one exception type for problems a user can cause and fix."""


class FetalIQAError(Exception):
    """A problem with the user's input or environment.

    The message is shown to the user as is (command line: one line on stderr; app: a dialog),
    so it names the file or setting, says what is wrong, and says what to do.
    """
