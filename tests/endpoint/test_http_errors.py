"""Error classification: Vertex's envelopes, retry hints, odd bodies and transport errors."""

from __future__ import annotations

import email.utils

import httpx
import orjson
import pytest

from batchrunner.endpoint.http_errors import (
    MAX_MESSAGE_CHARS,
    error_from_exception,
    error_from_response,
    parse_retry_delay,
    truncated_stream_error,
)

DSQ_MESSAGE = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
QUOTA_MESSAGE = (
    "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
    "with base model: gpt-oss-120b-maas. Please submit a quota increase request."
)
AUTH_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
GOOGLE_404_PAGE = b"""<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <title>Error 404 (Not Found)!!1</title>
  <style>
    *{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}
  </style>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>404.</b> <ins>That&#39;s an error.</ins>
  <p>The requested URL <code>/v1/projects/p/locations/global/endpoints/x</code> was not
  found on this server.  <ins>That&#39;s all we know.</ins>
"""
NO_HEADERS: dict[str, str] = {}


def envelope(
    code: int, status: str, message: str, *details: dict[str, object], array: bool = False
) -> bytes:
    inner: dict[str, object] = {"code": code, "message": message, "status": status}
    if details:
        inner["details"] = list(details)
    return orjson.dumps([{"error": inner}] if array else {"error": inner})


def retry_info(delay: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_info(reason: str) -> dict[str, object]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "aiplatform.googleapis.com"},
    }


@pytest.mark.parametrize("array", [True, False], ids=["array", "object"])
def test_dsq_429_is_retryable_rate_limit_with_reason_dsq_in_either_envelope(array: bool) -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, array=array)
    error = error_from_response(429, NO_HEADERS, body)
    assert error.error_type == "rate_limited"
    assert error.retryable
    assert error.status == 429
    assert error.google_status == "RESOURCE_EXHAUSTED"
    assert error.reason == "dsq"
    assert error.retry_after is None
    assert error.message.startswith("HTTP 429 RESOURCE_EXHAUSTED: Resource exhausted.")


@pytest.mark.parametrize("array", [True, False], ids=["array", "object"])
def test_maas_quota_429_has_reason_quota_in_either_envelope(array: bool) -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, array=array)
    error = error_from_response(429, NO_HEADERS, body)
    assert error.error_type == "rate_limited"
    assert error.retryable
    assert error.reason == "quota"


def test_provisioned_throughput_429_is_told_apart() -> None:
    body = envelope(
        429, "RESOURCE_EXHAUSTED", "Too many requests. Exceeded the Provisioned Throughput."
    )
    assert error_from_response(429, NO_HEADERS, body).reason == "provisioned_throughput"


def test_401_expired_token_is_not_retryable_and_carries_error_info_reason() -> None:
    body = envelope(401, "UNAUTHENTICATED", AUTH_MESSAGE, error_info("ACCESS_TOKEN_EXPIRED"))
    error = error_from_response(401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, body)
    assert error.error_type == "unauthenticated"
    assert not error.retryable
    assert error.reason == "ACCESS_TOKEN_EXPIRED"
    assert "invalid_token" not in error.message


def test_403_permission_denied_is_not_retryable() -> None:
    body = envelope(
        403,
        "PERMISSION_DENIED",
        "Permission 'aiplatform.endpoints.predict' denied on resource "
        "'//aiplatform.googleapis.com/projects/p/locations/global/publishers/openai/models/x'.",
        array=True,
    )
    error = error_from_response(403, NO_HEADERS, body)
    assert (error.error_type, error.retryable) == ("permission_denied", False)


def test_404_unknown_model_is_not_retryable() -> None:
    body = envelope(
        404,
        "NOT_FOUND",
        "Publisher Model `projects/p/locations/global/publishers/openai/models/gpt-oss` was not "
        "found or your project does not have access to it.",
    )
    error = error_from_response(404, NO_HEADERS, body)
    assert (error.error_type, error.retryable) == ("not_found", False)
    assert "was not found" in error.message


def test_400_invalid_argument_is_bad_request_and_not_retryable() -> None:
    body = envelope(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", array=True)
    error = error_from_response(400, NO_HEADERS, body)
    assert (error.error_type, error.retryable) == ("bad_request", False)
    assert error.google_status == "INVALID_ARGUMENT"


def test_400_over_the_token_limit_is_context_length() -> None:
    message = (
        "The input token count (307661) exceeds the maximum number of tokens allowed (131072)."
    )
    error = error_from_response(400, NO_HEADERS, envelope(400, "INVALID_ARGUMENT", message))
    assert (error.error_type, error.retryable) == ("context_length", False)


def test_openai_style_context_length_error_is_recognised() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "This model's maximum context length is 131072 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        }
    )
    error = error_from_response(400, NO_HEADERS, body)
    assert error.error_type == "context_length"
    assert error.message == "HTTP 400: This model's maximum context length is 131072 tokens."


