"""A run's control: admission stops once, for one reason, and an abort is remembered.

The workers, the producer, the writer, the signal watcher and the credentials task all
report here; the runner reads the outcome for the run's summary and exit status.
"""

from __future__ import annotations

import logging

import anyio

from batchrunner.errors import AbortError
from batchrunner.pipeline.first_answers import FirstAnswers
from batchrunner.results import Result

__all__ = ["RunControl"]

logger = logging.getLogger(__name__)


class RunControl:
    """Stops admission once, for one reason, and remembers an abort."""

    def __init__(self, hint: str = "") -> None:
        """``hint`` goes with a stop for 404s (where the run's models are known to be)."""
        self.stopped: str | None = None
        self.fatal: str | None = None
        self.workers: anyio.CancelScope | None = None
        self._first = FirstAnswers(hint)
        self.lanes: dict[str, str] = {}  # model -> why its requests stopped (the rest go on)

    def answered(self, result: Result) -> None:
        """Stop a run whose first answers all say it is pointed at the wrong place."""
        reason = self._first.see(result)
        if reason is not None:
            self.stop(reason)

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            logger.warning("stopping: %s", reason)

    def stop_lane(self, model: str, reason: str) -> None:
        """Stop sending ``model``'s requests, once, with one line; other models go on."""
        if model not in self.lanes:
            self.lanes[model] = reason
            logger.warning("stopping %s: %s", model, reason)

    def lane_stopped(self, model: str) -> bool:
        return bool(self.lanes) and model in self.lanes

    def abort(self, exc: AbortError) -> None:
        if self.fatal is None:
            self.fatal = str(exc)
        self.stop(str(exc))
