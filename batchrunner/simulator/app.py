"""The simulator's HTTP surface: the chat-completions route, the OAuth token endpoint, the
metadata server, and Google's HTML 404 for everything else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from aiohttp import web

from ._cache import PrefixCache
from ._counters import Counters
from ._streams import stream_events
from ._tiers import REQUEST_TYPE_HEADER, SHARED_REQUEST_TYPE_HEADER, TierDesk
from .answers import plan_answer, screen_prompt, shape_plan
from .auth import KeyRing, TokenStore, metadata_route, token_endpoint
from .batch import BATCH_PATH, BatchService
from .config import SimulatorConfig, SimulatorStatistics, effective_faults, shape_settings
from .content import ModelResolver, parse_request, validate_limits
from .envelopes import ApiError, bad_gateway_page, error_response
from .exchange import Exchange
from .faults import ERROR_FAULTS, FaultPicker, fault_error, stream_error, stream_error_event
from .latency import Timing, plan_timing, streamed_tokens
from .models import MODELS, ModelSpec
from .quotas import QuotaBook, SharedPool
from .recorder import Recorder
from .shapes import (
    AnswerOptions,
    StreamEvent,
    completion_body,
    new_response_id,
    reported_usage,
)
from .storage import ObjectStore, StorageApi, is_storage_path

logger = logging.getLogger(__name__)

CHAT_PATH = re.compile(
    r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/endpoints/(openapi|\d+)/chat/completions$"
)
# Events due within this many seconds of each other are written together.
_COALESCE_S = 0.002
_RESET = 0  # status recorded when the connection was reset without an answer
_CLIENT_GONE = 499


class SimulatorState:
    """Everything the routes share: config, tokens, keys, quotas, faults, counters, records."""

    def __init__(self, config: SimulatorConfig, models: Mapping[str, ModelSpec] = MODELS) -> None:
        self.config = config
        self.settings = shape_settings(config)
        self.models = models
        self.tokens = TokenStore(
            ttl=config.token_ttl, clock=config.clock, static=config.static_tokens
        )
        self.keys = KeyRing(config.project)
        self.quotas = QuotaBook(
            rpm_quota=config.rpm_quota,
            tpm_quota=config.tpm_quota,
            clock=config.clock,
            retry_delay_s=config.retry_delay_s,
            defaults=config.default_quotas,
        )
        self.pool = SharedPool(
            self.settings.dsq_capacity, random.Random(f"{config.seed}:dsq"), config.retry_delay_s
        )
        self.faults = FaultPicker(
            effective_faults(config), config.error_rate, random.Random(f"{config.seed}:faults")
        )
        self.latency_rng = random.Random(f"{config.seed}:latency")
        self.id_rng = random.Random()  # response ids stay unique across simulator runs
        self.prefixes = PrefixCache()
        self.tiers = TierDesk(
            provisioned_share=config.provisioned_share,
            provisioned_rps=config.provisioned_rps,
            flex_queue_s=config.flex_queue_s,
            latency=config.latency,
            clock=config.clock,
            rng=random.Random(f"{config.seed}:tiers"),
        )
        self.recorder = Recorder(config.request_log, config.keep_records)
        self.counters = Counters()
        self.storage = ObjectStore(max_bytes=config.storage_max_bytes)
        self.storage_api = StorageApi(self.storage, self.tokens, anonymous=config.storage_anonymous)
        self.batch = BatchService(config, models, self.tokens, self.storage)

    def statistics(self) -> SimulatorStatistics:
        return self.counters.snapshot(self.tokens.issued)

    # -- routing -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/token":
            return await token_endpoint(request, self.tokens, self.keys)
        if path == "/" or path.startswith("/computeMetadata/"):
            return await metadata_route(request, self.tokens, self.keys, self.config.project)
        if is_storage_path(path):
            return await self.storage_api.handle(request)
        if BATCH_PATH.match(path):
            return await self.batch.handle(request)
        match = CHAT_PATH.match(path)
        if match is None or request.method != "POST":
            return error_response(
                ApiError(404, "NOT_FOUND", "Not Found", html=True), array=False, path=path
            )
        version, project, location, endpoint = match.groups()
        return await self._chat(request, version, project, location, endpoint)

    # -- chat ----------------------------------------------------------------------------

    async def _chat(
        self, request: web.Request, version: str, project: str, location: str, endpoint: str
    ) -> web.StreamResponse:
        exchange = Exchange(location)
        self.counters.arrived()
        response: web.StreamResponse
        try:
            response = await self._serve(request, exchange, version, project, location, endpoint)
        except ApiError as error:
            exchange.status = error.code
            exchange.error_status = error.status
            response = error_response(error, array=self.config.array_errors, path=request.path)
            exchange.sent()
        except ConnectionError:
            exchange.status = _CLIENT_GONE
            response = web.Response(status=_CLIENT_GONE)
        finally:
            self._finish(request, exchange, version, project, endpoint)
        return response

    async def _serve(
        self,
        request: web.Request,
        exchange: Exchange,
        version: str,
        project: str,
        location: str,
        endpoint: str,
    ) -> web.StreamResponse:
        config = self.config
        method = f"google.cloud.aiplatform.{version}.PredictionService.ChatCompletions"
        _check_host(request.host, location)
        if config.require_auth:
            self.tokens.check(request.headers.get("Authorization"), method)
        if config.strict_project and project != config.project:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}/"
                f"endpoints/{endpoint}' (or it may not exist).",
            )
        raw = await request.read()
        resolver = ModelResolver(self.models, project=project, location=location, endpoint=endpoint)
        chat = parse_request(raw, seed=config.seed, resolve=resolver)
        exchange.model = chat.model
        exchange.stream = chat.stream
        exchange.n = chat.n
        validate_limits(chat, location)
        exchange.shared_request_type = request.headers.get(SHARED_REQUEST_TYPE_HEADER)
        exchange.request_type = request.headers.get(REQUEST_TYPE_HEADER)
        exchange.accept_encoding = request.headers.get("Accept-Encoding")
        tier = self.tiers.assign(chat.spec, location, request.headers, chat.digest)

        fault = self.faults.pick()
        exchange.fault = fault
        if fault is not None:
            self.counters.fault(fault)
        if fault == "reset":
            _abort(request)
            exchange.status = _RESET
            return web.Response()
        if fault == "stall":
            await asyncio.sleep(config.stall_s)
        if fault in ERROR_FAULTS:
            raise fault_error(fault, config.retry_delay_s)
        fault_rng = random.Random(chat.digest ^ 0xFA17)
        if fault == "stream_error" and not chat.stream:
            raise stream_error(fault_rng, config.retry_delay_s)[0]
        if fault == "html_200":
            exchange.status = 200
            exchange.sent()
            return web.Response(body=bad_gateway_page(), content_type="text/html")
        settings = self.settings
        screen_prompt(chat, settings)

        plan = shape_plan(chat, plan_answer(chat), settings)
        spec = chat.spec
        if settings.implicit_cache and spec.implicit_cache:
            cached = self.prefixes.cached_tokens(spec.name, chat.prefix, chat.prompt_tokens)
            plan = replace(plan, cached_tokens=cached)
        quota_key = spec.name if spec.family == "gemini" or spec.name in self.models else chat.model
        pooled = spec.family == "gemini" and tier.pooled
        if pooled:
            try:
                self.pool.check(spec.name, location)
            except ApiError:
                self.counters.dsq_rejected()
                raise
        if spec.name in self.models or config.rpm_quota is not None or config.tpm_quota is not None:
            try:
                self.quotas.admit(
                    spec,
                    quota_key,
                    location,
                    plan.prompt_tokens,
                    plan.content_tokens + plan.reasoning_tokens,
                )
            except ApiError:
                self.counters.quota_rejected()
                raise
        in_flight = self.counters.in_flight()
        timing = plan_timing(config, spec, plan, in_flight=in_flight, rng=self.latency_rng)
        if tier.queue_s > 0:  # Flex waits in a queue before it is served
            timing = replace(timing, ttft_s=timing.ttft_s + tier.queue_s)
        options = AnswerOptions(
            omit_usage=fault == "no_usage",
            omit_message=fault == "no_message",
            reasoning_field=settings.reasoning_field,
            vllm_usage_when_requested=settings.vllm_usage_when_requested,
            traffic_type=tier.traffic_type,
        )
        response_id = new_response_id(self.id_rng, spec.family)
        created = int(time.time())
        exchange.response_id = response_id
        exchange.plan = plan
        exchange.finish_reasons = [c.served_finish_reason(chat.stream) for c in plan.choices]
        exchange.traffic_type = options.traffic_type
        usage = reported_usage(chat, plan, options)
        exchange.cached_tokens = usage.cached_tokens
        exchange.reported = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
            usage.total_tokens,
        )
        if pooled:
            self.pool.enter(spec.name, location)
        try:
            first = timing.token_time(0 if chat.stream else streamed_tokens(plan))
            if first > tier.deadline_s:
                await self._sleep_until(exchange.arrival + tier.deadline_s)
                raise ApiError(
                    504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
                )
            if chat.stream:
                events = stream_events(
                    chat, plan, response_id=response_id, created=created, options=options
                )
                if fault == "stream_error":
                    events = _cut_with_error(events, exchange, fault_rng, config.retry_delay_s)
                return await self._stream(
                    request, exchange, timing, events, truncate=fault == "truncate"
                )
            body = completion_body(
                chat, plan, response_id=response_id, created=created, options=options
            )
            await self._sleep_until(exchange.arrival + first)
            return await self._complete(request, exchange, body, truncate=fault == "truncate")
        finally:
            if pooled:
                self.pool.leave(spec.name, location)

    @staticmethod
    async def _sleep_until(due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _complete(
        self, request: web.Request, exchange: Exchange, body: bytes, *, truncate: bool
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None or transport.is_closing():
            exchange.status = _CLIENT_GONE  # the client gave up while the answer was generated
            return web.Response(status=_CLIENT_GONE)
        exchange.status = 200
        if not truncate:
            exchange.sent()
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        exchange.sent()
        _abort(request)
        return response

    async def _stream(
        self,
        request: web.Request,
        exchange: Exchange,
        timing: Timing,
        events: Sequence[StreamEvent],
        *,
        truncate: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        stop = max(1, len(events) // 2) if truncate else len(events)
        buffer: list[bytes] = []
        generated = 0
        exchange.status = 200
        for event in events[:stop]:
            generated += event.tokens
            delay = exchange.arrival + timing.token_time(generated) - time.monotonic()
            if delay > _COALESCE_S:
                if buffer:
                    await self._write(request, response, exchange, buffer)
                await asyncio.sleep(delay)
            buffer.append(event.data)
        await self._write(request, response, exchange, buffer)
        if truncate:
            _abort(request)
        else:
            await response.write_eof()
            exchange.sent()
        return response

    @staticmethod
    async def _write(
        request: web.Request, response: web.StreamResponse, exchange: Exchange, buffer: list[bytes]
    ) -> None:
        if not response.prepared:
            await response.prepare(request)
        if buffer:
            await response.write(b"".join(buffer))
            buffer.clear()
        exchange.sent()

    # -- bookkeeping ---------------------------------------------------------------------

    def _finish(
        self,
        request: web.Request,
        exchange: Exchange,
        version: str,
        project: str,
        endpoint: str,
    ) -> None:
        plan = exchange.answered()
        self.counters.finished(
            exchange.status, plan, exchange.finish_reasons or (), exchange.traffic_type
        )
        if not self.recorder.active:
            return
        self.recorder.add(exchange.record(request.method, request.path, version, project, endpoint))


def _cut_with_error(
    events: Sequence[StreamEvent],
    exchange: Exchange,
    rng: random.Random,
    retry_delay_s: float | None,
) -> list[StreamEvent]:
    """The first third of a stream, then an error event in place of the rest and [DONE]."""
    error, array = stream_error(rng, retry_delay_s)
    exchange.error_status = error.status
    exchange.stream_error = error.code
    keep = max(1, (len(events) - 1) // 3)
    return [*events[:keep], StreamEvent(stream_error_event(error, array=array), 0)]


def _abort(request: web.Request) -> None:
    """Drop the TCP connection without a (complete) answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _check_host(host: str, location: str) -> None:
    """Behind a proxy that keeps Google's Host header, the host must match the location."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if not name.endswith("aiplatform.googleapis.com") and not name.endswith(".rep.googleapis.com"):
        return
    if name == "aiplatform.googleapis.com":
        expected = "global"
    elif name.startswith("aiplatform.") and name.endswith(".rep.googleapis.com"):
        expected = name.split(".")[1]
    else:
        expected = name.removesuffix("-aiplatform.googleapis.com")
    if expected != location:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"Location '{location}' does not match the endpoint host '{name}'.",
        )


def build_app(state: SimulatorState) -> web.Application:
    """The aiohttp application: one catch-all route dispatching on the path."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", state.handle)
    return app
