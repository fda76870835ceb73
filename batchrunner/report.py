"""Reading result files and rendering statistics as text, Markdown, JSON or HTML.

:func:`load_results` streams rows from JSONL or Parquet output; :func:`stats_from_files`
aggregates them (and pairs models by id for a comparison when several models answered);
:func:`render` and :func:`render_summary` turn a :class:`StatsSnapshot` into a string.
The text report, the Markdown report, the HTML tables and the end-of-run summary are all
drawn from the same :func:`sections`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import InputFileError
from batchrunner.schema import RESULT_FIELDS, RESULT_SCHEMA, Result
from batchrunner.stats import (
    Comparison,
    ComparisonBuilder,
    Distribution,
    ModelStats,
    RunStats,
    StatsSnapshot,
)

__all__ = [
    "FORMATS",
    "Section",
    "load_results",
    "render",
    "render_summary",
    "sections",
    "stats_from_files",
]

logger = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "json", "html")
# Columns the statistics need; the answer texts can be most of a file and are skipped.
STATS_COLUMNS = tuple(
    f for f in RESULT_FIELDS if f not in {"output", "reasoning", "error_message", "response_id"}
)
_INT_FIELDS = frozenset(
    {
        "row",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "total_tokens",
        "attempts",
        "http_status",
    }
)
_FLOAT_FIELDS = frozenset({"cost_usd", "latency_s", "ttft_s", "ttfo_s", "itl_s", "output_tps"})
_TIME_FIELDS = frozenset({"started_at", "finished_at"})


# ----------------------------------------------------------------------------- reading


def load_results(
    paths: Sequence[str | os.PathLike[str]], *, columns: Sequence[str] | None = None
) -> Iterator[Result]:
    """Stream result rows from ``.jsonl`` (optionally ``.gz``) and ``.parquet`` files.

    A torn last line of a JSONL file (a write cut short by a crash) is skipped with a
    warning; an unreadable line anywhere else raises :class:`InputFileError`. ``columns``
    limits what Parquet files read (the other fields stay at their defaults).
    """
    for path in paths:
        name = os.fspath(path)
        if not Path(name).is_file():
            raise InputFileError(f"result file not found: {name}")
        lower = name.lower()
        if lower.endswith(".parquet"):
            yield from _read_parquet(name, columns)
        elif lower.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
            yield from _read_jsonl(name)
        else:
            raise InputFileError(f"{name}: unknown result file type (want .jsonl or .parquet)")


def _open_binary(name: str) -> BinaryIO:
    if name.lower().endswith(".gz"):
        return cast(BinaryIO, gzip.open(name, "rb"))
    return open(name, "rb")  # closed by the caller's with block


def _read_jsonl(name: str) -> Iterator[Result]:
    torn: int | None = None  # number of an unparsable line, forgiven only if it is the last
    try:
        with _open_binary(name) as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                if torn is not None:
                    raise InputFileError(f"{name}:{torn}: not a JSON object")
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    torn = lineno
                    continue
                if not isinstance(data, dict):
                    raise InputFileError(f"{name}:{lineno}: not a JSON object")
                yield _result(data, f"{name}:{lineno}")
    except (OSError, EOFError) as exc:
        raise InputFileError(f"cannot read {name}: {exc}") from exc
    if torn is not None:
        logger.warning("%s:%d: skipped a torn last line (an interrupted write)", name, torn)


def _read_parquet(name: str, columns: Sequence[str] | None) -> Iterator[Result]:
    try:
        file = pq.ParquetFile(name)
        present = set(file.schema_arrow.names)
        for required in ("id", "model", "status"):
            if required not in present:
                raise InputFileError(f"{name}: no {required!r} column; not a result file")
        wanted = [c for c in (columns or RESULT_FIELDS) if c in present]
        wanted += [c for c in ("id", "model", "status") if c not in wanted]
        for batch in file.iter_batches(batch_size=16_384, columns=wanted):
            yield from _batch_results(batch, name)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise InputFileError(f"cannot read {name}: {exc}") from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _batch_results(batch: pa.RecordBatch, name: str) -> Iterator[Result]:
    names = batch.schema.names
    lists = {n: _column(batch.column(i)) for i, n in enumerate(names)}
    if all(batch.schema.field(n).type == RESULT_SCHEMA.field(n).type for n in names):
        # Written with RESULT_SCHEMA: the values already have the right types.
        nones = [None] * batch.num_rows
        columns = [lists.get(f, nones) for f in RESULT_FIELDS]
        for values in zip(*columns, strict=True):
            result = Result(*values)
            if not (result.id and result.model and result.status):
                raise InputFileError(f"{name}: result row without id, model or status")
            if result.attempts is None:
                result.attempts = 0
            yield result
    else:
        for values in zip(*lists.values(), strict=True):
            yield _result(dict(zip(names, values, strict=True)), name)


def _column(column: pa.Array) -> list[object]:
    """A column as Python values; timestamps become UTC datetimes.

    pyarrow's own conversion of zoned timestamps costs several microseconds a value;
    whole microseconds since the epoch added to an aware epoch give the same datetimes.
    """
    if pa.types.is_timestamp(column.type):
        micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        return [None if v is None else _EPOCH + timedelta(microseconds=v) for v in micros]
    values: list[object] = column.to_pylist()
    return values


def _as_int(value: object) -> int | None:
    return value if type(value) is int else None  # bool is not a count


def _as_float(value: object) -> float | None:
    return float(value) if type(value) is float or type(value) is int else None


def _as_str(value: object) -> str | None:
    return value if type(value) is str else None


def _as_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


_CONVERTERS: dict[str, Callable[[object], object]] = {
    f: _as_str for f in RESULT_FIELDS if f not in {"id", "model", "status"}
}
_CONVERTERS.update({f: _as_int for f in _INT_FIELDS})
_CONVERTERS.update({f: _as_float for f in _FLOAT_FIELDS})
_CONVERTERS.update({f: _as_time for f in _TIME_FIELDS})


_REQUIRED = ("id", "model", "status")
_ORDER = tuple((f, _CONVERTERS.get(f)) for f in RESULT_FIELDS)
_ATTEMPTS = RESULT_FIELDS.index("attempts")


def _result(data: Mapping[str, object], origin: str) -> Result:
    """A Result from one decoded row; fields of the wrong type become None."""
    values: list[object] = []
    for key, convert in _ORDER:
        value = data.get(key)
        if convert is None:  # a required text field; JSON ids may be numbers
            if type(value) is int:
                value = str(value)
            elif type(value) is not str or not value:
                raise InputFileError(f"{origin}: result row without {key!r}")
        elif value is not None:
            value = convert(value)
        values.append(value)
    if values[_ATTEMPTS] is None:
        values[_ATTEMPTS] = 0
    # Positional: far cheaper than keywords for a 28-field dataclass, on every row read.
    return Result(*values)  # type: ignore[arg-type]


def stats_from_files(paths: Sequence[str | os.PathLike[str]]) -> StatsSnapshot:
    """Statistics of result files, with a comparison when several models answered.

    The figures come from one streaming pass; the comparison, which needs every model's
    row for each id, is built in a second pass only when there are several models.
    """
    stats = RunStats()
    for result in load_results(paths, columns=STATS_COLUMNS):
        stats.add(result)
    snapshot = stats.snapshot()
    if len(snapshot.models) < 2:
        return snapshot
    builder = ComparisonBuilder(m.model for m in snapshot.models)
    for result in load_results(paths, columns=STATS_COLUMNS):
        builder.add(result)
    return dataclasses.replace(snapshot, comparison=builder.build())


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class Section:
    """One titled table of already formatted cells; every renderer draws these."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


