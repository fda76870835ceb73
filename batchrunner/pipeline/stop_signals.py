"""SIGINT and SIGTERM for a run's whole life, from start-up to the last rename.

:class:`StopSignals` is installed before anything else happens (the CLI does it first) and
counts every SIGINT/SIGTERM. While a :class:`~batchrunner.pipeline.runner.Runner` runs, it
listens: the first signal stops admission (requests in flight finish within the grace
time; a final compaction already under way is finished), the second stops at once. Before
the runner listens and after it is done, a first signal is remembered for it (or for the
caller's summary) and a second one calls ``on_second``, which the CLI uses to exit at once:
every phase leaves OUTPUT resumable, since a killed run loses nothing either.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Final

__all__ = ["STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Counts SIGINT/SIGTERM from ``install()`` to ``restore()`` and hands them to a listener."""

    def __init__(self, on_second: Callable[[str], None] | None = None) -> None:
        self.received: list[str] = []
        self._on_second = on_second
        self._listener: Callable[[str], None] | None = None
        self._previous: dict[int, object] = {}

    @property
    def first(self) -> str | None:
        """The name of the first signal received, if any."""
        return self.received[0] if self.received else None

    def install(self) -> StopSignals:
        """Take over SIGINT and SIGTERM (main thread only); ``restore()`` gives them back."""
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def listen(self, listener: Callable[[str], None] | None) -> None:
        """Send each signal to ``listener`` from now on (None: stop listening)."""
        self._listener = listener

    def stop_at_once(self, name: str) -> None:
        """What a second signal does when the listener cannot stop sooner itself."""
        if self._on_second is not None:
            self._on_second(name)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self._listener is not None:
            self._listener(name)
        elif len(self.received) >= 2:
            self.stop_at_once(name)
