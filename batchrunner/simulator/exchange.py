"""What one chat request did, filled in as the simulator serves it, and the line it logs."""

from __future__ import annotations

import time

from .answers import Plan

__all__ = ["Exchange"]


class Exchange:
    """What one chat request did, filled in as it is served; becomes its record."""

    __slots__ = (
        "accept_encoding",
        "arrival",
        "arrival_unix",
        "cached_tokens",
        "error_status",
        "fault",
        "finish_reasons",
        "first_byte",
        "last_byte",
        "location",
        "model",
        "n",
        "plan",
        "reported",
        "request_type",
        "response_id",
        "shared_request_type",
        "status",
        "stream",
        "stream_error",
        "traffic_type",
    )

    def __init__(self, location: str) -> None:
        self.arrival = time.monotonic()
        self.arrival_unix = time.time()
        self.location = location
        self.model: str | None = None
        self.stream = False
        self.status = 500
        self.error_status: str | None = None
        self.fault: str | None = None
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.response_id: str | None = None
        self.finish_reasons: list[str] | None = None
        self.plan: Plan | None = None
        self.reported: tuple[int | None, int | None, int | None, int | None] | None = None
        self.n = 1
        self.cached_tokens: int | None = None
        self.traffic_type: str | None = None
        self.stream_error: int | None = None  # the code of an error event inside a 200 stream
        self.shared_request_type: str | None = None  # the tier headers as sent
        self.request_type: str | None = None
        self.accept_encoding: str | None = None  # the Accept-Encoding header as sent

    def answered(self) -> Plan | None:
        """The plan of a complete answer; None for errors, HTML pages and failed streams."""
        if self.status != 200 or self.stream_error is not None or self.fault == "html_200":
            return None
        return self.plan

    def sent(self) -> None:
        now = time.monotonic()
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now

    def record(
        self, method: str, path: str, version: str, project: str, endpoint: str
    ) -> dict[str, object]:
        """The request log's line for this exchange (``SimulatorConfig.request_log``)."""
        plan = self.answered()
        reported = self.reported if plan is not None else None
        first, last = self.first_byte, self.last_byte
        offset = self.arrival_unix - self.arrival
        return {
            "arrival_monotonic": self.arrival,
            "first_byte_monotonic": first,
            "last_byte_monotonic": last,
            "arrival_unix": self.arrival_unix,
            "first_byte_unix": None if first is None else first + offset,
            "last_byte_unix": None if last is None else last + offset,
            "method": method,
            "path": path,
            "version": version,
            "project": project,
            "location": self.location,
            "endpoint": endpoint,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "error_status": self.error_status,
            "fault": self.fault,
            "response_id": self.response_id if plan is not None else None,
            "finish_reasons": self.finish_reasons if plan is not None else None,
            "n": self.n,
            "tool_calls": plan.tool_calls if plan else None,
            "tool_calls_per_choice": [len(c.tool_calls) for c in plan.choices] if plan else None,
            "cached_tokens": self.cached_tokens if plan is not None else None,
            "traffic_type": self.traffic_type if plan is not None else None,
            "shared_request_type": self.shared_request_type,
            "request_type": self.request_type,
            "accept_encoding": self.accept_encoding,
            "stream_error": self.stream_error,
            "reported_prompt_tokens": reported[0] if reported else None,
            "reported_completion_tokens": reported[1] if reported else None,
            "reported_reasoning_tokens": reported[2] if reported else None,
            "reported_total_tokens": reported[3] if reported else None,
            # OpenAI convention: completion_tokens includes reasoning tokens.
            "prompt_tokens": plan.prompt_tokens if plan else None,
            "completion_tokens": plan.content_tokens + plan.reasoning_tokens if plan else None,
            "reasoning_tokens": plan.reasoning_tokens if plan else None,
            "total_tokens": (
                plan.prompt_tokens + plan.content_tokens + plan.reasoning_tokens if plan else None
            ),
        }
