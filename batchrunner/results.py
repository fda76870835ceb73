"""The result row: one per (input id, model), the same in JSONL and Parquet.

``RESULT_FIELDS`` is the column order; ``RESULT_SCHEMA`` the Arrow schema that Parquet
output uses. JSONL output writes the same names, with timestamps as ISO-8601 UTC strings.
Beside it, the values a row's result is made from: the ``RequestSpec`` sent, the ``Usage``
counted, and the one UTC clock (:func:`utc_now`) that stamps them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pyarrow as pa


def utc_now() -> datetime:
    """The current time, timezone-aware UTC: every timestamp batchrunner writes or compares."""
    return datetime.now(UTC)


class RequestSpec(NamedTuple):
    """One request to send: the row it came from, the model, the encoded body and its size."""

    row: int
    id: str
    model: str
    body: bytes
    input_tokens: int  # estimated from the text
    max_output_tokens: int | None  # the request's own cap, when it sets one
    stream: bool
    candidates: int = 1  # the request's ``n``: how many candidates it asked for
    response_format: Any = None  # the request's own response_format, when it asks for JSON


class Usage(NamedTuple):
    """Normalized token counts of one response; ``None`` where the server did not say.

    A named tuple rather than a frozen dataclass: one is built for every answer, and a
    frozen dataclass's ``__init__`` costs several times as much.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # every generated token, reasoning included
    reasoning_tokens: int | None = None  # the reasoning part of completion_tokens
    cached_tokens: int | None = None  # the cached part of prompt_tokens
    total_tokens: int | None = None  # prompt + completion
    traffic_type: str | None = None  # usage.extra_properties.google.traffic_type


@dataclass
class Result:
    """The outcome of one (input row, model) pair, as written to the output.

    Without ``__slots__`` on purpose: orjson encodes a dataclass from its ``__dict__`` in
    about 1.2 µs, and field by field, with slots, in about 2.9 µs; every row is encoded.
    """

    id: str
    model: str
    status: str  # "ok" or "error"
    row: int | None = None  # position of the input row (0-based), for --ordered
    output: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # every token billed as output, reasoning included
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    ttfo_s: float | None = None
    itl_s: float | None = None
    output_tps: float | None = None
    attempts: int = 0
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    response_id: str | None = None
    traffic_type: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tool_calls: str | None = None  # JSON list of {id, name, arguments[, valid_json: false]}
    choices: str | None = None  # JSON list of every candidate's text, when n > 1 was asked
    finish_reason_raw: str | None = None  # the server's finish reason, when it differs
    parsed: str | None = None  # a JSON answer, parsed and re-encoded compactly
    valid: bool | None = None  # whether the answer is the JSON (and schema) the request asked
    batch_job: str | None = None  # the batchPredictionJob that answered, on the batch route

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in RESULT_FIELDS}


RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Result))

_TS = pa.timestamp("us", tz="UTC")

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("row", pa.int64()),
        pa.field("output", pa.string()),
        pa.field("reasoning", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("latency_s", pa.float64()),
        pa.field("ttft_s", pa.float64()),
        pa.field("ttfo_s", pa.float64()),
        pa.field("itl_s", pa.float64()),
        pa.field("output_tps", pa.float64()),
        pa.field("attempts", pa.int64()),
        pa.field("http_status", pa.int64()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("response_id", pa.string()),
        pa.field("traffic_type", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("tool_calls", pa.string()),
        pa.field("choices", pa.string()),
        pa.field("finish_reason_raw", pa.string()),
        pa.field("parsed", pa.string()),
        pa.field("valid", pa.bool_()),
        pa.field("batch_job", pa.string()),
    ]
)

assert tuple(RESULT_SCHEMA.names) == RESULT_FIELDS

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_APPEND_NEWLINE


def result_line(result: Result) -> bytes:
    """``result`` as one line of JSONL output, newline included; never raises."""
    try:
        return orjson.dumps(result, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        return orjson.dumps(clean_row(result), option=_JSON_OPTIONS)


def clean_row(result: Result) -> dict[str, object]:
    """``result`` as a dict with lone surrogates replaced: neither UTF-8 nor Parquet holds them."""
    return {
        name: value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
        for name, value in result.to_dict().items()
    }