def test_vllm_top_level_error_object_gives_its_message() -> None:
    body = orjson.dumps({"object": "error", "message": "bad n", "type": "BadRequestError"})
    assert error_from_response(400, NO_HEADERS, body).message == "HTTP 400: bad n"


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (408, "timeout", True),
        (409, "client_error", False),
        (500, "server_error", True),
        (501, "server_error", False),
        (502, "server_error", True),
        (503, "server_error", True),
        (504, "deadline_exceeded", True),
        (499, "cancelled", True),
    ],
)
def test_status_codes_map_to_type_and_retryability(
    status: int, error_type: str, retryable: bool
) -> None:
    error = error_from_response(status, NO_HEADERS, b"")
    assert (error.error_type, error.retryable) == (error_type, retryable)


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("39s", 39.0), ("1.5s", 1.5), ("0.000000001s", 1e-9), ("0s", 0.0)],
)
def test_retry_info_delay_becomes_retry_after(delay: str, seconds: float) -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, retry_info(delay), array=True)
    error = error_from_response(429, NO_HEADERS, body)
    assert error.retry_after == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize("bad", ["39", "1.5m", "-3s", "1.0000000001s", "", None, 7])
def test_malformed_retry_delay_is_ignored(bad: object) -> None:
    assert parse_retry_delay(bad) is None


def test_retry_delay_in_seconds_and_nanos_form_is_read() -> None:
    assert parse_retry_delay({"seconds": 2, "nanos": 500_000_000}) == 2.5


def test_retry_after_header_in_seconds_wins_over_retry_info() -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, retry_info("39s"))
    error = error_from_response(429, {"retry-after": "7"}, body)
    assert error.retry_after == 7.0


def test_retry_after_header_as_http_date_is_seconds_from_now() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    error = error_from_response(503, {"Retry-After": date}, b"", wall_clock=lambda: now)
    assert error.retry_after == pytest.approx(120.0)


def test_retry_after_http_date_in_the_past_means_no_wait() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now - 60, usegmt=True)
    error = error_from_response(503, {"Retry-After": date}, b"", wall_clock=lambda: now)
    assert error.retry_after == 0.0


def test_retry_hints_are_capped_at_fifteen_minutes() -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, retry_info("86400s"))
    assert error_from_response(429, NO_HEADERS, body).retry_after == 900.0
    assert error_from_response(429, {"Retry-After": "99999"}, b"").retry_after == 900.0


def test_unparsable_retry_after_header_falls_back_to_retry_info() -> None:
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, retry_info("3s"))
    assert error_from_response(429, {"Retry-After": "soon"}, body).retry_after == 3.0


def test_html_404_page_becomes_one_line_of_text() -> None:
    error = error_from_response(404, {"content-type": "text/html"}, GOOGLE_404_PAGE)
    assert error.error_type == "not_found"
    assert not error.retryable
    assert "<" not in error.message
    assert "font:" not in error.message
    assert "\n" not in error.message
    assert "That's an error." in error.message
    assert "was not found on this server." in error.message


def test_plain_text_502_is_retryable_server_error() -> None:
    error = error_from_response(502, NO_HEADERS, b"upstream connect error\nor disconnect\n")
    assert (error.error_type, error.retryable) == ("server_error", True)
    assert error.message == "HTTP 502: upstream connect error or disconnect"


def test_empty_body_uses_the_reason_phrase() -> None:
    assert error_from_response(503, NO_HEADERS, b"").message == "HTTP 503: Service Unavailable"


def test_garbage_bytes_give_a_printable_one_line_message() -> None:
    error = error_from_response(500, NO_HEADERS, b"\x00\x01\x02{not json\r\n\x7f\x1b[31m")
    assert error.error_type == "server_error"
    assert error.message.isprintable()
    assert "not json" in error.message


def test_non_utf8_body_is_decoded_with_replacement() -> None:
    error = error_from_response(500, NO_HEADERS, "Fehler: Überlast".encode("latin-1"))
    assert error.message == "HTTP 500: Fehler: \ufffdberlast"


