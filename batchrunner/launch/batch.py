"""``--via batch`` from the library: a :class:`BatchRoute` with its target and credentials.

The target is the run's Vertex project (``api_root`` from a Vertex-shaped ``--base-url``,
e.g. a ``batchrunner simulate`` server), or the in-process simulator with ``--simulate``,
which serves Vertex and Cloud Storage on one loopback port.
"""

from __future__ import annotations

import re
from typing import Any

import anyio

from batchrunner.auth.tokens import Authenticator, build_authenticator
from batchrunner.batch.route import BatchOutcome, BatchRoute
from batchrunner.config import RunConfig
from batchrunner.launch.simulated import open_simulated_target
from batchrunner.pipeline.runner import RunSummary

__all__ = ["run_batch"]

_VERTEX_BASE = re.compile(r"^(https?://[^/]+)/(?:v1|v1beta1)/projects/([^/]+)/locations/[^/]+")
_ROUTE_OPTIONS = ("prices", "polling", "clock", "sleep", "max_requests", "max_bytes")


def vertex_root(base_url: str | None) -> tuple[str | None, str | None]:
    """(API root, project) of a Vertex-shaped base URL; (None, None) for another."""
    match = _VERTEX_BASE.match(base_url or "")
    return (match.group(1), match.group(2)) if match else (None, None)


async def run_batch(config: RunConfig, **kwargs: Any) -> RunSummary:
    options = {k: kwargs[k] for k in _ROUTE_OPTIONS if kwargs.get(k) is not None}
    if config.simulate is not None and kwargs.get("authenticator") is None:
        async with open_simulated_target(config) as target:
            route = BatchRoute(
                config,
                authenticator=target.authenticator,
                project=config.project or target.project,
                api_root=target.api_root,
                storage_url=config.storage_url or target.storage_url,
                **options,
            )
            return _summary(config, await route.run())
    auth: Authenticator | None = kwargs.get("authenticator")
    if auth is None:
        auth = await anyio.to_thread.run_sync(build_authenticator, config.auth)
    root, project = vertex_root(config.base_url)
    route = BatchRoute(
        config,
        authenticator=auth,
        project=config.project or project,
        api_root=kwargs.get("api_root") or root,
        storage_url=kwargs.get("storage_url") or config.storage_url,
        **options,
    )
    return _summary(config, await route.run())


def _summary(config: RunConfig, outcome: BatchOutcome) -> RunSummary:
    return RunSummary(
        output=config.output,
        stats=outcome.stats,
        sent=outcome.written - outcome.bad_rows,
        written=outcome.written,
        skipped=outcome.skipped,
        earlier_errors=0,
        bad_rows=outcome.bad_rows,
        duplicates=outcome.duplicates,
        wall_s=outcome.wall_s,
        stopped=outcome.stopped,
        fatal=None,
    )
