"""Where Vertex serves the models whose placement is narrower than ``global``.

Only what the model cards say is listed; a model not named here may be anywhere. A run
never moves a model on its own: a 404 stop names the placement, and the user adds
``MODEL@LOCATION`` (or a ``models`` table entry in the job file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["KNOWN_LOCATIONS", "placement_hint"]

# gpt-oss model cards and Google's gpt-oss notebook: gpt-oss-20b is served in us-central1 only.
KNOWN_LOCATIONS: dict[str, tuple[str, ...]] = {
    "openai/gpt-oss-20b-maas": ("us-central1",),
}


def placement_hint(models: Iterable[str], location_of: Callable[[str], str]) -> str:
    """A sentence naming each model sent where it is not known to be served; else ``""``."""
    hints = []
    for model in models:
        known = KNOWN_LOCATIONS.get(model)
        if known and location_of(model) not in known:
            hints.append(
                f"{model} is served only in {', '.join(known)} (this run sent it to "
                f"{location_of(model)}): use --model {model}@{known[0]}"
            )
    return "; ".join(hints)
