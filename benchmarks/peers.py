"""One tool, one run, in a fresh process: the child side of ``compare.py``.

Each tool reads the same Parquet input, sends every row as one chat completion with at
most ``--concurrency`` requests in flight, and writes one result row per input row to
Parquet, the way its users would write it. The process measures its CPU time (all its
threads, and any child processes it waited for) and wall time around the run only, after
its imports, and prints one JSON line with the figures; peak RSS is its ``ru_maxrss``.
Curator runs under the interpreter of its own virtualenv (``common.curator_python``).

    python benchmarks/peers.py TOOL --input IN.parquet --output OUT.parquet --url BASE_URL
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Send = Callable[[str, str], Awaitable[Row]]

TOOLS = (
    "batchrunner",
    "batchrunner-dry-run",
    "batchrunner-canned",
    "aiohttp",
    "aiohttp-stdloop",
    "aiohttp-gc",
    "aiohttp-resume",
    "httpx",
    "httpx-h2",
    "httpx-aiohttp",
    "openai",
    "cookbook",
    "litellm",
    "curator",
)


# -- what every peer shares: read, bounded fan-out, write ---------------------------------


def read_input(path: Path) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "prompt"])
    return list(
        zip(table.column("id").to_pylist(), table.column("prompt").to_pylist(), strict=True)
    )


def write_output(path: Path, rows: list[Row]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def ok_row(row_id: str, data: dict[str, Any], started: float) -> Row:
    usage = data.get("usage") or {}
    return {
        "id": row_id,
        "status": "ok",
        "output": data["choices"][0]["message"].get("content"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "latency_s": time.perf_counter() - started,
        "http_status": 200,
        "finished_at": time.time(),  # for the start-up figures, read after the run
    }


def error_row(row_id: str, status: int | None, message: str, started: float) -> Row:
    return {
        "id": row_id,
        "status": "error",
        "output": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "latency_s": time.perf_counter() - started,
        "http_status": status,
        "error": message[:200],
    }


async def gather_bounded(
    rows: Iterable[tuple[str, str]], concurrency: int, send: Send
) -> list[Row]:
    """The hand-written pattern: one coroutine per row, a semaphore, ``asyncio.gather``."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row_id: str, prompt: str) -> Row:
        async with semaphore:
            return await send(row_id, prompt)

    return list(await asyncio.gather(*(one(i, p) for i, p in rows)))


