"""Statistics of result files: the figures ``batchrunner report`` and a job's summary show.

:func:`stats_from_files` streams rows from any number of result files (``load_results``) and
aggregates them, pairing models by id for a comparison when several models answered.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from batchrunner.output.read import STATS_COLUMNS, load_results
from batchrunner.stats.comparison import ComparisonBuilder
from batchrunner.stats.run_stats import RunStats, StatsSnapshot

__all__ = ["read_run_stats", "stats_from_files"]


def read_run_stats(paths: Sequence[str | os.PathLike[str]]) -> RunStats:
    """The rows of result files added up, in one streaming pass."""
    stats = RunStats()
    for result in load_results(paths, columns=STATS_COLUMNS):
        stats.add(result)
    return stats


def stats_from_files(paths: Sequence[str | os.PathLike[str]]) -> StatsSnapshot:
    """Statistics of result files, with a comparison when several models answered.

    The figures come from one streaming pass; the comparison, which needs every model's
    row for each id, is built in a second pass only when there are several models.
    """
    snapshot = read_run_stats(paths).snapshot()
    if len(snapshot.models) < 2:
        return snapshot
    builder = ComparisonBuilder(m.model for m in snapshot.models)
    for result in load_results(paths, columns=STATS_COLUMNS):
        builder.add(result)
    return dataclasses.replace(snapshot, comparison=builder.build())
