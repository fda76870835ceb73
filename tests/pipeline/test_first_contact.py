"""FirstContact: a run none of whose first attempts can connect stops within seconds."""

from __future__ import annotations

from batchrunner.errors import RequestError
from batchrunner.pipeline.first_answers import REFUSED_ATTEMPTS, REFUSED_WITHIN_S, FirstContact
from tests.conftest import FakeClock

REFUSED = RequestError(
    "connection failed: Cannot connect to host 127.0.0.1:9", error_type="connection"
)


def test_many_workers_refused_at_once_stop_at_the_eighth_attempt() -> None:
    contact = FirstContact(FakeClock())
    said = [contact.refused(REFUSED) for _ in range(REFUSED_ATTEMPTS)]
    assert said[:-1] == [None] * (REFUSED_ATTEMPTS - 1)
    assert said[-1] is not None and "127.0.0.1:9" in said[-1]
    assert contact.refused(REFUSED) is None  # said once


def test_one_worker_retrying_a_closed_port_stops_once_the_seconds_have_passed() -> None:
    clock = FakeClock()
    contact = FirstContact(clock)
    assert contact.refused(REFUSED) is None
    clock.now = REFUSED_WITHIN_S - 0.5  # the second attempt, after the first backoff
    assert contact.refused(REFUSED) is None
    clock.now = REFUSED_WITHIN_S + 0.5  # the third: under five seconds from the first
    assert contact.refused(REFUSED) is not None
