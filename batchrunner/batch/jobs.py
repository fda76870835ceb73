"""Vertex's ``batchPredictionJobs``: create, get, find by display name, cancel.

REST over httpx, with the run's own bearer token from its ``Authenticator`` (one renewal on
a 401). ``api_root`` replaces ``https://{host}`` (a simulator); by default each location's
own host is used. Errors carry the status and Google's message, never a header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from batchrunner.auth.tokens import Authenticator
from batchrunner.endpoint.urls import vertex_host
from batchrunner.errors import AbortError

__all__ = ["TERMINAL_STATES", "JobsApi", "JobsError"]

logger = logging.getLogger(__name__)

TERMINAL_STATES = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
    }
)
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class JobsError(AbortError):
    """A JobService call that failed; the message names the call, status and reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobsApi:
    """The JobService calls batch runs make."""

    def __init__(
        self,
        project: str,
        auth: Authenticator,
        *,
        api_root: str | None = None,
        api_version: str = "v1",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.project = project
        self._auth = auth
        self._root = api_root.rstrip("/") if api_root else None
        self._version = api_version
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    def _url(self, location: str, tail: str = "") -> str:
        root = self._root or f"https://{vertex_host(location)}"
        return f"{root}/{self._version}/{tail}"

    def collection(self, location: str) -> str:
        return f"projects/{self.project}/locations/{location}/batchPredictionJobs"

    async def create(self, location: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", location, self.collection(location), body)

    async def get(self, name: str) -> dict[str, Any]:
        return await self._call("GET", _location(name), name)

    async def cancel(self, name: str) -> None:
        await self._call("POST", _location(name), f"{name}:cancel", {})

    async def find(self, location: str, display_name: str) -> list[dict[str, Any]]:
        """Jobs with this display name (newest first): how a create cut short is found."""
        params = {"filter": f'display_name="{display_name}"', "pageSize": "100"}
        found: list[dict[str, Any]] = []
        while True:
            page = await self._call("GET", location, self.collection(location), params=params)
            found.extend(page.get("batchPredictionJobs") or [])
            token = page.get("nextPageToken")
            if not token:
                return found
            params = {**params, "pageToken": str(token)}

    async def _call(
        self,
        method: str,
        location: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self._url(location, path)
        content = orjson.dumps(body) if body is not None else None
        creds = await self._auth.headers()
        attempt = 0
        while True:
            attempt += 1
            headers = {**creds.headers, "Content-Type": "application/json"}
            try:
                response = await self._http.request(
                    method, url, content=content, headers=headers, params=params
                )
            except httpx.HTTPError as exc:
                if attempt < 4:
                    continue
                raise JobsError(f"{method} {path}: {type(exc).__name__}") from None
            if response.status_code == 401 and attempt == 1:
                creds = await self._auth.unauthorized(creds)
                continue
            if response.status_code in _RETRYABLE and attempt < 4 and method == "GET":
                continue
            if response.status_code >= 400:
                raise JobsError(
                    f"{method} {path}: HTTP {response.status_code}: {_message(response)}",
                    response.status_code,
                )
            data = orjson.loads(response.content or b"{}")
            return data if isinstance(data, dict) else {}


def _location(name: str) -> str:
    parts = name.split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "locations" else "global"


def _message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.reason_phrase or "no message"
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return response.reason_phrase or "no message"
