"""What a failed token refresh means: a loggable summary, whether retrying helps, the wait.

google-auth error texts can carry whole response bodies, so a failure is reduced to the
exception type, the OAuth error code and the HTTP status before anything logs it; OAuth
codes such as ``invalid_grant`` are permanent, everything else is retried with capped,
jittered exponential backoff.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Final

import google.auth.exceptions
import requests

from batchrunner.errors import backoff as backoff_wait

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "REFRESH_ERRORS",
    "UnusableTokenError",
    "backoff",
    "summarize",
]

#: Backoff between failed refreshes (seconds).
BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 30.0
#: OAuth error codes that no retry can fix.
_PERMANENT_OAUTH_ERRORS: Final = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope", "access_denied"}
)
_OAUTH_CODE: Final = re.compile(r"[A-Za-z_]{1,64}")
_HTTP_STATUS: Final = re.compile(r"\bstatus(?: code)?:? ?(\d{3})\b", re.IGNORECASE)


class UnusableTokenError(Exception):
    """A refresh that "succeeded" without producing a token worth using."""


REFRESH_ERRORS: Final = (
    UnusableTokenError,
    google.auth.exceptions.GoogleAuthError,
    requests.RequestException,
    OSError,
    ValueError,
    KeyError,
)


def backoff(attempt: int, rng: random.Random) -> float:
    """The wait before renewal attempt ``attempt + 1``: half fixed, half random."""
    return backoff_wait(attempt, base_s=BACKOFF_BASE, cap_s=BACKOFF_CAP, jitter="equal", rng=rng)


def summarize(exc: BaseException) -> tuple[str, bool]:
    """A loggable one-phrase summary of a refresh error, and whether it is permanent.

    google-auth error texts can carry whole response bodies, so only the exception type, the
    OAuth error code and the HTTP status are ever kept.
    """
    parts = [type(exc).__name__]
    cause = exc.__cause__ or (exc.args[0] if exc.args else None)
    if isinstance(cause, BaseException):
        parts.append(f"from {type(cause).__name__}")
    code: str | None = None
    for arg in exc.args:
        if isinstance(arg, Mapping):
            value = arg.get("error")
            if isinstance(value, str) and _OAUTH_CODE.fullmatch(value):
                code = value
            elif isinstance(value, Mapping) and isinstance(value.get("status"), str):
                status = str(value["status"])
                code = status if _OAUTH_CODE.fullmatch(status) else None
    if code is not None:
        parts.append(code)
    status_match = _HTTP_STATUS.search(str(exc.args[0]) if exc.args else "")
    if status_match:
        parts.append(f"HTTP {status_match.group(1)}")
    return " ".join(parts), code in _PERMANENT_OAUTH_ERRORS
