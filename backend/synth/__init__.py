"""Multi-person training data synthesis (issue 7).

Real person cutouts (ccp-fashion train split) are pasted into real scene photos either with scene priors
(``realistic``: ground line, perspective scale, depth order, harmonisation, rejection of implausible results) or at
uniform random positions (``random``: the HIM-style baseline). Output uses the ``../shared/data`` layout.
See ``docs/synthesis.md``.
"""

from backend.synth.errors import CutoutError, GenerationError, SceneError, SynthError

__all__ = ["CutoutError", "GenerationError", "SceneError", "SynthError"]
