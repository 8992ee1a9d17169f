"""ONNX export of the three graphs matches torch; the engine runs under onnxruntime too.

Tolerance: 1e-3 absolute on features, mask logits, class logits and alpha. Float32 kernels differ between the two
runtimes only in summation order, which on these magnitudes gives ~1e-5 (features up to ~1e-4); 1e-3 still fails
on any real graph mismatch (a wrong op or constant shows up as differences of order 0.1-1).
"""

import numpy as np
import pytest
import torch

from backend.dfimat.model import build_tiny_checkpoint, load_checkpoint
from backend.dfimat.onnx_export import compare, export, pad_points

torch.set_num_threads(1)
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    weights = build_tiny_checkpoint(root / "tiny.pt")
    model, _ = load_checkpoint(weights)
    export(model, root / "graphs")
    return model, root, weights


def test_onnx_matches_torch(exported):
    model, root, _ = exported
    diffs = compare(model, root / "graphs")
    assert set(diffs) == {"backbone", "iscn_masks", "iscn_logits", "mrn_alpha"}
    for name, d in diffs.items():
        assert d < TOLERANCE, (name, d)


def test_pad_points_rejects_too_many():
    prompts = {"points": torch.zeros(1, 60, 2), "kinds": torch.zeros(1, 60, dtype=torch.long),
               "valid": torch.ones(1, 60, dtype=torch.bool)}
    with pytest.raises(ValueError):
        pad_points(prompts, 48)


def test_engine_onnx_runtime_agrees_with_torch(exported, tmp_path, monkeypatch):
    from backend.runtime.engine import Engine

    _, _, weights = exported
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    image = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    prompts = [{"box": [5, 5, 60, 55]}, {"clicks": [[30, 30, True], [70, 10, False]]}]
    results = {}
    for runtime in ("torch", "onnx"):
        engine = Engine.load(device="cpu", weights=weights, runtime=runtime)
        assert engine.runtime == runtime
        sid = engine.open(image)
        results[runtime] = [engine.predict(sid, p) for p in prompts]
    for a, b in zip(results["torch"], results["onnx"], strict=True):
        assert np.abs(a - b).max() < 1e-3


def test_shipped_graphs_are_used_only_for_the_weights_they_were_made_from(exported, tmp_path, monkeypatch):
    import shutil

    from backend.dfimat.onnx_export import main
    from backend.runtime.engine import Engine, shipped_onnx

    _, _, weights = exported
    monkeypatch.delenv("DFIMAT_RUNTIME", raising=False)
    local = tmp_path / "w.pt"
    shutil.copy(weights, local)
    assert shipped_onnx(local) is None
    assert Engine.load(device="cpu", weights=local).runtime == "torch"
    assert main([str(local), str(tmp_path / "onnx")]) == 0
    assert shipped_onnx(local) == tmp_path / "onnx"
    assert Engine.load(device="cpu", weights=local).runtime == "onnx"
    local.write_bytes(local.read_bytes() + b"\0")  # different weights: the stamp no longer matches
    assert shipped_onnx(local) is None
