"""The exception hierarchy: every error a user can cause derives from TencentPretrainError."""


class TencentPretrainError(Exception):
    """Base class of the errors this package raises on bad input."""


class ConfigError(TencentPretrainError):
    """A configuration (JSON file or command-line flag) is invalid."""


class UnknownComponentError(ConfigError):
    """A component name is not registered."""


class CheckpointError(TencentPretrainError):
    """A checkpoint cannot be read, or does not fit the model."""


class DataError(TencentPretrainError):
    """A corpus or dataset is malformed."""


class TokenizerError(TencentPretrainError):
    """A tokenizer file is missing or unusable."""
