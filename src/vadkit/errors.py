"""Exceptions vadkit raises on bad input.

Every error names the offending file or value and the fix, so that a user reading only the last line of a
traceback knows what to do. The CLI prints these without a stack trace.
"""


class VadkitError(Exception):
    """Base class of every error vadkit raises on purpose."""


class ParameterError(VadkitError, ValueError):
    """A model, backbone or command parameter has an invalid value."""


class DataError(VadkitError):
    """A dataset folder, image or mask cannot be used as given."""


class WeightsNotFoundError(VadkitError):
    """Pretrained weights could not be found offline nor downloaded."""


class ModelFileError(VadkitError):
    """A model file is truncated, foreign, or from an incompatible format version."""


class UndefinedMetricError(VadkitError, ValueError):
    """A metric is undefined for the given input (for example AUROC with a single class)."""
