"""Frozen MiniLM text encoder from its wheel (offline): shape, normalisation, cache, meaning."""

import numpy as np
import pytest
import torch

from backend.dfimat.text import TEXT_DIM, TextEncoder

torch.set_num_threads(1)


@pytest.mark.slow
def test_text_embeddings_are_cached_normalised_and_meaningful():
    enc = TextEncoder()
    a = enc.embed("the person on the left")
    assert a.shape == (TEXT_DIM,) and a.dtype == np.float32
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4)
    assert enc.embed("the person on the left") is a  # served from the cache
    near = enc.embed("the leftmost person")
    far = enc.embed("a bowl of soup on a table")
    assert float(a @ near) > float(a @ far) + 0.1
    both = enc.embed_many(["the leftmost person", "x"])
    assert both.shape == (2, TEXT_DIM) and np.allclose(both[0], near)
