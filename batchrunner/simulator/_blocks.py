"""Safety and recitation blocks, decided per request and forceable from the prompt.

Gemini on the OpenAI-compatible endpoint passes its own finish reasons through (``SAFETY``,
``RECITATION``, ``PROHIBITED_CONTENT``, ``SPII``, ``BLOCKLIST``) or says ``content_filter``,
with empty content; a blocked prompt comes back as a 400 or with no candidates at all.

Trigger words in any message's text make a block certain, so tests need no rate:

=================================  ==========================================================
``__block__``                      400 INVALID_ARGUMENT "Request blocked ..." (any model)
``__block_empty__``                200 with ``choices: []`` and prompt-only usage
``__filter__``                     every candidate blocked, reason drawn from the request
``__filter:REASON__``              every candidate blocked with REASON (e.g. ``SPII``,
                                   ``content_filter``); vLLM models always say
                                   ``content_filter``
=================================  ==========================================================
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .envelopes import ApiError

__all__ = [
    "BLOCK_REASONS",
    "PromptVerdict",
    "answer_block_reason",
    "blocked_prompt_error",
    "prompt_verdict",
]

BLOCK_REASONS: tuple[str, ...] = (
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "SPII",
    "BLOCKLIST",
    "content_filter",
)
# How often each reason is drawn when a block is not named: safety and recitation dominate.
_WEIGHTS = (0.35, 0.2, 0.1, 0.05, 0.1, 0.2)
_FILTER = re.compile(rb"__filter(?::([A-Za-z_]+))?__")
PROMPT_BLOCK_TRIGGER = b"__block__"
EMPTY_BLOCK_TRIGGER = b"__block_empty__"


@dataclass(frozen=True, slots=True)
class PromptVerdict:
    """What the prompt's trigger words ask for."""

    block: bool = False  # 400 "Request blocked"
    no_candidates: bool = False  # 200 with no choices
    filter_reason: str | None = None  # "" = drawn; else the named reason


def prompt_verdict(text: bytes) -> PromptVerdict:
    """Read the trigger words in ``text`` (the request's messages as JSON)."""
    if b"__block" not in text and b"__filter" not in text:
        return PromptVerdict()
    match = _FILTER.search(text)
    reason = None if match is None else (match.group(1) or b"").decode()
    return PromptVerdict(
        block=PROMPT_BLOCK_TRIGGER in text,
        no_candidates=EMPTY_BLOCK_TRIGGER in text,
        filter_reason=reason,
    )


def answer_block_reason(
    verdict: PromptVerdict, rng: random.Random, *, family: str, rate: float
) -> str | None:
    """The finish reason a blocked candidate ends with, or None when it is not blocked."""
    if verdict.filter_reason is None and (family != "gemini" or rng.random() >= rate):
        return None
    if family != "gemini":
        return "content_filter"
    if verdict.filter_reason:
        return verdict.filter_reason
    return rng.choices(BLOCK_REASONS, _WEIGHTS)[0]


def blocked_prompt_error(reason: str = "PROHIBITED_CONTENT") -> ApiError:
    """The 400 a blocked prompt gets (wording inferred from clients' reports)."""
    return ApiError(
        400,
        "INVALID_ARGUMENT",
        f"Request blocked: the prompt was blocked by the safety filters ({reason}). "
        "Please rephrase the prompt and try again.",
    )
