"""What a unit of the media stage reports besides its records: failures, counters and per-segment notes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..records import Failure


@dataclass
class UnitLog:
    failures: list[Failure] = field(default_factory=list)
    report: Counter[str] = field(default_factory=Counter)
    notes: list[dict[str, str]] = field(default_factory=list)
