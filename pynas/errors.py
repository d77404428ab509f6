"""Errors a user can cause and fix: the command line prints them as one line, exit 2."""


class UsageError(ValueError):
    """Bad arguments, unknown names or unreadable files given by the user (a ValueError)."""
