"""A Cloud Storage stand-in: the JSON API subset the ``google-cloud-storage`` client uses to
upload (media, multipart, resumable), read, list and delete objects, kept in memory.

Batch prediction reads its input from here and writes its predictions here. Buckets exist
as soon as they are named. Requests with a bearer token must carry one the simulator
accepts; requests with none are served when ``storage_anonymous`` is on, because the client
pointed at an emulator (``STORAGE_EMULATOR_HOST``) sends no credentials at all.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from urllib.parse import quote, unquote

import orjson
from aiohttp import web

from .auth import TokenStore
from .envelopes import ApiError

__all__ = [
    "ObjectStore",
    "StorageApi",
    "StorageError",
    "StoredObject",
    "crc32c",
    "is_storage_path",
    "split_gs_uri",
]

_RESUMABLE_QUANTUM = 256 * 1024  # non-final resumable chunks are multiples of this
_DEFAULT_PAGE = 1000
_MAX_PAGE = 1000
_EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})
_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _load_crc32c() -> Callable[[bytes], int]:
    """google-crc32c's C implementation when installed (it comes with google-cloud-storage)."""
    try:
        module = importlib.import_module("google_crc32c")
    except ImportError:
        return _crc32c_python
    value: Callable[[bytes], int] = module.value
    return value


_CRC32C = _load_crc32c()


