"""Flags for the simulator's real-traffic shapes, shared by ``simulate`` and ``run --simulate``.

``simulate`` spells them ``--fault``, ``--tool-call-rate``, …; ``run`` puts ``--sim-`` in
front. Options left unset take the latency profile's default (on at plausible rates under
``realistic``, off otherwise).
"""

from __future__ import annotations

import argparse
from typing import Any

from batchrunner.errors import ConfigError

# The simulator's own vocabularies, spelled out so that building the parser does not start
# its server's imports; a test keeps them equal to batchrunner.simulator's.
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "504",
    "429",
    "reset",
    "stall",
    "truncate",
    "no_usage",
    "no_message",
    "499",
    "html_200",
    "stream_error",
)
REASONING_FIELDS = ("reasoning_content", "reasoning", "both")
VLLM_STREAM_USAGE = ("final_chunk", "requested")

__all__ = ["add_shape_flags", "parse_faults", "shape_options"]


def add_shape_flags(group: Any, *, prefix: str) -> None:
    """Add the shape flags, each named ``prefix`` + its name, to an argparse group."""
    group.add_argument(
        f"{prefix}fault",
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"inject a fault at RATE (0-1; repeatable): {', '.join(FAULT_KINDS)}",
    )
    group.add_argument(
        f"{prefix}tool-call-rate",
        type=float,
        metavar="F",
        help="share of requests offering tools that are answered with tool calls",
    )
    group.add_argument(
        f"{prefix}invalid-tool-arguments-rate",
        type=float,
        metavar="F",
        help="share of tool calls whose arguments are not valid JSON",
    )
    group.add_argument(
        f"{prefix}reasoning-field",
        choices=REASONING_FIELDS,
        help="the field gpt-oss answers put their reasoning in",
    )
    group.add_argument(
        f"{prefix}vllm-stream-usage",
        choices=VLLM_STREAM_USAGE,
        help="vLLM-served models, streamed: usage on the final chunk always, or only when"
        " stream_options.include_usage asks (vLLM's rule)",
    )
    group.add_argument(
        f"{prefix}safety-block-rate",
        type=float,
        metavar="F",
        help="share of Gemini answers blocked with empty content and a raw finish reason",
    )
    group.add_argument(
        f"{prefix}prompt-block-rate",
        type=float,
        metavar="F",
        help="share of prompts refused with 400 'Request blocked'",
    )


def parse_faults(items: list[str], flag: str) -> dict[str, float]:
    """``KIND=RATE`` items (a bare ``KIND`` is rate 1) as a mapping; one line when malformed."""
    faults: dict[str, float] = {}
    for item in items:
        kind, sep, rate = item.partition("=")
        if kind not in FAULT_KINDS:
            raise ConfigError(
                f"{flag}: unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}"
            )
        try:
            faults[kind] = float(rate) if sep else 1.0
        except ValueError:
            raise ConfigError(f"{flag} expects KIND=RATE, got {item!r}") from None
    return faults


def shape_options(ns: argparse.Namespace, *, prefix: str) -> dict[str, Any]:
    """The shape flags' values keyed by their ``SimulatorConfig`` / ``SimulateOptions`` names."""
    dest = prefix.lstrip("-").replace("-", "_")
    names = (
        "tool_call_rate",
        "invalid_tool_arguments_rate",
        "reasoning_field",
        "vllm_stream_usage",
        "safety_block_rate",
        "prompt_block_rate",
    )
    options: dict[str, Any] = {name: getattr(ns, dest + name) for name in names}
    options["faults"] = parse_faults(getattr(ns, dest + "fault"), f"{prefix}fault")
    return {k: v for k, v in options.items() if v is not None and v != {}}
