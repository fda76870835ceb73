"""Stopping a run whose first answers say it is pointed at the wrong place.

A wrong base URL, project, location or model, or a host that is not there, is not a row's
problem. Without this, every row of the input comes back as the same error: a 404 at
once, or a connection error after every retry, which for a large input takes hours.
"""

from __future__ import annotations

from batchrunner.results import Result

__all__ = ["FIRST_ANSWERS", "FirstAnswers"]

FIRST_ANSWERS = 50  # final results that, all 404 or all unreachable, stop the run


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
                    "--base-url (or --project and --location) and --model; once fixed, "
                    f"--retry-failed also resends the rows that got a 404{hint}"
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
