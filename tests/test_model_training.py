"""Training helpers: MRN targets and coarse-mask degradation, crop boxes, collages."""

import numpy as np

from backend.train.cache import IGNORE, _collage
from backend.train.mrn import _crop_box, degrade, label_consistent


def test_label_consistent_alpha_keeps_the_labelled_edge_and_the_soft_values():
    mask = np.zeros((4, 6), bool)
    mask[:, :3] = True
    alpha = np.array([[1.0, 0.9, 0.3, 0.7, 0.1, 0.0]] * 4, np.float32)
    out = label_consistent(alpha, mask)
    assert np.array_equal((out >= 0.5), mask | (out == 0.5))
    assert np.allclose(out[0], [1.0, 0.9, 0.5, 0.5, 0.1, 0.0])


def test_degraded_masks_are_soft_in_range_and_near_the_original():
    rng = np.random.default_rng(0)
    mask = np.zeros((96, 96), np.uint8)
    mask[20:80, 30:60] = 1
    for _ in range(5):
        m = degrade(mask, rng)
        assert m.shape == mask.shape and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0
        inter = ((m > 0.5) & (mask > 0)).sum()
        assert inter / max(1, ((m > 0.5) | (mask > 0)).sum()) > 0.4


def test_crop_box_grows_the_bbox_and_stays_inside():
    mask = np.zeros((50, 100), bool)
    mask[10:20, 40:60] = True
    assert _crop_box(mask, 0.5) == (30, 5, 70, 25)
    mask[:, 95:] = True
    x0, y0, x1, y1 = _crop_box(mask, 0.5)
    assert (x0, y0) >= (0, 0) and (x1, y1) == (100, 50)


def test_collage_gives_each_person_its_own_label():
    rng = np.random.default_rng(0)
    parts = []
    for k in range(3):
        img = np.full((40, 20, 3), 50 * k, np.uint8)
        lab = np.zeros((40, 20), np.uint8)
        lab[5:35, 5:15] = 1
        lab[0, 0] = IGNORE
        parts.append((img, lab))
    img, lab = _collage(parts, 96, rng)
    assert img.shape == (96, 96, 3) and lab.shape == (96, 96)
    values = set(np.unique(lab).tolist())
    assert {1, 2, 3} <= values and values <= {0, 1, 2, 3, IGNORE}
    xs = [np.nonzero(lab == k)[1].mean() for k in (1, 2, 3)]
    assert xs == sorted(xs)  # left to right in the order given


def _crops(n: int = 3, side: int = 64) -> dict:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, side, side), np.uint8)
    masks[:, 10:50, 20:40] = 1
    return {"meta": {"side": side, "count": n},
            "images": rng.integers(0, 255, (n, side, side, 3), np.uint8),
            "masks": masks, "alphas": masks * 255, "valid": np.ones_like(masks)}


def test_mrn_batches_join_the_pose_prior_and_shrink_whole_batches():
    from backend.runtime.pose_prior import join_prior
    from backend.train.mrn import _batch

    crops = _crops()
    coarse = np.full((3, 64, 64), 0.5, np.float16)
    priors = np.zeros((3, 64, 64), np.float16)
    priors[:, 10:50, 20:40] = 0.9
    priors[1] = np.nan  # the pose model found nobody in this crop
    joined = join_prior(coarse[0].astype(np.float32), priors[0].astype(np.float32))
    seen_joined, sizes = False, set()
    for seed in range(40):
        x, a = _batch(crops, coarse, np.array([0, 1, 2]), np.random.default_rng(seed), priors, min_scale=0.5)
        assert x.shape[:2] == (3, 4) and a.shape[:2] == (3, 1) and x.shape[-2:] == a.shape[-2:]
        assert x.shape[-1] % 32 == 0 and x.shape[-2] % 32 == 0
        sizes.add(x.shape[-1])
        if x.shape[-1] == 64:
            m = x[0, 3].numpy()
            seen_joined |= bool(np.allclose(m, joined, atol=1e-4) or np.allclose(m[:, ::-1], joined, atol=1e-4))
            assert not np.allclose(x[1, 3].numpy(), 0.9)  # no prior for crop 1: never joined with NaN
            assert np.isfinite(x.numpy()).all()
    assert seen_joined and sizes == {32, 64}


