"""Synthesis pipeline tests on hand-made people and scenes (no real photos needed), plus a smoke run on the real
data when ../shared/data is present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.synth.bystanders import bystander_components, find_bystanders, person_probability
from backend.synth.compose import Layer, feather
from backend.synth.cutouts import Cutout, Scene, ScenePerson, default_data_root, make_cutout, make_scene
from backend.synth.dataset import generate_set
from backend.synth.descriptions import PersonView, colour_name, describe
from backend.synth.errors import CutoutError, GenerationError, RejectedComposite, SceneError
from backend.synth.generate import compose_composite
from backend.synth.harmonize import contact_shadow, transfer_lab
from backend.synth.occlusion import label_map, visible_alphas
from backend.synth.placement import (
    GroundModel,
    PersonBox,
    box_of_mask,
    is_standing_reference,
    sample_random_box,
    sample_realistic_box,
)
from backend.synth.plausibility import Rules, reasons_to_reject

# ---------------------------------------------------------------------------------------------------- fixtures


def person_mask(shape: tuple[int, int], cx: int, foot_y: int, height: int) -> np.ndarray:
    """A standing stick-figure silhouette (head, torso, two legs) with its feet on row ``foot_y - 1``."""
    mask = np.zeros(shape, np.uint8)
    top = foot_y - height
    head_r = max(2, height // 14)
    cv2.circle(mask, (cx, top + head_r), head_r, 1, -1)
    torso_w = max(3, height // 7)
    cv2.rectangle(mask, (cx - torso_w, top + 2 * head_r), (cx + torso_w, top + int(0.55 * height)), 1, -1)
    leg_w = max(1, torso_w // 2)
    cv2.rectangle(mask, (cx - torso_w, top + int(0.55 * height)), (cx - torso_w + leg_w, foot_y - 1), 1, -1)
    cv2.rectangle(mask, (cx + torso_w - leg_w, top + int(0.55 * height)), (cx + torso_w, foot_y - 1), 1, -1)
    return mask.astype(bool)


def textured_background(shape: tuple[int, int], seed: int, base=(90, 120, 150)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    ramp = np.linspace(0.7, 1.2, h, dtype=np.float32)[:, None, None]
    img = np.asarray(base, np.float32)[None, None, :] * ramp + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_test_scene(shape=(240, 320), cx=100, foot_y=220, height=160, seed=0) -> Scene:
    image = textured_background(shape, seed)
    mask = person_mask(shape, cx, foot_y, height)
    image[mask] = (200, 40, 40)
    return Scene("test/scene", image, [ScenePerson(mask)])


def make_test_cutout(height=180, colour=(30, 60, 200), seed=1, name="test/cutout") -> Cutout:
    shape = (height + 20, height)
    image = textured_background(shape, seed, base=(160, 160, 160))
    mask = person_mask(shape, height // 2, height + 10, height)
    image[mask] = colour
    return make_cutout(image, mask.astype(np.float32), name)


FAKE_SOURCES = ["ccp-fashion", "humanseg300-removebg"]


def write_fake_data_root(root: Path, n_ccp: int = 14, n_hs: int = 3) -> Path:
    """A tiny ``ccp-fashion`` (single-person) + ``humanseg300-removebg`` (all-people) data root."""
    colours = [(200, 40, 40), (40, 160, 60), (30, 60, 200), (220, 200, 40), (20, 20, 20), (230, 230, 230)]
    for name, kind, n in (
        ("ccp-fashion", "single-person", n_ccp),
        ("humanseg300-removebg", "all-people", n_hs),
    ):
        d = root / name
        (d / "images").mkdir(parents=True)
        (d / "instances").mkdir()
        items = []
        for i in range(n):
            shape = (260, 180)
            image = textured_background(shape, 100 + i, base=(60 + 10 * (i % 5), 110, 140))
            mask = person_mask(shape, 90, 245, 200 - 3 * i)
            image[mask] = colours[i % len(colours)]
            item_id = f"{name[:3]}_{i:04d}"
            cv2.imwrite(str(d / "images" / f"{item_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(d / "instances" / f"{item_id}.png"), mask.astype(np.uint8))
            items.append(
                {
                    "id": item_id,
                    "image": f"images/{item_id}.png",
                    "instances": f"instances/{item_id}.png",
                    "width": shape[1],
                    "height": shape[0],
                    "persons": 1,
                    "person_area_px": [int(mask.sum())],
                }
            )
        manifest = {
            "name": name,
            "source": "test",
            "license": "test",
            "mask_kind": kind,
            "note": "",
            "items": items,
        }
        (d / "manifest.json").write_text(json.dumps(manifest))
    return root


def _pasted_truth(comp, k: int) -> np.ndarray:
    return comp.labels == k


# ---------------------------------------------------------------------------------------------------- placement


def test_ground_model_scales_people_by_their_foot_row():
    ref = PersonBox(90, 60, 110, 220)  # 160 px tall, feet at row 220
    ground = GroundModel.from_people([ref], 240, 320, camera_height=0.9)
    assert ground.height_at(220) == pytest.approx(160)
    assert ground.horizon_y == pytest.approx(220 - 0.9 * 160)
    # Farther up the ground plane = smaller; at the horizon a person vanishes.
    assert ground.height_at(180) < ground.height_at(200) < ground.height_at(220) < ground.height_at(240)
    assert ground.height_at(ground.horizon_y) == pytest.approx(0)
    assert ground.foot_for_height(ground.height_at(205)) == pytest.approx(205)


def test_ground_model_needs_a_person():
    with pytest.raises(SceneError):
        GroundModel.from_people([], 240, 320, 0.9)


def test_realistic_boxes_stand_on_the_ground_with_perspective_height():
    ref = PersonBox(90, 60, 110, 220)
    ground = GroundModel.from_people([ref], 240, 320, camera_height=0.85)
    rng = np.random.default_rng(3)
    boxes = [b for b in (sample_realistic_box(ground, [ref], 0.35, rng) for _ in range(300)) if b is not None]
    assert len(boxes) > 200
    for b in boxes:
        expected = ground.height_at(b.foot_y)
        assert 0.91 * expected <= b.height <= 1.09 * expected
        assert b.y0 >= 0  # heads are never cut by the top edge
        assert b.foot_y > ground.horizon_y
        assert b.width == pytest.approx(0.35 * b.height)
    near = [b for b in boxes if abs(b.foot_y - ref.foot_y) < 0.3 * ref.height]
    assert len(near) > 0.5 * len(boxes)  # most new people join the existing one's depth


def test_standing_reference_rules():
    assert is_standing_reference(PersonBox(90, 60, 130, 220), 240, 320)
    assert not is_standing_reference(PersonBox(90, 60, 130, 240), 240, 320)  # feet cut by the bottom edge
    assert not is_standing_reference(PersonBox(90, 150, 200, 220), 240, 320)  # lying / crouching
    assert not is_standing_reference(PersonBox(0, 60, 40, 220), 240, 320)  # cut by the left edge


def test_random_boxes_are_mostly_inside_and_uniform_in_scale():
    rng = np.random.default_rng(0)
    boxes = [sample_random_box(240, 320, 0.4, rng) for _ in range(400)]
    heights = np.array([b.height for b in boxes]) / 240
    assert heights.min() >= 0.25 and heights.max() <= 0.95
    assert heights.std() > 0.15  # uniform, not clustered like the perspective rule
    for b in boxes:
        assert b.x0 >= -0.25 * b.width - 1e-6 and b.x1 <= 320 + 0.25 * b.width + 1e-6


# ---------------------------------------------------------------------------------------------------- inputs


def test_empty_cutout_is_a_clear_error():
    with pytest.raises(CutoutError, match="empty"):
        make_cutout(np.zeros((50, 40, 3), np.uint8), np.zeros((50, 40), np.float32), "x/empty")


def test_cutout_touching_the_border_is_refused():
    mask = person_mask((100, 60), 30, 100, 80)  # feet on the last row
    with pytest.raises(CutoutError, match="border"):
        make_cutout(np.zeros((100, 60, 3), np.uint8), mask, "x/cut")


def test_cutout_crops_to_the_person():
    c = make_test_cutout(height=120)
    assert c.height == 120
    assert c.mask[-1].max() == 1.0 and c.mask[0].max() == 1.0  # feet on the bottom row, head on the top row


def test_image_without_people_is_a_clear_error():
    with pytest.raises(SceneError, match="no labelled person"):
        make_scene(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40), np.uint8), "single-person", "x/empty")


def test_scene_mask_size_mismatch_is_an_error():
    with pytest.raises(SceneError, match="do not match"):
        make_scene(np.zeros((40, 40, 3), np.uint8), np.ones((30, 40), np.uint8), "single-person", "x/bad")


def test_all_people_masks_become_ignore_layers():
    labels = person_mask((240, 320), 100, 220, 160).astype(np.uint8)
    scene = make_scene(np.zeros((240, 320, 3), np.uint8), labels, "all-people", "x/hs")
    assert len(scene.people) == 1 and scene.people[0].ignore


def test_scene_without_a_standing_person_is_refused():
    image = textured_background((240, 320), 0)
    mask = np.zeros((240, 320), bool)
    mask[150:239, 40:200] = True  # wide blob touching the bottom: no ground line to read
    scene = Scene("x/lying", image, [ScenePerson(mask)])
    for mode in ("realistic", "random"):
        with pytest.raises(SceneError, match="ground line"):
            compose_composite(scene, [make_test_cutout()], mode, np.random.default_rng(0))


def test_unknown_mode_and_no_cutouts_are_errors():
    with pytest.raises(ValueError, match="mode"):
        compose_composite(make_test_scene(), [make_test_cutout()], "diffusion", np.random.default_rng(0))
    with pytest.raises(ValueError, match="cutout"):
        compose_composite(make_test_scene(), [], "realistic", np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------- occlusion


def _layer(mask: np.ndarray, depth: float, colour, origin="pasted", ignore=False) -> Layer:
    rgb = np.zeros(mask.shape + (3,), np.float32)
    rgb[:] = colour
    return Layer(rgb, mask.astype(np.float32), box_of_mask(mask), depth, f"t/{depth}", origin, ignore)


def test_nearer_person_hides_the_one_behind():
    shape = (100, 100)
    back = np.zeros(shape, bool)
    back[10:90, 20:60] = True
    front = np.zeros(shape, bool)
    front[20:95, 40:80] = True
    ordered = [_layer(back, 90, (255, 0, 0)), _layer(front, 95, (0, 0, 255))]
    labels = label_map(ordered, [1, 2], shape)
    assert (labels[front] == 2).all()
    assert (labels[back & ~front] == 1).all()
    assert not ((labels == 1) & front).any()
    vis = visible_alphas(ordered)
    assert vis[0][front].max() == 0.0
    assert vis[0].sum() == pytest.approx((back & ~front).sum())


def test_composite_masks_are_consistent_with_the_image():
    scene = make_test_scene()
    cutouts = [make_test_cutout(colour=(30, 60, 200), seed=2), make_test_cutout(colour=(40, 200, 40), seed=3)]
    made = 0
    for seed in range(40):
        try:
            comp = compose_composite(scene, cutouts, "realistic", np.random.default_rng(seed))
        except RejectedComposite:
            continue
        made += 1
        n = len(comp.alphas)
        assert n == 3
        assert set(np.unique(comp.labels).tolist()) <= set(range(n + 1))
        for k in range(1, n + 1):
            # Each label is exactly where that person's soft alpha is >= 0.5: one owner per pixel.
            np.testing.assert_array_equal(comp.labels == k, comp.alphas[k - 1] >= 0.5)
            assert comp.persons[k - 1]["label"] == k
        owners = sum((a >= 0.5).astype(int) for a in comp.alphas)
        assert owners.max() <= 1
        # Occlusion follows feet: where two people's boxes and alphas overlap, the lower feet win.
        boxes = [p["box"] for p in comp.persons]
        assert comp.persons[0]["origin"] == "scene"
        for i in range(n):
            for j in range(n):
                if boxes[i][3] > boxes[j][3] + 1:
                    assert not ((comp.labels == j + 1) & (comp.alphas[i] >= 0.999)).any()
        # Soft edges exist only around pasted people.
        soft = [(a > 0.05) & (a < 0.95) for a in comp.alphas[1:]]
        assert all(s.any() for s in soft)
    assert made >= 5


def test_heavily_occluded_person_is_rejected():
    shape = (120, 100)
    back = person_mask(shape, 50, 100, 70)
    front = np.zeros(shape, bool)
    front[10:110, 20:80] = True
    ordered = [_layer(back, 100, (255, 0, 0)), _layer(front, 110, (0, 0, 255))]
    reasons = reasons_to_reject(ordered, visible_alphas(ordered), shape, Rules())
    assert any("occluded" in r for r in reasons)
    assert reasons_to_reject(ordered[1:], visible_alphas(ordered[1:]), shape, Rules()) == []


def test_head_occlusion_rule():
    shape = (120, 100)
    back = person_mask(shape, 50, 100, 80)
    hat = np.zeros(shape, bool)
    hat[15:40, 30:70] = True  # covers the head only
    ordered = [_layer(back, 100, (255, 0, 0)), _layer(hat, 110, (0, 0, 255))]
    vis = visible_alphas(ordered)
    assert any("head" in r for r in reasons_to_reject(ordered, vis, shape, Rules()))
    assert not any("head" in r for r in reasons_to_reject(ordered, vis, shape, Rules(check_head=False)))


def test_feather_gives_a_soft_but_complete_edge():
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1
    a = feather(mask, 1.0)
    assert a[20, 20] == pytest.approx(1.0, abs=1e-3) and a[0, 0] == 0.0
    assert ((a > 0.05) & (a < 0.95)).sum() > 40


# ---------------------------------------------------------------------------------------------------- modes


def test_same_seed_same_composite_and_other_seed_differs():
    scene, cutouts = make_test_scene(), [make_test_cutout()]

    def run(seed):
        for s in range(seed, seed + 40):
            try:
                return compose_composite(scene, cutouts, "realistic", np.random.default_rng(s))
            except RejectedComposite:
                continue
        raise AssertionError("no composite")

    a, b, c = run(0), run(0), run(7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.descriptions == b.descriptions
    assert not np.array_equal(a.labels, c.labels)


def test_random_mode_pastes_unharmonised_on_top():
    scene = make_test_scene()
    cut = make_test_cutout(colour=(30, 60, 200))
    for seed in range(40):
        try:
            comp = compose_composite(scene, [cut], "random", np.random.default_rng(seed))
        except RejectedComposite:
            continue
        pasted = comp.alphas[1] >= 0.999
        # No colour transfer, no shadow: the opaque interior keeps the cutout's exact colour.
        assert np.abs(comp.image[pasted].astype(int) - [30, 60, 200]).max() <= 1
        # Pasted people go on top of the scene person whatever their feet say: nothing hides them.
        assert comp.persons[1]["visible_fraction"] == pytest.approx(1.0, abs=1e-3)
        return
    raise AssertionError("no random composite in 40 seeds")


def test_realistic_mode_harmonises_towards_the_scene():
    shape = (240, 320)
    scene = make_test_scene(shape)
    scene.image[:] = (scene.image * 0.35).astype(np.uint8)  # a dark scene
    scene.image[scene.people[0].mask] = (80, 20, 20)
    cut = make_test_cutout(colour=(230, 230, 230))
    for seed in range(40):
        try:
            comp = compose_composite(scene, [cut], "realistic", np.random.default_rng(seed))
        except RejectedComposite:
            continue
        inside = comp.alphas[1] >= 0.999
        assert comp.image[inside].mean() < 215  # the white cutout got darker in a dark scene
        return
    raise AssertionError("no realistic composite in 40 seeds")


def test_lab_transfer_moves_brightness_partially_and_leaves_outside_alone():
    person = np.zeros((60, 60, 3), np.float32)
    alpha = np.zeros((60, 60), np.float32)
    person[10:50, 20:40] = 200
    alpha[10:50, 20:40] = 1
    scene = np.full((60, 60, 3), 40, np.uint8)
    region = alpha == 0
    out = transfer_lab(person, alpha, scene, region)
    inside = out[alpha == 1].mean()
    assert 40 < inside < 200
    np.testing.assert_array_equal(out[alpha == 0], person[alpha == 0])


def test_contact_shadow_sits_under_the_feet():
    box = PersonBox(100, 50, 140, 200)
    shadow = contact_shadow(box, (240, 320), 0.4)
    assert shadow.max() == pytest.approx(0.4, abs=0.05)
    ys, xs = np.unravel_index(np.argmax(shadow), shadow.shape)
    assert abs(ys - 198) <= 4 and abs(xs - 120) <= 4
    assert shadow[:150].max() == 0.0


# ---------------------------------------------------------------------------------------------------- bystanders


def test_bystander_components_keep_standing_blobs_away_from_the_labelled_person():
    shape = (300, 200)
    labelled = person_mask(shape, 60, 290, 250)
    prob = np.zeros(shape, np.float32)
    prob[labelled] = 1.0
    prob[40:100, 150:170] = 0.9  # a passer-by: tall, far from the labelled person
    prob[250:270, 120:190] = 0.9  # a car-like wide blob
    prob[100:140, 96:104] = 0.9  # the labelled person's own fringe, just outside their mask
    prob[20:25, 10:13] = 0.9  # too small to be a person
    found = bystander_components(prob, labelled)
    assert len(found) == 1
    assert found[0][70, 160] and found[0].sum() == 60 * 20


def test_person_probability_covers_the_whole_frame_with_tiles():
    image = np.zeros((123, 77, 3), np.uint8)
    calls = []

    def fake(tile):
        calls.append(tile.shape)
        return np.full(tile.shape[:2], 0.8, np.float32)

    prob = person_probability(image, fake)
    assert prob.shape == (123, 77) and prob.min() == pytest.approx(0.8)
    assert len(calls) > 4 and all(s[0] == s[1] for s in calls)


def test_bystander_detections_are_cached(tmp_path):
    shape = (300, 200)
    labelled = person_mask(shape, 60, 290, 250)

    def fake(tile):
        out = np.zeros(tile.shape[:2], np.float32)
        out[tile.shape[0] // 4 : tile.shape[0] // 2, -10:] = 1.0
        return out

    cache = tmp_path / "b.png"
    first = find_bystanders(np.zeros(shape + (3,), np.uint8), labelled, fake, cache)

    def broken(tile):
        raise AssertionError("the cache should have been used")

    second = find_bystanders(np.zeros(shape + (3,), np.uint8), labelled, broken, cache)
    assert len(first) == len(second) >= 1
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bystanders_are_ignore_and_never_block_a_composite():
    scene = make_test_scene()
    by = person_mask((240, 320), 200, 120, 50)  # a small passer-by further back
    scene.people.append(ScenePerson(by, ignore=True, origin="bystander"))
    cut = make_test_cutout()
    kept = 0
    for seed in range(60):
        try:
            comp = compose_composite(scene, [cut], "realistic", np.random.default_rng(seed))
        except RejectedComposite:
            continue
        kept += 1
        assert len(comp.alphas) == 2  # the bystander gets no label of its own
        visible_by = by & (comp.labels != 2)
        assert (comp.labels[visible_by] == 255).all()
    assert kept >= 5


def test_a_hidden_bystander_is_not_a_reason_to_reject():
    shape = (120, 100)
    by = person_mask(shape, 50, 60, 40)
    front = np.zeros(shape, bool)
    front[5:115, 20:80] = True
    ordered = [_layer(by, 60, (9, 9, 9), origin="bystander", ignore=True), _layer(front, 115, (0, 0, 255))]
    assert reasons_to_reject(ordered, visible_alphas(ordered), shape, Rules()) == []
    ordered[0].origin = "scene"  # the same layer as a scene person must be protected
    assert reasons_to_reject(ordered, visible_alphas(ordered), shape, Rules())


# ---------------------------------------------------------------------------------------------------- text


def test_descriptions_pick_one_person_each():
    shape = (200, 300)
    image = textured_background(shape, 0)
    left = person_mask(shape, 60, 190, 150)
    right = person_mask(shape, 220, 190, 150)
    image[left] = (210, 30, 30)
    image[right] = (30, 60, 210)
    views = [PersonView(left, 40, 190, 190), PersonView(right, 40, 190, 190)]
    texts = describe(image, views)
    assert "the leftmost person" in texts[0] and "the person in the red top" in texts[0]
    assert "the rightmost person" in texts[1] and "the person in the blue top" in texts[1]
    assert not set(texts[0]) & set(texts[1])


def test_descriptions_count_unlabelled_people_but_do_not_describe_them():
    shape = (200, 300)
    image = textured_background(shape, 0)
    masks = [person_mask(shape, x, 190, 150) for x in (50, 150, 250)]
    for m in masks:
        image[m] = (210, 30, 30)  # all in red: colour must not be used
    views = [PersonView(masks[0], 40, 190, 190, labelled=False)] + [
        PersonView(m, 40, 190, 190) for m in masks[1:]
    ]
    texts = describe(image, views)
    assert texts[0] == []
    assert "the leftmost person" not in texts[1]  # someone unlabelled stands further left
    assert "the person in the middle" in texts[1]
    assert not any("red" in t for t in texts[1] + texts[2])


def test_colour_names():
    def px(rgb):
        return np.tile(np.array(rgb, np.uint8), (50, 1))

    assert colour_name(px((10, 10, 10))) == "black"
    assert colour_name(px((240, 240, 240))) == "white"
    assert colour_name(px((200, 30, 30))) == "red"
    assert colour_name(px((30, 60, 200))) == "blue"
    assert colour_name(px((30, 160, 40))) == "green"
    assert colour_name(px((225, 205, 170))) == "beige"
    assert colour_name(px((1, 2, 3))[:5]) is None
    # Reds on both sides of the hue wrap-around stay red.
    assert colour_name(np.vstack([px((200, 20, 30)), px((200, 30, 20))])) == "red"


# ---------------------------------------------------------------------------------------------------- data sets


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_set_writes_the_data_layout_deterministically(tmp_path):
    data = write_fake_data_root(tmp_path / "data")
    out1, out2 = tmp_path / "a", tmp_path / "b"
    m1 = generate_set(out1, 6, 5, "realistic", data, sources=FAKE_SOURCES)
    generate_set(out2, 6, 5, "realistic", data, sources=FAKE_SOURCES)
    f1, f2 = _files(out1), _files(out2)
    f1.pop("manifest.json"), f2.pop("manifest.json")  # holds the wall-clock time
    assert f1 == f2

    from backend.data import load_set, person_targets

    ds = load_set(out1)
    assert ds.mask_kind == "instance" and len(ds.items) == 6
    texts = json.loads((out1 / "descriptions.json").read_text())["items"]
    for entry, item in zip(m1["items"], ds.items, strict=True):
        labels = cv2.imread(str(out1 / entry["instances"]), cv2.IMREAD_UNCHANGED)
        # A humanseg scene's people are one ignore blob (255), so such a composite may label one pasted person.
        min_persons = 2 if entry["scene"].startswith("ccp-fashion") else 1
        assert entry["persons"] == len(entry["alpha"]) == len(texts[entry["id"]]) >= min_persons
        assert (entry["ignore_px"] > 0) == entry["scene"].startswith("humanseg")
        assert entry["person_area_px"] == [int((labels == k).sum()) for k in range(1, entry["persons"] + 1)]
        assert len(item.alpha_paths) == entry["persons"]
        for k, rel in enumerate(entry["alpha"], start=1):
            alpha = cv2.imread(str(out1 / rel), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(alpha >= 128, labels == k)
        assert entry["scene"].split("/")[1] not in [
            p["source"].split("/")[1] for p in entry["person_info"][1:]
        ]
        assert person_targets(item).masks


def test_generate_set_never_uses_validation_items(tmp_path):
    from backend.data import load_set, split

    data = write_fake_data_root(tmp_path / "data", n_ccp=30)
    _, val = split(load_set(data / "ccp-fashion").items)
    assert val, "the fake set should have a validation part"
    m = generate_set(tmp_path / "out", 8, 1, "random", data, sources=FAKE_SOURCES)
    used = {m_["scene"] for m_ in m["items"]} | {p["source"] for it in m["items"] for p in it["person_info"]}
    assert not used & {it.key for it in val}


def test_generate_set_refuses_held_out_sets_and_bad_arguments(tmp_path):
    data = write_fake_data_root(tmp_path / "data")
    with pytest.raises(SceneError, match="held-out"):
        generate_set(tmp_path / "o", 2, 0, "realistic", data, sources=["coco128-persons"])
    with pytest.raises(GenerationError, match="count"):
        generate_set(tmp_path / "o", 0, 0, "realistic", data)
    with pytest.raises(GenerationError, match="mode"):
        generate_set(tmp_path / "o", 2, 0, "sd", data)
    generate_set(tmp_path / "o", 1, 0, "realistic", data, sources=FAKE_SOURCES)
    with pytest.raises(GenerationError, match="already"):
        generate_set(tmp_path / "o", 1, 0, "realistic", data, sources=FAKE_SOURCES)
    assert (tmp_path / "o" / "manifest.json").exists()  # the refused run left the existing set alone
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(GenerationError, match="no data set"):
        generate_set(tmp_path / "notes", 1, 0, "realistic", data, sources=FAKE_SOURCES, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_failed_overwrite_keeps_the_previous_set(tmp_path, monkeypatch):
    import backend.synth.dataset as dataset

    data = write_fake_data_root(tmp_path / "data")
    out = tmp_path / "set"
    generate_set(out, 2, 0, "realistic", data, sources=FAKE_SOURCES)
    before = _files(out)

    def always_rejected(*args, **kwargs):
        raise RejectedComposite(["test: implausible"])

    monkeypatch.setattr(dataset, "compose_composite", always_rejected)
    with pytest.raises(GenerationError, match="attempts"):
        generate_set(out, 2, 1, "realistic", data, sources=FAKE_SOURCES, overwrite=True, max_attempts=3)
    assert _files(out) == before


def test_cli_reports_errors_and_writes_sets(tmp_path, capsys):
    from backend.synth.__main__ import main

    data = write_fake_data_root(tmp_path / "data")
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--count",
        "2",
        "--mode",
        "random",
        "--data",
        str(data),
        "--sources",
        *FAKE_SOURCES,
        "--bystander-cache",
        str(tmp_path / "bystanders"),
    ]
    assert main(args) == 0
    assert len(json.loads((out / "manifest.json").read_text())["items"]) == 2
    assert (
        main(["--out", str(out), "--count", "2", "--data", str(data), "--sources", "pennfudan-sample"]) == 1
    )
    assert "held-out" in capsys.readouterr().err


@pytest.mark.skipif(not (default_data_root() / "ccp-fashion").is_dir(), reason=f"needs the data set ccp-fashion at {default_data_root()} (beside the clone)")
def test_real_data_smoke(tmp_path):
    m = generate_set(tmp_path / "real", 3, 11, "realistic", default_data_root(), max_side=320)
    assert [it["persons"] >= 2 for it in m["items"]] == [True] * 3
    assert max(max(it["width"], it["height"]) for it in m["items"]) <= 320


def _write_instance_set(root: Path, maps: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    items = []
    for n, labels in enumerate(maps):
        h, w = labels.shape
        cv2.imwrite(str(root / "images" / f"i{n}.png"), np.zeros((h, w, 3), np.uint8))
        cv2.imwrite(str(root / "instances" / f"i{n}.png"), labels)
        items.append(
            {
                "id": f"i{n}",
                "image": f"images/i{n}.png",
                "instances": f"instances/i{n}.png",
                "width": w,
                "height": h,
            }
        )
    manifest = {"name": root.name, "mask_kind": "instance", "items": items}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_layout_stats_measure_perspective_cues(tmp_path):
    from backend.synth.stats import layout_stats

    shape = (200, 300)
    plausible = np.zeros(shape, np.uint8)
    plausible[person_mask(shape, 50, 190, 150)] = 1  # near and tall
    plausible[person_mask(shape, 150, 188, 140)] = 2  # same depth, similar height
    plausible[person_mask(shape, 250, 120, 60)] = 3  # far and small
    implausible = np.zeros(shape, np.uint8)
    implausible[person_mask(shape, 50, 190, 60)] = 1  # near but small
    implausible[person_mask(shape, 150, 120, 110)] = 2  # far but tall
    implausible[person_mask(shape, 250, 199, 100)] = 3  # feet cut by the bottom edge: not counted
    good = layout_stats(_write_instance_set(tmp_path / "good", [plausible]))
    bad = layout_stats(_write_instance_set(tmp_path / "bad", [implausible]))
    assert good["nearer_is_taller_frac"] == 1.0 and good["depth_pairs"] == 2
    assert good["same_depth_pairs"] == 1 and good["same_depth_height_ratio_median"] < 1.1
    assert bad["nearer_is_taller_frac"] == 0.0 and bad["depth_pairs"] == 1
    assert good["labelled_persons_per_image"] == 3.0


def test_area_rule_counts_final_mask_pixels():
    from backend.synth.plausibility import labels_too_small

    labels = np.zeros((100, 100), np.uint8)
    labels[:10, :10] = 1  # exactly 1 %
    labels[50:59, 50:60] = 2  # 0.9 %
    reasons = labels_too_small(labels, [1, 2], Rules())
    assert len(reasons) == 1 and reasons[0].startswith("label 2")


def test_top_colour_ignores_hair_and_arms_at_the_sides():
    shape = (200, 120)
    image = np.zeros(shape + (3,), np.uint8)
    mask = np.zeros(shape, bool)
    mask[10:190, 20:100] = True
    image[:, 20:50] = (90, 60, 30)  # long brown hair / arms over the outer parts
    image[:, 50:70] = (210, 30, 30)  # the red top in the middle
    image[:, 70:100] = (90, 60, 30)
    texts = describe(
        image, [PersonView(mask, 10, 190, 190), PersonView(person_mask(shape, 60, 199, 10), 189, 199, 199)]
    )
    assert "the person in the red top" in texts[0]
