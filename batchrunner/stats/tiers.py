"""Cost by model and by the tier that served each row (its ``traffic_type``).

Rows from a server that reports no traffic type (vLLM, any non-Vertex server) count as
``ON_DEMAND``: that is the rate they were priced at. Provisioned Throughput rows cost 0
(prepaid), and are counted so a summary can say how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrunner.results import Result

__all__ = ["TierCost", "TierCosts"]

UNREPORTED = "ON_DEMAND"


@dataclass(frozen=True, slots=True)
class TierCost:
    """What one model's rows served by one tier cost."""

    model: str
    traffic_type: str
    rows: int  # ok rows
    cost_usd: float  # over the rows with a known cost
    prompt_tokens: int
    completion_tokens: int


class TierCosts:
    """Sums per (model, traffic type); memory grows with models x tiers, never with rows."""

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], list[float]] = {}

    def add(self, r: Result) -> None:
        if r.status != "ok":
            return
        key = (r.model, r.traffic_type or UNREPORTED)
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = [0, 0.0, 0, 0]
        sums[0] += 1
        sums[1] += r.cost_usd or 0.0
        sums[2] += r.prompt_tokens or 0
        sums[3] += r.completion_tokens or 0

    def merge(self, other: TierCosts) -> None:
        for key, theirs in other._sums.items():
            mine = self._sums.setdefault(key, [0, 0.0, 0, 0])
            for i, value in enumerate(theirs):
                mine[i] += value

    def freeze(self) -> tuple[TierCost, ...]:
        return tuple(
            TierCost(model, tier, int(s[0]), s[1], int(s[2]), int(s[3]))
            for (model, tier), s in sorted(self._sums.items())
        )
