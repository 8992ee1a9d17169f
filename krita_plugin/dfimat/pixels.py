"""Byte-level pixel helpers in pure Python (Krita's Python has no numpy guarantee).

All work is done with C-level bytes slicing/stripping, never a per-pixel Python loop except where a layer
is partly transparent and its alpha must be multiplied.
"""

from __future__ import annotations


def bgra_to_rgba(data: bytes) -> bytes:
    """Swap Krita's BGRA byte order (RGBA/U8 colour space) to RGBA."""
    if len(data) % 4:
        raise ValueError(f"BGRA data length {len(data)} is not a multiple of 4")
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def alpha_channel(bgra: bytes) -> bytes:
    """The alpha bytes of BGRA or RGBA pixels."""
    if len(bgra) % 4:
        raise ValueError(f"pixel data length {len(bgra)} is not a multiple of 4")
    return bytes(bgra[3::4])


def crop_plane(plane: bytes, width: int, height: int) -> tuple[int, int, int, int, bytes] | None:
    """Tight bounds of the non-zero bytes of a one-byte-per-pixel plane.

    Returns (x, y, w, h, cropped bytes) relative to the plane, or None if every byte is zero.
    """
    if len(plane) != width * height:
        raise ValueError(f"plane has {len(plane)} bytes, expected {width}x{height}")
    x0, x1, y0, y1 = width, 0, height, 0
    for row in range(height):
        line = plane[row * width:(row + 1) * width]
        stripped = line.lstrip(b"\0")
        if not stripped:
            continue
        y0 = min(y0, row)
        y1 = row + 1
        x0 = min(x0, width - len(stripped))
        x1 = max(x1, len(line.rstrip(b"\0")))
    if y1 == 0:
        return None
    w, h = x1 - x0, y1 - y0
    cropped = b"".join(plane[r * width + x0:r * width + x1] for r in range(y0, y1))
    return x0, y0, w, h, cropped


def plane_bounds(plane: bytes, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive bounds of the non-zero bytes, or None if the plane is empty."""
    found = crop_plane(plane, width, height)
    if found is None:
        return None
    x, y, w, h, _ = found
    return x, y, x + w, y + h


def with_alpha(bgra: bytes, alpha: bytes) -> bytes:
    """BGRA pixels whose alpha is multiplied by ``alpha`` (one byte per pixel): a cut-out of the layer."""
    if len(bgra) != 4 * len(alpha):
        raise ValueError(f"{len(bgra)} pixel bytes do not match {len(alpha)} alpha bytes")
    out = bytearray(bgra)
    old = bgra[3::4]
    if old.count(255) == len(old):
        # The common case (an opaque photo): the mask simply becomes the alpha channel.
        out[3::4] = alpha
        return bytes(out)
    out[3::4] = bytes((a * m + 127) // 255 for a, m in zip(old, alpha, strict=True))
    return bytes(out)


def threshold_count(plane: bytes, level: int = 128) -> int:
    """How many bytes of a plane are >= ``level`` (used for coverage figures in messages)."""
    table = bytes(1 if v >= level else 0 for v in range(256))
    return plane.translate(table).count(1)
