"""Turn a failed HTTP exchange into a :class:`~batchrunner.errors.RequestError`.

This is the one place that decides what an error is, whether it is worth retrying and how
long the server asked us to wait. It understands Google's error envelope in both its object
and its one-element-array form, OpenAI/vLLM-style errors, plain text and HTML pages.
"""

from __future__ import annotations

import email.utils
import html
import http
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import orjson

from batchrunner.errors import RETRY_AFTER_CAP_S, RequestError

__all__ = [
    "MAX_MESSAGE_CHARS",
    "RETRYABLE_STATUSES",
    "body_preview",
    "error_from_exception",
    "error_from_response",
    "parse_retry_after",
    "parse_retry_delay",
    "truncated_stream_error",
]

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 499, 500, 502, 503, 504})
"""HTTP statuses worth another attempt: google-api-core's set, 502, and 499 ``CANCELLED``,
which Vertex answers under heavy load (reason ``backendError``) and is as transient as a 503.
"""


MAX_MESSAGE_CHARS = 300
"""Longest server text kept in an error message."""

_STATUS_TYPES: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    422: "bad_request",
    429: "rate_limited",
    499: "cancelled",
    504: "deadline_exceeded",
}

# Only the head of a huge body is looked at; the message keeps far less than this.
_SCAN_BYTES = 65536
_DURATION_RE = re.compile(r"^\s*(\d+)(?:\.(\d{1,9}))?s\s*$")
_CONTEXT_LENGTH_RE = re.compile(
    r"input token count.*exceeds the maximum"
    r"|maximum context length"
    r"|context[_ ]length[_ ]exceeded"
    r"|prompt is too long",
    re.IGNORECASE | re.DOTALL,
)
# A prompt refused by the safety filters: final, never worth another attempt.
_BLOCKED_RE = re.compile(r"\brequest (?:was )?blocked\b|\bprompt (?:was )?blocked\b", re.I)
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_WHITESPACE_RE = re.compile(r"\s+")
# A server page may echo the request URL or a header back; keep credentials out of messages.
_SECRET_RES = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"\bya29\.[A-Za-z0-9._~+/=-]+"), "[redacted]"),
    (re.compile(r"(?i)\b(key|access_token|token)=[^&\s\"'<>]+"), r"\1=[redacted]"),
)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What could be read out of an error body."""

    message: str
    google_status: str | None = None
    error_code: str | None = None
    reasons: tuple[str, ...] = ()
    retry_delay: float | None = None
    quota_failure: bool = False


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> RequestError:
    """Classify a non-2xx response.

    ``error_type`` is one of ``bad_request``, ``context_length``, ``unauthenticated``,
    ``permission_denied``, ``not_found``, ``timeout``, ``rate_limited``, ``server_error``,
    ``deadline_exceeded``, ``cancelled``, ``blocked`` (a 400 "Request blocked": the prompt
    was refused by the safety filters), ``client_error`` or ``http_error``. For 429s
    ``reason`` is ``"quota"`` (a hard per-model quota, MaaS "Quota exceeded for …"),
    ``"dsq"`` (the shared pool is busy, "Resource exhausted") or
    ``"provisioned_throughput"``; for other statuses it is Google's ``ErrorInfo.reason``
    (``ACCESS_TOKEN_EXPIRED``, ``SERVICE_DISABLED``, …) when one was sent. ``retry_after``
    comes from a ``Retry-After`` header, else from ``google.rpc.RetryInfo``, capped at
    :data:`RETRY_AFTER_CAP_S`. The message is one line and never holds request headers.
    """
    parsed = _parse_body(body)
    text = parsed.message or _reason_phrase(status)
    error_type = _error_type(status, parsed)
    reason = _rate_limit_reason(parsed) if status == 429 else _first(parsed.reasons)

    retry_after = _header_retry_after(headers, wall_clock)
    if retry_after is None:
        retry_after = parsed.retry_delay
    if retry_after is not None:
        retry_after = min(retry_after, RETRY_AFTER_CAP_S)

    prefix = f"HTTP {status}"
    if parsed.google_status:
        prefix += f" {parsed.google_status}"
    message = f"{prefix}: {text}" if text else prefix
    return RequestError(
        message,
        error_type=error_type,
        status=status,
        retryable=status in RETRYABLE_STATUSES,
        retry_after=retry_after,
        google_status=parsed.google_status,
        reason=reason,
    )


def error_from_exception(exc: BaseException) -> RequestError:
    """Classify an exception raised while sending a request or reading its response.

    Timeouts are ``timeout`` and broken connections ``connection``, both retryable; a
    request httpx refused to send (bad URL scheme, invalid headers) and other
    :class:`httpx.HTTPError` subclasses are a non-retryable ``client_error``. Anything
    else is a non-retryable ``internal_error``, so a row can still be recorded; whether to
    re-raise it instead is the caller's decision. Never pass cancellation here.
    """
    text = _exception_text(exc)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return RequestError(text, error_type="timeout", retryable=True)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return RequestError(text, error_type="client_error", retryable=False)
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        # No connection was made at all (refused, no such host).
        return RequestError(text, error_type="connection", retryable=True, reason="connect")
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return RequestError(text, error_type="connection", retryable=True)
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            body = exc.response.content
        except httpx.ResponseNotRead:
            body = b""
        return error_from_response(exc.response.status_code, exc.response.headers, body)
    if isinstance(exc, httpx.HTTPError):
        return RequestError(text, error_type="client_error", retryable=False)
    # Not a failure of the exchange itself (a bug, a broken invariant): never worth a retry.
    return RequestError(text, error_type="internal_error", retryable=False)


def truncated_stream_error(detail: str) -> RequestError:
    """The response stream ended before its final event (no ``[DONE]``, no usage)."""
    text = _one_line(detail)
    message = f"stream ended early: {text}" if text else "stream ended early"
    return RequestError(message, error_type="truncated_stream", retryable=True)


def parse_retry_delay(value: object) -> float | None:
    """Seconds in a protobuf duration: ``"39s"``, ``"1.5s"`` or ``{"seconds", "nanos"}``."""
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            return None
        seconds, fraction = match.groups()
        return int(seconds) + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)
    if isinstance(value, dict):
        seconds_value = value.get("seconds", 0)
        nanos_value = value.get("nanos", 0)
        try:
            total = float(seconds_value) + float(nanos_value) / 1e9
        except (TypeError, ValueError):
            return None
        return total if math.isfinite(total) and total >= 0 else None
    return None


def parse_retry_after(value: str, *, wall_clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - wall_clock())


def _header_retry_after(
    headers: Mapping[str, str], wall_clock: Callable[[], float]
) -> float | None:
    # Plain dicts are case-sensitive; httpx.Headers is not. Scan so both work.
    for name, value in headers.items():
        if name.lower() == "retry-after":
            return parse_retry_after(value, wall_clock=wall_clock)
    return None


def _parse_body(body: bytes) -> _Parsed:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _Parsed(message=_text_message(body))
    if isinstance(document, list):
        # Vertex's openapi endpoint wraps the envelope in a one-element array.
        for item in document:
            if isinstance(item, dict) and "error" in item:
                document = item
                break
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return _parse_envelope(error)
        if isinstance(error, str):
            return _Parsed(message=_clean(error))
        for key in ("message", "detail"):  # vLLM top-level errors; FastAPI's {"detail": …}
            if isinstance(document.get(key), str):
                return _Parsed(message=_clean(document[key]))
    return _Parsed(message=_clean(orjson.dumps(document).decode()))


def _parse_envelope(error: dict[str, object]) -> _Parsed:
    message = error.get("message")
    status = error.get("status")
    code = error.get("code")
    openai_type = error.get("type")
    reasons: list[str] = []
    retry_delay: float | None = None
    quota_failure = False
    details = error.get("details")
    if isinstance(details, list):
        for detail in details:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo"):
                retry_delay = parse_retry_delay(detail.get("retryDelay"))
            elif kind.endswith("google.rpc.ErrorInfo"):
                reason = detail.get("reason")
                if isinstance(reason, str) and reason:
                    reasons.append(reason)
            elif kind.endswith("google.rpc.QuotaFailure"):
                quota_failure = True
    error_code = code if isinstance(code, str) else None
    if error_code is None and isinstance(openai_type, str):
        error_code = openai_type
    return _Parsed(
        message=_clean(message) if isinstance(message, str) else "",
        google_status=status if isinstance(status, str) and status else None,
        error_code=error_code,
        reasons=tuple(reasons),
        retry_delay=retry_delay,
        quota_failure=quota_failure,
    )


def _error_type(status: int, parsed: _Parsed) -> str:
    if status == 400 and (
        _CONTEXT_LENGTH_RE.search(parsed.message) or parsed.error_code == "context_length_exceeded"
    ):
        return "context_length"
    if status == 400 and _BLOCKED_RE.search(parsed.message):
        return "blocked"
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    if 500 <= status < 600:
        return "server_error"
    if 400 <= status < 500:
        return "client_error"
    return "http_error"


def _rate_limit_reason(parsed: _Parsed) -> str | None:
    lowered = parsed.message.lower()
    if "provisioned throughput" in lowered:
        return "provisioned_throughput"
    if (
        parsed.quota_failure
        or "quota" in lowered
        or "rate limit" in lowered
        or any(r in {"RATE_LIMIT_EXCEEDED", "QUOTA_EXCEEDED"} for r in parsed.reasons)
    ):
        return "quota"
    if "resource exhausted" in lowered or parsed.google_status == "RESOURCE_EXHAUSTED":
        return "dsq"
    return None


def body_preview(body: bytes) -> str:
    """The head of a body that is not what was expected, as one clean line for a message.

    HTML is reduced to its text; secrets are redacted; at most :data:`MAX_MESSAGE_CHARS`.
    """
    return _text_message(body)


def _text_message(body: bytes) -> str:
    text = body[:_SCAN_BYTES].decode("utf-8", errors="replace")
    if "<" in text and ">" in text:
        text = _SCRIPT_RE.sub(" ", text)
        text = _TAG_RE.sub(" ", text)
        text = html.unescape(text)
    return _clean(text)


def _clean(text: str) -> str:
    """One printable line, secrets redacted, at most MAX_MESSAGE_CHARS characters."""
    text = _one_line(text[:_SCAN_BYTES])
    for pattern, replacement in _SECRET_RES:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


def _one_line(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return _WHITESPACE_RE.sub(" ", printable).strip()


def _exception_text(exc: BaseException) -> str:
    detail = _clean(str(exc))
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _first(values: tuple[str, ...]) -> str | None:
    return values[0] if values else None
