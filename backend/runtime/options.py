"""Every on/off switch of the engine's rules, with its default, read from the environment in this one place.

    options = EngineOptions.from_env()                 # defaults, overridden by $DFIMAT_* variables
    engine = Engine.load(options=options.with_overrides(focus=False))

Each switch names a rule the engine adds around the networks (`backend.runtime`); the engine records per round
which of them fired (`Engine.rules`), so an answer can be explained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

FINDERS = ("mediapipe", "nets", "both")
TAKE_OUT_MARKS = ("off", "first", "all")
TEXT_MATCHES = ("facts", "similarity")
OTHERS_INPUTS = ("off", "first", "all")
MARKS_ISCN = ("off", "first", "all")
MARKS_OTHERS = ("first", "all")
LOCAL_CORRECTIONS = ("off", "all", "growth", "late")
CLICK_BOX_SUPPORTS = ("off", "all", "corrective")
_ON = ("1", "true", "on", "yes")
_OFF = ("0", "false", "off", "no")


@dataclass(frozen=True)
class EngineOptions:
    """The engine's switches. Each default is the measured choice recorded in docs/experiments.md."""

    # Zoom-in second ISCN pass on small targets (`backend.runtime.focus`): held-out one-box IoU 0.655 -> 0.675.
    focus: bool = True
    # Corrective rounds keep the last round's focus region while the target still fits it
    # (`backend.runtime.focus.held_region`). Small-people composite mosaics: corrective click rounds losing > 0.02 IoU
    # 9.5 -> 7.7 %, clicks @5 +0.005 [+0.001, +0.010]; held-out drops 9.4 -> 7.8 % but clicks @5 -0.007 [-0.016,
    # -0.001], so off (docs/experiments.md).
    focus_hold: bool = False
    # A corrective round whose coarse mask has spread too wide to focus keeps focusing on the last round's region
    # while the box and positive marks still fit it (`backend.runtime.focus.stay_region`). Fresh composites and their
    # small-people mosaics: clicks @5 +0.001 [+0.000, +0.003]; held-out clicks @3 +0.015 [+0.003, +0.031], @5 +0.013
    # [+0.002, +0.028], @20 -0.008 [-0.022, +0.000] (docs/experiments.md, "People networks").
    focus_stay: bool = True
    # ... and also in the round after a found person's box (`click_box`, `weak_box`) stopped prompting the networks,
    # where the region would move from that box to the marks and the coarse mask. Fresh composites and their
    # small-people mosaics: clicks @5 +0.001 [-0.001, +0.002], drops 6.2 -> 5.9 %; held-out scribbles round 5 +0.002
    # [+0.000, +0.005], clicks @5 -0.000 [-0.003, +0.002], drops 7.1 -> 7.4 % (docs/experiments.md, "People networks").
    focus_after_box: bool = True
    pose_prior: bool = True  # mediapipe's person mask joins a first round (`backend.runtime.pose_prior`)
    keep_marks: bool = True  # every click and stroke holds in the matte (`backend.runtime.marks`)
    take_out_others: bool = True  # other found people out of a box's matte (`backend.runtime.others`)
    text_grounding: bool = True  # text-only rounds answered through a found person (`backend.runtime.grounding`)
    # The people finder (`backend.runtime.people`) also looks in four corner crops, where small people are big enough
    # for mediapipe's 256 px input: held-out every-person split 48 -> 52 % found, text grounding 46 -> 50 % right;
    # about twice the finder's time.
    finder_tiles: bool = True
    # ... and in body-shaped crops hung from faces no find covers yet: validation composites 72.4 -> 78.5 % found
    # with mediapipe alone. After the person networks (text grounding on "both") they no longer pay: off, fresh
    # small-people mosaics text -0.007 [-0.022, +0.007], held-out +0.008 [+0.000, +0.024], ~25 ms less.
    finder_faces: bool = False
    # The corner crops are searched with the people found so far painted out, so their calls go to people not found
    # yet instead of re-finding the known ones (`backend.runtime.people.PoseDetector.find`): first text round 0.80 ->
    # 0.53-0.59 s on the bench photo; fresh composites text -0.005 [-0.021, +0.011] (docs/experiments.md).
    tiles_paint_known: bool = True
    # Who finds the people for the take-out and the every-person split (`FINDERS`): "mediapipe" (its pose model, one
    # person per pass), "nets" (NanoDet + MoveNet + BlazePose masks, models/person/) or "both". nets: held-out people
    # found 59.5 -> 74.0 % (+0.145 [+0.076, +0.214]), looser box +0.005 [-0.000, +0.011] (docs/experiments.md).
    # "both": fresh composites people found +0.057, held-out unchanged, first box round 0.58 s (> 0.45 s).
    finder: str = "nets"
    # Whose finds text grounding describes (`FINDERS`): with the networks' finds alone, validation text fell 67 ->
    # 63 %. "both" finds more of the people a sentence names: held-out right person 56.6 -> 68.8 % (+0.122 [+0.049,
    # +0.198], with faces off), small-people mosaics 63.0 -> 72.0 %; with mediapipe's paint made on a shrunk copy
    # (`backend.runtime.people.heavy_blur`) and faces off its first text round fits the 0.6 s of issue #21
    # (docs/experiments.md).
    grounding_finder: str = "both"
    # A text round answered through a found person takes as its prior the mean of the pose model's masks on three crops
    # of the box, like a drawn box (`backend.runtime.pose_prior.BOX_AVERAGE_PADDINGS`). Off (the box's one crop): fresh
    # small-people mosaics text IoU -0.003 [-0.005, -0.000], right unchanged; held-out IoU +0.001, one expression of
    # 347 lost; first text round ~55 ms faster (docs/experiments.md).
    grounded_prior_average: bool = False
    # How text grounding picks among the found: "facts" (the side, order, colour, size or depth a sentence names, read
    # word by word: `backend.runtime.sentence`; similarity for sentences naming none) or "similarity" (MiniLM against
    # generated descriptions of each found person). facts: validation mosaics text 76.6 -> 79.6 % right
    # (+0.030 [-0.003, +0.065]), independently paraphrased 69.8 -> 79.6 % (+0.098 [+0.060, +0.137]).
    text_match: str = "facts"
    # The person networks keep two finds that each carry their own MoveNet pose as two people however much their
    # BlazePose masks overlap (`backend.runtime.finder.FinderOptions.keep_two_poses`). Off: validation finder-level
    # 85 -> 90 % found, but every-person mattes +0.006 [+0.000, +0.018] only.
    keep_two_poses: bool = False
    # ... for the every-person split alone (`Engine.people_in`): now that each find is prompted with its own detector
    # box, two poses kept apart give two mattes. Fresh composites and their small-people mosaics: people found
    # 88.3 -> 91.1 % (+0.027 [+0.014, +0.040]), best IoU +0.020 [+0.011, +0.029], false mattes unchanged; for the
    # take-out too (`keep_two_poses`) fresh box -0.002 [-0.006, +0.001] (docs/experiments.md).
    split_two_poses: bool = True
    # The person networks' finds carry their detector's box (NanoDet's, else MoveNet's), not their mask's extent, so
    # the every-person split prompts each person with it (`backend.runtime.people.NetsDetector`). Fresh composites
    # and their small-people mosaics: people found 80.3 -> 83.5 % (+0.033 [+0.009, +0.055]); held-out 74.8 ->
    # 75.6 % (+0.008 [-0.031, +0.053]), best IoU 0.628 -> 0.652 (+0.024 [+0.010, +0.042]) (docs/experiments.md).
    detector_boxes: bool = True
    # The every-person split's finder also runs NanoDet on four corner crops, where small people are bigger to it
    # (`backend.runtime.finder.with_corner_boxes`; the take-out and text grounding do without, for their time).
    # Fresh composites and their small-people mosaics: people found 83.5 -> 90.5 % (+0.070 [+0.045, +0.095]), best
    # IoU +0.047 [+0.026, +0.068]; held-out 75.6 -> 77.1 % (+0.015 [-0.015, +0.046]); ~0.15-0.2 s per photo.
    every_person_tiles: bool = True
    # In a box session whose matte matches no find, the finds beside the box go anyway (`backend.runtime.others`,
    # `OFF_BOX_IOU`). Fresh composites and their small-people mosaics: box +0.001 [-0.002, +0.003], 15 % looser box
    # +0.003 [+0.000, +0.005]; held-out mean leak after one box 10.4 -> 8.3 %, box +0.000 [-0.005, +0.005], looser
    # box +0.007 [+0.001, +0.014] (docs/experiments.md, "People networks").
    off_box: bool = True
    # A box drawn clearly looser than a found person's detector box, around that person alone, prompts the networks
    # with the find's box (`backend.runtime.box_snap`); the user's box still bounds the matte. Fresh composites and
    # their small-people mosaics: 15 % looser box +0.006 [+0.001, +0.010], tight box -0.004 [-0.006, -0.001], so off.
    box_snap: bool = False
    # A session with marks but no box (text or not): when its first round's positive marks lie on one found person's
    # mask and the networks' own answer agrees with it, that person's detector box prompts the networks, as if drawn
    # before the marks, grown to hold later positive marks, until a negative mark lands on that person's mask
    # (`backend.runtime.click_box`); it never bounds the matte. Fresh composites (synth-v23 and its mosaics): clicks
    # @1 +0.074 [+0.061, +0.089], @5 +0.003 [-0.003, +0.010], scribbles r1 +0.078; held-out clicks @1 +0.028
    # [+0.009, +0.047], NoC@90 12.94 -> 12.53, @5 -0.005 [-0.014, +0.003] (docs/experiments.md, "People networks").
    click_box: bool = True
    # `click_box`'s guard also lets a find through that lies mostly inside the marks' own answer, an answer that spilled
    # onto the neighbours (`backend.runtime.engine.CLICK_BOX_COVER`), not only one that agrees with it by IoU. Off:
    # held-out clicks @1 +0.017 [+0.004, +0.035] but @20 -0.005 [-0.013, -0.000] (docs/experiments.md).
    click_box_cover: bool = False
    # A round a found person's box prompts (`click_box`) cuts the matte to that box, as grown to hold the positive
    # marks, plus the drawn box's margin (`backend.runtime.engine.box_support`): "off", "all" such rounds, or
    # "corrective" rounds only (not the first). "all": held-out clicks @5 +0.012 [+0.002, +0.026], but fresh composites
    # @1 -0.003 [-0.006, -0.001], where a detector box cut a limb the networks had right (docs/experiments.md).
    click_box_support: str = "off"
    # ... and when the first round's marks lie on no find, a NanoDet box under the finder's floor that holds them
    # (and whose BlazePose mask holds them) prompts the networks in that round (`backend.runtime.weak_box`). Fresh
    # composites (synth-v31 and its mosaics): clicks @1 +0.009 [+0.003, +0.016], @5 +0.001; held-out clicks @1
    # +0.025 [+0.006, +0.050], @10 -0.002 [-0.007, +0.003], scribbles r1 +0.013 (docs/experiments.md).
    weak_box: bool = True
    # A box round's pose prior is left out when its mask and the networks' own answer agree less than this (IoU);
    # 0 = always used. Why: the pose model segments the most prominent person of its crop, which for a target
    # standing behind someone is the person in front. Fresh composites (synth-v5): box +0.003 [+0.001, +0.004],
    # 15 % looser box +0.007 [+0.005, +0.010] (docs/experiments.md, "People networks").
    prior_check: float = 0.5
    # On a CPU, the MRN runs as its int8 copy when the shipped graphs hold one (`backend.dfimat.quantize`): a
    # refinement round ~20 ms faster, validation box IoU -0.000, SAD +0.1 % (docs/experiments.md, "Speed and memory
    # choices"). Off: the float graph.
    int8_mrn: bool = True
    # Other people out of the matte in sessions without a box too (clicks, strokes, text + marks): "off", in the
    # "first" round only, or in "all" rounds. Off: both lost validation clicks @5 (-0.005) for a first-round gain.
    take_out_marks: str = "off"
    # In those sessions, the take-out also cuts the ISCN's grid that the next round compares with (its previous mask),
    # so the networks see the matte the user saw instead of one that still holds the people taken out. Off: with
    # "first", validation clicks @3 +0.006 [+0.001, +0.010] over "first" alone, but against no take-out @5 still
    # -0.003 [-0.008, +0.002] and more corrective rounds losing > 0.02 IoU (3.5 -> 4.1 %).
    take_out_prev: bool = False
    # In a session without a box, a found person a negative mark lies on (and no positive mark is near) is cut out of
    # the matte once the matte has engulfed at least half of them (`backend.runtime.others.take_out_refused`).
    # Composites hardly show an engulfing answer: fresh composites and their small-people mosaics clicks @5 -0.000 [-0.001, +0.000], drops
    # 6.4 -> 6.6 %; held-out photos (over focus_stay) clicks @5 +0.005 [+0.000, +0.013], scribbles round 5 +0.007
    # [+0.000, +0.021], 4 better and none worse each (docs/experiments.md, "People networks").
    take_out_refused: bool = True
    # A box whose crops mediapipe finds nobody in gets BlazePose's mask of the person centred on the box as its prior.
    # Off: validation one box -0.002 [-0.005, +0.000].
    box_prior_fallback: bool = False
    # A box's prior is the mean of mediapipe's crops and BlazePose's mask of the person centred on the box (BlazePose
    # alone where mediapipe finds nobody). Off: fresh composites one box -0.003 [-0.004, -0.001], looser -0.005, though
    # the held-out photos' looser box gained +0.007 [+0.001, +0.014] (docs/experiments.md, "People networks").
    box_prior_blend: bool = False
    # A corrective mark that contradicts the kept pose prior releases it only where the mark points (the region where
    # prior and ISCN disagree around the mark), instead of dropping the whole prior: validation clicks @5 +0.007
    # [+0.004, +0.011], corrective rounds that lose > 0.02 IoU 5.4 -> 3.5 %.
    release_prior: bool = True
    # A corrective click or stroke changes the matte only where the change connects to it (`backend.runtime.local`):
    # "off", "all" changes in every corrective round, "growth" only (far regions the matte adds are undone, far
    # shrinking stays), or "late": all changes from the session's fourth round on (`LATE_ROUND`). "all" / "growth":
    # validation corrective rounds losing > 0.02 IoU 3.5 -> 1.2 % / 2.5 %, but clicks @5 -0.008 / -0.003. "late" (default):
    # fresh composites 8.3 -> 5.6 % with clicks @5 +0.007 [+0.004, +0.011]; held-out photos 9.4 -> 7.2 %, clicks @5
    # -0.005 [-0.012, +0.002], NoC@90 12.75 -> 12.94 (docs/experiments.md).
    local_corrections: str = "late"
    # The found people the prompts do not point at (`backend.runtime.others.prompted_others`) go to the ISCN as
    # negative regions, in every prompt mode: "off", in a session's "first" round only, or in "all" rounds. Needs an
    # ISCN trained with them (`python -m backend.train iscn --others 0.6`); the committed one was not (zero-shot: val
    # box -0.015). Such a fine-tune with "first": fresh composites clicks @1 +0.043 [+0.035, +0.051], but @5 -0.002
    # [-0.007, +0.002] and box -0.003 [-0.006, -0.001], so neither weights nor switch were adopted.
    others_input: str = "off"
    # Sessions led by marks (no box, no text) go to the weights' marks ISCN when they carry one (`DFIMatS.iscn_marks`:
    # trained with the other found people as negative regions, `python -m backend.train iscn --others`): "off", their
    # "first" round only, or "all" their rounds; box and text sessions keep the main ISCN. The marks ISCN sees the
    # found people the marks do not point at (`backend.runtime.others.prompted_others`) in the rounds `marks_others`
    # names. With 30-minute --others fine-tunes, on five fresh composite sets: clicks @1 +0.035 to +0.046 every time,
    # but @5 -0.003 ("first", also with --spare-marked), -0.005 ("all" + others "first"), -0.012 to -0.037 ("all" +
    # others "all"). With a main ISCN trained to carry on from it (`train iscn --first-round-iscn`), "first" passed on
    # fresh composites (@1 +0.046, @5 +0.002) and lost on real held-out photos (@1 -0.006, @5 -0.026): the committed
    # weights carry no marks ISCN (docs/experiments.md).
    marks_iscn: str = "off"
    marks_others: str = "first"

    def __post_init__(self) -> None:
        for name in ("finder", "grounding_finder"):
            if getattr(self, name) not in FINDERS:
                raise ValueError(f"{name} must be one of {', '.join(FINDERS)}, got {getattr(self, name)!r}")
        if self.local_corrections not in LOCAL_CORRECTIONS:
            raise ValueError(f"local_corrections must be one of {', '.join(LOCAL_CORRECTIONS)}, "
                             f"got {self.local_corrections!r}")
        if self.text_match not in TEXT_MATCHES:
            raise ValueError(f"text_match must be one of {', '.join(TEXT_MATCHES)}, got {self.text_match!r}")
        if self.others_input not in OTHERS_INPUTS:
            raise ValueError(f"others_input must be one of {', '.join(OTHERS_INPUTS)}, got {self.others_input!r}")
        if self.marks_iscn not in MARKS_ISCN:
            raise ValueError(f"marks_iscn must be one of {', '.join(MARKS_ISCN)}, got {self.marks_iscn!r}")
        if self.marks_others not in MARKS_OTHERS:
            raise ValueError(f"marks_others must be one of {', '.join(MARKS_OTHERS)}, got {self.marks_others!r}")
        if self.take_out_marks not in TAKE_OUT_MARKS:
            raise ValueError(f"take_out_marks must be one of {', '.join(TAKE_OUT_MARKS)}, got {self.take_out_marks!r}")
        if self.click_box_support not in CLICK_BOX_SUPPORTS:
            raise ValueError(f"click_box_support must be one of {', '.join(CLICK_BOX_SUPPORTS)}, "
                             f"got {self.click_box_support!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineOptions:
        """The defaults, each overridden by its variable (`ENV_VARS`) when set to a recognised on/off word."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            if isinstance(f.default, bool):
                values[f.name] = env_flag(ENV_VARS[f.name], f.default, env)
            elif isinstance(f.default, float):
                raw = env.get(ENV_VARS[f.name], "").strip()
                try:
                    values[f.name] = float(raw) if raw else f.default
                except ValueError:
                    raise ValueError(f"{ENV_VARS[f.name]} must be a number, got {raw!r}") from None
            else:
                values[f.name] = env.get(ENV_VARS[f.name], "").strip().lower() or f.default
        return cls(**values)

    def with_overrides(self, **switches: bool | str | None) -> EngineOptions:
        """A copy with the given switches set; None leaves a switch as it is (the keyword arguments of
        `Engine.load`)."""
        unknown = set(switches) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in switches.items() if v is not None})


ENV_VARS = {
    "focus": "DFIMAT_FOCUS",
    "focus_hold": "DFIMAT_FOCUS_HOLD",
    "focus_stay": "DFIMAT_FOCUS_STAY",
    "focus_after_box": "DFIMAT_FOCUS_AFTER_BOX",
    "pose_prior": "DFIMAT_POSE_PRIOR",
    "keep_marks": "DFIMAT_KEEP_MARKS",
    "take_out_others": "DFIMAT_TAKE_OUT_OTHERS",
    "text_grounding": "DFIMAT_TEXT_GROUNDING",
    "finder_tiles": "DFIMAT_FINDER_TILES",
    "finder_faces": "DFIMAT_FINDER_FACES",
    "tiles_paint_known": "DFIMAT_TILES_PAINT_KNOWN",
    "finder": "DFIMAT_FINDER",
    "grounding_finder": "DFIMAT_GROUNDING_FINDER",
    "grounded_prior_average": "DFIMAT_GROUNDED_PRIOR_AVERAGE",
    "text_match": "DFIMAT_TEXT_MATCH",
    "keep_two_poses": "DFIMAT_KEEP_TWO_POSES",
    "split_two_poses": "DFIMAT_SPLIT_TWO_POSES",
    "click_box": "DFIMAT_CLICK_BOX",
    "click_box_cover": "DFIMAT_CLICK_BOX_COVER",
    "click_box_support": "DFIMAT_CLICK_BOX_SUPPORT",
    "weak_box": "DFIMAT_WEAK_BOX",
    "detector_boxes": "DFIMAT_DETECTOR_BOXES",
    "every_person_tiles": "DFIMAT_EVERY_PERSON_TILES",
    "off_box": "DFIMAT_OFF_BOX",
    "box_snap": "DFIMAT_BOX_SNAP",
    "prior_check": "DFIMAT_PRIOR_CHECK",
    "int8_mrn": "DFIMAT_INT8_MRN",
    "take_out_marks": "DFIMAT_TAKE_OUT_MARKS",
    "take_out_prev": "DFIMAT_TAKE_OUT_PREV",
    "take_out_refused": "DFIMAT_TAKE_OUT_REFUSED",
    "box_prior_fallback": "DFIMAT_BOX_PRIOR_FALLBACK",
    "box_prior_blend": "DFIMAT_BOX_PRIOR_BLEND",
    "release_prior": "DFIMAT_RELEASE_PRIOR",
    "local_corrections": "DFIMAT_LOCAL_CORRECTIONS",
    "others_input": "DFIMAT_OTHERS_INPUT",
    "marks_iscn": "DFIMAT_MARKS_ISCN",
    "marks_others": "DFIMAT_MARKS_OTHERS",
}


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """$name as a switch: "1"/"true"/"on"/"yes" -> True, "0"/"false"/"off"/"no" -> False, unset or other -> default."""
    value = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    return default
