"""Streaming aggregation of result rows into per-model statistics.

:class:`RunStats` takes one final result row at a time and keeps sums, counters and
latencies in compact ``array('d')`` buffers, so its memory grows with the number of models
and 8 bytes per timed row, never with the text of the rows. :meth:`RunStats.snapshot`
freezes it into a :class:`StatsSnapshot`. :class:`ComparisonBuilder` pairs the rows of
several models by input id for a side-by-side comparison (used offline by the report).
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrunner.schema import Result

__all__ = [
    "PERCENTILES",
    "Comparison",
    "ComparisonBuilder",
    "ComparisonEntry",
    "Distribution",
    "ModelStats",
    "RunStats",
    "StatsSnapshot",
    "distribution",
]

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
_CDF_POINTS = 101  # quantiles at 0 %, 1 %, … 100 %: enough to draw a CDF
TOTAL = "all models"


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one measurement; percentiles interpolate linearly between ranks."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    cdf: tuple[float, ...] = ()  # the 0th … 100th percentiles, empty without data


def distribution(values: array[float] | Iterable[float]) -> Distribution:
    """Percentiles, mean and a 101-point CDF of ``values`` (linear interpolation)."""
    buf = array("d", values)  # a copy: the caller may keep appending to its own array
    if not buf:
        return Distribution()
    data = pa.Array.from_buffers(pa.float64(), len(buf), [None, pa.py_buffer(buf)])
    qs = [*PERCENTILES, *(i / (_CDF_POINTS - 1) for i in range(_CDF_POINTS))]
    quantiles = pc.quantile(data, q=qs, interpolation="linear").to_pylist()
    p50, p90, p95, p99 = quantiles[: len(PERCENTILES)]
    cdf = tuple(quantiles[len(PERCENTILES) :])
    return Distribution(
        count=len(buf),
        mean=pc.mean(data).as_py(),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        min=cdf[0],
        max=cdf[-1],
        cdf=cdf,
    )


@dataclass(frozen=True, slots=True)
class ModelStats:
    """Everything measured for one model (or for all models together)."""

    model: str
    rows: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_type: Mapping[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning included
    reasoning_tokens: int = 0  # over the rows whose server reported it
    cached_tokens: int = 0
    usage_unknown_rows: int = 0  # ok rows whose server reported no usage
    reasoning_unknown_rows: int = 0  # ok rows with usage but no reasoning count (vLLM)
    cost_usd: float = 0.0  # sum of the known costs
    cost_rows: int = 0  # rows whose cost is known
    cost_per_1k_rows: float | None = None  # over the rows whose cost is known
    unknown_cost_rows: int = 0  # ok rows without a cost (model not in the price table)
    latency: Distribution = Distribution()  # ok rows only
    ttft: Distribution = Distribution()
    ttfo: Distribution = Distribution()
    itl: Distribution = Distribution()
    output_tps: Distribution = Distribution()
    wall_s: float | None = None
    rows_per_s: float | None = None
    output_tokens_per_s: float | None = None
    attempts: int = 0
    retries: int = 0
    retries_by_cause: Mapping[str, int] = field(default_factory=dict)
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None

    @property
    def streamed(self) -> bool:
        return bool(self.ttft.count or self.ttfo.count or self.itl.count)


@dataclass(frozen=True, slots=True)
class ComparisonEntry:
    """One model's figures over the ids every compared model answered ok."""

    model: str
    cost_usd: float | None  # None when some of its common rows have no cost
    cost_per_1k_rows: float | None
    latency: Distribution
    ttft: Distribution
    mean_completion_tokens: float | None
    mean_reasoning_tokens: float | None
    fastest_share: float  # share of common ids where this model answered fastest
    cheapest_share: float | None  # share where it was cheapest; None without costs
    cost_ratio: float | None  # cost per row relative to the baseline (first model)
    latency_p50_ratio: float | None  # relative to the baseline


