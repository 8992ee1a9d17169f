"""ONNX export of the three graphs matches torch; the engine runs under onnxruntime too.

Tolerance: 1e-3 absolute on features, mask logits, class logits and alpha. Float32 kernels differ between the two
runtimes only in summation order, which on these magnitudes gives ~1e-5 (features up to ~1e-4); 1e-3 still fails
on any real graph mismatch (a wrong op or constant shows up as differences of order 0.1-1).
"""

import shutil
from pathlib import Path

import cv2
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


REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "dfimat-s" / "onnx"
TWO_PEOPLE = REPO / "tests" / "fixtures" / "two-people"


def _fixture_crops() -> list[np.ndarray]:
    """MRN inputs for both people of the committed two-people fixture, made as calibration makes them."""
    from backend.data import load_set, person_targets
    from backend.dfimat.quantize import _mrn_input

    item = load_set(TWO_PEOPLE).items[0]
    image = cv2.cvtColor(cv2.imread(str(item.image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return [_mrn_input(image, np.asarray(m, bool)) for m in person_targets(item).masks]


def _agreement(float_dir: Path, int8_path: Path, crops: list[np.ndarray]) -> tuple[float, float]:
    """Mean absolute alpha difference and worst IoU of alpha > 0.5 between the float and the int8 MRN."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(float_dir / "mrn.onnx"), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    diffs, ious = [], []
    for x in crops:
        a, b = ref.run(None, {"x": x})[0], q.run(None, {"x": x})[0]
        diffs.append(float(np.abs(a - b).mean()))
        ious.append(float(((a > 0.5) & (b > 0.5)).sum() / max(1, ((a > 0.5) | (b > 0.5)).sum())))
    return float(np.mean(diffs)), min(ious)


def test_shipped_int8_mrn_gives_the_float_mrn_mattes():
    # Validation had IoU -0.000 and SAD +0.1 % (docs/experiments.md); on a photo it never saw, the mattes agree to
    # within a grey level on average and their masks to 0.98 IoU, where a broken quantisation (wrong scales, a
    # saturated activation) moves whole regions.
    mean_diff, worst_iou = _agreement(SHIPPED, SHIPPED / "mrn-int8.onnx", _fixture_crops())
    assert mean_diff < 0.005 and worst_iou > 0.98, (mean_diff, worst_iou)


def test_quantize_calibrates_on_a_data_set_and_export_drops_a_stale_int8(exported, tmp_path):
    from backend.dfimat.onnx_export import OnnxModel
    from backend.dfimat.quantize import MRN_INT8, quantize_mrn

    graphs = tmp_path / "graphs"
    shutil.copytree(SHIPPED, graphs)
    (graphs / MRN_INT8).unlink()
    out = quantize_mrn(graphs, TWO_PEOPLE, count=2)
    assert out == graphs / MRN_INT8
    mean_diff, worst_iou = _agreement(graphs, out, _fixture_crops())
    assert mean_diff < 0.01 and worst_iou > 0.97, (mean_diff, worst_iou)
    assert OnnxModel(graphs, threads=1, int8_mrn=True).mrn_file == MRN_INT8
    assert OnnxModel(graphs, threads=1, int8_mrn=False).mrn_file == "mrn.onnx"
    model, _, _ = exported
    export(model, graphs)  # new graphs: the int8 copy was made from the old MRN and must not outlive it
    assert not (graphs / MRN_INT8).exists()
    assert OnnxModel(graphs, threads=1, int8_mrn=True).mrn_file == "mrn.onnx"


def test_engine_runs_the_int8_mrn_on_cpu_unless_switched_off(monkeypatch):
    from backend.runtime.engine import Engine
    from backend.runtime.options import EngineOptions

    monkeypatch.delenv("DFIMAT_INT8_MRN", raising=False)
    assert Engine.load(device="cpu", runtime="onnx")._onnx.mrn_file == "mrn-int8.onnx"
    off = Engine.load(device="cpu", runtime="onnx", options=EngineOptions(int8_mrn=False))
    assert off._onnx.mrn_file == "mrn.onnx"
    monkeypatch.setenv("DFIMAT_INT8_MRN", "0")
    assert Engine.load(device="cpu", runtime="onnx")._onnx.mrn_file == "mrn.onnx"
