"""batchrunner: large batches of chat completions against Vertex AI, within quota, exactly once.

The library is the product; the ``batchrunner`` command only wraps it::

    from batchrunner import RunConfig, run

    summary = run(RunConfig(input=Path("prompts.jsonl"), output=Path("results.parquet"),
                            project="my-project", models=("google/gemini-2.5-flash",)))

The names below are the whole public surface; the subpackages that define them are private.
Importing the package loads none of its modules: each name is imported on first use, so
that the command can choose process-wide settings (Arrow's allocator) before pyarrow loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrunner.auth.tokens import Authenticator, build_authenticator
    from batchrunner.config import (
        AuthConfig,
        InputFields,
        RequestDefaults,
        RequestLimits,
        RunConfig,
        Secret,
        SimulateOptions,
        build_config,
        load_job_file,
    )
    from batchrunner.endpoint.retry import RetryPolicy
    from batchrunner.endpoint.urls import VertexTarget
    from batchrunner.endpoint.usage import normalize_usage
    from batchrunner.endpoint.wire import Wire, WireResponse
    from batchrunner.errors import (
        AbortError,
        AuthError,
        BatchRunnerError,
        ConfigError,
        InputFileError,
        OutputError,
        RequestError,
        UsageError,
    )
    from batchrunner.launch.run import run, run_async
    from batchrunner.limits.local import LimitConfig, Limiter, LocalLimiter, Outcome, TokenEstimate
    from batchrunner.output.read import load_results
    from batchrunner.pipeline.runner import Runner, RunSummary
    from batchrunner.report.files import stats_from_files
    from batchrunner.report.render import render, render_summary
    from batchrunner.results import RESULT_FIELDS, RESULT_SCHEMA, Result, Usage
    from batchrunner.stats.pricing import Price, PriceTable
    from batchrunner.stats.run_stats import RunStats, StatsSnapshot

__version__ = "0.1.0"


__all__ = [
    "RESULT_FIELDS",
    "RESULT_SCHEMA",
    "AbortError",
    "AuthConfig",
    "AuthError",
    "Authenticator",
    "BatchRunnerError",
    "ConfigError",
    "InputFields",
    "InputFileError",
    "LimitConfig",
    "Limiter",
    "LocalLimiter",
    "Outcome",
    "OutputError",
    "Price",
    "PriceTable",
    "RequestDefaults",
    "RequestError",
    "RequestLimits",
    "Result",
    "RetryPolicy",
    "RunConfig",
    "RunStats",
    "RunSummary",
    "Runner",
    "Secret",
    "SimulateOptions",
    "StatsSnapshot",
    "TokenEstimate",
    "Usage",
    "UsageError",
    "VertexTarget",
    "Wire",
    "WireResponse",
    "__version__",
    "build_authenticator",
    "build_config",
    "load_job_file",
    "load_results",
    "normalize_usage",
    "render",
    "render_summary",
    "run",
    "run_async",
    "stats_from_files",
]

_EXPORTS = {
    "AuthConfig": "batchrunner.config",
    "Authenticator": "batchrunner.auth.tokens",
    "Secret": "batchrunner.config",
    "build_authenticator": "batchrunner.auth.tokens",
    "RunConfig": "batchrunner.config",
    "SimulateOptions": "batchrunner.config",
    "build_config": "batchrunner.config",
    "load_job_file": "batchrunner.config",
    "VertexTarget": "batchrunner.endpoint.urls",
    "Wire": "batchrunner.endpoint.wire",
    "WireResponse": "batchrunner.endpoint.wire",
    "AbortError": "batchrunner.errors",
    "AuthError": "batchrunner.errors",
    "BatchRunnerError": "batchrunner.errors",
    "ConfigError": "batchrunner.errors",
    "InputFileError": "batchrunner.errors",
    "OutputError": "batchrunner.errors",
    "RequestError": "batchrunner.errors",
    "UsageError": "batchrunner.errors",
    "LimitConfig": "batchrunner.limits.local",
    "Limiter": "batchrunner.limits.local",
    "LocalLimiter": "batchrunner.limits.local",
    "Outcome": "batchrunner.limits.local",
    "TokenEstimate": "batchrunner.limits.local",
    "Price": "batchrunner.stats.pricing",
    "PriceTable": "batchrunner.stats.pricing",
    "InputFields": "batchrunner.config",
    "render": "batchrunner.report.render",
    "render_summary": "batchrunner.report.render",
    "RequestDefaults": "batchrunner.config",
    "RequestLimits": "batchrunner.config",
    "load_results": "batchrunner.output.read",
    "stats_from_files": "batchrunner.report.files",
    "RetryPolicy": "batchrunner.endpoint.retry",
    "RunSummary": "batchrunner.pipeline.runner",
    "Runner": "batchrunner.pipeline.runner",
    "run": "batchrunner.launch.run",
    "run_async": "batchrunner.launch.run",
    "RESULT_FIELDS": "batchrunner.results",
    "RESULT_SCHEMA": "batchrunner.results",
    "Result": "batchrunner.results",
    "RunStats": "batchrunner.stats.run_stats",
    "StatsSnapshot": "batchrunner.stats.run_stats",
    "Usage": "batchrunner.results",
    "normalize_usage": "batchrunner.endpoint.usage",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrunner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if isinstance(value, type) or callable(value):
        # One name, one path: reprs, tracebacks and docs say batchrunner.X, and pickles
        # find it there (the defining submodule is private).
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
