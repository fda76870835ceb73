"""The arithmetic of pacing, on an injected clock: GCRA buckets, a learned request rate, and
a meter of what the server let through over the last second. ``limits`` composes them.
"""

from __future__ import annotations

import math

# The admitted rate a learned rate starts from is measured over this last stretch of time,
# in slots of a tenth of it.
METER_S = 1.0
METER_SLOTS = 10
METER_MIN_SENT = 8
# The pacer of a learned rate lets an admission that came this share of an interval late
# keep its place in the schedule, so that timer lateness does not erode the rate.
PACE_SLACK = 0.25


class Bucket:
    """A GCRA bucket: ``tat`` is when it would be full again (its theoretical arrival time)."""

    __slots__ = ("capacity", "interval", "name", "tat")

    def __init__(self, name: str, per_minute: float, burst_s: float) -> None:
        self.name = name
        self.interval = 60.0 / per_minute  # seconds per unit
        self.capacity = max(1.0, per_minute / 60.0 * burst_s)  # units
        self.tat = -math.inf

    def ready_at(self, weight: float, now: float) -> float:
        # A request larger than the whole bucket waits for a full bucket and then runs into
        # debt, so it passes eventually and the requests after it pay for it.
        weight = min(weight, self.capacity)
        return max(now, self.tat + (weight - self.capacity) * self.interval)

    def charge(self, weight: float, now: float) -> None:
        self.tat = max(self.tat, now) + weight * self.interval

    def adjust(self, delta: float) -> None:
        if math.isfinite(self.tat):
            self.tat += delta * self.interval

    def used(self, now: float) -> float:
        return max(0.0, self.tat - now) / (self.capacity * self.interval)


class Meter:
    """Requests sent and refused (by send time) per slot of the last ``METER_S`` seconds."""

    __slots__ = ("refused", "sent", "slots")

    def __init__(self) -> None:
        self.slots = [-1 << 62] * METER_SLOTS  # which slot of time each entry counts
        self.sent = [0] * METER_SLOTS
        self.refused = [0] * METER_SLOTS

    @staticmethod
    def _slot(t: float) -> int:
        return math.floor(t * METER_SLOTS / METER_S)

    def _index(self, t: float) -> int | None:
        slot = self._slot(t)
        i = slot % METER_SLOTS
        if self.slots[i] != slot:
            if self.slots[i] > slot:
                return None  # older than the window
            self.slots[i] = slot
            self.sent[i] = self.refused[i] = 0
        return i

    def add_sent(self, t: float) -> None:
        i = self._index(t)
        if i is not None:
            self.sent[i] += 1

    def add_refused(self, t: float) -> None:
        i = self._index(t)
        if i is not None:
            self.refused[i] += 1

    def admitted_rate(self, now: float) -> float:
        """Requests per second the server let through over the window ending now.

        Requests still in flight count as let through. With fewer than
        ``METER_MIN_SENT`` requests in the window that says too little, and the rate they
        were sent at stands in for it, so that one lone 429 cannot drive the rate to nothing.
        Empty slots count: nothing was sent then.
        """
        slot = self._slot(now)
        sent = refused = 0
        for s, n_sent, n_refused in zip(self.slots, self.sent, self.refused, strict=True):
            if slot - METER_SLOTS < s <= slot:
                sent += n_sent
                refused += n_refused
        width = METER_S / METER_SLOTS
        span = (METER_SLOTS - 1) * width + max(width * 1e-3, now - slot * width)
        admitted = sent if sent < METER_MIN_SENT else sent - refused
        return max(0, admitted) / span


class Pace:
    """A learned request rate, enforced as a GCRA with no burst: one request per interval."""

    __slots__ = ("base", "epoch", "per_s", "since", "tat")

    def __init__(self, per_s: float, now: float) -> None:
        self.per_s = per_s
        self.base = per_s  # the rate right after the last cut
        self.since = now  # when that cut was made
        self.epoch = 1  # requests sent before the rate existed carry epoch 0
        self.tat = now + 1.0 / per_s  # the server just refused one: give it an interval

    def ready_at(self, now: float) -> float:
        return max(now, self.tat)

    def in_use(self, now: float) -> bool:
        """Whether a request sent now follows the previous one by at most 1.5 intervals."""
        return now <= self.tat + 0.5 / self.per_s

    def charge(self, now: float) -> None:
        self.tat = max(self.tat, now - PACE_SLACK / self.per_s) + 1.0 / self.per_s
