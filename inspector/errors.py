"""Typed errors. Every failure caused by user input raises one of these, with a message
an operator can act on: which file, what was expected, what to do."""


class InspectorError(Exception):
    """Base class for every error Inspector reports to a user."""


class ImageError(InspectorError):
    """An image file cannot be used (missing, empty, truncated, not an image, absurd size)."""


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