def crc32c(data: bytes) -> str:
    """The object's CRC32C as Cloud Storage reports it: big-endian, base64."""
    return base64.b64encode(_CRC32C(data).to_bytes(4, "big")).decode()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _rfc3339(unix: float) -> str:
    stamp = datetime.fromtimestamp(unix, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` → ``(bucket, name)``; ValueError for anything else."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a Cloud Storage URI: {uri!r}")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, name


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object generation: its bytes and the metadata Cloud Storage reports."""

    bucket: str
    name: str
    data: bytes
    content_type: str
    generation: int
    created: float  # unix seconds
    md5_hash: str
    crc32c: str
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY_METADATA)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def resource(self, root_url: str) -> dict[str, object]:
        """The ``storage#object`` JSON (int64 fields as strings, as the API sends them)."""
        quoted = quote(self.name, safe="")
        stamp = _rfc3339(self.created)
        body: dict[str, object] = {
            "kind": "storage#object",
            "id": f"{self.bucket}/{self.name}/{self.generation}",
            "selfLink": f"{root_url}/storage/v1/b/{self.bucket}/o/{quoted}",
            "mediaLink": (
                f"{root_url}/download/storage/v1/b/{self.bucket}/o/{quoted}"
                f"?generation={self.generation}&alt=media"
            ),
            "name": self.name,
            "bucket": self.bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "storageClass": "STANDARD",
            "size": str(self.size),
            "md5Hash": self.md5_hash,
            "crc32c": self.crc32c,
            "etag": base64.b64encode(self.generation.to_bytes(8, "big")).decode().rstrip("="),
            "timeCreated": stamp,
            "updated": stamp,
            "timeStorageClassUpdated": stamp,
        }
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


@dataclass(slots=True)
class StorageError(Exception):
    """A Cloud Storage error answer (its envelope differs from Vertex's)."""

    code: int
    reason: str
    message: str
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY_METADATA)

    def response(self) -> web.Response:
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }
        return web.Response(
            status=self.code,
            body=orjson.dumps(body),
            content_type="application/json",
            charset="UTF-8",
            headers=dict(self.headers),
        )


def _not_found(bucket: str, name: str | None = None) -> StorageError:
    if name is None:
        return StorageError(404, "notFound", f"The specified bucket does not exist: {bucket}")
    return StorageError(404, "notFound", f"No such object: {bucket}/{name}")


@dataclass(slots=True)
class _Session:
    bucket: str
    name: str
    content_type: str
    metadata: Mapping[str, str]
    if_generation_match: int | None
    received: bytearray = field(default_factory=bytearray)


class ObjectStore:
    """Buckets of objects in memory, bounded by ``max_bytes``; thread-safe."""

    def __init__(self, *, max_bytes: int, wall: Callable[[], float] = time.time) -> None:
        if max_bytes <= 0:
            raise ValueError("storage_max_bytes must be positive")
        self._max_bytes = max_bytes
        self._wall = wall
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, StoredObject]] = {}
        self._created_buckets: set[str] = set()
        self._sessions: dict[str, _Session] = {}
        self._bytes = 0
        self._generation = int(wall() * 1_000_000)
        self.anonymous_requests = 0
        self.authorized_requests = 0

    # -- objects ---------------------------------------------------------------------------

    def put(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> StoredObject:
        """Store a new generation of ``bucket/name``; 412 when the precondition fails."""
        if not name:
            raise StorageError(400, "required", "Required")
        with self._lock:
            objects = self._buckets.setdefault(bucket, {})
            old = objects.get(name)
            if if_generation_match is not None:
                current = 0 if old is None else old.generation
                if current != if_generation_match:
                    raise StorageError(
                        412,
                        "conditionNotMet",
                        "At least one of the pre-conditions you specified did not hold.",
                    )
            grow = len(data) - (0 if old is None else old.size)
            self._reserve(grow)
            self._generation += 1
            stored = StoredObject(
                bucket=bucket,
                name=name,
                data=data,
                content_type=content_type or "application/octet-stream",
                generation=self._generation,
                created=self._wall(),
                md5_hash=_md5(data),
                crc32c=crc32c(data),
                metadata=MappingProxyType(dict(metadata or {})),
            )
            objects[name] = stored
            self._bytes += grow
            return stored

    def _reserve(self, grow: int) -> None:
        if self._bytes + grow > self._max_bytes:
            raise StorageError(
                413,
                "uploadTooLarge",
                f"The simulator keeps at most {self._max_bytes} bytes of objects "
                f"(storage_max_bytes); {self._bytes} are in use.",
            )

    def get(self, bucket: str, name: str) -> StoredObject | None:
        with self._lock:
            return self._buckets.get(bucket, {}).get(name)

    def read(self, uri: str) -> StoredObject | None:
        """The object behind a ``gs://`` URI, or None."""
        bucket, name = split_gs_uri(uri)
        return self.get(bucket, name)

    def write(self, uri: str, data: bytes, content_type: str = "application/jsonl") -> StoredObject:
        bucket, name = split_gs_uri(uri)
        return self.put(bucket, name, data, content_type=content_type)

    def delete(self, bucket: str, name: str) -> bool:
        with self._lock:
            objects = self._buckets.get(bucket, {})
            old = objects.pop(name, None)
            if old is None:
                return False
            self._bytes -= old.size
            return True

    def list(self, bucket: str, prefix: str = "") -> list[StoredObject]:
        """Objects whose name starts with ``prefix``, sorted by name."""
        with self._lock:
            objects = self._buckets.get(bucket, {})
            chosen = [o for n, o in objects.items() if n.startswith(prefix)]
        return sorted(chosen, key=lambda o: o.name)

    @property
    def bytes_stored(self) -> int:
        with self._lock:
            return self._bytes

    # -- buckets ---------------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> bool:
        """False when the bucket was already created or already holds objects."""
        with self._lock:
            if bucket in self._created_buckets or self._buckets.get(bucket):
                return False
            self._created_buckets.add(bucket)
            self._buckets.setdefault(bucket, {})
            return True

    # -- resumable sessions ----------------------------------------------------------------

    def open_session(
        self,
        bucket: str,
        name: str,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int | None,
    ) -> str:
        upload_id = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[upload_id] = _Session(
                bucket, name, content_type, metadata, if_generation_match
            )
        return upload_id

    def append(
        self, upload_id: str, start: int | None, chunk: bytes, total: int | None
    ) -> StoredObject | int:
        """Add a chunk at ``start``; the stored object once ``total`` bytes are in, else the
        number of bytes persisted so far. A chunk that does not start where the last ended is
        not stored (the client asks for the persisted range and resends).
        """
        with self._lock:
            session = self._sessions.get(upload_id)
            if session is None:
                raise StorageError(404, "notFound", "No such upload session.")
            received = session.received
            if start is not None and start == len(received) and chunk:
                self._reserve(len(chunk))
                received.extend(chunk)
                self._bytes += len(chunk)
            done = total is not None and len(received) >= total
            if not done:
                return len(received)
            del self._sessions[upload_id]
            self._bytes -= len(received)
            data = bytes(received[:total])
        return self.put(
            session.bucket,
            session.name,
            data,
            content_type=session.content_type,
            metadata=session.metadata,
            if_generation_match=session.if_generation_match,
        )

    def cancel_session(self, upload_id: str) -> bool:
        with self._lock:
            session = self._sessions.pop(upload_id, None)
            if session is None:
                return False
            self._bytes -= len(session.received)
            return True

    def count_request(self, *, anonymous: bool) -> None:
        with self._lock:
            if anonymous:
                self.anonymous_requests += 1
            else:
                self.authorized_requests += 1


def is_storage_path(path: str) -> bool:
    return path.startswith(("/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/"))


def _int_query(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StorageError(400, "invalid", f"Invalid value for {key}: {value}") from None


class StorageApi:
    """The HTTP handlers for the Cloud Storage JSON API subset."""

    def __init__(self, store: ObjectStore, tokens: TokenStore, *, anonymous: bool) -> None:
        self._store = store
        self._tokens = tokens
        self._anonymous = anonymous

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorize(request)
            return await self._route(request)
        except StorageError as error:
            return error.response()

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            if not self._anonymous:
                raise StorageError(
                    401,
                    "required",
                    "Anonymous caller does not have storage.objects.get access to the "
                    "Google Cloud Storage object.",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                )
            self._store.count_request(anonymous=True)
            return
        try:
            self._tokens.check(header, "storage")
        except ApiError:
            raise StorageError(
                401,
                "authError",
                "Invalid Credentials",
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                    'error="invalid_token"'
                },
            ) from None
        self._store.count_request(anonymous=False)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        method = request.method
        if raw.startswith("/upload/storage/v1/b/"):
            bucket, rest = _bucket_and_rest(raw.removeprefix("/upload/storage/v1/b/"))
            if rest != "o":
                raise StorageError(404, "notFound", "Not Found")
            if method == "POST":
                return await self._upload(request, bucket)
            if method == "PUT":
                return await self._resume(request)
            if method == "DELETE":
                upload_id = request.query.get("upload_id", "")
                self._store.cancel_session(upload_id)
                return web.Response(status=499)
            raise StorageError(405, "methodNotAllowed", "Method Not Allowed")
        if raw.startswith("/download/storage/v1/b/"):
            bucket, rest = _bucket_and_rest(raw.removeprefix("/download/storage/v1/b/"))
            if not rest.startswith("o/") or method != "GET":
                raise StorageError(404, "notFound", "Not Found")
            return self._media(request, bucket, unquote(rest.removeprefix("o/")))
        tail = raw.removeprefix("/storage/v1/")
        if tail == "b":
            if method == "POST":
                return await self._create_bucket(request)
            raise StorageError(405, "methodNotAllowed", "Method Not Allowed")
        if not tail.startswith("b/"):
            raise StorageError(404, "notFound", "Not Found")
        bucket, rest = _bucket_and_rest(tail.removeprefix("b/"))
        if rest == "":
            if method == "GET":
                return _json(_bucket_resource(bucket))
            raise StorageError(405, "methodNotAllowed", "Method Not Allowed")
        if rest == "o":
            if method == "GET":
                return self._list(request, bucket)
            raise StorageError(405, "methodNotAllowed", "Method Not Allowed")
        if not rest.startswith("o/"):
            raise StorageError(404, "notFound", "Not Found")
        name = unquote(rest.removeprefix("o/"))
        if method == "GET":
            if request.query.get("alt") == "media":
                return self._media(request, bucket, name)
            stored = self._existing(bucket, name, request)
            return _json(stored.resource(_root(request)))
        if method == "DELETE":
            self._existing(bucket, name, request)
            self._store.delete(bucket, name)
            return web.Response(status=204)
        raise StorageError(405, "methodNotAllowed", "Method Not Allowed")

    def _existing(self, bucket: str, name: str, request: web.Request) -> StoredObject:
        stored = self._store.get(bucket, name)
        if stored is None:
            raise _not_found(bucket, name)
        generation = _int_query(request, "generation")
        if generation is not None and generation != stored.generation:
            raise _not_found(bucket, name)
        match = _int_query(request, "ifGenerationMatch")
        if match is not None and match != stored.generation:
            raise StorageError(
                412,
                "conditionNotMet",
                "At least one of the pre-conditions you specified did not hold.",
            )
        return stored

    async def _create_bucket(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise StorageError(400, "parseError", "Parse Error") from None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not _BUCKET_NAME.match(name):
            raise StorageError(400, "invalid", "Invalid bucket name")
        if not self._store.create_bucket(name):
            raise StorageError(
                409,
                "conflict",
                "Your previous request to create the named bucket succeeded and you already "
                "own it.",
            )
        return _json(_bucket_resource(name))

    def _list(self, request: web.Request, bucket: str) -> web.Response:
        prefix = request.query.get("prefix", "")
        delimiter = request.query.get("delimiter", "")
        size = min(_int_query(request, "maxResults") or _DEFAULT_PAGE, _MAX_PAGE)
        after = ""
        token = request.query.get("pageToken")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise StorageError(400, "invalid", "Invalid page token") from None
        root = _root(request)
        items: list[dict[str, object]] = []
        prefixes: list[str] = []
        last = ""
        more = False
        for stored in self._store.list(bucket, prefix):
            if stored.name <= after:
                continue
            entry_name = stored.name
            if delimiter:
                cut = stored.name.find(delimiter, len(prefix))
                if cut >= 0:
                    entry_name = stored.name[: cut + len(delimiter)]
                    if entry_name in prefixes or entry_name <= after:
                        continue
            if len(items) + len(prefixes) >= size:
                more = True
                break
            if entry_name != stored.name:
                prefixes.append(entry_name)
                # Skip the rest of this "directory" on the next page as well.
                last = entry_name + "\U0010ffff"
            else:
                items.append(stored.resource(root))
                last = stored.name
        body: dict[str, object] = {"kind": "storage#objects"}
        if items:
            body["items"] = items
        if prefixes:
            body["prefixes"] = prefixes
        if more:
            body["nextPageToken"] = base64.urlsafe_b64encode(last.encode()).decode()
        return _json(body)

    def _media(self, request: web.Request, bucket: str, name: str) -> web.Response:
        stored = self._existing(bucket, name, request)
        headers = {
            "x-goog-hash": f"crc32c={stored.crc32c},md5={stored.md5_hash}",
            "x-goog-generation": str(stored.generation),
            "x-goog-metageneration": "1",
            "x-goog-stored-content-length": str(stored.size),
            "x-goog-stored-content-encoding": "identity",
            "ETag": f'"{stored.md5_hash}"',
        }
        spec = request.headers.get("Range")
        if spec:
            match = _RANGE.match(spec.strip())
            if match is None:
                raise StorageError(416, "requestedRangeNotSatisfiable", "Invalid range")
            first, last = match.groups()
            if first == "":
                length = int(last or "0")
                start, end = max(0, stored.size - length), stored.size - 1
            else:
                start = int(first)
                end = min(int(last), stored.size - 1) if last else stored.size - 1
            if start >= stored.size or end < start:
                raise StorageError(
                    416, "requestedRangeNotSatisfiable", "The requested range cannot be satisfied."
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
            return web.Response(
                status=206,
                body=stored.data[start : end + 1],
                content_type=stored.content_type,
                headers=headers,
            )
        return web.Response(body=stored.data, content_type=stored.content_type, headers=headers)

    async def _upload(self, request: web.Request, bucket: str) -> web.Response:
        kind = request.query.get("uploadType", "")
        match = _int_query(request, "ifGenerationMatch")
        if kind == "media":
            name = request.query.get("name", "")
            stored = self._store.put(
                bucket,
                name,
                await request.read(),
                content_type=request.headers.get("Content-Type", ""),
                if_generation_match=match,
            )
            return _json(stored.resource(_root(request)))
        if kind == "multipart":
            metadata, data, part_type = _parse_multipart(request, await request.read())
            stored = self._store.put(
                bucket,
                str(metadata.get("name") or request.query.get("name", "")),
                data,
                content_type=str(metadata.get("contentType") or part_type),
                metadata=_user_metadata(metadata),
                if_generation_match=match,
            )
            return _json(stored.resource(_root(request)))
        if kind == "resumable":
            raw = await request.read()
            metadata = _json_object(raw) if raw.strip() else {}
            name = str(metadata.get("name") or request.query.get("name", ""))
            if not name:
                raise StorageError(400, "required", "Required")
            content_type = str(
                metadata.get("contentType")
                or request.headers.get("X-Upload-Content-Type")
                or "application/octet-stream"
            )
            upload_id = self._store.open_session(
                bucket, name, content_type, _user_metadata(metadata), match
            )
            location = (
                f"{_root(request)}/upload/storage/v1/b/{bucket}/o"
                f"?uploadType=resumable&upload_id={upload_id}"
            )
            return web.Response(status=200, headers={"Location": location}, body=b"")
        raise StorageError(400, "invalid", f"Invalid upload type: {kind!r}")

    async def _resume(self, request: web.Request) -> web.Response:
        upload_id = request.query.get("upload_id", "")
        chunk = await request.read()
        header = request.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.match(header.strip())
        if match is None:
            raise StorageError(400, "invalid", f"Invalid Content-Range: {header!r}")
        first, last, total_text = match.groups()
        total = None if total_text == "*" else int(total_text)
        start = None if first is None else int(first)
        if start is not None and int(last) - start + 1 != len(chunk):
            raise StorageError(400, "invalid", "Content-Range does not match the body's length")
        if start is not None and total is None and len(chunk) % _RESUMABLE_QUANTUM:
            raise StorageError(400, "invalid", "Non-final chunks must be a multiple of 256 KiB.")
        outcome = self._store.append(upload_id, start, chunk, total)
        if isinstance(outcome, StoredObject):
            return _json(outcome.resource(_root(request)))
        headers = {"Range": f"bytes=0-{outcome - 1}"} if outcome else {}
        return web.Response(status=308, headers=headers, body=b"")


def _bucket_and_rest(tail: str) -> tuple[str, str]:
    bucket, _, rest = tail.partition("/")
    return unquote(bucket), rest


def _root(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(body: Mapping[str, object]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _bucket_resource(bucket: str) -> dict[str, object]:
    return {
        "kind": "storage#bucket",
        "id": bucket,
        "name": bucket,
        "projectNumber": "123456789012",
        "metageneration": "1",
        "location": "US",
        "storageClass": "STANDARD",
        "etag": "CAE=",
        "timeCreated": "2025-01-01T00:00:00.000Z",
        "updated": "2025-01-01T00:00:00.000Z",
    }


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise StorageError(400, "parseError", "Parse Error") from None
    if not isinstance(value, dict):
        raise StorageError(400, "parseError", "Parse Error")
    return value


def _user_metadata(resource: Mapping[str, object]) -> dict[str, str]:
    metadata = resource.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    return {str(k): str(v) for k, v in metadata.items()}


def _parse_multipart(request: web.Request, body: bytes) -> tuple[dict[str, object], bytes, str]:
    """The JSON metadata part and the media part of a ``multipart/related`` upload."""
    content_type = request.headers.get("Content-Type", "")
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/related") or not boundary:
        raise StorageError(400, "invalid", "Expected a multipart/related body with a boundary")
    delimiter = b"--" + boundary.encode()
    parts: list[tuple[str, bytes]] = []
    for segment in body.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break
        segment = segment.removeprefix(b"\r\n")
        head, _, content = segment.partition(b"\r\n\r\n")
        part_type = ""
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-type":
                part_type = value.strip()
        parts.append((part_type, content.removesuffix(b"\r\n")))
    if len(parts) != 2:
        raise StorageError(400, "invalid", "Expected two parts: metadata and media")
    return _json_object(parts[0][1]), parts[1][1], parts[1][0]