def test_mrn_crops_take_every_target_of_a_composite_and_keep_neighbours_as_background(tmp_path):
    from backend.data import load_set
    from backend.train.mrn import open_crops, prepare
    from tests.test_data import make_set

    labels = np.zeros((120, 160), np.uint8)
    labels[20:110, 20:70] = 1
    labels[20:110, 65:120] = 2  # touches person 1: each crop holds part of the other person
    labels[0:2, 0:2] = 3  # far below 1 % of the image: never a target, never a crop
    items = list(load_set(make_set(tmp_path, "instance", labels, name="composite")).items)
    single = np.zeros((120, 160), np.uint8)
    single[30:100, 50:110] = 1
    items += list(load_set(make_set(tmp_path, "single-person", single, name="photo")).items)
    crops = open_crops(prepare(tmp_path / "crops", items, 64, 0.15, 0, lambda _msg: None))
    entries = crops["meta"]["entries"]
    assert crops["meta"]["count"] == 3
    assert sorted((e["key"], e["target"]) for e in entries) == [("composite/a", 1), ("composite/a", 2), ("photo/a", 1)]
    for e, mask, valid in zip(entries, crops["masks"], crops["valid"], strict=True):
        x0, y0, x1, y1 = e["box"]
        if e["key"] == "composite/a":
            own = labels[y0:y1, x0:x1] == e["target"]
            other = labels[y0:y1, x0:x1] == 3 - e["target"]
            assert other.any()  # the neighbour is inside the crop ...
            # ... and only the crop's own person is foreground (fractions of the letterboxed crop's inner area)
            assert abs(mask.sum() / valid.sum() - own.mean()) < 0.05


def test_keep_weights_weigh_only_pixels_the_previous_round_had_right():
    import torch

    from backend.train.iscn import keep_weights

    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    prev = torch.tensor([[[0.9, 0.2], [0.1, 0.7]]]).repeat(2, 1, 1).unsqueeze(1)
    weights = keep_weights(prev, torch.tensor([True, False]), target, 2.0)
    # Right before: (0, 0) held the person, (1, 0) was background; the other two were wrong.
    assert weights[0].tolist() == [[3.0, 1.0], [3.0, 1.0]]
    # A first round has nothing to keep.
    assert weights[1].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_frozen_parts_leave_only_the_named_iscn_parts_trainable():
    import pytest

    from backend.dfimat.iscn import ISCN
    from backend.train.iscn import frozen_parts

    iscn = ISCN()
    frozen = frozen_parts(iscn, ("conflict", "sampler"))
    assert set(frozen) == {"pixel_decoder", "dense_encoder", "decoder"}
    trainable = {name.split(".")[0] for name, p in iscn.named_parameters() if p.requires_grad}
    assert trainable == {"conflict", "sampler"}
    assert frozen_parts(ISCN(), None) == []
    with pytest.raises(SystemExit, match="no ISCN part named crm"):
        frozen_parts(ISCN(), ("crm",))


def test_prev_ious_count_only_weighted_pixels():
    import torch

    from backend.train.iscn import prev_ious

    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    prev = torch.tensor([[[0.9, 0.1], [0.8, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]).unsqueeze(1)
    weight = torch.ones(2, 2, 2)
    # One of three pixels in the union is shared; an empty target with an empty mask is right.
    assert torch.allclose(prev_ious(prev, target, weight), torch.tensor([1 / 3, 1.0]))
    weight[0, 1, 0] = 0.0  # an ignored pixel counts for neither side
    assert torch.allclose(prev_ious(prev, target, weight)[0], torch.tensor(0.5))
