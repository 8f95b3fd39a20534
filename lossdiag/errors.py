"""The one exception users see for bad input."""


class SpecError(ValueError):
    """Bad input (a model file, an option, a config key); the message is the one line the CLI prints."""
