"""Quantiles in bounded memory: exact up to EXACT_MAX values, within 0.5 % past that."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Sequence

import pytest

from batchrunner.results import Result
from batchrunner.stats.quantiles import EXACT_MAX, RELATIVE_ACCURACY, Quantiles
from batchrunner.stats.run_stats import PERCENTILES, Distribution, RunStats, distribution

QS = [*PERCENTILES, *(i / 100 for i in range(101))]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks on a sorted list."""
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def lognormal(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(0, 1) for _ in range(n)]


def reported(d: Distribution) -> list[float]:
    assert d.p50 is not None and d.p90 is not None and d.p95 is not None and d.p99 is not None
    return [d.p50, d.p90, d.p95, d.p99, *d.cdf]


def assert_within(d: Distribution, values: Sequence[float], rel: float) -> None:
    """Every percentile and CDF point of ``d`` within ``rel`` of the exact one; the rest exact."""
    ordered = sorted(values)
    for q, got in zip(QS, reported(d), strict=True):
        want = percentile(ordered, q)
        assert abs(got - want) <= rel * abs(want), (q, got, want)
    assert d.count == len(values)
    assert d.min == ordered[0]
    assert d.max == ordered[-1]
    assert d.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-9)


def filled(values: Sequence[float]) -> Quantiles:
    q = Quantiles()
    for value in values:
        q.add(value)
    return q


@pytest.fixture(scope="module")
def many() -> list[float]:
    """Enough values to fold, drawn once: the tests take slices of them."""
    return lognormal(200_000, seed=7)


# Past EXACT_MAX every figure is within the sketch's accuracy; the slack is float rounding.
SKETCH = RELATIVE_ACCURACY + 1e-9


@pytest.mark.parametrize("n", [1, 2, 3, 1000, EXACT_MAX])
def test_up_to_exact_max_values_percentiles_are_exact(n: int) -> None:
    values = lognormal(n, seed=n)
    q = filled(values)
    assert q.exact
    assert_within(distribution(q), values, rel=1e-12)


def test_past_exact_max_every_percentile_and_cdf_point_is_within_accuracy(
    many: list[float],
) -> None:
    values = many
    q = filled(values)
    assert not q.exact
    assert len(q) == q.count == 200_000
    assert_within(distribution(q), values, rel=SKETCH)


def test_one_value_past_exact_max_folds_everything(many: list[float]) -> None:
    values = many[: EXACT_MAX + 1]
    q = filled(values)
    assert not q.exact
    assert q.kept == 0
    assert_within(distribution(q), values, rel=SKETCH)


def test_memory_stays_bounded_over_a_million_values() -> None:
    # Spread over twelve decades, 1e-6 to 1e6, more than any latency or rate spans.
    cycle = [10 ** (-6 + 12 * i / 9999) for i in range(10_000)]
    q = Quantiles()
    most_kept = 0
    for i in range(1_000_000):
        q.add(cycle[i % 10_000])
        if i % 1000 == 0:
            most_kept = max(most_kept, q.kept)
    assert q.count == 1_000_000
    assert not q.exact
    assert most_kept <= EXACT_MAX
    assert q.kept < EXACT_MAX // 4
    assert q.bucket_count < 3000
    d = distribution(q)
    assert d.min == cycle[0]
    assert d.max == cycle[-1]
    assert d.p50 == pytest.approx((cycle[4999] + cycle[5000]) / 2, rel=SKETCH)


def test_merging_two_halves_gives_what_adding_everything_to_one_gives(many: list[float]) -> None:
    values = many
    whole = filled(values)
    first, second = filled(values[:100_000]), filled(values[100_000:])
    second_before = distribution(second)
    first.merge(second)
    merged = distribution(first)
    assert reported(merged) == pytest.approx(reported(distribution(whole)), rel=1e-12)
    assert_within(merged, values, rel=SKETCH)
    assert len(second) == 100_000
    assert distribution(second) == second_before


def test_merging_exact_stores_past_exact_max_folds_and_leaves_the_other_exact(
    many: list[float],
) -> None:
    values = many[:80_000]
    first, second = filled(values[:40_000]), filled(values[40_000:])
    first.merge(second)
    assert not first.exact
    assert second.exact
    assert second.kept == 40_000
    assert_within(distribution(first), values, rel=SKETCH)
    assert_within(distribution(second), values[40_000:], rel=1e-12)


def test_merging_exact_stores_within_exact_max_stays_exact(many: list[float]) -> None:
    values = many[:30_000]
    first, second = filled(values[:10_000]), filled(values[10_000:])
    first.merge(second)
    assert first.exact
    assert_within(distribution(first), values, rel=1e-12)


@pytest.mark.parametrize("exact_first", [True, False])
def test_merging_an_exact_store_with_a_sketch_works_either_way(
    exact_first: bool, many: list[float]
) -> None:
    small, large = many[:5_000], many[5_000:75_000]
    a, b = (filled(small), filled(large)) if exact_first else (filled(large), filled(small))
    a.merge(b)
    assert not a.exact
    assert_within(distribution(a), small + large, rel=SKETCH)


def test_zeros_are_counted_exactly_past_exact_max(many: list[float]) -> None:
    values = [0.0 if i % 10 < 3 else v for i, v in enumerate(many[:100_000])]
    d = distribution(filled(values))
    assert d.min == 0.0
    assert d.cdf[:29] == (0.0,) * 29
    assert_within(d, values, rel=SKETCH)


def test_negative_values_read_as_zero_past_exact_max_but_min_stays_exact() -> None:
    values = [-1.0, 2.0] * 40_000
    d = distribution(filled(values))
    assert d.min == -1.0
    assert d.cdf[1] == 0.0
    assert d.p90 == pytest.approx(2.0, rel=SKETCH)
    assert d.mean == 0.5


def test_reading_does_not_change_what_later_reads_see(many: list[float]) -> None:
    q = filled(many[:70_000])
    assert distribution(q) == distribution(q)
    q.add(1.0)
    assert distribution(q).count == 70_001


def test_a_long_iterable_is_summarised_exactly(many: list[float]) -> None:
    values = many[: EXACT_MAX + 5_000]
    assert_within(distribution(v for v in values), values, rel=1e-12)


def test_run_stats_past_exact_max_rows_reports_latency_within_accuracy(
    many: list[float],
) -> None:
    stats = RunStats()
    by_model: dict[str, list[float]] = {"a": [], "b": []}
    for i, latency in enumerate(many[:70_000]):
        model = "a" if i % 20 else "b"  # a: 66,500 rows, past EXACT_MAX; b: 3,500
        by_model[model].append(latency)
        stats.add(Result(id=str(i), model=model, status="ok", latency_s=latency, attempts=1))
    snapshot = stats.snapshot()
    assert_within(snapshot.model("a").latency, by_model["a"], rel=SKETCH)
    assert_within(snapshot.model("b").latency, by_model["b"], rel=1e-12)
    assert stats.snapshot() == snapshot
    shipped = pickle.loads(pickle.dumps(stats))  # noqa: S301 (as Ray ships it between processes)
    assert shipped.snapshot() == snapshot
