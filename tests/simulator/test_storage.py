"""The simulated Cloud Storage against the real google-cloud-storage client: uploads (one-shot
and resumable), listing with pages, downloads, deletes, preconditions and credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from batchrunner.simulator import SimulatorConfig, start_simulator_thread
from batchrunner.simulator.server import Simulator

storage = pytest.importorskip("google.cloud.storage")
api_exceptions = pytest.importorskip("google.api_core.exceptions")
oauth2 = pytest.importorskip("google.oauth2.credentials")
google_auth_exceptions = pytest.importorskip("google.auth.exceptions")

CHUNK = 256 * 1024  # the smallest resumable chunk the client allows


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator_thread(SimulatorConfig(static_tokens=("test-token",))) as simulator:
        yield simulator


@pytest.fixture
def emulated_client(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> storage.Client:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", sim.storage_url())
    return storage.Client(project="sim-project")


def token_client(sim: Simulator, token: str) -> storage.Client:
    return storage.Client(
        project="sim-project",
        credentials=oauth2.Credentials(token=token),
        client_options={"api_endpoint": sim.storage_url()},
    )


def test_emulator_host_client_uploads_lists_downloads_and_deletes_without_credentials(
    sim: Simulator, emulated_client: storage.Client
) -> None:
    bucket = emulated_client.bucket("inputs")
    small = b'{"key": "1", "request": {}}\n'
    bucket.blob("jobs/small.jsonl").upload_from_string(small, content_type="application/jsonl")
    big = os.urandom(5 * 1024 * 1024 + 123)  # not a multiple of the chunk: a short last chunk
    blob = bucket.blob("jobs/big.bin", chunk_size=CHUNK)
    blob.upload_from_string(big)

    names = [b.name for b in emulated_client.list_blobs("inputs", prefix="jobs/")]
    assert names == ["jobs/big.bin", "jobs/small.jsonl"]
    assert bucket.blob("jobs/small.jsonl").download_as_bytes() == small
    assert bucket.get_blob("jobs/big.bin").download_as_bytes() == big
    assert bucket.get_blob("jobs/big.bin").size == len(big)

    bucket.blob("jobs/small.jsonl").delete()
    assert [b.name for b in emulated_client.list_blobs("inputs")] == ["jobs/big.bin"]
    assert sim.storage.read("gs://inputs/jobs/big.bin").data == big  # type: ignore[union-attr]
    assert sim.storage.anonymous_requests > 0
    assert sim.storage.authorized_requests == 0


def test_resumable_upload_sends_several_chunks_and_passes_the_clients_crc32c_check(
    sim: Simulator, emulated_client: storage.Client
) -> None:
    data = os.urandom(3 * CHUNK + 10)
    blob = emulated_client.bucket("b").blob("x/y z.bin", chunk_size=CHUNK)
    blob.upload_from_string(data, checksum="crc32c")
    stored = sim.storage.get("b", "x/y z.bin")
    assert stored is not None and stored.data == data
    assert blob.crc32c == stored.crc32c
    again = emulated_client.bucket("b").blob("x/y z.bin")
    assert again.download_as_bytes(start=CHUNK, end=CHUNK + 9) == data[CHUNK : CHUNK + 10]


def test_listing_pages_through_page_tokens_and_folds_prefixes_with_a_delimiter(
    emulated_client: storage.Client,
) -> None:
    bucket = emulated_client.bucket("many")
    for i in range(7):
        bucket.blob(f"p/{i:02d}.jsonl").upload_from_string(b"x")
    bucket.blob("p/sub/a").upload_from_string(b"x")
    bucket.blob("q/other").upload_from_string(b"x")

    pages = emulated_client.list_blobs("many", prefix="p/", max_results=None, page_size=3).pages
    seen = [[b.name for b in page] for page in pages]
    assert [len(page) for page in seen] == [3, 3, 2]
    assert [name for page in seen for name in page] == [f"p/{i:02d}.jsonl" for i in range(7)] + [
        "p/sub/a"
    ]

    folded = emulated_client.list_blobs("many", prefix="p/", delimiter="/")
    assert [b.name for b in folded] == [f"p/{i:02d}.jsonl" for i in range(7)]
    assert folded.prefixes == {"p/sub/"}


def test_if_generation_match_zero_refuses_to_overwrite_an_object(
    emulated_client: storage.Client,
) -> None:
    blob = emulated_client.bucket("b").blob("once.jsonl")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(api_exceptions.PreconditionFailed):
        emulated_client.bucket("b").blob("once.jsonl").upload_from_string(
            b"second", if_generation_match=0
        )
    assert blob.download_as_bytes() == b"first"


def test_missing_object_is_a_404_the_client_reports_as_not_found(
    emulated_client: storage.Client,
) -> None:
    with pytest.raises(api_exceptions.NotFound):
        emulated_client.bucket("b").blob("absent").download_as_bytes()
    assert emulated_client.bucket("b").get_blob("absent") is None


def test_a_client_with_a_simulator_token_is_counted_as_authorized(sim: Simulator) -> None:
    client = token_client(sim, sim.issue_token())
    client.bucket("b").blob("a").upload_from_string(b"hello")
    assert client.bucket("b").blob("a").download_as_bytes() == b"hello"
    assert sim.storage.authorized_requests >= 2
    assert sim.storage.anonymous_requests == 0


def test_a_token_the_simulator_never_issued_is_refused_with_a_401(sim: Simulator) -> None:
    # The client's authorized session answers a 401 by refreshing its credentials; a bare
    # token cannot refresh, so the refusal surfaces as RefreshError.
    client = token_client(sim, "ya29.not-ours")
    with pytest.raises(google_auth_exceptions.RefreshError):
        client.bucket("b").blob("a").upload_from_string(b"hello")
    assert sim.storage.get("b", "a") is None


def test_anonymous_requests_are_refused_when_storage_anonymous_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SimulatorConfig(storage_anonymous=False)
    with start_simulator_thread(config) as simulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", simulator.storage_url())
        client = storage.Client(project="sim-project")
        # The 401 makes the client try to refresh its anonymous credentials, which it cannot.
        with pytest.raises(google_auth_exceptions.GoogleAuthError):
            client.bucket("b").blob("a").upload_from_string(b"hello")
        assert simulator.storage.get("b", "a") is None
        token = simulator.issue_token()
        token_client(simulator, token).bucket("b").blob("a").upload_from_string(b"hello")
        assert simulator.storage.get("b", "a") is not None


def test_storage_refuses_uploads_past_its_memory_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with start_simulator_thread(SimulatorConfig(storage_max_bytes=1000)) as simulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", simulator.storage_url())
        client = storage.Client(project="sim-project")
        client.bucket("b").blob("a").upload_from_string(b"x" * 900)
        with pytest.raises(api_exceptions.GoogleAPICallError):
            client.bucket("b").blob("c").upload_from_string(b"x" * 200)
        assert simulator.storage.bytes_stored == 900
