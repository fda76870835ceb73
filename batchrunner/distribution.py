"""One measurement's distribution: count, mean, percentiles and a 101-point CDF."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["PERCENTILES", "Distribution", "distribution"]

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
_CDF_POINTS = 101  # quantiles at 0 %, 1 %, … 100 %: enough to draw a CDF


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
