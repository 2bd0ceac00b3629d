"""What every settings section shares: unknown keys refused, assignments validated, and
durations and sizes written the way people write them ("30s", "8GiB")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tms_core.units import parse_duration, parse_size


def duration(value: Any) -> float:
    # Plain numbers go through the parser too, so -5, nan and inf are refused alike.
    return parse_duration(str(value))


def size(value: Any) -> int:
    return parse_size(str(value))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
