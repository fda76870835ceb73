"""The Cloud Storage code against a server we did not write: gcp-storage-emulator, started
in-process on loopback, spoken to anonymously as any emulator is.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrunner.batch.staging import RESUMABLE_ABOVE, Staging

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("google.cloud.storage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def staging() -> Iterator[Staging]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="stage")
    server.start()
    try:
        yield Staging(project="test", token=None, endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def test_an_uploaded_file_lists_and_downloads_byte_for_byte(
    staging: Staging, tmp_path: Path
) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b'{"key": "a", "request": {}}\n{"key": "b", "request": {}}\n')
    staging.upload_file(path, "gs://stage/run/one/input.jsonl")
    staging.upload_bytes(b"{}\n", "gs://stage/run/two/input.jsonl")
    staging.upload_bytes(b"{}\n", "gs://stage/elsewhere.jsonl")
    assert staging.names("gs://stage/run/") == [
        "gs://stage/run/one/input.jsonl",
        "gs://stage/run/two/input.jsonl",
    ]
    assert staging.download("gs://stage/run/one/input.jsonl") == path.read_bytes()


def test_a_large_file_goes_up_resumably_and_comes_back_whole(
    staging: Staging, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    line = b'{"key": "k", "request": {"contents": "' + b"x" * 1000 + b'"}}\n'
    path.write_bytes(line * (RESUMABLE_ABOVE // len(line) + 50))
    assert path.stat().st_size > RESUMABLE_ABOVE
    staging.upload_file(path, "gs://stage/big/input.jsonl")
    assert staging.download("gs://stage/big/input.jsonl") == path.read_bytes()


def test_delete_removes_what_it_names_and_tolerates_what_is_gone(staging: Staging) -> None:
    staging.upload_bytes(b"1\n", "gs://stage/d/a.jsonl")
    staging.upload_bytes(b"2\n", "gs://stage/d/b.jsonl")
    gone = staging.delete(["gs://stage/d/a.jsonl", "gs://stage/d/missing.jsonl"])
    assert gone == 1
    assert staging.names("gs://stage/d/") == ["gs://stage/d/b.jsonl"]
