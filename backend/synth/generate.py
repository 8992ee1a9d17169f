"""One composite from a scene and cutouts (``compose_composite``), and the seeded loop that fills a data set folder.

Every random choice comes from generators seeded by ``(seed, index, attempt)``, so a composite does not depend on
how many were made before it, and the selection stream (scene, cutouts) is separate from the placement stream:
realistic and random mode pick the same people for the same index and attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.synth.compose import Layer, blend, render_cutout, scene_layer
from backend.synth.cutouts import Cutout, Scene
from backend.synth.descriptions import PersonView, describe
from backend.synth.errors import RejectedComposite, SceneError
from backend.synth.harmonize import HarmonizeParams, contact_shadow, surround_mask, transfer_lab
from backend.synth.occlusion import IGNORE, depth_order, label_map, visible_alphas
from backend.synth.placement import (
    CAMERA_HEIGHT_RANGE,
    GroundModel,
    PersonBox,
    box_of_mask,
    frame_fraction,
    is_standing_reference,
    sample_random_box,
    sample_realistic_box,
)
from backend.synth.plausibility import RANDOM_RULES, Rules, labels_too_small, reasons_to_reject

MODES = ("realistic", "random")
DEFAULT_HARMONIZE = HarmonizeParams()
PLACEMENT_TRIES = 25


@dataclass
class Composite:
    """A finished composite. ``alphas[k-1]`` and ``persons[k-1]`` belong to label ``k`` of ``labels``."""

    image: np.ndarray
    labels: np.ndarray
    alphas: list[np.ndarray]
    persons: list[dict]
    descriptions: list[list[str]]
    scene: str
    extra: dict = field(default_factory=dict)


def _scene_layers(scene: Scene) -> list[Layer]:
    layers = []
    for person in scene.people:
        box = box_of_mask(person.mask)
        layer = scene_layer(scene.image, person.mask, box, scene.source, person.ignore)
        layer.origin = person.origin
        layers.append(layer)
    return layers


def ground_references(scene: Scene) -> list[PersonBox]:
    """Boxes of the scene's people who can fix the ground line; raises ``SceneError`` when there is none.

    Both modes require one, so that the random baseline differs from the realistic mode only in placement and
    harmonisation, not in which scene photos it uses.
    """
    h, w = scene.image.shape[:2]
    people = [p for p in scene.people if p.origin != "bystander"]
    refs = [b for b in (box_of_mask(p.mask) for p in people) if is_standing_reference(b, h, w)]
    if not refs:
        raise SceneError(f"{scene.source}: no standing person with visible feet to take the ground line from")
    return refs


def _place_realistic(
    scene: Scene, cutouts: Sequence[Cutout], rng: np.random.Generator, rules: Rules
) -> tuple[list[PersonBox], dict]:
    h, w = scene.image.shape[:2]
    # New people join the scene's own people, never a detected bystander (who may be a misread chair).
    boxes = [box_of_mask(p.mask) for p in scene.people if p.origin != "bystander"]
    refs = ground_references(scene)
    camera = float(rng.uniform(*CAMERA_HEIGHT_RANGE))
    ground = GroundModel.from_people(refs, h, w, camera)
    placed: list[PersonBox] = []
    for cutout in cutouts:
        aspect = cutout.width / cutout.height
        for _ in range(PLACEMENT_TRIES):
            box = sample_realistic_box(ground, boxes + placed, aspect, rng)
            if box is not None and frame_fraction(box, h, w) >= rules.min_in_frame:
                placed.append(box)
                break
        else:
            raise RejectedComposite([f"{cutout.source}: no place on the ground fits the frame"])
    return placed, {"horizon_y": round(ground.horizon_y, 1), "camera_height": round(camera, 3)}


def _place_random(
    scene: Scene, cutouts: Sequence[Cutout], rng: np.random.Generator
) -> tuple[list[PersonBox], dict]:
    h, w = scene.image.shape[:2]
    return [sample_random_box(h, w, c.width / c.height, rng) for c in cutouts], {}


def compose_composite(
    scene: Scene,
    cutouts: Sequence[Cutout],
    mode: str,
    rng: np.random.Generator,
    rules: Rules | None = None,
    harmonize: HarmonizeParams | None = DEFAULT_HARMONIZE,
) -> Composite:
    """Paste ``cutouts`` into ``scene``.

    ``realistic``: feet on the ground line of the scene's standing people, perspective scale, depth order by foot
    row, Lab harmonisation and a contact shadow. ``random``: uniform position and scale, each pasted person on top
    of everything before, no harmonisation. Raises ``RejectedComposite`` when a plausibility rule fails and
    ``SceneError`` when the scene has no usable person.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not cutouts:
        raise ValueError("at least one cutout is required")
    h, w = scene.image.shape[:2]
    realistic = mode == "realistic"
    rules = rules or (Rules() if realistic else RANDOM_RULES)
    layers = _scene_layers(scene)
    ground_references(scene)
    if realistic:
        boxes, info = _place_realistic(scene, cutouts, rng, rules)
    else:
        boxes, info = _place_random(scene, cutouts, rng)
        for layer in layers:
            layer.depth = -1.0  # the scene photo is the background every random paste goes on top of
    occupied = np.zeros((h, w), bool)
    for p in scene.people:
        occupied |= p.mask
    shadows: dict[int, np.ndarray] = {}
    for n, (cutout, box) in enumerate(zip(cutouts, boxes, strict=True)):
        rgb, alpha = render_cutout(cutout, box, (h, w))
        if realistic and harmonize is not None:
            rgb = transfer_lab(rgb, alpha, scene.image, surround_mask(box, (h, w), occupied), harmonize)
        depth = box.foot_y if realistic else float(n)
        layers.append(Layer(rgb, alpha, box, depth, cutout.source, "pasted", False, "feathered"))
        if realistic:
            shadows[len(layers) - 1] = contact_shadow(box, (h, w), float(rng.uniform(0.25, 0.45)))

    order = depth_order(layers)
    ordered = [layers[i] for i in order]
    visible = visible_alphas(ordered)
    reasons = reasons_to_reject(ordered, visible, (h, w), rules)
    if reasons:
        raise RejectedComposite(reasons)

    # Labels: scene people first (the labelled person of a single-person scene stays person 1), then pasted ones.
    label_of: dict[int, int] = {}
    next_label = 1
    for i, layer in enumerate(layers):
        if layer.ignore:
            label_of[i] = IGNORE
        else:
            label_of[i] = next_label
            next_label += 1
    image = blend(scene.image, ordered, [shadows.get(i) for i in order])
    labels = label_map(ordered, [label_of[i] for i in order], (h, w))
    reasons = labels_too_small(labels, [v for v in label_of.values() if v != IGNORE], rules)
    if reasons:
        raise RejectedComposite(reasons)

    n_people = next_label - 1
    alphas: list[np.ndarray] = [np.empty(0)] * n_people
    persons: list[dict] = [{}] * n_people
    views: list[PersonView] = []
    view_label: list[int] = []
    for pos, i in enumerate(order):
        layer, value = layers[i], label_of[i]
        # All ignore layers share the value 255, so each one's own visible pixels come from its alpha.
        own = (labels == value) & (layer.alpha >= 0.5) if value == IGNORE else labels == value
        views.append(PersonView(own, layer.box.y0, layer.box.y1, layer.box.foot_y, value != IGNORE))
        view_label.append(value)
        if value == IGNORE:
            continue
        alphas[value - 1] = np.where(
            labels == value, np.maximum(visible[pos], 0.5), np.minimum(visible[pos], 0.499)
        )
        persons[value - 1] = {
            "label": value,
            "origin": layer.origin,
            "source": layer.source,
            "alpha": layer.alpha_kind,
            "box": [round(v, 1) for v in (layer.box.x0, layer.box.y0, layer.box.x1, layer.box.y1)],
            "visible_fraction": round(float(visible[pos].sum() / max(layer.alpha.sum(), 1e-6)), 3),
        }
    texts = describe(image, views)
    descriptions: list[list[str]] = [[] for _ in range(n_people)]
    for value, t in zip(view_label, texts, strict=True):
        if value != IGNORE:
            descriptions[value - 1] = t
    return Composite(image, labels, alphas, persons, descriptions, scene.source, info)