@dataclass(frozen=True, slots=True)
class Comparison:
    """Side-by-side figures of several models over the ids all of them answered ok."""

    models: tuple[str, ...]
    common_ids: int
    entries: tuple[ComparisonEntry, ...]
    winners: Mapping[str, str]  # metric → model that wins on it (lower is better)

    @property
    def baseline(self) -> str:
        return self.models[0]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A frozen view of a run or of result files: per model, totals, maybe a comparison."""

    models: tuple[ModelStats, ...]
    total: ModelStats
    wall_s: float | None = None
    comparison: Comparison | None = None

    def model(self, name: str) -> ModelStats:
        for stats in self.models:
            if stats.model == name:
                return stats
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: timestamps as ISO-8601 strings, mappings as dicts."""
        plain = _plain(dataclasses.asdict(self))
        assert isinstance(plain, dict)
        return plain


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _Accumulator:
    """Mutable per-model sums behind :class:`RunStats`."""

    __slots__ = (
        "attempts",
        "cached",
        "completion",
        "cost",
        "cost_rows",
        "errors_by_type",
        "first_started",
        "itl",
        "last_finished",
        "latency",
        "ok",
        "output_tps",
        "prompt",
        "reasoning",
        "reasoning_unknown",
        "retried_attempts",
        "retries_by_cause",
        "rows",
        "ttfo",
        "ttft",
        "unknown_cost",
        "usage_unknown",
    )

    def __init__(self) -> None:
        self.rows = self.ok = self.attempts = self.retried_attempts = 0
        self.prompt = self.completion = self.reasoning = self.cached = 0
        self.usage_unknown = self.reasoning_unknown = self.cost_rows = self.unknown_cost = 0
        self.cost = 0.0
        self.errors_by_type: Counter[str] = Counter()
        self.retries_by_cause: Counter[str] = Counter()
        self.latency: array[float] = array("d")
        self.ttft: array[float] = array("d")
        self.ttfo: array[float] = array("d")
        self.itl: array[float] = array("d")
        self.output_tps: array[float] = array("d")
        self.first_started: datetime | None = None
        self.last_finished: datetime | None = None

    def add(self, r: Result) -> None:
        self.rows += 1
        self.attempts += r.attempts
        self.retried_attempts += max(r.attempts - 1, 0)
        self.prompt += r.prompt_tokens or 0
        self.completion += r.completion_tokens or 0
        self.reasoning += r.reasoning_tokens or 0
        self.cached += r.cached_tokens or 0
        if r.cost_usd is not None:
            self.cost += r.cost_usd
            self.cost_rows += 1
        if r.started_at is not None and (
            self.first_started is None or r.started_at < self.first_started
        ):
            self.first_started = r.started_at
        if r.finished_at is not None and (
            self.last_finished is None or r.finished_at > self.last_finished
        ):
            self.last_finished = r.finished_at
        if r.status != "ok":
            self.errors_by_type[r.error_type or "unknown"] += 1
            return
        self.ok += 1
        if r.completion_tokens is None:
            self.usage_unknown += 1
        elif r.reasoning_tokens is None:
            self.reasoning_unknown += 1
        if r.cost_usd is None:
            self.unknown_cost += 1
        for values, value in (
            (self.latency, r.latency_s),
            (self.ttft, r.ttft_s),
            (self.ttfo, r.ttfo_s),
            (self.itl, r.itl_s),
            (self.output_tps, r.output_tps),
        ):
            if value is not None:
                values.append(value)

    def freeze(self, model: str, wall_s: float | None) -> ModelStats:
        if wall_s is None and self.first_started and self.last_finished:
            wall_s = (self.last_finished - self.first_started).total_seconds()
        rate = wall_s if wall_s is not None and wall_s > 0 else None
        noted = sum(self.retries_by_cause.values())
        return ModelStats(
            model=model,
            rows=self.rows,
            ok=self.ok,
            errors=self.rows - self.ok,
            errors_by_type=dict(self.errors_by_type.most_common()),
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            reasoning_tokens=self.reasoning,
            cached_tokens=self.cached,
            usage_unknown_rows=self.usage_unknown,
            reasoning_unknown_rows=self.reasoning_unknown,
            cost_usd=self.cost,
            cost_rows=self.cost_rows,
            cost_per_1k_rows=self.cost / self.cost_rows * 1000 if self.cost_rows else None,
            unknown_cost_rows=self.unknown_cost,
            latency=distribution(self.latency),
            ttft=distribution(self.ttft),
            ttfo=distribution(self.ttfo),
            itl=distribution(self.itl),
            output_tps=distribution(self.output_tps),
            wall_s=wall_s,
            rows_per_s=self.rows / rate if rate else None,
            output_tokens_per_s=self.completion / rate if rate else None,
            attempts=self.attempts,
            retries=max(noted, self.retried_attempts),
            retries_by_cause=dict(self.retries_by_cause.most_common()),
            first_started_at=self.first_started,
            last_finished_at=self.last_finished,
        )

    def merge(self, other: _Accumulator) -> None:
        for name in self.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "first_started":
                if theirs is not None and (mine is None or theirs < mine):
                    self.first_started = theirs
            elif name == "last_finished":
                if theirs is not None and (mine is None or theirs > mine):
                    self.last_finished = theirs
            elif isinstance(mine, Counter | array):
                mine += theirs  # in place: the merged accumulator is a throwaway
            else:
                setattr(self, name, mine + theirs)


