"""Where requests go: the Vertex AI chat-completions URL for a project, location and endpoint.

Project ids may be domain-scoped (``example.com:my-project``). Vertex serves ``global`` on
the bare host and every region on ``{location}-aiplatform``;
the multi-regions ``us`` and ``eu`` have their own ``rep`` hosts. Any other
OpenAI-compatible server is reached through a plain base URL instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from batchrunner.errors import ConfigError

API_VERSIONS = ("v1", "v1beta1")
_LOCATION = re.compile(r"^[a-z]+(?:-[a-z]+\d*)*\d*$")
_ENDPOINT_ID = re.compile(r"^(openapi|\d+)$")
# A project id, optionally domain-scoped (``example.com:my-project``).
_PROJECT = re.compile(r"^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?:)?[a-z0-9][a-z0-9-]{0,62}$")


_VERTEX_PATH = re.compile(r"/v1(?:beta1)?/projects/[^/]+/locations/[^/]+/endpoints/[^/]+")


def is_vertex_url(url: str) -> bool:
    """Whether ``url`` is Vertex's (its host, or its project/location/endpoint path).

    Consumption tiers (Flex, Priority, Provisioned Throughput) exist only there; another
    OpenAI-compatible server ignores their headers and reports no traffic type.
    """
    rest = url.partition("://")[2] or url
    host, _, path = rest.partition("/")
    host = host.rpartition("@")[2].partition(":")[0].lower()
    if host.endswith("aiplatform.googleapis.com") or host.endswith(".rep.googleapis.com"):
        return True
    return _VERTEX_PATH.search("/" + path) is not None


def vertex_host(location: str) -> str:
    """The API host that serves ``location``."""
    if location == "global":
        return "aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"aiplatform.{location}.rep.googleapis.com"
    return f"{location}-aiplatform.googleapis.com"


@dataclass(frozen=True, slots=True)
class VertexTarget:
    """A Vertex project, location, endpoint and API version."""

    project: str
    location: str = "global"
    endpoint_id: str = "openapi"
    api_version: str = "v1"

    def __post_init__(self) -> None:
        if not _PROJECT.match(self.project):
            raise ConfigError(f"invalid Vertex project {self.project!r}")
        if not _LOCATION.match(self.location):
            raise ConfigError(f"invalid Vertex location {self.location!r}")
        if not _ENDPOINT_ID.match(self.endpoint_id):
            raise ConfigError(
                f"invalid endpoint id {self.endpoint_id!r}: use 'openapi' or a numeric endpoint id"
            )
        if self.api_version not in API_VERSIONS:
            raise ConfigError(
                f"invalid API version {self.api_version!r}: use one of {', '.join(API_VERSIONS)}"
            )

    def base_url(self, api_root: str | None = None) -> str:
        """The OpenAI base URL (everything before ``/chat/completions``).

        ``api_root`` replaces ``https://{host}``, e.g. to point the same URL grammar at a
        local simulator.
        """
        root = api_root.rstrip("/") if api_root else f"https://{vertex_host(self.location)}"
        # ':' is allowed in a path segment and is how Google's own URLs write domain-scoped
        # ids; anything else outside the unreserved set would be percent-encoded.
        project = quote(self.project, safe=":")
        return (
            f"{root}/{self.api_version}/projects/{project}"
            f"/locations/{self.location}/endpoints/{self.endpoint_id}"
        )


def chat_completions_url(base_url: str) -> str:
    """The chat-completions URL under an OpenAI-compatible base URL."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"invalid base URL {base_url!r}: it must start with http:// or https://")
    return f"{base}/chat/completions"
