"""The posting bot: turns the active checkpoint into posts, recorded in a database."""

from gan.errors import UserError


class BotError(UserError):
    """A problem the user can fix: the CLI prints it on one line and exits with status 2."""
