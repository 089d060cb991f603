"""The one base of every user mistake (a bad setting, folder, checkpoint, command line).

The CLIs (`train.py`, `python -m bot`) catch `UserError` only: its message is printed on one
line and the exit status is 2. Anything else is a bug and keeps its traceback. No imports, so
the bot and every gan module can use it without pulling in anything.
"""


class UserError(Exception):
    """A problem the user can fix; the message is one readable line that says how."""


class ConfigError(UserError, ValueError):
    """A user mistake in the configuration; its message is one readable line. Here rather than
    in gan.config so the model registry can raise it without importing the config module."""
