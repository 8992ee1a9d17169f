"""Errors raised by the synthesis pipeline; all are ``ValueError`` so callers can treat them as bad input."""

from __future__ import annotations


class SynthError(ValueError):
    """Base class for synthesis errors."""


class CutoutError(SynthError):
    """A person cutout cannot be used (empty mask, cut off by the photo border, ...)."""


class SceneError(SynthError):
    """A scene photo cannot be used (no labelled person, mismatched mask, ...)."""


class GenerationError(SynthError):
    """No plausible composite could be made within the attempt budget, or the request itself is invalid."""


class RejectedComposite(SynthError):
    """A composite broke a plausibility rule; ``reasons`` lists which. The generator just tries again."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
