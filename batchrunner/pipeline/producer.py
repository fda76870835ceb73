"""The producer: input rows in, request specs out to the workers, bad rows straight to the writer.

It reads this process's shard of the input in a worker thread, skips ids seen before and
requests OUTPUT already holds, turns each row into one request per model, and stops when
admission stops (a signal, ``--max-cost``, an abort). A row that cannot be sent becomes an
error row naming its file and line; it never stops the run.

A producer feeds one lane (``batchrunner.pipeline.lanes``): with ``model`` set it builds
only that model's request of each row (and its bad-input row), and a lane whose model has
been stopped stops reading. Only the ``primary`` lane counts rows read and duplicate ids,
so that several lanes reading the same input count each row once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Protocol

import anyio

from batchrunner.config import RunConfig
from batchrunner.input.bodies import OversizedRequest, RowProblem, requests_for, row_models
from batchrunner.input.readers import BadRow, InputRow, bad_input_result
from batchrunner.input.shards import read_shard_rows
from batchrunner.output.idset import IdSet
from batchrunner.output.keyindex import DEFAULT_MEMORY_BYTES
from batchrunner.output.ondisk import key_of
from batchrunner.output.resume import ResumeState
from batchrunner.pipeline.counters import Counters
from batchrunner.pipeline.queues import ResultBuffer, WorkQueue
from batchrunner.results import RequestSpec, Result

__all__ = ["Producer"]

logger = logging.getLogger(__name__)

READ_CHUNK = 512


class Admission(Protocol):
    """Whether the run still admits requests, and how to stop it."""

    @property
    def stopped(self) -> str | None: ...

    def stop(self, reason: str) -> None: ...

    def lane_stopped(self, model: str) -> bool: ...


class Producer:
    """Feeds one run's workers from its input."""

    def __init__(
        self,
        config: RunConfig,
        state: ResumeState,
        in_flight_cost: Callable[[], float],
        counters: Counters,
        admission: Admission,
        *,
        index_dir: Path | None = None,
        index_bytes: int = DEFAULT_MEMORY_BYTES,
        model: str | None = None,
        primary: bool = True,
    ) -> None:
        """``in_flight_cost`` tells what the requests in flight may still cost (``--max-cost``).

        The ids seen spill to ``index_dir`` past ``index_bytes`` (never, without one).
        ``model`` limits the producer to one model's requests (one lane of several).
        """
        self._model = model
        self._primary = primary
        self._index_dir = index_dir
        self._index_bytes = index_bytes
        self.config = config
        self.counters = counters
        self._state = state
        self._in_flight_cost = in_flight_cost
        self._control = admission
        self.budget_spent = False  # admission stopped because --max-cost was reached

    async def run(self, specs: WorkQueue[RequestSpec], results: ResultBuffer[Result]) -> None:
        """Feed ``specs`` until the input ends or admission stops; then close it."""
        cfg = self.config
        state = self._state
        # Only this process's shard of the input, when it runs one (all of it otherwise).
        rows: Iterator[InputRow | BadRow] = read_shard_rows(cfg.input, cfg.fields, cfg.shard)
        # 8 bytes per input row up to the bound, then sorted runs on disk beside OUTPUT.
        seen = IdSet(self._index_dir, memory_bytes=self._index_bytes)
        counters = self.counters
        lane = self._model
        primary = self._primary
        build = requests_for if lane is None else _lane_requests(cfg, lane)
        control = self._control
        try:
            while control.stopped is None:
                if lane is not None and control.lane_stopped(lane):
                    return  # the rest of this model's rows are for the next run
                chunk = await anyio.to_thread.run_sync(lambda: list(islice(rows, READ_CHUNK)))
                if not chunk:
                    break
                for row in chunk:
                    key = key_of(row.id, "")
                    if primary:
                        counters.read += 1
                    if key in seen:
                        if primary:
                            counters.duplicates += 1
                            if counters.duplicates <= 10:
                                logger.warning("%s: duplicate id %r skipped", row.where, row.id)
                        continue
                    seen.add(key)
                    if isinstance(row, BadRow):
                        await self._reject(row, row.problem, results)
                        continue
                    try:
                        built = build(cfg, row)
                    except OversizedRequest as exc:
                        # too large for some models: refused before sending; the rest go
                        for model, problem in exc.refused:
                            await self._reject(row, problem, results, models=[model])
                        built = list(exc.specs)
                    except RowProblem as exc:
                        await self._reject(row, str(exc), results)
                        continue
                    for spec in built:
                        if state.is_done(spec.id, spec.model, retry_failed=cfg.retry_failed):
                            counters.skipped += 1
                            continue
                        if self._control.lane_stopped(spec.model):
                            continue  # not sent: the next run sends it
                        if self._over_budget():
                            self.budget_spent = True
                            self._control.stop(self._budget_message())
                            return
                        counters.queued += 1
                        await specs.put(spec)
                    if self._control.stopped is not None:
                        return
        finally:
            specs.close()
            seen.close()

    async def _reject(
        self,
        row: InputRow | BadRow,
        problem: str,
        results: ResultBuffer[Result],
        models: list[str] | None = None,
    ) -> None:
        """An error row for each of ``models`` (default: every model the row was meant for),
        unless already final."""
        cfg = self.config
        state = self._state
        if models is None:
            models = [self._model] if self._model is not None else self._models_of(row)
        for model in models:
            if state.is_done(row.id, model, retry_failed=cfg.retry_failed):
                self.counters.skipped += 1
                continue
            self.counters.bad_rows += 1
            await results.add_wait(bad_input_result(row, model, problem))

    def _models_of(self, row: InputRow | BadRow) -> list[str]:
        """The models a row was meant for, as far as it can tell."""
        cfg = self.config
        if isinstance(row, InputRow):
            try:
                return row_models(row, cfg.fields, cfg.models, cfg.default_model)
            except RowProblem:
                pass
        return list(cfg.models) or [cfg.default_model]

    def _over_budget(self) -> bool:
        """Whether the job's budget is spent: earlier runs' rows, this run's, and in flight."""
        limit = self.config.max_cost
        if limit is None:
            return False
        state = self._state
        if state.budget_spent is not None and limit <= state.budget_spent:
            return True  # an earlier run stopped at this budget: rerunning spends no more
        spent = state.spent_usd + self.counters.spent_usd
        return spent + self._in_flight_cost() >= limit

    def _budget_message(self) -> str:
        spent = self._state.spent_usd + self.counters.spent_usd
        return (
            f"the job's budget --max-cost {self.config.max_cost:g} USD is spent "
            f"({spent:.4f} USD recorded in {self.config.output}, "
            f"{self._state.spent_usd:.4f} of it by earlier runs); rerunning with the same "
            "budget sends nothing, a larger --max-cost continues"
        )


def _lane_requests(
    config: RunConfig, model: str
) -> Callable[[RunConfig, InputRow], list[RequestSpec]]:
    """``requests_for`` limited to one model: only that model's body is built."""
    lane_config = replace(config, models=(model,))

    def build(_: RunConfig, row: InputRow) -> list[RequestSpec]:
        return requests_for(lane_config, row)

    return build
