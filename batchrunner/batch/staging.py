"""Cloud Storage for batch files: upload, list, download and delete under ``gs://`` URIs.

Built on ``google-cloud-storage`` (the ``batchrunner[batch]`` extra), imported only when a
batch run needs it, so the rest of batchrunner works without it. It authenticates with the
run's own bearer token (``token``) or, for a local emulator, anonymously (``token=None``);
``endpoint`` points it at a server other than ``storage.googleapis.com``. Files above
``RESUMABLE_ABOVE`` bytes go up as resumable uploads in ``CHUNK_BYTES`` chunks, so a dropped
connection costs one chunk, not the file. The client is blocking: call it from a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrunner.errors import ConfigError

__all__ = ["CHUNK_BYTES", "RESUMABLE_ABOVE", "Staging", "join_uri", "split_uri"]

logger = logging.getLogger(__name__)

RESUMABLE_ABOVE = 8 * 1024 * 1024
CHUNK_BYTES = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``; anything else is a usage error."""
    if not uri.startswith("gs://"):
        raise ConfigError(f"--staging must be a gs://BUCKET/PREFIX URI, got {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"--staging must name a bucket: gs://BUCKET/PREFIX, got {uri!r}")
    return bucket, name


def join_uri(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}"


@dataclass(frozen=True, slots=True)
class _Lib:
    storage: Any
    anonymous: Any
    token_credentials: Any
    not_found: type[Exception]


def _load() -> _Lib:
    try:
        from google.api_core.exceptions import NotFound
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from google.oauth2.credentials import Credentials
    except ImportError:
        raise ConfigError(
            "--via batch needs google-cloud-storage: pip install 'batchrunner[batch]'"
        ) from None
    return _Lib(storage, AnonymousCredentials, Credentials, NotFound)


class Staging:
    """One Cloud Storage client for one phase of a batch run (its token is not renewed)."""

    def __init__(
        self, *, project: str | None, token: str | None, endpoint: str | None = None
    ) -> None:
        lib = _load()
        self._lib = lib
        credentials = lib.anonymous() if token is None else lib.token_credentials(token)
        options = {"api_endpoint": endpoint.rstrip("/")} if endpoint else None
        self._client = lib.storage.Client(
            project=project or "batchrunner", credentials=credentials, client_options=options
        )

    def __repr__(self) -> str:
        return "Staging()"

    def _blob(self, uri: str) -> Any:
        bucket, name = split_uri(uri)
        return self._client.bucket(bucket).blob(name)

    def upload_file(self, path: Path, uri: str) -> None:
        """Upload ``path`` to ``uri``; resumable, in chunks, when it is large."""
        blob = self._blob(uri)
        if path.stat().st_size > RESUMABLE_ABOVE:
            blob.chunk_size = CHUNK_BYTES
        blob.upload_from_filename(str(path), content_type="application/jsonl")

    def upload_bytes(self, data: bytes, uri: str) -> None:
        self._blob(uri).upload_from_string(data, content_type="application/jsonl")

    def names(self, prefix_uri: str) -> list[str]:
        """Every object URI under ``prefix_uri``, sorted."""
        bucket, prefix = split_uri(prefix_uri)
        blobs = self._client.list_blobs(bucket, prefix=prefix)
        return sorted(f"gs://{bucket}/{blob.name}" for blob in blobs)

    def download(self, uri: str) -> bytes:
        data: bytes = self._blob(uri).download_as_bytes()
        return data

    def delete(self, uris: Sequence[str]) -> int:
        """Delete these objects; one already gone is not an error. Returns how many went."""
        gone = 0
        for uri in uris:
            try:
                self._blob(uri).delete()
                gone += 1
            except self._lib.not_found:
                continue
        return gone
