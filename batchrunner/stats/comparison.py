"""Several models side by side over the input ids every one of them answered ok.

:class:`ComparisonBuilder` pairs result rows of several models by input id (the report
builds it from result files) into a :class:`Comparison`: per model, cost, latency and
tokens over the common ids, how often it was fastest or cheapest, and ratios to the first.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from batchrunner.results import Result
from batchrunner.stats.distribution import Distribution, distribution

__all__ = ["Comparison", "ComparisonBuilder", "ComparisonEntry"]


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
