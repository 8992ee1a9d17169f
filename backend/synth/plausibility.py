"""Rejection rules: a composite is kept only if every person in it still looks like a person in a photo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.synth.compose import Layer
from backend.synth.placement import frame_fraction


@dataclass(frozen=True)
class Rules:
    """Thresholds; the defaults are for the realistic mode (see docs/synthesis.md for the reasoning)."""

    # More than 55 % hidden behind others and the person is mostly a guess, for a model and for a user.
    min_visible: float = 0.45
    # People behind others in real group photos nearly always show their face.
    min_head_visible: float = 0.5
    # Pasted people cut off by more than a quarter look like a cropping accident.
    min_in_frame: float = 0.75
    # Below ~1 % of the image a person is ignored by the evaluation; such targets would be noise.
    min_area_frac: float = 0.01
    max_height_frac: float = 1.0
    check_head: bool = True


RANDOM_RULES = Rules(min_head_visible=0.0, check_head=False)


def reasons_to_reject(
    ordered: Sequence[Layer], visible: Sequence[np.ndarray], shape: tuple[int, int], rules: Rules
) -> list[str]:
    """Why the composite is implausible (empty list = keep it). ``ordered``/``visible`` are back to front."""
    h, w = shape
    reasons: list[str] = []
    for layer, vis in zip(ordered, visible, strict=True):
        full = float(layer.alpha.sum())
        if full <= 0:
            reasons.append(f"{layer.source}: entirely outside the frame")
            continue
        if layer.origin == "pasted":
            inside = frame_fraction(layer.box, h, w)
            if inside < rules.min_in_frame:
                reasons.append(f"{layer.source}: only {inside:.0%} inside the frame")
            if layer.box.height > rules.max_height_frac * h:
                reasons.append(f"{layer.source}: taller than the frame ({layer.box.height:.0f} px)")
        if layer.origin == "bystander":
            continue  # passers-by may be hidden by anyone; they are never targets
        seen = float(vis.sum())
        if seen / full < rules.min_visible:
            reasons.append(f"{layer.source}: {1 - seen / full:.0%} occluded")
        if not layer.ignore and seen < rules.min_area_frac * h * w:
            reasons.append(f"{layer.source}: visible area {seen / (h * w):.2%} of the image")
        if rules.check_head:
            head = layer.head_alpha()
            head_full = float(head.sum())
            if head_full > 0:
                head_seen = float((vis * (head > 0)).sum())
                if head_seen / head_full < rules.min_head_visible:
                    reasons.append(f"{layer.source}: head {1 - head_seen / head_full:.0%} occluded")
    return reasons


def labels_too_small(labels: np.ndarray, values: Sequence[int], rules: Rules) -> list[str]:
    """Labelled people whose final mask (not their soft alpha) is under the area minimum.

    Readers count mask pixels (``backend.data.person_targets``), so this is the number that decides whether a person
    is a training target at all.
    """
    min_px = rules.min_area_frac * labels.size
    return [
        f"label {v}: mask {int((labels == v).sum())} px < {min_px:.0f} px"
        for v in values
        if (labels == v).sum() < min_px
    ]
