"""The simulator's running counters, shared by the request handlers and read, from any
thread, as a frozen ``SimulatorStatistics`` snapshot.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from .answers import Plan
from .config import SimulatorStatistics

__all__ = ["Counters"]


class Counters:
    """Requests, statuses, faults, rejections, load and the usage of complete answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._by_status: Counter[int] = Counter()
        self._faults: Counter[str] = Counter()
        self._quota_429 = 0
        self._dsq_429 = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._usage = [0, 0, 0, 0, 0]  # prompt, completion, reasoning, cached, tool calls
        self._finish: Counter[str] = Counter()
        self._traffic: Counter[str] = Counter()

    def arrived(self) -> None:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def quota_rejected(self) -> None:
        with self._lock:
            self._quota_429 += 1

    def dsq_rejected(self) -> None:
        with self._lock:
            self._dsq_429 += 1

    def finished(
        self,
        status: int,
        plan: Plan | None,
        finish_reasons: Sequence[str] = (),
        traffic_type: str | None = None,
    ) -> None:
        """One request done; ``plan`` only when a complete answer was served."""
        with self._lock:
            self._in_flight -= 1
            self._by_status[status] += 1
            if plan is None:
                return
            self._usage[0] += plan.prompt_tokens
            self._usage[1] += plan.content_tokens
            self._usage[2] += plan.reasoning_tokens
            self._usage[3] += plan.cached_tokens
            self._usage[4] += plan.tool_calls
            self._finish.update(finish_reasons)
            if traffic_type is not None:
                self._traffic[traffic_type] += 1

    def snapshot(self, tokens_issued: int) -> SimulatorStatistics:
        with self._lock:
            return SimulatorStatistics(
                requests=self._requests,
                by_status=dict(self._by_status),
                tokens_issued=tokens_issued,
                rate_limited=self._by_status.get(429, 0),
                quota_rejections=self._quota_429,
                dsq_rejections=self._dsq_429,
                faults_injected=dict(self._faults),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                prompt_tokens=self._usage[0],
                completion_tokens=self._usage[1],
                reasoning_tokens=self._usage[2],
                cached_tokens=self._usage[3],
                tool_calls=self._usage[4],
                by_finish_reason=dict(self._finish),
                by_traffic_type=dict(self._traffic),
            )
