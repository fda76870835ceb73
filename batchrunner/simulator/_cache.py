"""Gemini implicit caching: a prompt that shares a long prefix with a recent one reports the
shared part as ``usage.prompt_tokens_details.cached_tokens``.

Prompts are hashed in blocks of ``BLOCK_TOKENS`` (about four characters a token), each hash
chained on the one before, so a hit means the whole prefix matched. Only prefixes of at
least ``MIN_CACHED_TOKENS`` count, as Vertex caches only prompts of ~2,048 tokens and up.
Each model keeps its ``capacity`` most recent prefix hashes; the answer depends only on the
order in which prompts arrive.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["BLOCK_TOKENS", "MIN_CACHED_TOKENS", "PrefixCache"]

BLOCK_TOKENS = 256
MIN_CACHED_TOKENS = 2048
_BLOCK_BYTES = BLOCK_TOKENS * 4
_MIN_BLOCKS = MIN_CACHED_TOKENS // BLOCK_TOKENS


class PrefixCache:
    """Recent prefix hashes per model, least recently used dropped first."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._models: dict[str, OrderedDict[bytes, None]] = {}

    def cached_tokens(self, model: str, prompt: bytes, prompt_tokens: int) -> int:
        """Tokens of ``prompt`` found cached; then remember its prefixes for later prompts."""
        blocks = len(prompt) // _BLOCK_BYTES
        if blocks < _MIN_BLOCKS:
            return 0
        seen = self._models.setdefault(model, OrderedDict())
        digest = b""
        hit = 0
        for k in range(blocks):
            chunk = prompt[k * _BLOCK_BYTES : (k + 1) * _BLOCK_BYTES]
            digest = hashlib.blake2b(digest + chunk, digest_size=16).digest()
            if k + 1 < _MIN_BLOCKS:
                continue
            if digest in seen:
                seen.move_to_end(digest)
                hit = k + 1
            else:
                seen[digest] = None
        while len(seen) > self._capacity:
            seen.popitem(last=False)
        return min(hit * BLOCK_TOKENS, prompt_tokens) if hit else 0
