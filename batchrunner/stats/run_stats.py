"""Streaming aggregation of result rows into per-model statistics.

:class:`RunStats` takes one final result row at a time and keeps sums, counters and, for
each timing, a :class:`~batchrunner.stats.quantiles.Quantiles` (exact up to 65,536 values, a
bounded sketch past that), so its memory grows with the number of models, never with the
number of rows or their text. :meth:`RunStats.snapshot` freezes it into a
:class:`StatsSnapshot`, which may carry a side-by-side comparison of several models
(``batchrunner.stats.comparison``; its classes are re-exported here, as are those of
``batchrunner.stats.distribution``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchrunner.errors import ANSWER_ERRORS
from batchrunner.results import Result
from batchrunner.stats.comparison import Comparison, ComparisonBuilder, ComparisonEntry
from batchrunner.stats.distribution import PERCENTILES, Distribution, distribution
from batchrunner.stats.quantiles import Quantiles
from batchrunner.stats.tiers import TierCost, TierCosts

__all__ = [
    "PERCENTILES",
    "Comparison",
    "ComparisonBuilder",
    "ComparisonEntry",
    "Distribution",
    "ModelStats",
    "RunStats",
    "StatsSnapshot",
    "TierCost",
    "distribution",
]

TOTAL = "all models"


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
    latency: Distribution = field(default_factory=Distribution)  # ok rows only
    ttft: Distribution = field(default_factory=Distribution)
    ttfo: Distribution = field(default_factory=Distribution)
    itl: Distribution = field(default_factory=Distribution)
    output_tps: Distribution = field(default_factory=Distribution)
    wall_s: float | None = None
    rows_per_s: float | None = None
    output_tokens_per_s: float | None = None
    attempts: int = 0
    retries: int = 0
    retries_by_cause: Mapping[str, int] = field(default_factory=dict)
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    finish_reasons: Mapping[str, int] = field(default_factory=dict)  # answered rows, by reason
    empty_rows: int = 0  # answered rows with no text and no tool calls
    empty_truncated_rows: int = 0  # of those, cut at the token limit (finish_reason length)
    json_rows: int = 0  # rows that asked for JSON (response_format) and were checked
    json_valid: int = 0  # of those, the JSON (and schema) asked for
    error_examples: Mapping[str, str] = field(default_factory=dict)  # one message per type

    @property
    def streamed(self) -> bool:
        return bool(self.ttft.count or self.ttfo.count or self.itl.count)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A frozen view of a run or of result files: per model, totals, maybe a comparison."""

    models: tuple[ModelStats, ...]
    total: ModelStats
    wall_s: float | None = None
    comparison: Comparison | None = None
    tiers: tuple[TierCost, ...] = ()  # cost by model and the tier that served the rows

    def total_by_tier(self) -> dict[str, TierCost]:
        """All models' rows per traffic type."""
        totals: dict[str, TierCost] = {}
        for t in self.tiers:
            was = totals.get(t.traffic_type)
            totals[t.traffic_type] = (
                t
                if was is None
                else TierCost(
                    TOTAL,
                    t.traffic_type,
                    was.rows + t.rows,
                    was.cost_usd + t.cost_usd,
                    was.prompt_tokens + t.prompt_tokens,
                    was.completion_tokens + t.completion_tokens,
                )
            )
        return totals

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


def _additive(total: ModelStats) -> ModelStats:
    """The all-models figures that add up (rows, tokens, cost, counts); no pooled percentiles.

    Two models' latencies pooled are nobody's latency: percentiles stay per model. The wall
    time is the job's: from the first request's start to the last one's finish.
    """
    empty = Distribution()
    return dataclasses.replace(
        total,
        latency=empty,
        ttft=empty,
        ttfo=empty,
        itl=empty,
        output_tps=empty,
    )


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
        "empty",
        "empty_truncated",
        "error_examples",
        "errors_by_type",
        "finish_reasons",
        "first_started",
        "itl",
        "json_rows",
        "json_valid",
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
        self.latency = Quantiles()
        self.ttft = Quantiles()
        self.ttfo = Quantiles()
        self.itl = Quantiles()
        self.output_tps = Quantiles()
        self.first_started: datetime | None = None
        self.last_finished: datetime | None = None
        self.finish_reasons: Counter[str] = Counter()
        self.empty = self.empty_truncated = self.json_rows = self.json_valid = 0
        self.error_examples: dict[str, str] = {}

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
        if r.valid is not None:
            self.json_rows += 1
            self.json_valid += r.valid
        if r.status == "ok" or r.error_type in ANSWER_ERRORS:
            reason = r.finish_reason or "none"
            self.finish_reasons[reason] += 1
            if reason != "tool_calls" and not (r.output and r.output.strip()):
                self.empty += 1
                self.empty_truncated += reason == "length"
        if r.status != "ok":
            kind = r.error_type or "unknown"
            self.errors_by_type[kind] += 1
            if kind not in self.error_examples and r.error_message:
                self.error_examples[kind] = r.error_message
            return
        self.ok += 1
        if r.completion_tokens is None:
            self.usage_unknown += 1
        elif r.reasoning_tokens is None:
            self.reasoning_unknown += 1
        if r.cost_usd is None:
            self.unknown_cost += 1
        # One statement each rather than a loop over pairs: this runs for every row.
        if r.latency_s is not None:
            self.latency.add(r.latency_s)
        if r.ttft_s is not None:
            self.ttft.add(r.ttft_s)
        if r.ttfo_s is not None:
            self.ttfo.add(r.ttfo_s)
        if r.itl_s is not None:
            self.itl.add(r.itl_s)
        if r.output_tps is not None:
            self.output_tps.add(r.output_tps)

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
            finish_reasons=dict(self.finish_reasons.most_common()),
            empty_rows=self.empty,
            empty_truncated_rows=self.empty_truncated,
            json_rows=self.json_rows,
            json_valid=self.json_valid,
            error_examples=dict(self.error_examples),
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
            elif isinstance(mine, Quantiles):
                mine.merge(theirs)
            elif isinstance(mine, Counter):
                mine += theirs  # in place, as Quantiles.merge
            elif name == "error_examples":
                for kind, message in theirs.items():
                    mine.setdefault(kind, message)
            else:
                setattr(self, name, mine + theirs)


class RunStats:
    """Live statistics of a run, fed one final result row at a time."""

    def __init__(self) -> None:
        self._models: dict[str, _Accumulator] = {}
        self._tiers = TierCosts()

    def merge(self, other: RunStats) -> None:
        """Add the rows ``other`` holds (another shard of the same job) to these."""
        for model, acc in other._models.items():
            self._of(model).merge(acc)
        self._tiers.merge(other._tiers)

    def _of(self, model: str) -> _Accumulator:
        acc = self._models.get(model)
        if acc is None:
            acc = self._models[model] = _Accumulator()
        return acc

    def add(self, result: Result) -> None:
        """Count one final result row."""
        self._of(result.model).add(result)
        self._tiers.add(result)

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
        frozen = _additive(total.freeze(TOTAL, wall_s))
        return StatsSnapshot(
            models=tuple(models),
            total=frozen,
            wall_s=wall_s or frozen.wall_s,
            tiers=self._tiers.freeze(),
        )
