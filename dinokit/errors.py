"""Errors a user can cause. The CLI turns each into one line on stderr and a non-zero exit."""


class DinokitError(Exception):
    """Base class: the message is complete and names the offending input."""


class DataError(DinokitError):
    """A dataset, image or annotation file is missing or malformed."""


class CheckpointError(DinokitError):
    """A checkpoint is missing, corrupt, or does not fit the configuration."""