class Job:
    """What a run is asked to do, and the 429s it saw."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.input = Path(args.input)
        self.output = Path(args.output)
        self.base_url = args.url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = args.model
        self.concurrency = args.concurrency
        self.max_tokens = args.max_tokens
        self.throttled = 0

    def payload(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
        }


# -- the peers -----------------------------------------------------------------------------


class ResumingContext(ssl.SSLContext):
    """An SSL context that offers every new connection the latest connection's session.

    Neither aiohttp nor asyncio (nor uvloop) passes a ``session`` to the SSL object they
    make, so without this every connection is a full handshake. Both event loops build
    their SSL objects with ``context.wrap_bio``; this override hands it the session of the
    connection made before, once that connection holds a ticket (TLS 1.3 sends tickets
    after the handshake). One SSL object is kept, not one per connection.
    """

    _last: ssl.SSLObject | None = None
    _session: ssl.SSLSession | None = None

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        last = self._last
        if last is not None:
            try:
                held = last.session
            except ValueError:  # its handshake is not done: nothing to offer yet
                held = None
            if held is not None and held.has_ticket:
                self._session = held
        obj = super().wrap_bio(
            incoming, outgoing, server_side, server_hostname, session or self._session
        )
        self._last = obj
        return obj


def resuming_context() -> ResumingContext:
    """What ``ssl.create_default_context()`` makes (and aiohttp uses), able to resume."""
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)  # honours SSL_CERT_FILE
    context.set_alpn_protocols(("http/1.1",))
    return context


async def run_aiohttp(job: Job, rows: list[tuple[str, str]], *, resume: bool = False) -> list[Row]:
    import aiohttp

    tls: ssl.SSLContext | bool = resuming_context() if resume else True
    connector = aiohttp.TCPConnector(limit=job.concurrency, ssl=tls)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(row_id: str, prompt: str) -> Row:
            started = time.perf_counter()
            try:
                async with session.post(job.url, json=job.payload(prompt)) as response:
                    if response.status != 200:
                        job.throttled += response.status == 429
                        return error_row(row_id, response.status, await response.text(), started)
                    return ok_row(row_id, await response.json(), started)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return error_row(row_id, None, repr(exc), started)

        return await gather_bounded(rows, job.concurrency, send)


async def run_httpx(
    job: Job, rows: list[tuple[str, str]], *, aiohttp_transport: bool, http2: bool = False
) -> list[Row]:
    import httpx

    limits = httpx.Limits(
        max_connections=job.concurrency, max_keepalive_connections=job.concurrency
    )
    transport: httpx.AsyncBaseTransport | None = None
    if aiohttp_transport:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    # Certificates: httpx's default context trusts SSL_CERT_FILE when it is set.
    async with httpx.AsyncClient(
        limits=limits, transport=transport, timeout=600.0, http2=http2
    ) as client:

        async def send(row_id: str, prompt: str) -> Row:
            started = time.perf_counter()
            try:
                response = await client.post(job.url, json=job.payload(prompt))
            except httpx.HTTPError as exc:
                return error_row(row_id, None, repr(exc), started)
            if response.status_code != 200:
                job.throttled += response.status_code == 429
                return error_row(row_id, response.status_code, response.text, started)
            return ok_row(row_id, response.json(), started)

        return await gather_bounded(rows, job.concurrency, send)


async def run_openai(job: Job, rows: list[tuple[str, str]]) -> list[Row]:
    import openai

    # What most people write: the defaults (2 retries, the SDK's own connection pool).
    client = openai.AsyncOpenAI(base_url=job.base_url, api_key="unused-by-local-server")
    async with client:

        async def send(row_id: str, prompt: str) -> Row:
            started = time.perf_counter()
            try:
                completion = await client.chat.completions.create(
                    model=job.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=job.max_tokens,
                )
            except openai.APIStatusError as exc:
                job.throttled += exc.status_code == 429
                return error_row(row_id, exc.status_code, str(exc), started)
            except openai.APIError as exc:
                return error_row(row_id, None, repr(exc), started)
            return ok_row(row_id, completion.model_dump(), started)

        return await gather_bounded(rows, job.concurrency, send)


async def run_litellm(job: Job, rows: list[tuple[str, str]]) -> list[Row]:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True

    async def send(row_id: str, prompt: str) -> Row:
        started = time.perf_counter()
        try:
            response = await litellm.acompletion(
                model="openai/" + job.model,
                api_base=job.base_url,
                api_key="unused-by-local-server",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=job.max_tokens,
            )
        except litellm.RateLimitError as exc:
            job.throttled += 1
            return error_row(row_id, 429, str(exc), started)
        except litellm.APIError as exc:
            return error_row(row_id, getattr(exc, "status_code", None), str(exc), started)
        return ok_row(row_id, response.model_dump(), started)

    return await gather_bounded(rows, job.concurrency, send)


async def run_cookbook(job: Job, rows: list[tuple[str, str]]) -> list[Row]:
    """The OpenAI cookbook's parallel processor, rebuilt from its description.

    One loop takes the next request (retries first), refills a request bucket and a token
    bucket from the time elapsed, dispatches the request as a task when both hold enough
    capacity, and sleeps 1 ms; each task appends its result to a JSONL file as it finishes;
    a 429 pauses dispatch for 15 s and requeues the request. The buckets are sized so they
    never bind here; an in-flight cap equal to the other tools' concurrency is the one
    addition, so that every tool runs with the same number of requests in flight. Token
    counting uses len/4 instead of tiktoken, whose encodings are downloaded at run time.
    """
    import aiohttp

    max_rpm, max_tpm = 1e9, 1e12
    sleep_each_loop, cooldown_s = 0.001, 15.0
    jsonl = job.output.with_suffix(".cookbook.jsonl")
    jsonl.unlink(missing_ok=True)
    retry_queue: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
    status = {"in_progress": 0, "in_flight": 0, "last_rate_limit": 0.0}
    tasks: set[asyncio.Task[None]] = set()
    pending = iter(rows)
    exhausted = False
    request_capacity, token_capacity = max_rpm, max_tpm
    last_update = time.time()

    def append(record: dict[str, Any]) -> None:
        with open(jsonl, "a", encoding="utf-8") as f:  # per result, as the cookbook does
            f.write(json.dumps(record) + "\n")

    async def call(session: aiohttp.ClientSession, row_id: str, prompt: str, left: int) -> None:
        started = time.perf_counter()
        payload = job.payload(prompt)
        error: str | None = None
        try:
            async with session.post(job.url, json=payload) as response:
                data = await response.json(content_type=None)
            if "error" in data or response.status != 200:
                error = json.dumps(data)[:200]
                if response.status == 429:
                    job.throttled += 1
                    status["last_rate_limit"] = time.time()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = repr(exc)
        status["in_flight"] -= 1
        if error is not None and left > 0:
            retry_queue.put_nowait((row_id, prompt, left))
            return
        if error is not None:
            append({"id": row_id, "request": payload, "error": error})
        else:
            append(
                {
                    "id": row_id,
                    "request": payload,
                    "response": data,
                    "latency_s": time.perf_counter() - started,
                }
            )
        status["in_progress"] -= 1

    connector = aiohttp.TCPConnector(limit=job.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        request: tuple[str, str, int] | None = None
        while True:
            if request is None:
                if not retry_queue.empty():
                    request = retry_queue.get_nowait()
                elif not exhausted:
                    try:
                        row_id, prompt = next(pending)
                        request = (row_id, prompt, 5)
                        status["in_progress"] += 1
                    except StopIteration:
                        exhausted = True
            now = time.time()
            elapsed, last_update = now - last_update, now
            request_capacity = min(request_capacity + max_rpm * elapsed / 60.0, max_rpm)
            token_capacity = min(token_capacity + max_tpm * elapsed / 60.0, max_tpm)
            if request is not None:
                tokens = len(request[1]) // 4 + job.max_tokens
                if (
                    request_capacity >= 1
                    and token_capacity >= tokens
                    and status["in_flight"] < job.concurrency
                ):
                    request_capacity -= 1
                    token_capacity -= tokens
                    status["in_flight"] += 1
                    task = asyncio.create_task(
                        call(session, request[0], request[1], request[2] - 1)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    request = None
            if status["in_progress"] == 0:
                break
            await asyncio.sleep(sleep_each_loop)
            pause = status["last_rate_limit"] + cooldown_s - time.time()
            if pause > 0:
                await asyncio.sleep(pause)

    # Its users then turn the JSONL into a table.
    out: list[Row] = []
    with open(jsonl, encoding="utf-8") as f:  # noqa: ASYNC230 (the run is over)
        for line in f:
            record = json.loads(line)
            if "response" in record:
                data = record["response"]
                usage = data.get("usage") or {}
                out.append(
                    {
                        "id": record["id"],
                        "status": "ok",
                        "output": data["choices"][0]["message"].get("content"),
                        "prompt_tokens": usage.get("prompt_tokens"),
                        "completion_tokens": usage.get("completion_tokens"),
                        "total_tokens": usage.get("total_tokens"),
                        "latency_s": record["latency_s"],
                        "http_status": 200,
                    }
                )
            else:
                out.append(error_row(record["id"], None, record["error"], time.perf_counter()))
    jsonl.unlink()
    return out


def curator_offline(workdir: Path) -> None:
    """What Curator needs to run with no network, set before it is imported."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    tokenizers = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
    os.environ.update(
        {
            # Its OpenAI backend loads tiktoken's cl100k_base; litellm ships the file.
            "TIKTOKEN_CACHE_DIR": str(tokenizers),
            "TELEMETRY_ENABLED": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "CURATOR_DISABLE_RICH_DISPLAY": "1",
            "CURATOR_CACHE_DIR": str(workdir / "cache"),  # fresh: no answer comes from cache
            "HOME": str(workdir),  # it writes ~/.cache/.curator_config even with telemetry off
        }
    )