def fmt_int(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0 or abs(value) >= 100:
        return f"${value:,.2f}"
    if abs(value) >= 1:
        return f"${value:,.3f}"
    return f"${value:.4g}"


def fmt_s(value: float | None) -> str:
    if value is None:
        return "–"
    ms = value * 1000
    if abs(ms) < 999.5:
        return f"{ms:.3g} ms"
    return f"{value:.2f} s" if abs(value) < 100 else f"{value:,.0f} s"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "–"


def _reasoning(m: ModelStats) -> str:
    """Reasoning tokens, or "–" when no row with usage counted them (not the same as 0)."""
    with_usage = m.ok - m.usage_unknown_rows
    if with_usage > 0 and m.reasoning_unknown_rows == with_usage:
        return "–"
    return fmt_int(m.reasoning_tokens)


def _columns(snapshot: StatsSnapshot) -> list[ModelStats]:
    """One column per model, plus the total when there are several."""
    return [*snapshot.models, snapshot.total] if len(snapshot.models) > 1 else [*snapshot.models]


def _dist_rows(
    cols: Sequence[ModelStats], label: str, get: Callable[[ModelStats], Distribution]
) -> list[tuple[str, ...]]:
    rows = []
    for name in ("p50", "p90", "p95", "p99", "mean"):
        rows.append((f"{label} {name}", *(fmt_s(getattr(get(m), name)) for m in cols)))
    return rows


def sections(snapshot: StatsSnapshot, *, summary: bool = False) -> list[Section]:
    """The report as tables; ``summary`` keeps only what the end-of-run summary shows."""
    cols = _columns(snapshot)
    header = ("", *(m.model for m in cols))
    rows: list[tuple[str, ...]] = [
        ("rows", *(fmt_int(m.rows) for m in cols)),
        ("ok", *(fmt_int(m.ok) for m in cols)),
        ("error", *(fmt_int(m.errors) for m in cols)),
    ]
    if not summary:
        rows.append(("error types", *(_counts(m.errors_by_type) for m in cols)))
    rows += [
        ("prompt tokens", *(fmt_int(m.prompt_tokens) for m in cols)),
        ("  of which cached", *(fmt_int(m.cached_tokens) for m in cols)),
        ("output tokens", *(fmt_int(m.completion_tokens) for m in cols)),
        ("  of which reasoning", *(_reasoning(m) for m in cols)),
        ("cost", *(fmt_usd(m.cost_usd) for m in cols)),
        ("cost per 1k rows", *(fmt_usd(m.cost_per_1k_rows) for m in cols)),
    ]
    if any(m.unknown_cost_rows for m in cols):
        rows.append(("rows without a price", *(fmt_int(m.unknown_cost_rows) for m in cols)))
    if summary:
        rows += [
            (f"latency {p}", *(fmt_s(getattr(m.latency, p)) for m in cols))
            for p in ("p50", "p90", "p99")
        ]
    else:
        rows += _dist_rows(cols, "latency", lambda m: m.latency)
        if any(m.streamed for m in cols):
            rows += _dist_rows(cols, "TTFT", lambda m: m.ttft)
            rows += _dist_rows(cols, "TTFO", lambda m: m.ttfo)
            rows += _dist_rows(cols, "ITL", lambda m: m.itl)
        if any(m.output_tps.count for m in cols):
            rows.append(("output tok/s p50", *(fmt_num(m.output_tps.p50) for m in cols)))
    rows += [
        ("wall time", *(fmt_s(m.wall_s) for m in cols)),
        ("rows/s", *(fmt_num(m.rows_per_s, 2) for m in cols)),
        ("output tokens/s", *(fmt_num(m.output_tokens_per_s) for m in cols)),
        ("retries", *(fmt_int(m.retries) for m in cols)),
    ]
    if not summary:
        rows.append(("attempts", *(fmt_int(m.attempts) for m in cols)))
        if any(m.retries_by_cause for m in cols):
            rows.append(("retry causes", *(_counts(m.retries_by_cause) for m in cols)))
    notes = [
        "output tokens include reasoning; latencies are over ok rows; "
        "percentiles interpolate linearly"
    ]
    if any(m.reasoning_unknown_rows for m in cols):
        notes.append(
            "reasoning tokens the server did not count (gpt-oss/vLLM; output tokens still "
            "include them), rows: "
            + ", ".join(
                f"{m.model} {m.reasoning_unknown_rows:,}"
                for m in snapshot.models
                if m.reasoning_unknown_rows
            )
        )
    if any(m.usage_unknown_rows for m in cols):
        notes.append(
            "rows without usage from the server: "
            + ", ".join(f"{m.model} {m.usage_unknown_rows:,}" for m in cols if m.usage_unknown_rows)
        )
    title = "Run summary" if summary else "Per model"
    result = [Section(title, header, tuple(rows), tuple(notes))]
    if snapshot.comparison is not None and not summary:
        result.append(_comparison_section(snapshot.comparison))
    return result


_METRIC_NAMES = {
    "cost": "cost",
    "latency_p50": "latency p50",
    "latency_p90": "latency p90",
    "latency_p99": "latency p99",
    "ttft_p50": "TTFT p50",
    "output_tokens": "fewer output tokens",
}


def _comparison_section(c: Comparison) -> Section:
    es = c.entries
    rows: list[tuple[str, ...]] = [
        ("cost", *(fmt_usd(e.cost_usd) for e in es)),
        ("cost per 1k rows", *(fmt_usd(e.cost_per_1k_rows) for e in es)),
        (f"cost vs {c.baseline}", *(fmt_ratio(e.cost_ratio) for e in es)),
        ("latency p50", *(fmt_s(e.latency.p50) for e in es)),
        ("latency p90", *(fmt_s(e.latency.p90) for e in es)),
        ("latency p99", *(fmt_s(e.latency.p99) for e in es)),
        (f"latency p50 vs {c.baseline}", *(fmt_ratio(e.latency_p50_ratio) for e in es)),
    ]
    if any(e.ttft.count for e in es):
        rows.append(("TTFT p50", *(fmt_s(e.ttft.p50) for e in es)))
    rows += [
        ("mean output tokens", *(fmt_num(e.mean_completion_tokens) for e in es)),
        ("mean reasoning tokens", *(fmt_num(e.mean_reasoning_tokens) for e in es)),
        ("fastest on", *(fmt_share(e.fastest_share) for e in es)),
        ("cheapest on", *(fmt_share(e.cheapest_share) for e in es)),
    ]
    notes = [f"over the {c.common_ids:,} ids every compared model answered ok"]
    if c.winners:
        notes.append(
            "wins: " + "; ".join(f"{_METRIC_NAMES.get(k, k)}: {v}" for k, v in c.winners.items())
        )
    return Section("Comparison", ("", *(e.model for e in es)), tuple(rows), tuple(notes))


# ----------------------------------------------------------------------------- rendering


def _text_table(section: Section) -> str:
    table = [section.header, *section.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(section.header))]
    lines = [section.title, "=" * len(section.title)]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"* {note}" for note in section.notes]
    return "\n".join(lines)


def _markdown_table(section: Section) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = [f"## {section.title}", "", cells(section.header)]
    lines.append("|" + "|".join([":---", *["---:"] * (len(section.header) - 1)]) + "|")
    lines += [cells(row) for row in section.rows]
    if section.notes:
        lines.append("")
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines)


def render(snapshot: StatsSnapshot, fmt: str = "text") -> str:
    """The report in ``fmt``: ``text``, ``markdown``, ``json`` or ``html``."""
    if fmt == "text":
        return "\n\n".join(_text_table(s) for s in sections(snapshot)) + "\n"
    if fmt == "markdown":
        body = "\n\n".join(_markdown_table(s) for s in sections(snapshot))
        return f"# batchrunner report\n\n{body}\n"
    if fmt == "json":
        return json.dumps(snapshot.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "html":
        # Imported here: the HTML module draws its tables from sections() above.
        from batchrunner.report_html import render_html

        return render_html(snapshot)
    raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")


def render_summary(snapshot: StatsSnapshot) -> str:
    """The short end-of-run summary, drawn like the text report."""
    return "\n\n".join(_text_table(s) for s in sections(snapshot, summary=True)) + "\n"
