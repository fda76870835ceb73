"""One request's journey: through the limiter, to the endpoint with retries, into a result row.

``Sender.send`` never raises for a row's own failure (that becomes an ``error`` row); it
raises ``AbortError`` only when the whole run cannot go on (no credentials).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import orjson

from batchrunner.endpoint.candidates import tool_calls_json
from batchrunner.endpoint.client import Answer, ChatClient
from batchrunner.endpoint.http_errors import error_from_exception
from batchrunner.endpoint.retry import RetryPolicy, retry_after
from batchrunner.endpoint.usage import normalize_usage
from batchrunner.errors import AbortError, RequestError
from batchrunner.limits.seam import Limiter, Outcome, TokenEstimate
from batchrunner.pipeline.answers import JsonVerdict, Rejection, check_json, rejection
from batchrunner.pipeline.counters import Counters
from batchrunner.pipeline.first_answers import FirstContact
from batchrunner.results import RequestSpec, Result, Usage, utc_now
from batchrunner.stats.pricing import PriceTable
from batchrunner.stats.run_stats import RunStats

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_ESTIMATE = 512  # tokens, until a model's real outputs have been seen
_AVERAGE_WINDOW = 1000


_NO_USAGE = Usage()
#: Token-bearing chunks a stream needs before its output rate means anything.
MIN_TPS_CHUNKS = 4


class AnswerRejected(RequestError):
    """A 200 whose answer ``--fail-on`` refuses and that another attempt may mend."""

    def __init__(self, answer: Answer, verdict: JsonVerdict | None, why: Rejection) -> None:
        super().__init__(why.message, error_type=why.error_type, retryable=why.retryable)
        self.answer = answer
        self.verdict = verdict
        self.why = why


class Sender:
    """Sends requests for the pool's workers and keeps the spend estimate current."""

    def __init__(
        self,
        client: ChatClient,
        limiter: Limiter,
        policy: RetryPolicy,
        prices: PriceTable,
        stats: RunStats,
        counters: Counters,
        fail_on: frozenset[str] = frozenset({"empty"}),
        *,
        contact: FirstContact | None = None,
        on_unreachable: Callable[[str], None] | None = None,
    ) -> None:
        """``fail_on`` names the answers that count as errors (--fail-on); ``contact``
        watches the first attempts; ``on_unreachable`` is told, once, when none of them
        could connect (the run should stop)."""
        self._fail_on = fail_on
        self._contact = contact if on_unreachable is not None else None
        self._on_unreachable = on_unreachable
        self._client = client
        self._limiter = limiter
        self._policy = policy
        self._prices = prices
        self._stats = stats
        self._counters = counters
        self._output_avg: dict[str, tuple[float, int]] = {}
        self.in_flight_cost = 0.0  # estimated cost of the requests not yet answered

    def output_estimate(self, spec: RequestSpec) -> int:
        """Output tokens to reserve: the model's running average, within the request's cap."""
        avg = self._output_avg.get(spec.model)
        guess = int(avg[0]) + 1 if avg else DEFAULT_OUTPUT_ESTIMATE
        if spec.max_output_tokens is not None:
            return min(spec.max_output_tokens, guess) if avg else spec.max_output_tokens
        return guess

    def _observe_output(self, model: str, tokens: int) -> None:
        mean, n = self._output_avg.get(model, (0.0, 0))
        n = min(n + 1, _AVERAGE_WINDOW)
        self._output_avg[model] = (mean + (tokens - mean) / n, n)

    def estimated_cost(self, model: str, estimate: TokenEstimate) -> float:
        price = self._prices.lookup(model)
        if price is None:
            return 0.0
        return (estimate.input_tokens * price.input + estimate.output_tokens * price.output) / 1e6

    async def send(self, spec: RequestSpec) -> Result:
        """The final result of ``spec``, after as many attempts as the retry policy allows."""
        estimate = TokenEstimate(spec.input_tokens, self.output_estimate(spec))
        cost_guess = self.estimated_cost(spec.model, estimate)
        counters = self._counters
        limiter = self._limiter
        started_at = utc_now()
        attempts = 0
        last_status: int | None = None
        usage = _NO_USAGE

        async def attempt(n: int) -> Answer:
            nonlocal attempts, last_status, usage
            attempts = n
            # No permit is taken while the token source is down: admission pauses instead.
            await self._client.credentials_ready()
            permit = await limiter.acquire(spec.model, estimate)
            counters.in_flight += 1
            try:
                answer = await self._client.send(spec)
            except RequestError as exc:
                last_status = exc.status
                kind = "throttled" if exc.status == 429 else "error"
                limiter.release(
                    permit, Outcome(kind, retry_after=exc.retry_after, reason=exc.reason)
                )
                if self._contact is not None:
                    self._first_contact(exc)
                raise
            except BaseException:
                limiter.release(permit, Outcome("cancelled"))
                raise
            finally:
                counters.in_flight -= 1
            self._contact = None  # a server answered: it is there
            last_status = answer.status
            usage = normalize_usage(spec.model, answer.usage)
            limiter.release(
                permit,
                Outcome(
                    "ok",
                    input_tokens=usage.prompt_tokens,
                    output_tokens=usage.completion_tokens,
                    latency_s=answer.latency_s,
                ),
            )
            if (
                "invalid-json" in self._fail_on
                and spec.response_format
                and answer.finish_reason != "tool_calls"
            ):
                verdict = check_json(answer.content, spec.response_format)
                why = rejection(answer.content, answer.finish_reason, verdict, self._fail_on)
                if why is not None and why.retryable:
                    raise AnswerRejected(answer, verdict, why)
            return answer

        def on_retry(n: int, error: RequestError, wait: float) -> None:
            counters.retries += 1
            self._stats.note_retry(spec.model, error.error_type)
            logger.debug(
                "%s %s attempt %d failed (%s), retrying in %.2f s",
                spec.id,
                spec.model,
                n,
                error.error_type,
                wait,
            )

        self.in_flight_cost += cost_guess
        first_started = time.monotonic()
        try:
            # The first attempt is made here, the retries by retry_after: most rows need no
            # retry, and one coroutine less per row is a measurable share of the CPU.
            try:
                answer = await attempt(1)
            except RequestError as exc:
                if not exc.retryable:
                    raise
                answer = await retry_after(
                    exc, attempt, self._policy, first_started, on_retry=on_retry
                )
        except AnswerRejected as exc:
            return self._ok_result(spec, exc.answer, usage, attempts, started_at)
        except RequestError as exc:
            return self._error_result(spec, exc, attempts, last_status, started_at)
        except AbortError:
            raise  # the whole run stops (credentials, a shared limiter gone): not a row's error
        except Exception as exc:
            logger.error("%s %s: unexpected %s", spec.id, spec.model, type(exc).__name__)
            error = error_from_exception(exc)
            return self._error_result(spec, error, attempts, last_status, started_at)
        finally:
            self.in_flight_cost -= cost_guess
        return self._ok_result(spec, answer, usage, attempts, started_at)

    def _first_contact(self, error: RequestError) -> None:
        contact = self._contact
        assert contact is not None and self._on_unreachable is not None
        if error.status is not None:
            self._contact = None  # a server answered, if only with an error
            return
        if error.error_type == "connection" and error.reason == "connect":
            reason = contact.refused(error)
            if reason is not None:
                self._contact = None
                self._on_unreachable(reason)

    def _error_result(
        self,
        spec: RequestSpec,
        error: RequestError,
        attempts: int,
        last_status: int | None,
        started_at: datetime,
    ) -> Result:
        self._counters.done += 1
        self._counters.errors += 1
        return Result(
            id=spec.id,
            model=spec.model,
            status="error",
            row=spec.row,
            attempts=attempts,
            http_status=error.status if error.status is not None else last_status,
            error_type=error.error_type,
            error_message=error.message,
            started_at=started_at,
            finished_at=utc_now(),
        )

    def _ok_result(
        self,
        spec: RequestSpec,
        answer: Answer,
        usage: Usage,
        attempts: int,
        started_at: datetime,
    ) -> Result:
        cost = self._prices.cost(spec.model, usage)
        verdict = (
            check_json(answer.content, spec.response_format)
            if spec.response_format and answer.finish_reason != "tool_calls"
            else None
        )
        why = rejection(answer.content, answer.finish_reason, verdict, self._fail_on)
        counters = self._counters
        counters.done += 1
        if why is None:
            counters.ok += 1
        else:
            counters.errors += 1
        if cost is not None:
            counters.spent_usd += cost
        if usage.completion_tokens is not None:
            self._observe_output(spec.model, usage.completion_tokens)
        tps = None
        streamed = usage.completion_tokens
        if streamed and answer.reasoning is None and usage.reasoning_tokens:
            # Hidden thinking (Gemini) happened before the first token, not after it.
            streamed -= usage.reasoning_tokens
        if streamed and answer.token_chunks >= MIN_TPS_CHUNKS and answer.generating_s:
            # From the first token to the last: the model's own pace, not the wait for [DONE].
            tps = streamed / answer.generating_s
        return Result(
            id=spec.id,
            model=spec.model,
            status="ok" if why is None else "error",
            row=spec.row,
            output=answer.content,
            reasoning=answer.reasoning,
            finish_reason=answer.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_tokens=usage.cached_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=cost,
            latency_s=answer.latency_s,
            ttft_s=answer.ttft_s,
            ttfo_s=answer.ttfo_s,
            itl_s=answer.itl_s,
            output_tps=tps,
            attempts=attempts,
            http_status=answer.status,
            error_type=None if why is None else why.error_type,
            error_message=None if why is None else why.message,
            response_id=answer.response_id,
            traffic_type=usage.traffic_type,
            started_at=started_at,
            finished_at=utc_now(),
            tool_calls=tool_calls_json(answer.tool_calls) if answer.tool_calls else None,
            choices=_choices_json(spec, answer) if spec.candidates > 1 else None,
            finish_reason_raw=answer.finish_reason_raw,
            parsed=None if verdict is None else verdict.parsed,
            valid=None if verdict is None else verdict.valid,
        )


def _choices_json(spec: RequestSpec, answer: Answer) -> str | None:
    """Every candidate's text in index order, for a row that asked for more than one."""
    if spec.candidates <= 1:
        return None
    return orjson.dumps(list(answer.choices)).decode()