class RunStats:
    """Live statistics of a run, fed one final result row at a time."""

    def __init__(self) -> None:
        self._models: dict[str, _Accumulator] = {}

    def _of(self, model: str) -> _Accumulator:
        acc = self._models.get(model)
        if acc is None:
            acc = self._models[model] = _Accumulator()
        return acc

    def add(self, result: Result) -> None:
        """Count one final result row."""
        self._of(result.model).add(result)

    def note_retry(self, model: str, cause: str) -> None:
        """Count one retried attempt of ``model``, by the error type that caused it."""
        self._of(model).retries_by_cause[cause] += 1

    def snapshot(self, wall_s: float | None = None) -> StatsSnapshot:
        """Freeze the figures; ``wall_s`` is the run's wall time (else taken from rows)."""
        total = _Accumulator()
        models = []
        for name in sorted(self._models):
            acc = self._models[name]
            models.append(acc.freeze(name, wall_s))
            total.merge(acc)
        return StatsSnapshot(models=tuple(models), total=total.freeze(TOTAL, wall_s), wall_s=wall_s)


class ComparisonBuilder:
    """Pairs ok rows of several models by input id; memory grows with ids × models."""

    def __init__(self, models: Iterable[str]) -> None:
        self._models = tuple(models)
        # id → (latency, cost, ttft, completion tokens, reasoning tokens); a later row
        # for the same (id, model) replaces an earlier one.
        self._rows: dict[str, dict[str, tuple[float | None, ...]]] = {m: {} for m in self._models}

    def add(self, r: Result) -> None:
        rows = self._rows.get(r.model)
        if rows is None:
            return
        if r.status != "ok":
            rows.pop(r.id, None)
            return
        rows[r.id] = (
            r.latency_s,
            r.cost_usd,
            r.ttft_s,
            None if r.completion_tokens is None else float(r.completion_tokens),
            None if r.reasoning_tokens is None else float(r.reasoning_tokens),
        )

    def build(self) -> Comparison | None:
        """The comparison, or None with fewer than two models or no id they all answered."""
        if len(self._models) < 2:
            return None
        tables = [self._rows[m] for m in self._models]
        common = set(tables[0]).intersection(*tables[1:])
        if not common:
            return None
        n = len(common)
        fastest: Counter[str] = Counter()
        cheapest: Counter[str] = Counter()
        for key in common:
            _tally(fastest, [(t[key][0], m) for m, t in zip(self._models, tables, strict=True)])
            _tally(cheapest, [(t[key][1], m) for m, t in zip(self._models, tables, strict=True)])
        entries = []
        for model, table in zip(self._models, tables, strict=True):
            rows = [table[key] for key in common]
            costs = [row[1] for row in rows]
            cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
            entries.append(
                ComparisonEntry(
                    model=model,
                    cost_usd=cost,
                    cost_per_1k_rows=None if cost is None else cost / n * 1000,
                    latency=distribution(row[0] for row in rows if row[0] is not None),
                    ttft=distribution(row[2] for row in rows if row[2] is not None),
                    mean_completion_tokens=_mean(row[3] for row in rows),
                    mean_reasoning_tokens=_mean(row[4] for row in rows),
                    fastest_share=fastest[model] / n,
                    cheapest_share=cheapest[model] / n if cheapest else None,
                    cost_ratio=None,
                    latency_p50_ratio=None,
                )
            )
        base = entries[0]
        entries = [
            dataclasses.replace(
                e,
                cost_ratio=_ratio(e.cost_usd, base.cost_usd),
                latency_p50_ratio=_ratio(e.latency.p50, base.latency.p50),
            )
            for e in entries
        ]
        return Comparison(
            models=self._models, common_ids=n, entries=tuple(entries), winners=_winners(entries)
        )


def _tally(counter: Counter[str], values: list[tuple[float | None, str]]) -> None:
    known = [(v, m) for v, m in values if v is not None]
    if len(known) == len(values):
        best = min(v for v, _ in known)
        winners = [m for v, m in known if v == best]
        if len(winners) == 1:  # ties count for nobody
            counter[winners[0]] += 1


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


_WINNER_METRICS: dict[str, Callable[[ComparisonEntry], float | None]] = {
    "cost": lambda e: e.cost_usd,
    "latency_p50": lambda e: e.latency.p50,
    "latency_p90": lambda e: e.latency.p90,
    "latency_p99": lambda e: e.latency.p99,
    "ttft_p50": lambda e: e.ttft.p50,
    "output_tokens": lambda e: e.mean_completion_tokens,
}


def _winners(entries: list[ComparisonEntry]) -> dict[str, str]:
    """Metric → the model with the strictly lowest value, when every model has one."""
    winners: dict[str, str] = {}
    for metric, get in _WINNER_METRICS.items():
        values = [(value, e.model) for e in entries if (value := get(e)) is not None]
        if len(values) < len(entries):
            continue
        best = min(v for v, _ in values)
        leaders = [m for v, m in values if v == best]
        if len(leaders) == 1:
            winners[metric] = leaders[0]
    return winners
