"""Errors that mean "fix your configuration", shown to the user without a traceback."""


class ConfigError(ValueError):
    """A configuration, path or pairing that cannot work; the message says what to change."""
