"""One measurement's distribution: count, mean, percentiles and a 101-point CDF."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from batchrunner.stats.quantiles import Quantiles

__all__ = ["PERCENTILES", "Distribution", "distribution"]

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
_CDF_POINTS = 101  # quantiles at 0 %, 1 %, … 100 %: enough to draw a CDF
_QS = (*PERCENTILES, *(i / (_CDF_POINTS - 1) for i in range(_CDF_POINTS)))


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one measurement.

    Percentiles interpolate linearly between ranks. They are exact for values given as an
    iterable, and for a :class:`~batchrunner.stats.quantiles.Quantiles` of up to 65,536 values;
    past that they come from its buckets and are within 0.5 %. Count, mean, min and max
    are exact.
    """

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    cdf: tuple[float, ...] = ()  # the 0th … 100th percentiles, empty without data


def distribution(values: Quantiles | Iterable[float]) -> Distribution:
    """Percentiles, mean and a 101-point CDF of ``values`` (exact for an iterable)."""
    if not isinstance(values, Quantiles):
        # A copy: the caller may keep appending to its own array.
        values = Quantiles(values, exact_max=None)
    if not values:
        return Distribution()
    quantiles = values.quantiles(_QS)
    p50, p90, p95, p99 = quantiles[: len(PERCENTILES)]
    cdf = tuple(quantiles[len(PERCENTILES) :])
    return Distribution(
        count=len(values),
        mean=values.mean(),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        min=cdf[0],
        max=cdf[-1],
        cdf=cdf,
    )