def test_huge_body_is_truncated() -> None:
    error = error_from_response(500, NO_HEADERS, b"x" * 5_000_000)
    assert len(error.message) <= MAX_MESSAGE_CHARS + len("HTTP 500: ")
    assert error.message.endswith("…")


def test_huge_envelope_message_is_truncated_to_one_line() -> None:
    body = envelope(400, "INVALID_ARGUMENT", "bad\n" * 10_000, array=True)
    error = error_from_response(400, NO_HEADERS, body)
    assert "\n" not in error.message
    assert len(error.message) <= MAX_MESSAGE_CHARS + len("HTTP 400 INVALID_ARGUMENT: ")


def test_json_that_is_not_an_envelope_is_kept_as_text() -> None:
    error = error_from_response(500, NO_HEADERS, b'[1, 2, {"x": null}]')
    assert error.message == 'HTTP 500: [1,2,{"x":null}]'


def test_echoed_credentials_are_redacted_from_messages() -> None:
    body = b"bad header Authorization: Bearer ya29.secret-token and url ?key=AIzaSECRET&x=1"
    error = error_from_response(400, NO_HEADERS, body)
    assert "secret" not in error.message.lower()
    assert "AIzaSECRET" not in error.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("pool timed out"),
        TimeoutError(),
    ],
)
def test_timeouts_are_retryable_timeout_errors(exc: BaseException) -> None:
    error = error_from_exception(exc)
    assert (error.error_type, error.retryable) == ("timeout", True)
    assert error.status is None


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadError("connection reset by peer"),
        httpx.WriteError("broken pipe"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
        httpx.ProxyError("proxy said no"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_broken_connections_are_retryable_connection_errors(exc: BaseException) -> None:
    error = error_from_exception(exc)
    assert (error.error_type, error.retryable) == ("connection", True)
    assert type(exc).__name__ in error.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
        httpx.LocalProtocolError("Illegal header value"),
        httpx.DecodingError("gzip garbage"),
        httpx.TooManyRedirects("redirect loop"),
    ],
)
def test_requests_httpx_refused_or_could_not_decode_are_not_retried(exc: BaseException) -> None:
    error = error_from_exception(exc)
    assert (error.error_type, error.retryable) == ("client_error", False)


def test_http_status_error_is_classified_from_its_response() -> None:
    request = httpx.Request("POST", "https://aiplatform.googleapis.com/v1/x")
    body = envelope(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, array=True)
    response = httpx.Response(429, content=body, request=request)
    exc = httpx.HTTPStatusError("429", request=request, response=response)
    error = error_from_exception(exc)
    assert (error.error_type, error.reason, error.retryable) == ("rate_limited", "dsq", True)


def test_unknown_exception_is_a_non_retryable_internal_error() -> None:
    error = error_from_exception(KeyError("usage"))
    assert (error.error_type, error.retryable) == ("internal_error", False)


def test_truncated_stream_is_retryable() -> None:
    error = truncated_stream_error("no [DONE] after 12 chunks\n")
    assert (error.error_type, error.retryable) == ("truncated_stream", True)
    assert error.message == "stream ended early: no [DONE] after 12 chunks"


@pytest.mark.parametrize("array", [False, True])
def test_499_cancelled_under_load_is_retried_like_a_503(array: bool) -> None:
    legacy = {
        "message": "The operation was cancelled.",
        "domain": "global",
        "reason": "backendError",
    }
    envelope = {
        "error": {
            "code": 499,
            "message": "The operation was cancelled.",
            "status": "CANCELLED",
            "errors": [legacy],
        }
    }
    body = orjson.dumps([envelope] if array else envelope)
    error = error_from_response(499, NO_HEADERS, body)
    assert (error.error_type, error.retryable, error.google_status) == (
        "cancelled",
        True,
        "CANCELLED",
    )


def test_a_blocked_prompt_400_is_error_type_blocked_and_never_retried() -> None:
    envelope = {
        "error": {
            "code": 400,
            "message": "Request blocked due to the prompt's content (PROHIBITED_CONTENT).",
            "status": "INVALID_ARGUMENT",
        }
    }
    error = error_from_response(400, NO_HEADERS, orjson.dumps([envelope]))
    assert (error.error_type, error.retryable) == ("blocked", False)
    plain = error_from_response(400, NO_HEADERS, orjson.dumps({"error": {"message": "bad n"}}))
    assert plain.error_type == "bad_request"
