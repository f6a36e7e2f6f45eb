"""The two errors a user's input can cause, raised before any training starts and caught by the command line.

They live below every other module (configs, data sources, policies all raise them), so raising one never imports
the module that reports it."""


class ConfigError(ValueError):
    """A configuration value is invalid. Raised before any training starts."""


class CorpusError(RuntimeError):
    """The corpus on disk is missing, altered or malformed."""
