"""Google-style error answers: the ``{"error": {...}}`` envelope, Google's HTML error pages.

Handlers raise ``ApiError``; the app turns it into a response with ``error_response``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson
from aiohttp import web

DSQ_MESSAGE = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
AUTH_INVALID_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
AUTH_MISSING_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID_ARGUMENT_MESSAGE = "Request contains an invalid argument."

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class ApiError(Exception):
    """An error answer: HTTP status, canonical Google status, message and details."""

    code: int
    status: str
    message: str
    details: Sequence[Mapping[str, object]] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    errors: Sequence[Mapping[str, object]] = ()  # the legacy ``errors`` list (499 CANCELLED)
    html: bool = False  # answer with Google's HTML error page instead of JSON

    def __str__(self) -> str:
        return f"{self.code} {self.status}: {self.message}"


def retry_info(delay_s: float) -> dict[str, object]:
    """A ``google.rpc.RetryInfo`` detail with a protobuf duration string ("39s", "1.5s")."""
    text = f"{delay_s:.9f}".rstrip("0").rstrip(".")
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{text}s"}


def error_info(reason: str, method: str) -> dict[str, object]:
    """A ``google.rpc.ErrorInfo`` detail for aiplatform.googleapis.com."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "aiplatform.googleapis.com", "method": method},
    }


def error_envelope(error: ApiError, *, array: bool) -> object:
    """The ``{"error": {...}}`` envelope, in a one-element array when ``array``."""
    inner: dict[str, object] = {"code": error.code, "message": error.message}
    if error.errors:
        inner["errors"] = list(error.errors)
    inner["status"] = error.status
    if error.details:
        inner["details"] = list(error.details)
    return [{"error": inner}] if array else {"error": inner}


def error_body(error: ApiError, *, array: bool) -> bytes:
    """The JSON body of an error answer, array-wrapped when ``array``."""
    return orjson.dumps(error_envelope(error, array=array))


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error {code} ({title})!!1</title>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>{code}.</b> <ins>That\u2019s an error.</ins>
  <p>{text}  <ins>That\u2019s all we know.</ins>
"""


def html_page(code: int, title: str, text: str) -> bytes:
    """Google's front-end HTML error page."""
    return _HTML_TEMPLATE.format(code=code, title=title, text=text).encode()


def not_found_page(path: str) -> bytes:
    return html_page(
        404,
        "Not Found",
        f"The requested URL <code>{_escape(path)}</code> was not found on this server.",
    )


def bad_gateway_page() -> bytes:
    return html_page(
        502,
        "Server Error",
        "The server encountered a temporary error and could not complete your request."
        "<p>Please try again in 30 seconds.",
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def error_response(error: ApiError, *, array: bool, path: str = "") -> web.Response:
    """The aiohttp response for ``error``; never carries a ``Retry-After`` header."""
    if error.html:
        body = not_found_page(path) if error.code == 404 else bad_gateway_page()
        return web.Response(
            status=error.code,
            body=body,
            content_type="text/html",
            charset="UTF-8",
            headers=dict(error.headers),
        )
    return web.Response(
        status=error.code,
        body=error_body(error, array=array),
        content_type="application/json",
        charset="UTF-8",
        headers=dict(error.headers),
    )
