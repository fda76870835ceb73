"""``RunConfig.simulate``: a simulator started for the run, and the target it serves.

The run talks to it as to Vertex: over loopback HTTP, with a real google-auth service-account
key whose token URI is the simulator's own token endpoint.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from batchrunner.auth.tokens import Authenticator, build_authenticator
from batchrunner.config import AuthConfig, RunConfig, SimulateOptions
from batchrunner.errors import ConfigError
from batchrunner.simulator import SimulatorConfig, open_simulator

__all__ = ["SimulatedTarget", "open_simulated_target"]


@dataclass(frozen=True, slots=True)
class SimulatedTarget:
    """Where a simulated run sends its requests, and the credentials it sends them with."""

    url: str  # the base URL: everything before /chat/completions
    authenticator: Authenticator
    model_urls: Mapping[str, str] = field(default_factory=dict)  # a model's own location
    api_root: str = ""  # http://127.0.0.1:PORT: Vertex's REST root (batch jobs)
    storage_url: str = ""  # the Cloud Storage JSON API endpoint
    project: str = ""


def simulator_config(options: SimulateOptions) -> SimulatorConfig:
    """The simulator ``options`` describe; a contradictory option is a ``ConfigError``."""
    try:
        return SimulatorConfig(
            latency=options.latency,
            seed=options.seed,
            error_rate=options.error_rate,
            rpm_quota=options.rpm_quota,
            tpm_quota=options.tpm_quota,
            token_ttl=options.token_ttl,
            faults=dict(options.faults),
            tool_call_rate=options.tool_call_rate,
            invalid_tool_arguments_rate=options.invalid_tool_arguments_rate,
            reasoning_field=options.reasoning_field,
            vllm_stream_usage=options.vllm_stream_usage,
            safety_block_rate=options.safety_block_rate,
            prompt_block_rate=options.prompt_block_rate,
            batch_turnaround_s=options.batch_turnaround_s,
            batch_line_failure_rate=options.batch_line_failure_rate,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None


def _where(config: RunConfig, model: str) -> tuple[str, str, str]:
    location, endpoint = config.target_of(model)
    return location, config.api_version, endpoint


@asynccontextmanager
async def open_simulated_target(config: RunConfig) -> AsyncIterator[SimulatedTarget]:
    """Start a simulator for ``config`` (its ``simulate`` options) until the block ends."""
    options = config.simulate or SimulateOptions()
    async with open_simulator(simulator_config(options)) as sim:
        with tempfile.TemporaryDirectory(prefix="batchrunner-sim-") as tmp:
            key_file = sim.write_credentials(Path(tmp) / "service-account.json")
            auth = await anyio.to_thread.run_sync(
                build_authenticator, AuthConfig(mode="adc", credentials_file=str(key_file))
            )
            base = sim.base_url(config.location, config.api_version, config.endpoint_id)
            model_urls = {
                model: sim.base_url(*_where(config, model)) for model in config.model_targets
            }
            yield SimulatedTarget(
                base,
                auth,
                model_urls,
                api_root=sim.root_url,
                storage_url=sim.storage_url(),
                project=sim.config.project,
            )
