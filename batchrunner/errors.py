"""The exception tree of batchrunner.

    BatchRunnerError                 base of everything raised on purpose
    ├── UsageError                   bad flags, config or input file: exit status 2
    │   ├── ConfigError
    │   └── InputFileError
    ├── AbortError                   the run cannot go on: exit status 3
    │   ├── AuthError                no credential could be had
    │   └── OutputError              the output cannot be written (disk full, permission)
    └── RequestError                 one HTTP exchange failed; becomes an ``error`` row
        (carries status, error type and whether it is worth retrying)

A row's failure becomes a result row; a systemic failure stops the run with one line.
Beside the tree live what every retry shares: how long a server's own wait may be honoured
(:data:`RETRY_AFTER_CAP_S`), the capped exponential backoff (:func:`backoff`), and the
advice a stop gives when OUTPUT belongs to another job (:data:`RESTART_ADVICE`).
"""

from __future__ import annotations

import random
from typing import Final, Literal

RETRY_AFTER_CAP_S: Final = 900.0
"""Longest server-suggested wait (Retry-After, RetryInfo) honoured; longer ones are clamped."""

RESTART_ADVICE: Final = "rerun with --restart to start over, or choose another -o"
"""What to do about an OUTPUT this run cannot resume."""

ANSWER_ERRORS: Final = frozenset({"length", "content_filter", "empty", "invalid_json"})
"""Error types of rows that got a 200 answer which ``--fail-on`` refused; they keep usage."""

EMPTY_TRUNCATED_ADVICE: Final = "raise max_tokens or lower reasoning_effort"
"""What to do about answers left empty because the token limit ran out (thinking ate it)."""


def backoff(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: Literal["full", "equal"],
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failure number ``attempt`` (1-based): capped exponential, jittered.

    The ceiling is ``min(cap_s, base_s * 2**(attempt-1))``; ``full`` jitter draws the wait
    from ``[0, ceiling]`` (the least synchronised), ``equal`` from ``[ceiling/2, ceiling]``
    (never much shorter than the ceiling).
    """
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    uniform = rng.uniform if rng is not None else random.uniform
    if jitter == "full":
        return uniform(0.0, ceiling)
    return ceiling / 2 + uniform(0, ceiling / 2)


class BatchRunnerError(Exception):
    """Base class of every error batchrunner raises on purpose."""

    exit_status = 1


class UsageError(BatchRunnerError):
    """The command line, the job file or the input file is unusable."""

    exit_status = 2


class ConfigError(UsageError):
    """A flag, job-file entry or environment variable is invalid."""


class InputFileError(UsageError):
    """The input file is missing, unreadable or of an unsupported kind."""


class AbortError(BatchRunnerError):
    """The run cannot continue; what was written so far stays resumable."""

    exit_status = 3


class AuthError(AbortError):
    """No access token could be obtained from the configured credential source."""


class OutputError(AbortError):
    """The output could not be written (disk full, permission lost, bad path)."""


class RequestError(BatchRunnerError):
    """One HTTP exchange failed.

    ``error_type`` is a short stable label (``rate_limited``, ``server_error``,
    ``timeout``, ``connection``, ``truncated_stream``, ``bad_request``, ...);
    ``retry_after`` is a server-suggested wait in seconds, when one was given.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        google_status: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.google_status = google_status
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"RequestError({self.message!r}, error_type={self.error_type!r}, "
            f"status={self.status!r}, retryable={self.retryable!r})"
        )
