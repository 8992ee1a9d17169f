"""An int8 copy of the exported MRN for CPU refinement rounds.

The MRN runs in every round on the target's crop, and on a CPU its convolutions are most of a refinement round
(docs/experiments.md, "Speed and memory choices"). Static QDQ quantisation (int8 per-channel weights, uint8
activations, convolutions only; attention and resizes stay float) calibrated on crops of real people runs it in
about two thirds of the time with the same mattes to the third decimal. onnxruntime picks the file up only on the
CPU provider (`OnnxModel`); the CUDA path keeps the float graph.

    python -m backend.dfimat.quantize --data DATA_DIR [--onnx-dir models/dfimat-s/onnx] [--count 40]

``DATA_DIR`` is a set in the shared data layout (``backend.data``); the shipped file was calibrated on the
realistic-v3 composites (``python -m backend.synth --out DIR --count 800 --seed 7 --mode realistic``; their training
split only, so validation stays unseen). One person from each of the first ``count`` training photos gives a
calibration crop, each letterboxed as the engine's MRN crop is (longer side <= the model's crop side,
sides multiples of 32) with the person's mask, softened, as the coarse input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from backend.dfimat.model import DFIMatConfig
from backend.dfimat.mrn import input_size

MRN_INT8 = "mrn-int8.onnx"
CALIBRATION_COUNT = 40
MASK_SOFTEN_SIGMA = 4.0  # px at crop size: a coarse mask is blurry, the labelled one is not


def calibration_crops(data_dir: Path, count: int = CALIBRATION_COUNT) -> Iterator[np.ndarray]:
    """(1, 4, H, W) float32 MRN inputs from the training split of ``data_dir``: the first target person (>= 1 % of
    the photo) of each of the first ``count`` photos that have one, so the crops cover as many photos as they can."""
    from backend.data import load_set, person_targets, split

    train, _ = split(load_set(data_dir).items)
    made = 0
    for item in train:
        masks = person_targets(item).masks
        if not masks:
            continue
        image = cv2.cvtColor(cv2.imread(str(item.image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        yield _mrn_input(image, np.asarray(masks[0], bool))
        made += 1
        if made >= count:
            return


def _mrn_input(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop, person = image[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.float32)
    w, h = input_size(crop.shape[1], crop.shape[0], DFIMatConfig().mrn_max_side)
    rgb = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    coarse = cv2.GaussianBlur(cv2.resize(person, (w, h)), (0, 0), MASK_SOFTEN_SIGMA)
    return np.concatenate([rgb, coarse[..., None]], axis=2).transpose(2, 0, 1)[None].astype(np.float32)


def quantize_mrn(onnx_dir: Path, data_dir: Path, count: int = CALIBRATION_COUNT) -> Path:
    """Write ``onnx_dir / MRN_INT8`` from ``onnx_dir / mrn.onnx``; returns its path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    crops = list(calibration_crops(data_dir, count))
    if not crops:
        raise ValueError(f"{data_dir}: no labelled people in its training split to calibrate on")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feed = iter({"x": c} for c in crops)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feed, None)

    out = Path(onnx_dir) / MRN_INT8
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "mrn-prepared.onnx"
        quant_pre_process(str(Path(onnx_dir) / "mrn.onnx"), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a set in the shared data layout")
    parser.add_argument("--onnx-dir", type=Path, default=Path("models/dfimat-s/onnx"))
    parser.add_argument("--count", type=int, default=CALIBRATION_COUNT)
    args = parser.parse_args(argv)
    print(quantize_mrn(args.onnx_dir, args.data, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
