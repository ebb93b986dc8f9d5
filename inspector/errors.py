"""Typed errors. Every failure caused by user input raises one of these, with a message
an operator can act on: which file, what was expected, what to do."""


class InspectorError(Exception):
    """Base class for every error Inspector reports to a user."""


class ImageError(InspectorError):
    """An image file cannot be used (missing, empty, truncated, not an image, absurd size)."""


class IncompleteImage(ImageError):
    """An image file is empty or cut short: it may still be being written."""


class ModelError(InspectorError):
    """A saved model is missing, corrupt, tampered with or incompatible."""


class BackboneError(InspectorError):
    """A backbone is unknown or its weight file is not available."""


class TrainingError(InspectorError):
    """Training cannot go ahead (too few good images, wrong folder, bad settings)."""


class StoreError(InspectorError):
    """The result database cannot be opened or written (locked, read-only, corrupt)."""


class SourceError(InspectorError):
    """An image source (folder, camera, video) cannot be opened or has failed."""


class Cancelled(InspectorError):
    """Long work was cancelled by the user."""


class PlantError(InspectorError):
    """The plant database cannot be reached or used (address, password, rights, schema)."""


def describe(exc: BaseException) -> str:
    """An error as the operator reads it: typed errors carry their own message; anything
    else is an internal failure, named with its type (its traceback goes to the log file)."""
    if isinstance(exc, InspectorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
