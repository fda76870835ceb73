"""The consumption tier each model's requests ask for, as request headers built once per run.

Vertex chooses Flex, Priority and Provisioned Throughput by headers only
(``batchrunner.config.tier_headers``); the tier that actually served a row comes back in its
``traffic_type`` and prices it. Another OpenAI-compatible server has no tiers: asking it
for Flex would only buy Flex's 30-minute deadline, so Flex is refused there up front, with a
warning, and those requests go out at the standard tier.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from batchrunner.config import RunConfig, tier_headers
from batchrunner.endpoint.urls import is_vertex_url

__all__ = ["FLEX_UNSUPPORTED", "TierHeaders", "flex_unsupported", "tier_plan"]

logger = logging.getLogger(__name__)

FLEX_UNSUPPORTED = "Flex API is not supported for model"


@dataclass(frozen=True, slots=True)
class TierHeaders:
    """Headers for every request, and the models whose own tier replaces them."""

    headers: Mapping[str, str]
    model_headers: Mapping[str, Mapping[str, str]]


def tier_plan(config: RunConfig, url: str) -> TierHeaders:
    """The tier headers of a run sending to ``url``; warns once when Flex is refused."""
    vertex = is_vertex_url(url)

    def tier(asked: str, who: str) -> str:
        if asked == "flex" and not vertex:
            logger.warning(
                "%s: Flex is a Vertex tier and %s is not Vertex; sending at the standard tier",
                who,
                url,
            )
            return "standard"
        return asked

    provisioned = config.provisioned if vertex else "auto"
    if config.provisioned != "auto" and not vertex:
        logger.warning(
            "--provisioned %s: Provisioned Throughput is a Vertex option and %s is not Vertex; "
            "ignored",
            config.provisioned,
            url,
        )
    run_tier = tier(config.tier, "--tier flex")
    return TierHeaders(
        tier_headers(run_tier, provisioned),
        {
            model: tier_headers(tier(asked, f"tier of {model}"), provisioned)
            for model, asked in config.model_tiers.items()
        },
    )


def flex_unsupported(error_message: str | None, http_status: int | None) -> bool:
    """Whether a row's error is Vertex refusing Flex for its model (a 400, for every row)."""
    return http_status == 400 and error_message is not None and FLEX_UNSUPPORTED in error_message
