"""Stopping a run whose first answers say it is pointed at the wrong place.

A wrong base URL, project, location or model, or a host that is not there, is not a row's
problem. Without this, every row of the input comes back as the same error: a 404 at
once, or a connection error after every retry, which for a large input takes hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from batchrunner.errors import RequestError
from batchrunner.results import Result

__all__ = ["FIRST_ANSWERS", "REFUSED_ATTEMPTS", "REFUSED_WITHIN_S", "FirstAnswers", "FirstContact"]

FIRST_ANSWERS = 50  # final results that, all 404 or all unreachable, stop the run
# Attempts refused a connection before any answer came that stop a run: this many, or at
# least two once REFUSED_WITHIN_S have passed since the first (a run of one worker).
REFUSED_ATTEMPTS = 8
REFUSED_WITHIN_S = 3.0


class FirstContact:
    """Watches the first attempts until one reaches a server; stops a run none can reach.

    Only an attempt that could not connect at all counts (refused, no such host): a server
    that accepts and then drops some connections has been reached. Any HTTP answer settles
    it for the run. This stops a run against a closed port within seconds, where waiting
    for ``FIRST_ANSWERS`` rows to fail after every retry took most of a minute.
    """

    __slots__ = ("_clock", "_first", "_refused", "settled")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: float | None = None
        self._refused = 0
        self.settled = False

    def refused(self, error: RequestError) -> str | None:
        """Count one attempt that could not connect; why to stop the run, once it is time."""
        if self.settled:
            return None
        now = self._clock()
        if self._first is None:
            self._first = now
        self._refused += 1
        if self._refused < REFUSED_ATTEMPTS and not (
            self._refused >= 2 and now - self._first >= REFUSED_WITHIN_S
        ):
            return None
        self.settled = True
        return (
            f"the first {self._refused} attempts never reached the server (no connection "
            "could be made; nothing was answered); check --base-url (or --location) and the "
            "network; the rows not finished are sent by the next run. The last error: "
            f"{error.message}"
        )


class FirstAnswers:
    """Watches final results until one shows the endpoint is there and knows the model.

    Any other answer settles it for the run, so a wrong model beside a right one, or a
    server that drops some connections, does not stop it.
    """

    __slots__ = ("_hint", "_not_found", "_settled", "_unreachable")

    def __init__(self, hint: str = "") -> None:
        """``hint`` is added to the 404 stop (known placements of the run's models)."""
        self._hint = hint
        self._settled = False
        self._not_found = 0
        self._unreachable = 0  # rows that never got an HTTP answer; -1 once a server answered

    def see(self, result: Result) -> str | None:
        """Why the run should stop, once the first ``FIRST_ANSWERS`` results agree; else None."""
        if self._settled:
            return None
        if result.error_type == "not_found":
            self._unreachable = -1  # a server answered
            self._not_found += 1
            if self._not_found >= FIRST_ANSWERS:
                self._settled = True
                hint = f"; {self._hint}" if self._hint else ""
                return (
                    f"the first {FIRST_ANSWERS} answers were all 404 Not Found; check "
                    "--base-url (or --project and --location) and --model (Vertex wants the "
                    "publisher: google/gemini-2.5-flash); once fixed, rerun with "
                    "--retry-failed to resend the 404s, or after changing --model with "
                    f"--restart (this run wrote only 404s){hint}"
                )
            return None
        if result.error_type == "connection" and result.http_status is None:
            if self._unreachable >= 0:
                self._unreachable += 1
                if self._unreachable >= FIRST_ANSWERS:
                    self._settled = True
                    return (
                        f"the first {FIRST_ANSWERS} rows never reached the server, each after "
                        "every retry; check --base-url (or --location) and the network; once "
                        "fixed, --retry-failed also resends those rows. The last error: "
                        f"{result.error_message or 'connection failed'}"
                    )
            return None
        if result.status == "ok" or result.http_status is not None:
            self._settled = True  # the server is there and answers for this model
        return None
