"""Streaming statistics: percentiles, counts, costs, retries and the comparison."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from batchrunner.results import Result
from batchrunner.stats.run_stats import ComparisonBuilder, RunStats, distribution

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def reference_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks on a sorted list."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ok_row(model: str, id_: str, latency: float, **kw: object) -> Result:
    return Result(id=id_, model=model, status="ok", latency_s=latency, attempts=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 5000])
def test_percentiles_match_a_sorted_list_reference(n: int) -> None:
    rng = random.Random(n)
    values = [rng.lognormvariate(0, 1) for _ in range(n)]
    d = distribution(values)
    assert d.count == n
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        assert getattr(d, name) == pytest.approx(reference_percentile(values, q), rel=1e-12)
    assert d.mean == pytest.approx(sum(values) / n)
    assert d.min == min(values)
    assert d.max == max(values)
    assert len(d.cdf) == 101
    assert list(d.cdf) == sorted(d.cdf)


def test_distribution_of_nothing_is_empty() -> None:
    d = distribution([])
    assert d.count == 0
    assert d.p50 is None
    assert d.mean is None
    assert d.cdf == ()


def test_latency_percentiles_come_from_ok_rows_only() -> None:
    rng = random.Random(3)
    stats = RunStats()
    latencies = [rng.uniform(0.1, 5.0) for _ in range(400)]
    for i, latency in enumerate(latencies):
        stats.add(ok_row("m", str(i), latency))
    stats.add(Result(id="x", model="m", status="error", latency_s=600.0, error_type="timeout"))
    m = stats.snapshot().model("m")
    assert m.latency.count == len(latencies)
    assert m.latency.p99 == pytest.approx(reference_percentile(latencies, 0.99))


def test_errors_are_counted_by_type() -> None:
    stats = RunStats()
    types = ["rate_limited"] * 3 + ["bad_request"] * 2 + [None]
    for i, error_type in enumerate(types):
        stats.add(Result(id=str(i), model="m", status="error", error_type=error_type, attempts=1))
    stats.add(ok_row("m", "ok", 1.0))
    m = stats.snapshot().model("m")
    assert (m.rows, m.ok, m.errors) == (len(types) + 1, 1, len(types))
    assert m.errors_by_type == {"rate_limited": 3, "bad_request": 2, "unknown": 1}


def test_retries_counted_by_cause_and_from_attempts() -> None:
    stats = RunStats()
    causes = ["rate_limited", "rate_limited", "server_error"]
    for cause in causes:
        stats.note_retry("a", cause)
    stats.add(Result(id="1", model="a", status="ok", attempts=1 + len(causes)))
    stats.add(Result(id="1", model="b", status="ok", attempts=4))
    stats.add(Result(id="2", model="b", status="ok", attempts=2))
    snap = stats.snapshot()
    a, b = snap.model("a"), snap.model("b")
    assert a.retries_by_cause == {"rate_limited": 2, "server_error": 1}
    assert a.retries == len(causes)
    assert (b.retries, b.attempts) == ((4 - 1) + (2 - 1), 4 + 2)
    assert snap.total.retries == a.retries + b.retries


def test_tokens_and_costs_are_summed_and_unknown_costs_counted() -> None:
    rows = [
        Result(
            id="1",
            model="m",
            status="ok",
            prompt_tokens=10,
            completion_tokens=30,
            reasoning_tokens=20,
            cached_tokens=4,
            cost_usd=0.5,
        ),
        Result(
            id="2",
            model="m",
            status="ok",
            prompt_tokens=7,
            completion_tokens=3,
            reasoning_tokens=None,
            cached_tokens=None,
            cost_usd=0.25,
        ),
        Result(id="3", model="m", status="ok", prompt_tokens=1, completion_tokens=1),
        Result(id="4", model="m", status="ok"),
    ]
    stats = RunStats()
    for r in rows:
        stats.add(r)
    m = stats.snapshot().model("m")
    assert m.prompt_tokens == sum(r.prompt_tokens or 0 for r in rows)
    assert m.completion_tokens == sum(r.completion_tokens or 0 for r in rows)
    assert m.reasoning_tokens == sum(r.reasoning_tokens or 0 for r in rows)
    assert m.cached_tokens == sum(r.cached_tokens or 0 for r in rows)
    known = [r.cost_usd for r in rows if r.cost_usd is not None]
    assert m.cost_usd == pytest.approx(sum(known))
    assert m.cost_per_1k_rows == pytest.approx(sum(known) / len(known) * 1000)
    assert m.unknown_cost_rows == len(rows) - len(known)
    assert m.usage_unknown_rows == 1


def test_throughput_uses_the_given_wall_time_else_row_timestamps() -> None:
    stats = RunStats()
    n = 50
    for i in range(n):
        start = T0 + timedelta(seconds=i)
        stats.add(
            ok_row(
                "m",
                str(i),
                2.0,
                started_at=start,
                finished_at=start + timedelta(seconds=2),
                completion_tokens=10,
            )
        )
    given = stats.snapshot(wall_s=100.0).model("m")
    assert given.rows_per_s == pytest.approx(n / 100.0)
    assert given.output_tokens_per_s == pytest.approx(n * 10 / 100.0)
    derived = stats.snapshot().model("m")
    span = (n - 1) + 2.0
    assert derived.wall_s == pytest.approx(span)
    assert derived.rows_per_s == pytest.approx(n / span)


def test_totals_add_up_rows_and_cost_but_pool_no_percentiles() -> None:
    rng = random.Random(11)
    stats = RunStats()
    every: list[float] = []
    for model in ("a", "b", "c"):
        for i in range(rng.randint(20, 60)):
            latency = rng.expovariate(1.0)
            every.append(latency)
            stats.add(ok_row(model, str(i), latency, cost_usd=0.001))
    snap = stats.snapshot()
    assert [m.model for m in snap.models] == ["a", "b", "c"]
    assert snap.total.rows == len(every)
    assert snap.total.cost_usd == pytest.approx(0.001 * len(every))
    assert snap.total.latency.count == 0 and snap.total.latency.p90 is None
    assert snap.model("a").latency.p90 is not None


def test_snapshot_is_unaffected_by_later_rows() -> None:
    stats = RunStats()
    stats.add(ok_row("m", "1", 1.0))
    before = stats.snapshot()
    stats.add(ok_row("m", "2", 3.0))
    assert before.model("m").rows == 1
    assert before.model("m").latency.max == 1.0
    assert stats.snapshot().model("m").rows == 2


def test_streaming_timings_are_summarised_when_present() -> None:
    stats = RunStats()
    stats.add(ok_row("m", "1", 2.0, ttft_s=0.5, ttfo_s=0.9, itl_s=0.02))
    stats.add(ok_row("m", "2", 3.0))
    m = stats.snapshot().model("m")
    assert m.streamed
    assert (m.ttft.count, m.ttft.p50, m.ttfo.p50, m.itl.p50) == (1, 0.5, 0.9, 0.02)


def test_comparison_uses_only_ids_every_model_answered_ok() -> None:
    rng = random.Random(5)
    builder = ComparisonBuilder(["a", "b"])
    lat: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    cost: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    for i in range(200):
        for model, scale, price in (("a", 1.0, 0.002), ("b", 2.0, 0.001)):
            if model == "b" and i % 10 == 0:
                builder.add(Result(id=str(i), model=model, status="error", error_type="timeout"))
                continue
            latency = scale * rng.uniform(0.5, 1.5)
            lat[model][str(i)] = latency
            cost[model][str(i)] = price
            builder.add(ok_row(model, str(i), latency, cost_usd=price, completion_tokens=100))
    comparison = builder.build()
    assert comparison is not None
    common = set(lat["a"]) & set(lat["b"])
    assert comparison.common_ids == len(common)
    a, b = comparison.entries
    assert a.latency.p50 == pytest.approx(reference_percentile([lat["a"][k] for k in common], 0.5))
    assert b.cost_usd == pytest.approx(sum(cost["b"][k] for k in common))
    assert b.cost_ratio == pytest.approx(0.001 / 0.002)
    assert b.latency_p50_ratio == pytest.approx(b.latency.p50 / a.latency.p50)
    faster_a = sum(lat["a"][k] < lat["b"][k] for k in common) / len(common)
    assert a.fastest_share == pytest.approx(faster_a)
    assert comparison.winners["cost"] == "b"
    assert comparison.winners["latency_p50"] == "a"


def test_comparison_needs_two_models_and_shared_ids() -> None:
    single = ComparisonBuilder(["a"])
    single.add(ok_row("a", "1", 1.0))
    assert single.build() is None
    disjoint = ComparisonBuilder(["a", "b"])
    disjoint.add(ok_row("a", "1", 1.0))
    disjoint.add(ok_row("b", "2", 1.0))
    assert disjoint.build() is None
