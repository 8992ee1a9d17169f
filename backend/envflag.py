"""On/off switches read from the environment, one spelling for all of them."""

from __future__ import annotations

import os

_ON = ("1", "true", "on", "yes")
_OFF = ("0", "false", "off", "no")


def env_flag(name: str, default: bool) -> bool:
    """$name as a switch: "1"/"true"/"on"/"yes" -> True, "0"/"false"/"off"/"no" -> False, unset or other -> default."""
    value = os.environ.get(name, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    return default
