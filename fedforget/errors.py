"""The error every user mistake becomes: one line, exit code 2 at the command line.

It lives apart from :mod:`fedforget.config` so that the lowest layers (registries, deletion
modes, data readers) can raise it without importing the configuration's models.
"""


class ConfigError(ValueError):
    """A user error in the configuration, with a one-line message."""
