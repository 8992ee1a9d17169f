"""Text grounding: which person a sentence means, found by describing every detected person in words.

Why this exists: DFIMat-S's own text path (MiniLM embedding -> text query in the ISCN decoder) picks the right person
for only 19 % of the generated expressions on the held-out multi-person photos (docs/experiments.md): 0.84 M trained
parameters did not learn to ground "left", "second from the right", "in red" from ~80 phrases. Those facts are
easy to read off person masks, so when a round is text only the engine
  1. finds the people with mediapipe's bundled pose model (`backend.runtime.people.PoseDetector.find`),
  2. describes each of them among the others with the same fact rules the evaluation's expressions come from
     (`backend.runtime.refexpr`: order, size, depth, torso colour),
  3. embeds the user's sentence and every description with the same MiniLM encoder the ISCN uses, and
  4. takes the person whose closest description is most similar to the sentence, as a box prompt for the ISCN
     (the sentence still goes in as the text query).
A sentence close to no description (cosine < `MIN_SIMILARITY`) is left to the ISCN's text path alone.
`choose` with ``how="facts"`` (the default, `EngineOptions.text_match`) first reads the facts the sentence names and
ranks the found people on them (`backend.runtime.sentence`); steps 3-4 then answer only sentences that name no fact
and no person. MiniLM puts "on the left" and "on the right" close together, and a description exists only where a
fact holds by a clear margin, so the similarity match alone lost most reworded sentences.

Caveat for reading text scores: the held-out expressions come from `backend.runtime.refexpr` too, so the evaluation measures
detection plus fact agreement more than language understanding; `backend.eval.paraphrase` (paraphrases written
without sight of this module or `backend.runtime.sentence`; `backend.eval --paraphrase-text`) is the check that
matching does not need the exact wording. `backend.runtime.refexpr.reword` was written beside the describer and seen
while the fact reader was written, so it no longer counts as such a check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from backend.runtime.refexpr import PersonFacts, expressions_from_facts, person_facts
from backend.runtime.sentence import parse, pick

# Set from phrases alone, before any held-out text run: each generated phrase against its hand-written rewording
# (`backend.runtime.refexpr.reword`) scores 0.31-0.93, median 0.58, while sentences about no person ("the dog", "remove the
# background", "make it brighter") score 0.19-0.39 against the nearest description.
MIN_SIMILARITY = 0.4

Embed = Callable[[list[str]], np.ndarray]  # strings -> (N, D) L2-normalised rows


@dataclass(frozen=True)
class Candidate:
    """One detected person: its box in image pixels, the phrases that single it out among the detected and the facts
    they were made from."""

    box: list[float]
    phrases: tuple[str, ...]
    facts: PersonFacts


# The generator words the outermost person by the number of people ("on the left" among two, "leftmost" among more);
# a user does not count first, so an outermost candidate is described by every wording of its side.
_SIDES = tuple(
    (f"the person on the {side}", f"the {side} person", f"the {side}most person", f"the person on the far {side}")
    for side in ("left", "right")
)


def _with_side_wordings(phrases: list[str]) -> tuple[str, ...]:
    out = list(phrases)
    for wordings in _SIDES:
        if any(w in phrases for w in wordings):
            out += [w for w in wordings if w not in out]
    return tuple(out)


def describe(small: np.ndarray, people: Sequence[tuple[list[float], np.ndarray]]) -> list[Candidate]:
    """Candidates from a detector's output: ``small`` is the photo the masks are on (facts are scale-free)."""
    if not people:
        return []
    facts = [person_facts(mask, small) for _, mask in people]
    phrases = expressions_from_facts(facts, small.shape[:2])
    return [Candidate(box=list(box), phrases=_with_side_wordings(p), facts=f)
            for (box, _), p, f in zip(people, phrases, facts, strict=True)]


def choose(text: str, candidates: Sequence[Candidate], embed: Embed, how: str = "facts",
           min_similarity: float = MIN_SIMILARITY) -> int | None:
    """Index of the candidate ``text`` means, or None. ``how`` = "facts": by the facts the sentence names
    (`backend.runtime.sentence`), falling back to `match` for a sentence that names no fact and no person;
    "similarity": `match` alone."""
    if how == "facts":
        chosen = pick(parse(text), [c.facts for c in candidates])
        if chosen is not None:
            return chosen
    return match(text, candidates, embed, min_similarity)


def match(text: str, candidates: Sequence[Candidate], embed: Embed,
          min_similarity: float = MIN_SIMILARITY) -> int | None:
    """Index of the candidate ``text`` means, or None when no candidate's description is close enough."""
    described = [(i, p) for i, c in enumerate(candidates) for p in c.phrases]
    if not described:
        return None
    vectors = embed([text] + [p for _, p in described])
    sims = vectors[1:] @ vectors[0]
    best = np.full(len(candidates), -np.inf)
    for (i, _), sim in zip(described, sims, strict=True):
        best[i] = max(best[i], float(sim))
    pick = int(np.argmax(best))
    return pick if best[pick] >= min_similarity else None
