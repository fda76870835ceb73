"""A local stand-in for Vertex AI's OpenAI-compatible chat-completions endpoint.

It serves the Vertex URL grammar, bearer-token checks, an OAuth token endpoint and the GCE
metadata token routes, Gemini and gpt-oss answer shapes (streamed and not, tool calls,
several candidates, safety blocks, implicit-cache hits), consumption tiers, Google error
envelopes, quotas, a latency model and fault injection, and records what it served.

A sealed room: its modules import one another relatively and nothing else of batchrunner,
so that it behaves like the real service rather than like the client; ``cli`` and
``launch`` import it, through the names in ``__all__``. Modules with a leading underscore
are internal to it.
"""

from __future__ import annotations

from .config import FAULT_KINDS, SimulatorConfig, SimulatorStatistics
from .content import count_prompt_tokens
from .models import MODELS, LatencyProfile, ModelSpec
from .server import Simulator, open_simulator, serve, start_simulator_thread

__all__ = [
    "FAULT_KINDS",
    "MODELS",
    "LatencyProfile",
    "ModelSpec",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStatistics",
    "count_prompt_tokens",
    "open_simulator",
    "serve",
    "start_simulator_thread",
]
