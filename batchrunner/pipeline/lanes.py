"""Lanes: each model of a run flows on its own, so that a slow model never holds back another.

A run with several ``--model`` values sends every row to each of them, and the models differ
by orders of magnitude in what they allow: a MaaS model held to 650 requests a minute beside
a Gemini model with no fixed quota. With one queue of requests shared by every worker, the
queue fills with the slow model's requests, every worker ends up waiting in its limiter, and
the fast model goes at the slow one's pace.

So each model gets a lane: its own reader of the input, its own bounded queue of requests
and its own set of ``--concurrency`` workers, over the limiter's per-model state (its window,
its rates, its 429 pauses). A lane's reader turns each row into that model's request only,
skips the rows OUTPUT already holds for that model, and stops reading when its queue is full;
the other lanes read on. Memory stays bounded whatever the input's size: each lane holds at
most its queue and its requests in flight, and its ids-seen index (which spills to disk
past its share of ``index_memory_mb``). The price is that the input is read and parsed once
per model, which costs far less than the requests it feeds; no lane ever waits for another,
and none has to drop and re-read rows it could not hold.

Everything else is shared: one writer (every (id, model) is written once, whichever lane
answered it), one budget (``--max-cost`` counts every lane's spend and requests in flight),
one run control (a signal or an abort stops every lane; a model's own stop, such as Flex
refused, stops its lane only). A run with one model, or whose rows name their own model,
has one lane: the path it always had, with no per-row work added.
"""

from __future__ import annotations

from batchrunner.config import RunConfig

__all__ = ["lane_models"]


def lane_models(config: RunConfig) -> tuple[str | None, ...]:
    """The model of each lane; ``(None,)`` for one lane carrying every row's own model."""
    if len(config.models) >= 2:
        return config.models
    return (None,)
