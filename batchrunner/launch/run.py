"""Running a batch to completion from synchronous code: ``batchrunner.run``."""

from __future__ import annotations

from typing import Any

import anyio

from batchrunner.config import RunConfig
from batchrunner.pipeline.runner import Runner, RunSummary

__all__ = ["run", "run_async"]


async def run_async(config: RunConfig, **kwargs: Any) -> RunSummary:
    """Run a batch; with ``config.simulate``, against a simulator started for the run.

    ``kwargs`` go to :class:`Runner` (an injected ``url`` means the simulator is not started);
    with ``config.via == "batch"``, to the batch route (``batchrunner.launch.batch``).
    """
    if config.via == "batch":
        from batchrunner.launch.batch import run_batch

        return await run_batch(config, **kwargs)
    if config.simulate is None or kwargs.get("url") is not None:
        return await Runner(config, **kwargs).run()
    # Imported here: a run against a real server does not load the simulator (aiohttp's
    # server side, the answer tables), which costs start-up CPU on every run.
    from batchrunner.launch.simulated import open_simulated_target

    async with open_simulated_target(config) as target:
        if kwargs.get("authenticator") is None:
            kwargs["authenticator"] = target.authenticator
        kwargs["url"] = target.url
        kwargs.setdefault("model_urls", target.model_urls)
        return await Runner(config, **kwargs).run()


def run(config: RunConfig, **kwargs: Any) -> RunSummary:
    """Run a batch to completion from synchronous code (a script, a notebook cell)."""

    async def main() -> RunSummary:
        return await run_async(config, **kwargs)

    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
