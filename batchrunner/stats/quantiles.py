"""Quantiles of a stream of measurements, in memory that does not grow with the stream.

A run of a million rows must not hold a million latencies. :class:`Quantiles` keeps the
first :data:`EXACT_MAX` values as they are, so that ordinary runs report exact, linearly
interpolated percentiles. Past that it folds them into a log-bucketed histogram (the
DDSketch layout): its percentiles are within :data:`RELATIVE_ACCURACY` of the exact ones,
and its size depends on the spread of the values, not on how many there are.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EXACT_MAX", "RELATIVE_ACCURACY", "Quantiles"]

EXACT_MAX = 65_536  # 512 KiB of float64: exact percentiles for any ordinary run
RELATIVE_ACCURACY = 0.005
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_BUCKETS_PER_LOG = 1 / math.log(_GAMMA)
# Once folded, new values wait in a short buffer and are bucketed a batch at a time with
# Arrow: add() stays a bare append, and a fold costs some 60 ns a value.
_BATCH = 8192


class Quantiles:
    """Count, mean and quantiles of the values added, in bounded memory.

    Beyond the exact store, bucket ``i`` holds the values in (γ^(i-1), γ^i] and reads as
    2γ^i/(γ+1), within 0.5 % of each of them (γ = 1.005/0.995): between 10^-6 and 10^6
    that is at most some 2,800 buckets. The values are meant to be finite and
    non-negative (durations, rates); once folded, one at or below zero (a clock stepping
    back) counts as 0 in the quantiles. Count, sum, minimum and maximum stay exact.
    """

    __slots__ = ("_bins", "_folded", "_limit", "_max", "_min", "_sum", "_values", "_zeros")

    def __init__(self, values: Iterable[float] = (), *, exact_max: int | None = EXACT_MAX) -> None:
        """``exact_max=None`` keeps every value, for a summary that must stay exact."""
        self._values = array("d", values)  # the exact store, later the batch waiting to fold
        self._limit = sys.maxsize if exact_max is None else exact_max
        self._bins: dict[int, int] = {}  # bucket index -> values in it, for values above 0
        self._zeros = 0
        self._folded = 0  # values in the buckets and in the zero count; 0 while exact
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        if len(self._values) > self._limit:
            self._spill()

    def add(self, value: float) -> None:
        """Count one value; called once per result row and measure, so kept to an append."""
        values = self._values
        values.append(value)
        if len(values) > self._limit:
            self._spill()

    def merge(self, other: Quantiles) -> None:
        """Add ``other``'s values to these, leaving ``other`` as it was."""
        if other._folded:
            for index, n in other._bins.items():
                self._bins[index] = self._bins.get(index, 0) + n
            self._zeros += other._zeros
            self._folded += other._folded
            self._sum += other._sum
            self._min = min(self._min, other._min)
            self._max = max(self._max, other._max)
            self._limit = min(self._limit, _BATCH)
        self._values.extend(other._values)
        if len(self._values) > self._limit:
            self._spill()

    def __len__(self) -> int:
        return self._folded + len(self._values)

    @property
    def count(self) -> int:
        return len(self)

    @property
    def exact(self) -> bool:
        """Whether every value is still kept, so that quantiles are exact."""
        return not self._folded

    @property
    def kept(self) -> int:
        """Values held as they are: all of them while exact, at most a batch after."""
        return len(self._values)

    @property
    def bucket_count(self) -> int:
        """Buckets held once folded: with :attr:`kept`, what this costs in memory."""
        return len(self._bins)

    def mean(self) -> float:
        if not self:
            raise ValueError("mean of no values")
        if self.exact:
            mean: float = pc.mean(_arrow(self._values)).as_py()
            return mean
        # The folded sum plus that of the values waiting to fold: no settled copy needed.
        waiting: float = pc.sum(_arrow(self._values)).as_py() if self._values else 0.0
        return (self._sum + waiting) / len(self)

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """The quantiles ``qs`` (each from 0 to 1) of a non-empty set of values.

        Exact and linearly interpolated between ranks while :attr:`exact`; from the
        buckets after, interpolated the same way between the estimates of the two ranks,
        so that each is within 0.5 % of the exact answer. 0 and 1 give the exact minimum
        and maximum.
        """
        if not self:
            raise ValueError("quantiles of no values")
        if self.exact:
            got: list[float] = pc.quantile(
                _arrow(self._values), q=qs, interpolation="linear"
            ).to_pylist()
            return got
        return self._settled()._estimates(qs)

    def _spill(self) -> None:
        self._fold(self._values)
        self._values = array("d")  # a new array: a cleared one can keep its allocation
        self._limit = min(self._limit, _BATCH)

    def _fold(self, values: array[float]) -> None:
        """Put ``values`` in the buckets (without changing ``values``)."""
        if not values:
            return
        data = _arrow(values)
        extremes = pc.min_max(data).as_py()
        self._min = min(self._min, extremes["min"])
        self._max = max(self._max, extremes["max"])
        self._sum += pc.sum(data).as_py()
        self._folded += len(values)
        positive = pc.filter(data, pc.greater(data, _ZERO))
        self._zeros += len(values) - len(positive)
        # Infinity has no bucket index; the largest float's bucket is where it sorts anyway.
        finite = pc.min_element_wise(positive, _LARGEST)
        indices = pc.cast(pc.ceil(pc.multiply(pc.ln(finite), _PER_LOG)), pa.int64())
        counts = pc.value_counts(indices)
        bins = self._bins
        for index, n in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        ):
            bins[index] = bins.get(index, 0) + n

    def _settled(self) -> Quantiles:
        """A copy with the waiting values folded in, so that reading changes nothing here."""
        settled = Quantiles(exact_max=_BATCH)
        settled.merge(self)
        settled._spill()
        return settled

    def _estimates(self, qs: Sequence[float]) -> list[float]:
        indices = sorted(self._bins)
        # below[k]: how many values sort before bucket indices[k]; the zero count comes first
        below = list(accumulate((self._bins[i] for i in indices), initial=self._zeros))
        lo, hi = self._min, self._max

        def at(rank: int) -> float:
            k = bisect_right(below, rank)
            # 2γ^i/(γ+1) written as γ^(i-1)·(1+a), which cannot overflow before the clamp
            value = 0.0 if k == 0 else _GAMMA ** (indices[k - 1] - 1) * (1 + RELATIVE_ACCURACY)
            return min(max(value, lo), hi)

        last = self._folded - 1
        out = []
        for q in qs:
            if q <= 0:
                out.append(lo)
            elif q >= 1:
                out.append(hi)
            else:
                rank = q * last
                floor = math.floor(rank)
                low = at(floor)
                out.append(low + (at(min(floor + 1, last)) - low) * (rank - floor))
        return out


def _arrow(values: array[float]) -> pa.Array:
    # From a copy: an array exporting its buffer to Arrow could not grow until Arrow let go.
    # From a buffer: pa.array and pa.scalar import pandas where it is installed (50 MB).
    return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values.tobytes())])


_ZERO, _LARGEST, _PER_LOG = _arrow(array("d", (0.0, sys.float_info.max, _BUCKETS_PER_LOG)))
