"""Errors a user can act on: the CLI prints them as one line and exits 2, without a traceback."""


class UserError(ValueError):
    """Bad input (a parameter, a file, a dataset) explained in one line that names the culprit."""
