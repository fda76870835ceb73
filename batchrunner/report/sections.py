"""The tables every report draws: per-model figures, distributions and the comparison.

The text report, the Markdown report, the HTML tables and the end-of-run summary are all
drawn from the same :func:`sections`, as :class:`Section` values of formatted cells.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from batchrunner.errors import EMPTY_TRUNCATED_ADVICE
from batchrunner.stats.run_stats import (
    Comparison,
    Distribution,
    ModelStats,
    StatsSnapshot,
)

__all__ = [
    "Section",
    "answer_warnings",
    "fmt_int",
    "fmt_num",
    "fmt_ratio",
    "fmt_s",
    "fmt_share",
    "fmt_usd",
    "sections",
]


_EXAMPLE_CHARS = 160


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


def _of(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,}" if whole else "–"


def answer_warnings(snapshot: StatsSnapshot) -> list[str]:
    """A line per model whose answers came back empty because the token limit ran out."""
    return [
        f"warning: {m.model}: {m.empty_truncated_rows:,} of {m.rows:,} rows are empty and were "
        f"cut at the token limit (finish_reason length); {EMPTY_TRUNCATED_ADVICE}"
        for m in snapshot.models
        if m.empty_truncated_rows
    ]


def _example(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= _EXAMPLE_CHARS else line[: _EXAMPLE_CHARS - 1] + "…"


def _errors_section(snapshot: StatsSnapshot) -> Section | None:
    """Per model, each error type with its count and one example message."""
    rows = [
        (m.model, kind, fmt_int(count), _example(m.error_examples.get(kind, "")) or "–")
        for m in snapshot.models
        for kind, count in m.errors_by_type.items()
    ]
    if not rows:
        return None
    return Section("Errors", ("model", "error type", "rows", "example"), tuple(rows))


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
        ("error types", *(_counts(m.errors_by_type) for m in cols)),
        ("finish reasons", *(_counts(m.finish_reasons) for m in cols)),
        ("empty output", *(fmt_int(m.empty_rows) for m in cols)),
        ("  cut at max_tokens", *(fmt_int(m.empty_truncated_rows) for m in cols)),
    ]
    if any(m.json_rows for m in cols):
        rows.append(("valid JSON", *(_of(m.json_valid, m.json_rows) for m in cols)))
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
        *answer_warnings(snapshot),
        "output tokens include reasoning; latencies are over ok rows; "
        "percentiles interpolate linearly, exact up to 65,536 values of a measure per model "
        "and within 0.5 % past that",
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
    notes.append(
        "wall time: from the first request's start to the last row's finish; the all-models "
        "column adds up rows, tokens and cost, and keeps percentiles per model"
    )
    title = "Run summary" if summary else "Per model"
    result = [Section(title, header, tuple(rows), tuple(notes))]
    errors = _errors_section(snapshot)
    if errors is not None:
        result.append(errors)
    if snapshot.comparison is not None and not summary:
        result.append(_comparison_section(snapshot.comparison))
    tiers = tier_section(snapshot)
    if tiers is not None:
        result.append(tiers)
    return result


_TIER_NAMES = {
    "ON_DEMAND": "standard",
    "ON_DEMAND_FLEX": "flex",
    "ON_DEMAND_PRIORITY": "priority",
    "PROVISIONED_THROUGHPUT": "provisioned",
    "BATCH": "batch",
}


def tier_section(snapshot: StatsSnapshot) -> Section | None:
    """Cost by model and by the tier that served the rows; None when all were standard."""
    tiers = snapshot.tiers
    if not tiers or all(t.traffic_type == "ON_DEMAND" for t in tiers):
        return None
    rows = tuple(
        (
            t.model,
            _TIER_NAMES.get(t.traffic_type, t.traffic_type),
            fmt_int(t.rows),
            fmt_usd(t.cost_usd),
        )
        for t in tiers
    )
    notes = ["each row is priced by the tier Vertex reports it served (traffic_type)"]
    pt = sum(t.rows for t in tiers if t.traffic_type == "PROVISIONED_THROUGHPUT")
    if pt:
        notes.append(f"{pt:,} rows served by Provisioned Throughput: prepaid, priced at 0")
    return Section("Cost by tier", ("model", "tier", "rows", "cost"), rows, tuple(notes))


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
