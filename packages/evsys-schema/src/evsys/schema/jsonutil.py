"""JSON helpers shared by the packages that write EvSys files."""

from __future__ import annotations

import math
from typing import Any


def finite_json_value(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so rows stay valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json_value(v) for v in value]
    return value
