"""The posting bot: turns the active checkpoint into posts, recorded in a database."""


class BotError(Exception):
    """A problem the user can fix: the CLI prints it on one line and exits with status 2."""
