"""Live counters of a run: plain numbers the pool updates and the progress display reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class LaneCounts:
    """One lane's live figures: rows finished, and what its limiter says (refreshed twice a
    second by the runner: requests in flight, the window, and the limit it waits on)."""

    model: str
    done: int = 0
    in_flight: int = 0
    window: int = 0
    waiting_on: str | None = None


@dataclass(slots=True)
class Counters:
    """Live counters the progress display reads; plain numbers, updated by the pool."""

    read: int = 0
    skipped: int = 0
    queued: int = 0
    in_flight: int = 0
    done: int = 0
    ok: int = 0
    errors: int = 0
    retries: int = 0
    spent_usd: float = 0.0
    bad_rows: int = 0
    duplicates: int = 0
    started: float = field(default_factory=time.monotonic)
    lanes: dict[str, LaneCounts] = field(default_factory=dict)  # per model, with several