def run_curator(job: Job) -> None:
    """Curator's online mode as its docs show it: an ``LLM`` subclass over a Dataset."""
    from bespokelabs import curator
    from datasets import Dataset

    class Answer(curator.LLM):  # type: ignore[misc]
        def prompt(self, row: dict[str, Any]) -> str:
            return str(row["prompt"])

        def parse(self, row: dict[str, Any], response: str) -> dict[str, Any]:
            return {"id": row["id"], "output": response}

    rows = read_input(job.input)
    dataset = Dataset.from_dict({"id": [i for i, _ in rows], "prompt": [p for _, p in rows]})
    llm = Answer(
        model_name=job.model,
        backend="openai",  # a custom base URL needs the backend named
        generation_params={"max_tokens": job.max_tokens},
        backend_params={
            "base_url": job.base_url,
            "api_key": "not-checked-by-the-local-server",
            "max_concurrent_requests": job.concurrency,
            "max_requests_per_minute": 10_000_000,
            "max_tokens_per_minute": 10_000_000_000,
        },
    )
    answered = llm(dataset).dataset
    started = time.perf_counter()
    write_output(
        job.output,
        [
            {"id": i, "status": "ok", "output": text, "latency_s": None, "http_status": 200}
            if text is not None
            else error_row(i, None, "no answer", started)
            for i, text in zip(answered["id"], answered["output"], strict=True)
        ],
    )


