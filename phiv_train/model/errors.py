"""Errors the Phi-3.5-vision model raises for problems a user can fix.

They belong to phiv's one exception tree (:class:`phiv_data.errors.PhivError`), so the CLI
prints them as one line, and they are also ``ValueError`` so that generic code catching
``ValueError`` (transformers, Trainer callers) keeps working.
"""

from __future__ import annotations

from phiv_data.errors import DataError, PhivError, UsageError


class ModelConfigError(UsageError, ValueError):
    """A ``config.json`` (or config argument) describes a model phiv does not implement."""


class CheckpointError(PhivError, ValueError):
    """A checkpoint directory is missing, incomplete, or holds parameters the model lacks."""


class ImageTokenMismatchError(DataError, ValueError):
    """``input_ids`` and ``pixel_values``/``image_sizes`` disagree about the images of a batch."""
