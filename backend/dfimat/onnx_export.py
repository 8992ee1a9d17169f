"""Export DFIMat-S to ONNX and run it with onnxruntime.

Three graphs, matching how the engine runs the model:
  backbone.onnx  image square (1, 3, S, S) float (0..255) -> s4, s8, s16, s32 features   (once per session)
  iscn.onnx      features + prompt tensors + previous prediction -> masks, class logits (every round; batch 1,
                 points padded to MAX_POINTS because attention lengths are traced as constants)
  mrn.onnx       crop (1, 4, H, W) -> alpha (H, W dynamic multiples of 32)
  iscn-marks.onnx  the marks ISCN (same inputs and outputs as iscn.onnx), when the weights carry one
`OnnxModel` wraps the three onnxruntime sessions with the same call signatures the engine uses for torch
(CPU execution provider here; CUDA EP is picked when onnxruntime-gpu provides it). On the CPU provider it runs
mrn-int8.onnx instead of mrn.onnx when the directory holds one (`backend.dfimat.quantize`) and ``int8_mrn`` is set.
`python -m backend.dfimat.onnx_export WEIGHTS OUT_DIR` writes the files and prints the torch/onnx difference.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.dfimat.model import DFIMatS, load_checkpoint
from backend.dfimat.prompt_tensors import MAX_POINTS

FEATURES = ("s4", "s8", "s16", "s32")
ISCN_MARKS = "iscn-marks.onnx"
ISCN_INPUTS = (*FEATURES, "points", "kinds", "valid", "dense", "text", "has_text", "prev", "has_prev")


class _ISCNGraph(nn.Module):
    def __init__(self, iscn: nn.Module) -> None:
        super().__init__()
        self.iscn = iscn

    def forward(self, s4, s8, s16, s32, points, kinds, valid, dense, text, has_text, prev, has_prev):
        feats = {"s4": s4, "s8": s8, "s16": s16, "s32": s32}
        prompts = {"points": points, "kinds": kinds, "valid": valid, "dense": dense, "text": text,
                   "has_text": has_text}
        return self.iscn(feats, prompts, prev, has_prev)


class _MRNGraph(nn.Module):
    def __init__(self, model: DFIMatS) -> None:
        super().__init__()
        self.mrn = model.mrn

    def forward(self, x):
        return self.mrn(x)["alpha"]


def pad_points(prompts: dict[str, torch.Tensor], k: int = MAX_POINTS) -> dict[str, torch.Tensor]:
    """Pad the point axis to k entries marked invalid (the exported graph has a fixed point count)."""
    n = prompts["points"].shape[1]
    if n > k:
        raise ValueError(f"at most {k} prompt points, got {n}")
    out = dict(prompts)
    b = prompts["points"].shape[0]
    out["points"] = torch.cat([prompts["points"], torch.zeros(b, k - n, 2)], dim=1)
    out["kinds"] = torch.cat([prompts["kinds"], torch.zeros(b, k - n, dtype=torch.long)], dim=1)
    out["valid"] = torch.cat([prompts["valid"], torch.zeros(b, k - n, dtype=torch.bool)], dim=1)
    return out


def example_inputs(model: DFIMatS, points: int = 5) -> dict[str, torch.Tensor]:
    s = model.config.size
    g = s // 4
    torch.manual_seed(0)
    feats = model.backbone(torch.rand(1, 3, s, s) * 255)
    return {**feats, "points": torch.rand(1, points, 2), "kinds": torch.randint(0, 7, (1, points)),
            "valid": torch.ones(1, points, dtype=torch.bool), "dense": (torch.rand(1, 5, g, g) > 0.9).float(),
            "text": torch.randn(1, 384), "has_text": torch.tensor([True]), "prev": torch.rand(1, 1, g, g),
            "has_prev": torch.tensor([True])}


def export(model: DFIMatS, out_dir: Path, opset: int = 17) -> dict[str, Path]:
    """Write backbone.onnx, iscn.onnx, mrn.onnx (and iscn-marks.onnx when the model has a marks ISCN) to
    out_dir, removing an int8 MRN or a marks graph made from earlier weights."""
    from backend.dfimat.quantize import MRN_INT8

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MRN_INT8).unlink(missing_ok=True)
    (out_dir / ISCN_MARKS).unlink(missing_ok=True)
    model = model.eval().cpu()
    s = model.config.size
    paths = {name: out_dir / f"{name}.onnx" for name in ("backbone", "iscn", "mrn")}
    if model.iscn_marks is not None:
        paths["iscn_marks"] = out_dir / ISCN_MARKS
    ex = pad_points(example_inputs(model))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused attention kernel used in eval mode has no ONNX mapping; the composite path exports.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export_all(model, paths, ex, s, opset)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return paths


def _export_all(model: DFIMatS, paths: dict[str, Path], ex: dict[str, torch.Tensor], s: int, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks are expected
        torch.onnx.export(_Backbone(model), (torch.rand(1, 3, s, s) * 255,), str(paths["backbone"]),
                          input_names=["image"], output_names=list(FEATURES), opset_version=opset, dynamo=False)
        for name, iscn in (("iscn", model.iscn), ("iscn_marks", model.iscn_marks)):
            if name in paths:
                torch.onnx.export(_ISCNGraph(iscn), tuple(ex[k] for k in ISCN_INPUTS), str(paths[name]),
                                  input_names=list(ISCN_INPUTS), output_names=["masks", "logits"],
                                  opset_version=opset, dynamo=False)
        torch.onnx.export(_MRNGraph(model), (torch.rand(1, 4, 96, 128),), str(paths["mrn"]),
                          input_names=["x"], output_names=["alpha"], opset_version=opset,
                          dynamic_axes={"x": {2: "h", 3: "w"}, "alpha": {2: "h", 3: "w"}}, dynamo=False)


class _Backbone(nn.Module):
    def __init__(self, model: DFIMatS) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, image):
        f = self.backbone(image)
        return tuple(f[k] for k in FEATURES)


class OnnxModel:
    """onnxruntime sessions for the three graphs (four with a marks ISCN), called with torch tensors like the
    torch modules."""

    def __init__(self, onnx_dir: Path, threads: int | None = None, int8_mrn: bool = False) -> None:
        import onnxruntime as ort

        from backend.dfimat.quantize import MRN_INT8

        opts = ort.SessionOptions()
        # The arena keeps the largest buffers of every shape seen (1 MP photos, 384 px MRN crops) for the process's
        # life: without it peak memory fell 1127 -> 969 MB with the person networks, at the same round times.
        opts.enable_cpu_mem_arena = False
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        onnx_dir = Path(onnx_dir)
        self.sessions = {name: ort.InferenceSession(str(onnx_dir / f"{name}.onnx"), opts, providers=providers)
                         for name in ("backbone", "iscn")}
        if (onnx_dir / ISCN_MARKS).is_file():
            self.sessions["iscn_marks"] = ort.InferenceSession(str(onnx_dir / ISCN_MARKS), opts, providers=providers)
        # int8 convolutions pay off on CPUs; on CUDA the provider would run the QDQ graph's float fallbacks. The
        # provider a session really got decides (onnxruntime-gpu on a machine without a GPU falls back to the CPU).
        on_cpu = "CUDAExecutionProvider" not in self.sessions["iscn"].get_providers()
        mrn = onnx_dir / (MRN_INT8 if int8_mrn and on_cpu and (onnx_dir / MRN_INT8).is_file() else "mrn.onnx")
        self.mrn_file = mrn.name
        self.sessions["mrn"] = ort.InferenceSession(str(mrn), opts, providers=providers)

    def backbone(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.sessions["backbone"].run(None, {"image": image.cpu().numpy().astype(np.float32)})
        return {k: torch.from_numpy(v) for k, v in zip(FEATURES, outs, strict=True)}

    @property
    def has_iscn_marks(self) -> bool:
        return "iscn_marks" in self.sessions

    def iscn(self, feats: dict, prompts: dict, prev: torch.Tensor, has_prev: torch.Tensor):
        return self._run_iscn("iscn", feats, prompts, prev, has_prev)

    def iscn_marks(self, feats: dict, prompts: dict, prev: torch.Tensor, has_prev: torch.Tensor):
        return self._run_iscn("iscn_marks", feats, prompts, prev, has_prev)

    def _run_iscn(self, name: str, feats: dict, prompts: dict, prev: torch.Tensor, has_prev: torch.Tensor):
        values = {**feats, **pad_points(prompts), "prev": prev, "has_prev": has_prev}
        feed = {k: values[k].cpu().numpy() for k in ISCN_INPUTS}
        masks, logits = self.sessions[name].run(None, feed)
        return torch.from_numpy(masks), torch.from_numpy(logits)

    def mrn(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        (alpha,) = self.sessions["mrn"].run(None, {"x": x.cpu().numpy().astype(np.float32)})
        return {"alpha": torch.from_numpy(alpha)}


def compare(model: DFIMatS, onnx_dir: Path) -> dict[str, float]:
    """Max absolute difference between torch and onnxruntime outputs on example inputs."""
    rt = OnnxModel(onnx_dir)
    ex = example_inputs(model, points=7)  # fewer points than the exported graph's: exercises the padding
    s = model.config.size
    image = torch.rand(1, 3, s, s) * 255
    with torch.no_grad():
        ft = model.backbone(image)
        mt, lt = model.iscn({k: ex[k] for k in FEATURES}, {k: ex[k] for k in ISCN_INPUTS[4:10]}, ex["prev"],
                            ex["has_prev"])
        x = torch.rand(1, 4, 160, 96)
        at = model.mrn(x)["alpha"]
    fo = rt.backbone(image)
    mo, lo = rt.iscn({k: ex[k] for k in FEATURES}, {k: ex[k] for k in ISCN_INPUTS[4:10]}, ex["prev"], ex["has_prev"])
    ao = rt.mrn(x)["alpha"]
    diffs = {"backbone": max(float((ft[k] - fo[k]).abs().max()) for k in FEATURES),
             "iscn_masks": float((mt - mo).abs().max()), "iscn_logits": float((lt - lo).abs().max()),
             "mrn_alpha": float((at - ao).abs().max())}
    if model.iscn_marks is not None:
        args = ({k: ex[k] for k in FEATURES}, {k: ex[k] for k in ISCN_INPUTS[4:10]}, ex["prev"], ex["has_prev"])
        with torch.no_grad():
            mt, _ = model.iscn_marks(*args)
        diffs["iscn_marks_masks"] = float((mt - rt.iscn_marks(*args)[0]).abs().max())
    return diffs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m backend.dfimat.onnx_export WEIGHTS OUT_DIR", file=sys.stderr)
        return 2
    import hashlib

    model, _ = load_checkpoint(Path(argv[0]))
    export(model, Path(argv[1]))
    # The stamp lets the engine use these graphs by default only for exactly these weights.
    digest = hashlib.sha256(Path(argv[0]).read_bytes()).hexdigest()
    (Path(argv[1]) / "weights.sha256").write_text(f"{digest}  {Path(argv[0]).name}\n")
    print(compare(model, Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
