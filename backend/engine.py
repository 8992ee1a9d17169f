"""The engine's documented import path (`from backend.engine import Engine`, docs/CONTRACTS.md); it lives in
`backend.runtime.engine`."""

from backend.runtime.engine import (
    Engine,
    ImageError,
    PromptError,
    SessionError,
    default_weights,
    to_rgb_uint8,
)

__all__ = ["Engine", "ImageError", "PromptError", "SessionError", "default_weights", "to_rgb_uint8"]
