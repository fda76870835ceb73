"""Resume: which rows a rerun skips, and refusing to resume a different job into the same file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import ConfigError, OutputError
from batchrunner.output.resume import (
    ResumeState,
    RunIdentity,
    check_identity,
    key_of,
    load_resume_state,
)
from batchrunner.output.writers import open_writer
from batchrunner.results import RESULT_SCHEMA, Result


def line(id: str, model: str = "m", status: str = "ok") -> bytes:
    return orjson.dumps(Result(id=id, model=model, status=status), option=orjson.OPT_APPEND_NEWLINE)


def test_key_of_is_stable_across_processes_and_fits_int64() -> None:
    assert key_of("row-1", "google/gemini-2.5-flash") == key_of("row-1", "google/gemini-2.5-flash")
    assert key_of("1", "a") != key_of("1", "b")
    assert key_of("1", "a") != key_of("a", "1")
    digest = hashlib.blake2b(b"q\x00m", digest_size=8).digest()
    assert key_of("q", "m") == int.from_bytes(digest, "little", signed=True)
    assert key_of("q", "m") == -6780324798839214690  # pinned: outputs on disk depend on it
    assert -(2**63) <= key_of("x", "y") < 2**63


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet"])
def test_missing_output_resumes_from_nothing(tmp_path: Path, name: str) -> None:
    state = load_resume_state(tmp_path / name)
    assert (state.done_count, state.failed_count, state.rows_found, state.torn) == (0, 0, 0, 0)
    assert not state.is_done("1", "m", retry_failed=False)


def test_last_result_decides_whether_a_row_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(
        line("ok")
        + line("failed", status="error")
        + line("fixed", status="error")
        + line("fixed", status="ok")
        + line("ok", model="other", status="error")
    )
    state = load_resume_state(out)

    assert state.rows_found == 5
    assert state.is_done("ok", "m", retry_failed=True)
    assert state.is_done("fixed", "m", retry_failed=True)
    assert state.is_done("failed", "m", retry_failed=False)
    assert not state.is_done("failed", "m", retry_failed=True)
    assert not state.is_done("ok", "other", retry_failed=True)
    assert not state.is_done("never", "m", retry_failed=False)
    assert state.count_done(retry_failed=False) == 4
    assert state.count_done(retry_failed=True) == 2


def test_torn_and_garbled_lines_are_skipped_counted_and_resent(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(
        line("1") + b"\x00\x00\x00{garbage\n" + b"[1, 2]\n" + line("2") + line("3")[:-9]
    )
    state = load_resume_state(out)
    assert state.rows_found == 2
    assert state.torn == 3
    assert not state.is_done("3", "m", retry_failed=False)


def test_parquet_state_reads_output_and_parts_and_drops_half_written_parts(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=2)
    writer.write([Result(id=str(i), model="m", status="ok") for i in range(3)])
    writer.close()  # compacted: 0, 1, 2
    writer = open_writer(out, part_rows=2)
    writer.write([Result(id=str(i), model="m", status="error") for i in (2, 3)])
    writer.abort()  # one new part: 2 (now failed), 3
    parts = tmp_path / "out.parquet.parts"
    (parts / "part-000007.parquet.tmp").write_bytes(b"half")
    (parts / "part-000008.parquet").write_bytes(b"PAR1 truncated")

    state = load_resume_state(out)
    assert state.rows_found == 5
    assert state.torn == 2
    assert state.is_done("0", "m", retry_failed=True)
    assert not state.is_done("2", "m", retry_failed=True)
    assert [i for i in "0123" if state.is_failed(i, "m")] == ["2", "3"]
    assert state.failed_count == 2
    assert not (parts / "part-000007.parquet.tmp").exists()


def test_parquet_state_reads_live_journals_after_parts_and_drops_stale_ones(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=2)
    writer.write([Result(id=str(i), model="m", status="error") for i in (1, 2)])
    writer.abort()  # part 0: rows 1 and 2, both failed
    parts = tmp_path / "out.parquet.parts"
    (parts / "journal-000000.jsonl").write_bytes(line("1"))  # stale: part 0 holds its rows
    (parts / "journal-000001.jsonl").write_bytes(line("2") + line("3") + line("4")[:-5])

    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (4, 1)  # 1, 2 (failed), 2 (fixed), 3
    # The journal comes after the part it follows.
    assert [i for i in "123" if state.is_failed(i, "m")] == ["1"]
    assert not state.is_done("4", "m", retry_failed=False)  # torn: resent
    assert not (parts / "journal-000000.jsonl").exists()

    writer = open_writer(out, part_rows=2)
    writer.write([Result(id=str(i), model="m", status="ok") for i in (1, 4)])
    writer.close()
    rows = pq.read_table(out).to_pylist()
    assert sorted((r["id"], r["status"]) for r in rows) == [
        ("1", "ok"),
        ("2", "ok"),
        ("3", "ok"),
        ("4", "ok"),
    ]


def test_foreign_parquet_output_is_refused_with_a_hint(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    pq.write_table(pa.table({"prompt": ["hi"]}), out)
    with pytest.raises(ConfigError, match="--restart"):
        load_resume_state(out)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        load_resume_state(tmp_path / "bad.parquet")


def test_unreadable_output_directory_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        check_identity(tmp_path / "file" / "out.jsonl", RunIdentity({"a": 1}), restart=False)


def test_resume_state_of_200k_rows_counts_each_key_once(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    n = 200_000
    ids = [str(i) for i in range(n)]
    table = pa.table(
        {
            name: pa.array(
                ids
                if name == "id"
                else ["m"] * n
                if name == "model"
                else ["ok"] * n
                if name == "status"
                else [None] * n,
                field.type,
            )
            for name, field in zip(RESULT_SCHEMA.names, RESULT_SCHEMA, strict=True)
        },
        schema=RESULT_SCHEMA,
    )
    pq.write_table(table, out)

    state = load_resume_state(out)
    assert state.done_count == n
    assert state.is_done("199999", "m", retry_failed=False)


def test_empty_state_is_the_default() -> None:
    assert ResumeState().count_done(retry_failed=False) == 0


MODELS = ["google/gemini-2.5-flash", "openai/gpt-oss-20b-maas"]
IDENTITY = RunIdentity(
    {
        "input": "/data/prompts.jsonl",
        "models": MODELS,
        "request": {"temperature": 0.2, "max_tokens": 256},
        "input_fields": {"id": "id", "prompt": "prompt"},
    }
)


def test_identity_is_recorded_when_missing_and_accepted_when_equal(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    check_identity(out, IDENTITY, restart=False)
    manifest = tmp_path / "out.jsonl.run.json"
    assert orjson.loads(manifest.read_bytes())["identity"]["models"] == MODELS
    same = RunIdentity({**IDENTITY.fields, "models": tuple(MODELS)})  # a tuple is the same list
    check_identity(out, same, restart=False)


def test_changed_identity_refuses_to_resume_and_names_what_changed(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    check_identity(out, IDENTITY, restart=False)
    changed = RunIdentity(
        {
            **IDENTITY.fields,
            "models": ["google/gemini-2.5-flash"],
            "request": {"temperature": 0.9, "max_tokens": 256, "seed": 1},
        }
    )
    with pytest.raises(ConfigError) as caught:
        check_identity(out, changed, restart=False)
    message = str(caught.value)
    assert "(changed: models, request.seed, request.temperature)" in message
    assert "--restart" in message
    assert "\n" not in message


def test_restart_overwrites_the_recorded_identity(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    check_identity(out, IDENTITY, restart=False)
    other = RunIdentity({"input": "/data/other.jsonl"})
    check_identity(out, other, restart=True)
    check_identity(out, other, restart=False)
    with pytest.raises(ConfigError, match=r"changed: input, input_fields, models, request\)"):
        check_identity(out, IDENTITY, restart=False)


def test_restarted_writer_keeps_the_identity_just_recorded(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    check_identity(out, IDENTITY, restart=False)
    other = RunIdentity({"input": "/data/other.jsonl"})
    check_identity(out, other, restart=True)
    open_writer(out, restart=True).close()
    with pytest.raises(ConfigError, match="changed"):
        check_identity(out, IDENTITY, restart=False)


def test_corrupt_manifest_is_a_config_error_with_a_hint(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable; rerun with --restart"):
        check_identity(out, IDENTITY, restart=False)
    check_identity(out, IDENTITY, restart=True)
    check_identity(out, IDENTITY, restart=False)
