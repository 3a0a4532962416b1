"""The one exception type that front ends turn into a one-line message and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: a missing file, a wrong option, a corrupt checkpoint."""
