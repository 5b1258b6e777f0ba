"""Exceptions with a meaning for callers."""


class UserError(Exception):
    """A mistake in the user's input (a missing file, a bad flag): the CLI prints it as one line."""