# -- batchrunner ---------------------------------------------------------------------------


def batchrunner_argv(job: Job, *, dry_run: bool, summary: Path) -> list[str]:
    argv = ["run", str(job.input), "-o", str(job.output), "--base-url", job.base_url]
    argv += ["--no-auth", "--model", job.model, "--max-tokens", str(job.max_tokens)]
    argv += ["--concurrency", str(job.concurrency), "--no-adapt", "--progress", "off"]
    argv += ["--restart", "--summary", str(summary)]
    argv += ["--fail-on", "none"]  # every 200 counts, as it does for the peers
    if dry_run:
        argv.append("--dry-run")
    return argv


def run_batchrunner(job: Job, *, dry_run: bool) -> int:
    from batchrunner.cli import main as cli

    summary = job.output.with_suffix(".summary.json")
    status = cli.main(batchrunner_argv(job, dry_run=dry_run, summary=summary))
    if summary.exists():
        total = json.loads(summary.read_text(encoding="utf-8")).get("total") or {}
        # 429s retried, plus rows whose last answer was still a 429.
        job.throttled += (total.get("retries_by_cause") or {}).get("rate_limited", 0)
        job.throttled += (total.get("errors_by_type") or {}).get("rate_limited", 0)
        summary.unlink()
    return status


def run_batchrunner_canned(job: Job) -> int:
    """The library's pipeline over an in-process canned transport: no server, no sockets.

    Every request gets the nginx benchmark's canned answer from an ``httpx.MockTransport``
    (the Runner's ``transport=`` seam), so a 10M-row run measures the client alone, in
    minutes rather than hours.
    """
    import httpx
    import uvloop

    from batchrunner.auth.tokens import StaticAuthenticator
    from batchrunner.config import RequestDefaults, RunConfig, Secret
    from batchrunner.pipeline.gctune import collect_less_often
    from batchrunner.pipeline.runner import Runner

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import CANNED_COMPLETION

    body = json.dumps(CANNED_COMPLETION).encode()
    headers = {"content-type": "application/json"}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers)

    config = RunConfig(
        input=job.input,
        output=job.output,
        models=(job.model,),
        concurrency=job.concurrency,
        adaptive=False,
        restart=True,
        request=RequestDefaults(params={"max_tokens": job.max_tokens}),
    )
    runner = Runner(
        config,
        url=job.base_url,
        authenticator=StaticAuthenticator(Secret("canned-benchmark-token")),
        transport=httpx.MockTransport(answer),
    )
    collect_less_often()
    summary = uvloop.run(runner.run())
    return summary.exit_status


def preload(tool: str) -> None:
    """Import what the tool needs before the clock starts: imports are not the run."""
    if tool.startswith("batchrunner"):
        from batchrunner.pipeline.allocators import return_freed_memory

        return_freed_memory()  # as the command does, before anything loads pyarrow
    import pyarrow.parquet  # noqa: F401

    if tool.startswith("batchrunner"):
        # Every module a run imports, so that its CPU is the run's and not the imports'.
        import httpx_aiohttp

        import batchrunner.cli.main
        import batchrunner.cli.progress
        import batchrunner.cli.teach
        import batchrunner.launch.run
        import batchrunner.pipeline.dryrun
        import batchrunner.pipeline.gctune
        import batchrunner.pipeline.runner
        import batchrunner.report.render  # noqa: F401
    elif tool == "openai":
        import openai  # noqa: F401
    elif tool == "litellm":
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network at import
        import litellm  # noqa: F401
    elif tool == "curator":
        import bespokelabs.curator  # noqa: F401
        import datasets  # noqa: F401
    elif tool.startswith("httpx"):
        import httpx  # noqa: F401
        import httpx_aiohttp  # noqa: F401

        if tool == "httpx-h2":
            import h2.connection  # noqa: F401
            import httpcore._async.http2  # noqa: F401
    else:
        import aiohttp  # noqa: F401


def run_peer(job: Job, tool: str) -> None:
    async def main() -> None:
        rows = read_input(job.input)
        runners = {
            "aiohttp": run_aiohttp,
            "aiohttp-stdloop": run_aiohttp,
            "aiohttp-gc": run_aiohttp,
            "aiohttp-resume": lambda j, r: run_aiohttp(j, r, resume=True),
            "httpx": lambda j, r: run_httpx(j, r, aiohttp_transport=False),
            "httpx-h2": lambda j, r: run_httpx(j, r, aiohttp_transport=False, http2=True),
            "httpx-aiohttp": lambda j, r: run_httpx(j, r, aiohttp_transport=True),
            "openai": run_openai,
            "cookbook": run_cookbook,
            "litellm": run_litellm,
        }
        results = await runners[tool](job, rows)
        write_output(job.output, results)

    if tool == "aiohttp-gc":
        # The collector thresholds batchrunner's command line sets (batchrunner.pipeline.gctune).
        gc.freeze()
        gc.set_threshold(20_000, 20, 100)
    if tool == "aiohttp-stdloop":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


def cpu_times() -> tuple[float, float]:
    """User and system seconds of this process and of any children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def open_files_to_the_hard_limit() -> None:
    """Raise this process's open-file limit to its hard limit, for every tool alike.

    Each request in flight holds a socket; a soft limit of 1,024, common by default, would
    cap any tool at about a thousand connections however many requests it has in flight.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def answer_times(tool: str, output: Path) -> list[float]:
    """When each ok answer came back (epoch seconds), sorted; empty when not recorded.

    batchrunner stamps ``finished_at`` on every row; the hand-written peers' ``ok_row`` does.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not output.exists() or tool in ("batchrunner-dry-run", "curator"):
        return []
    table = pq.read_table(output)
    if "finished_at" not in table.column_names:
        return []
    table = table.filter(pc.equal(table.column("status"), "ok"))
    stamps = table.column("finished_at").to_pylist()
    if stamps and not isinstance(stamps[0], float):
        stamps = [s.timestamp() for s in stamps]
    return sorted(stamps)


def start_up(times: list[float], began: float, concurrency: int) -> dict[str, float | None]:
    """Seconds from the start of the run to the first answer, and to the window's last.

    The window is as many answers as there are requests in flight: once that many have
    come back, every connection has been opened and used once.
    """
    if not times:
        return {"first_answer_s": None, "window_s": None}
    window = times[min(concurrency, len(times)) - 1]
    return {"first_answer_s": times[0] - began, "window_s": window - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=TOOLS)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--url", required=True, help="OpenAI base URL (before /chat/completions)")
    parser.add_argument("--model", default="google/gemini-2.5-flash")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    job = Job(args)
    scratch = Path(tempfile.mkdtemp(prefix="curator-", dir=job.output.parent))
    if args.tool == "curator":
        curator_offline(scratch)
    open_files_to_the_hard_limit()
    preload(args.tool)
    before = cpu_times()
    began = time.time()
    started = time.perf_counter()
    exit_status = 0
    if args.tool == "batchrunner-canned":
        exit_status = run_batchrunner_canned(job)
    elif args.tool.startswith("batchrunner"):
        exit_status = run_batchrunner(job, dry_run=args.tool == "batchrunner-dry-run")
    elif args.tool == "curator":
        run_curator(job)
    else:
        run_peer(job, args.tool)
    wall = time.perf_counter() - started
    after = cpu_times()
    shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "tool": args.tool,
        "wall_s": wall,
        "user_s": after[0] - before[0],
        "sys_s": after[1] - before[1],
        "cpu_s": (after[0] - before[0]) + (after[1] - before[1]),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "throttled": job.throttled,
        "exit_status": exit_status,
        **start_up(answer_times(args.tool, job.output), began, job.concurrency),
    }
    sys.stdout.write("BENCH " + json.dumps(figures) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
