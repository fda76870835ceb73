"""Writers: every paid-for row survives a crash, and a resumed run ends with each row once."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import ConfigError, OutputError
from batchrunner.output import writers
from batchrunner.output.resume import load_resume_state
from batchrunner.output.writers import open_writer
from batchrunner.results import RESULT_FIELDS, RESULT_SCHEMA, Result

FORMATS = ["jsonl", "parquet"]


def result(id: str, model: str = "m", status: str = "ok", row: int | None = None) -> Result:
    return Result(
        id=id,
        model=model,
        status=status,
        row=row if row is not None else int(id) if id.isdigit() else None,
        output=f"answer {id}" if status == "ok" else None,
        attempts=1,
        error_type="server_error" if status == "error" else None,
    )


def full_result() -> Result:
    return Result(
        id="q-1",
        model="google/gemini-2.5-flash",
        status="ok",
        row=7,
        output='Bonjour ✓ "quoted"\nnext line',
        reasoning="thinking…",
        finish_reason="stop",
        prompt_tokens=11,
        completion_tokens=22,
        reasoning_tokens=5,
        cached_tokens=3,
        total_tokens=33,
        cost_usd=0.000123,
        latency_s=1.25,
        ttft_s=0.5,
        ttfo_s=0.75,
        itl_s=0.01,
        output_tps=42.5,
        attempts=2,
        http_status=200,
        error_type=None,
        error_message=None,
        response_id="resp-1",
        traffic_type="ON_DEMAND",
        started_at=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        finished_at=datetime(2025, 1, 2, 3, 4, 6, 654321, tzinfo=UTC),
    )


def read_rows(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]
    rows: list[dict[str, object]] = pq.read_table(path).to_pylist()
    return rows


def ids(path: Path) -> list[str]:
    return [str(row["id"]) for row in read_rows(path)]


def test_jsonl_round_trips_every_column(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    sparse = Result(id="q-2", model="m", status="error", error_message="boom")
    writer.write([full_result(), sparse])
    writer.close()

    first, second = read_rows(out)
    assert list(first) == list(RESULT_FIELDS)
    expected = full_result().to_dict()
    expected["started_at"] = "2025-01-02T03:04:05.123456Z"
    expected["finished_at"] = "2025-01-02T03:04:06.654321Z"
    assert first == expected
    assert second["output"] is None
    assert second["error_message"] == "boom"
    assert second["started_at"] is None


def test_parquet_round_trips_every_column_with_result_schema(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out)
    writer.write([full_result(), Result(id="q-2", model="m", status="error")])
    writer.close()

    table = pq.read_table(out)
    assert table.schema.equals(RESULT_SCHEMA)
    first, second = table.to_pylist()
    assert first == full_result().to_dict()
    assert first["started_at"].tzinfo is not None
    assert second["output"] is None


def test_lone_surrogate_in_model_text_does_not_crash_the_writer(tmp_path: Path) -> None:
    for name in ("out.jsonl", "out.parquet"):
        out = tmp_path / name
        writer = open_writer(out)
        bad = Result(id="1", model="m", status="ok", output="half \ud83d pair")
        writer.write([bad])
        writer.close()
        assert read_rows(out)[0]["output"] == "half ? pair"


def test_jsonl_torn_last_line_is_cut_on_reopen_and_next_row_is_intact(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    writer.write([result("1"), result("2")])
    writer.checkpoint()
    writer.abort()
    with out.open("ab") as f:
        f.write(b'{"id":"3","model":"m","sta')  # killed mid-line

    state = load_resume_state(out)
    assert state.rows_found == 2
    assert state.torn == 1

    writer = open_writer(out)
    writer.write([result("3")])
    writer.close()
    assert ids(out) == ["1", "2", "3"]


def test_jsonl_unterminated_but_parseable_last_line_is_resent_not_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    line = orjson.dumps(result("1").to_dict())
    out.write_bytes(line)  # complete JSON, but its newline never reached the disk

    assert not load_resume_state(out).is_done("1", "m", retry_failed=False)
    writer = open_writer(out)
    writer.write([result("1")])
    writer.close()
    assert ids(out) == ["1"]


KILLED_RUN = """
import os, signal, sys
from batchrunner.results import Result
from batchrunner.output.writers import open_writer

writer = open_writer(sys.argv[1], part_rows=4)
writer.write([Result(id=str(i), model="m", status="ok", row=i) for i in range(6)])
writer.checkpoint()
writer.write([Result(id=str(i), model="m", status="ok", row=i) for i in (6,)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_killed(out: Path) -> None:
    """Write in a child process that is then killed with SIGKILL: no close, no abort."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(out)], env=env, capture_output=True, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_kill_9_then_resume_ends_with_each_row_exactly_once(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    run_killed(out)  # JSONL: rows 0-6 on disk; Parquet: a part of 0-3, a journal of 4-6
    if fmt == "parquet":
        parts = out.with_name(out.name + ".parts")
        (parts / "part-000099.parquet.tmp").write_bytes(b"PAR1 half")
        (parts / "part-000050.parquet").write_bytes(b"not parquet at all")

    state = load_resume_state(out)
    committed = {str(i) for i in range(7)}  # every row write() returned from
    assert {i for i in map(str, range(10)) if state.is_done(i, "m", retry_failed=False)} == (
        committed
    )
    if fmt == "parquet":
        assert state.torn == 2
        assert not (out.with_name(out.name + ".parts") / "part-000099.parquet.tmp").exists()

    writer = open_writer(out, part_rows=4)
    todo = [str(i) for i in range(10) if not state.is_done(str(i), "m", retry_failed=False)]
    writer.write([result(i) for i in todo])
    writer.close()
    assert sorted(ids(out), key=int) == [str(i) for i in range(10)]
    assert not out.with_name(out.name + ".parts").exists()


ENDLESS_RUN = """
import os, sys
from batchrunner.results import Result
from batchrunner.output.writers import open_writer

writer = open_writer(sys.argv[1], part_rows=7)  # parts and journals alternate; no checkpoint
for n in range(1_000_000):
    rows = [Result(id=str(3 * n + k), model=m, status="ok") for k in range(3) for m in "ab"]
    writer.write(rows)
    os.write(1, b"%d\\n" % n)  # reported only once write() has returned
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_kill_9_at_any_moment_loses_no_row_that_write_returned_from(
    tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", ENDLESS_RUN, str(out)], env=env, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        reports = [child.stdout.readline() for _ in range(60)]
        assert all(reports), "the writing child died on its own"
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: a write, a commit or a rename
        reports += child.stdout.read().split()  # reported before the kill, not read yet
    finally:
        child.kill()
        child.stdout.close()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    returned = int(reports[-1])  # batches 0..returned are in the OS for sure

    state = load_resume_state(out)
    written = {(str(i), m) for i in range(3 * (returned + 1)) for m in "ab"}
    assert all(state.is_done(i, m, retry_failed=False) for i, m in written)
    assert state.rows_found <= len(written) + 6  # at most the batch in flight besides

    writer = open_writer(out, part_rows=7)
    wanted = {(str(i), m) for i in range(3 * (returned + 10)) for m in "ab"}
    writer.write(
        [result(i, m) for i, m in sorted(wanted) if not state.is_done(i, m, retry_failed=False)]
    )
    writer.close()
    keys = [(str(r["id"]), str(r["model"])) for r in read_rows(out)]
    assert sorted(keys) == sorted(wanted)  # each (id, model) exactly once
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out.{fmt}"]


def test_parquet_journal_with_a_torn_last_line_keeps_every_whole_row(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.parquet.parts" / "journal-000000.jsonl"
    writer = open_writer(out, part_rows=100)
    writer.write([full_result(), result("2", status="error")])
    saved = journal.read_bytes()
    writer.abort()
    # As a SIGKILL mid-write would leave it: no part yet, the journal cut inside a line.
    (tmp_path / "out.parquet.parts" / "part-000000.parquet").unlink()
    journal.write_bytes(saved + b'{"id":"3","model":"m","sta')

    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (2, 1)
    assert state.is_done("q-1", "google/gemini-2.5-flash", retry_failed=True)
    assert not state.is_done("2", "m", retry_failed=True)
    assert not state.is_done("3", "m", retry_failed=False)

    writer = open_writer(out, part_rows=100)  # the journal becomes part 0
    assert sorted(p.name for p in journal.parent.iterdir()) == ["part-000000.parquet"]
    writer.write([result("2"), result("3")])
    writer.close()
    rows = {str(r["id"]): r for r in read_rows(out)}
    assert rows["q-1"] == full_result().to_dict()  # every column survives the JSON round trip
    assert sorted((i, r["status"]) for i, r in rows.items()) == [
        ("2", "ok"),
        ("3", "ok"),
        ("q-1", "ok"),
    ]


@pytest.mark.parametrize(
    "foreign",
    [
        b'{"model":"m","status":"ok"}\n',
        b'{"id":null,"model":"m","status":"ok"}\n',
        b'{"id":3,"model":"m","status":"ok"}\n',
        b"[1, 2]\n",
    ],
    ids=["no id", "null id", "numeric id", "not an object"],
)
def test_parquet_journal_line_this_version_did_not_write_is_dropped_alone(
    tmp_path: Path, foreign: bytes
) -> None:
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.parquet.parts" / "journal-000000.jsonl"
    writer = open_writer(out, part_rows=100)
    writer.write([full_result(), result("2")])
    saved = journal.read_bytes()
    writer.abort()
    (tmp_path / "out.parquet.parts" / "part-000000.parquet").unlink()
    journal.write_bytes(saved + foreign)

    assert load_resume_state(out).torn == 1
    writer = open_writer(out, part_rows=100)
    writer.close()
    rows = {str(r["id"]): r for r in read_rows(out)}
    assert sorted(rows) == ["2", "q-1"]
    assert rows["q-1"] == full_result().to_dict()


def test_parquet_journal_line_with_a_column_this_version_lacks_keeps_its_row(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.parquet.parts" / "journal-000000.jsonl"
    writer = open_writer(out, part_rows=100)
    writer.write([result("1")])
    saved = journal.read_bytes()
    writer.abort()
    (tmp_path / "out.parquet.parts" / "part-000000.parquet").unlink()
    journal.write_bytes(saved + b'{"id":"2","model":"m","status":"ok","colour":"blue"}\n')

    writer = open_writer(out, part_rows=100)
    writer.close()
    assert sorted(ids(out)) == ["1", "2"]
    assert pq.read_table(out).schema.equals(RESULT_SCHEMA)


def test_parquet_journal_left_beside_its_committed_part_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    writer = open_writer(out, part_rows=3)
    writer.write([result("0"), result("1")])
    saved = (parts / "journal-000000.jsonl").read_bytes()
    writer.write([result("2")])  # fills part 0, which replaces the journal
    writer.abort()
    # Killed after the part was renamed in, before the journal was removed:
    (parts / "journal-000000.jsonl").write_bytes(saved)

    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (3, 0)
    assert not (parts / "journal-000000.jsonl").exists()
    writer = open_writer(out, part_rows=3)
    writer.write([result("3")])
    writer.close()
    assert sorted(ids(out), key=int) == ["0", "1", "2", "3"]


def test_parquet_journal_left_by_a_killed_compaction_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    writer = open_writer(out, part_rows=3)
    writer.write([result("0"), result("1"), result("2"), result("3")])
    writer.checkpoint()
    saved = {p.name: p.read_bytes() for p in parts.iterdir()}
    assert sorted(saved) == ["journal-000001.jsonl", "part-000000.parquet"]
    writer.close()  # row 3 goes from memory into OUTPUT, which records part 1 as merged
    # Killed after the compacted file was renamed in, before the parts were removed:
    parts.mkdir()
    for name, data in saved.items():
        (parts / name).write_bytes(data)

    assert load_resume_state(out).rows_found == 4
    writer = open_writer(out, part_rows=3)
    writer.write([result("4")])
    writer.close()
    assert sorted(ids(out), key=int) == ["0", "1", "2", "3", "4"]


def test_parquet_checkpoint_syncs_the_journal_without_committing_a_part(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=1_000)
    for i in range(5):
        writer.write([result(str(i))])
        writer.checkpoint()
    names = [p.name for p in (tmp_path / "out.parquet.parts").iterdir()]
    assert names == ["journal-000000.jsonl"]
    assert load_resume_state(out).rows_found == 5
    writer.close()
    assert ids(out) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_resent_failed_row_leaves_only_its_last_result(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out)
    writer.write([result("1"), result("2", status="error"), result("3")])
    writer.close()

    state = load_resume_state(out)
    assert state.is_done("2", "m", retry_failed=False)
    assert not state.is_done("2", "m", retry_failed=True)
    writer = open_writer(out)
    writer.write([result("2", status="ok")])
    writer.close()

    rows = read_rows(out)
    assert sorted((r["id"], r["status"]) for r in rows) == [
        ("1", "ok"),
        ("2", "ok"),
        ("3", "ok"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_close_among_many_rows_drops_only_superseded_ones(tmp_path: Path, fmt: str) -> None:
    # Enough keys that the repeat filter flags some that occur once: none of those may go.
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=5_000)
    writer.write([result(str(i), model=f"m{i % 3}") for i in range(30_000)])
    writer.close()
    assert len(read_rows(out)) == 30_000

    writer = open_writer(out, part_rows=5_000)
    writer.write([result("7", model="m1", status="error"), result("29999", model="m2")])
    writer.close()
    rows = read_rows(out)
    assert len(rows) == 30_000
    assert [r["status"] for r in rows if (r["id"], r["model"]) == ("7", "m1")] == ["error"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_distinct_rows_into_an_empty_output_finish_without_the_repeat_search(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=3)
    writer.write([result(str(i), model=f"m{i % 2}") for i in range(10)])

    def no_search(*args: object) -> dict[int, int]:
        raise AssertionError("searched for repeats in rows that are distinct")

    monkeypatch.setattr("batchrunner.output.compaction._last_of_repeats", no_search)
    writer.close(distinct=True)
    assert sorted(map(int, ids(out))) == list(range(10))
    assert not (tmp_path / f"out.{fmt}.parts").exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("earlier", ["finished output", "parts of a killed run"])
def test_distinct_is_not_trusted_for_rows_already_in_output(
    tmp_path: Path, fmt: str, earlier: str
) -> None:
    # A resumed run resends a failed row: its rows are distinct among themselves, not with
    # what OUTPUT already holds, so the earlier result must still be superseded.
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=2)
    writer.write([result("1"), result("2", status="error"), result("3")])
    if earlier == "finished output":
        writer.close(distinct=True)
    else:
        writer.abort()
    writer = open_writer(out, part_rows=2)
    writer.write([result("2", status="ok"), result("4")])
    writer.close(distinct=True)
    rows = read_rows(out)
    assert sorted((r["id"], r["status"]) for r in rows) == [
        ("1", "ok"),
        ("2", "ok"),
        ("3", "ok"),
        ("4", "ok"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ordered_close_sorts_by_row_then_model(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=2)
    writer.write([result("3", "b"), result("1", "b"), result("3", "a")])
    writer.write([result("0", "a"), result("x", "a", row=None), result("1", "a")])
    writer.close(ordered=True)
    order = [(r["row"], r["model"]) for r in read_rows(out)]
    assert order == [(0, "a"), (1, "a"), (1, "b"), (3, "a"), (3, "b"), (None, "a")]


def test_jsonl_close_without_duplicates_leaves_the_file_in_place(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    writer.write([result("1"), result("2")])
    inode = out.stat().st_ino
    writer.close()
    assert out.stat().st_ino == inode
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_parquet_close_compacts_parts_into_one_file_and_removes_parts(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=10)
    writer.write([result(str(i)) for i in range(35)])
    writer.checkpoint()
    assert sorted(p.name for p in (tmp_path / "out.parquet.parts").iterdir()) == [
        "journal-000003.jsonl",  # rows 30-34, waiting for a part of their own
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
    ]
    writer.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    assert pq.ParquetFile(out).metadata.num_rows == 35
    assert pq.ParquetFile(out).metadata.num_row_groups == 1


def test_long_answers_close_a_row_group_by_size_not_only_by_row_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrunner.output import compaction

    # Bounded row groups keep the memory of finishing a run flat whatever the answers hold.
    monkeypatch.setattr(compaction, "ROW_GROUP_BYTES", 64 * 1024)
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=10)
    rows = [result(str(i)) for i in range(40)]
    for row in rows:
        row.output = f"{row.id}:" + "x" * 8000
    writer.write(rows)
    writer.close()

    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 40
    assert meta.num_row_groups > 1
    assert ids(out) == [str(i) for i in range(40)]


def test_an_answer_longer_than_a_decoding_block_survives_its_part(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=100)
    long_answer = "très long " * 200_000  # 2 MB of JSON: decoded as one block
    rows = [result(str(i)) for i in range(150)]
    rows[42].output = long_answer
    writer.write(rows)  # the first 100 rows become a part
    writer.close()
    got = {str(r["id"]): r["output"] for r in read_rows(out)}
    assert len(got) == 150
    assert got["42"] == long_answer
    assert got["43"] == "answer 43"


def test_a_part_made_of_writes_large_and_small_keeps_every_row_once(tmp_path: Path) -> None:
    # A part is decoded from its writes in blocks: tiny writes are joined, a write over
    # a few hundred KB is cut at line ends. Neither may drop, split or repeat a row.
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=1_000)
    sizes = [1, 3, 700, 1, 900, 2, 400, 1, 1, 500]  # 2,509 rows: two parts and a remainder
    written: dict[str, str] = {}
    start = 0
    for size in sizes:
        rows = [result(str(i)) for i in range(start, start + size)]
        for row in rows:
            row.output = f"{row.id}:" + "ä" * (1_000 if size > 100 else 3)
            written[row.id] = row.output
        writer.write(rows)
        start += size
    writer.close()
    got = read_rows(out)
    assert len(got) == len(written) == 2_509
    assert {str(r["id"]): r["output"] for r in got} == written


def test_a_row_arrow_cannot_hold_is_left_out_of_its_part_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=3)
    huge = result("2")
    huge.prompt_tokens = 2**63  # valid JSON, beyond Parquet's int64
    writer.write([result("1"), huge, result("3"), result("4")])
    writer.close()
    assert sorted(ids(out)) == ["1", "3", "4"]
    assert "1 rows of part 0 could not be decoded" in caplog.text
    assert not load_resume_state(out).is_done("2", "m", retry_failed=False)


def test_parquet_output_keeps_dictionaries_for_repeating_columns_only(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=100)
    writer.write([full_result()] + [result(str(i)) for i in range(250)])
    writer.close()
    metadata = pq.ParquetFile(out).metadata
    dictionary = {
        metadata.schema.column(c).name
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
        if any("DICTIONARY" in e for e in metadata.row_group(g).column(c).encodings)
    }
    assert dictionary == {"model", "status", "finish_reason", "error_type", "traffic_type"}


def test_parquet_resume_from_compacted_file_plus_new_parts(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=3)
    writer.write([result(str(i)) for i in range(5)])
    writer.close()

    writer = open_writer(out, part_rows=3)
    writer.write([result(str(i)) for i in range(5, 9)])
    writer.abort()  # a dirty stop leaves the compacted file plus parts
    state = load_resume_state(out)
    assert state.rows_found == 9

    writer = open_writer(out, part_rows=3)
    writer.write([result("9")])
    writer.close()
    assert sorted(ids(out), key=int) == [str(i) for i in range(10)]


def test_parquet_parts_left_by_a_killed_compaction_are_not_counted_twice(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=2)
    writer.write([result(str(i)) for i in range(4)])
    writer.checkpoint()
    parts = tmp_path / "out.parquet.parts"
    saved = {p.name: p.read_bytes() for p in parts.iterdir()}
    writer.close()
    # Killed after the compacted file was renamed in, before the parts were removed:
    parts.mkdir()
    for name, data in saved.items():
        (parts / name).write_bytes(data)

    assert load_resume_state(out).rows_found == 4
    writer = open_writer(out, part_rows=2)
    writer.write([result("4")])
    writer.close()
    assert sorted(ids(out), key=int) == ["0", "1", "2", "3", "4"]


def test_empty_parquet_run_still_produces_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    open_writer(out).close()
    assert pq.read_table(out).schema.equals(RESULT_SCHEMA)
    assert pq.read_table(out).num_rows == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_restart_wipes_earlier_output(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=1)
    writer.write([result("1"), result("2")])
    writer.abort()

    writer = open_writer(out, restart=True)
    assert load_resume_state(out).rows_found == 0
    writer.write([result("3")])
    writer.close()
    assert ids(out) == ["3"]


def test_unsupported_suffix_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unsupported output format \.csv .*use \.jsonl or"):
        open_writer(tmp_path / "out.csv")


def test_existing_file_that_is_not_batchrunner_output_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    out.write_bytes(b'{"prompt": "hello"}\n')
    with pytest.raises(ConfigError, match="does not look like batchrunner output"):
        open_writer(out)
    assert out.read_bytes() == b'{"prompt": "hello"}\n'


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_under_a_regular_file_is_a_one_line_output_error(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError) as caught:
        open_writer(tmp_path / "file" / f"out.{fmt}")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "file") in message
    assert "Not a directory" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_an_output_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            open_writer(locked / "out.parquet")
    finally:
        locked.chmod(0o700)


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    """``os.write`` accepts ``allowed`` more bytes, then fails as a full disk does."""
    real_write: Callable[[int, bytes], int] = os.write
    budget = [allowed]

    def write(fd: int, data: bytes) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data)[: budget[0]])
        budget[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_disk_full_during_jsonl_write_keeps_earlier_rows_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    writer.write([result("1"), result("2")])
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 30)  # half a line fits, then the disk is full
        with pytest.raises(OutputError) as caught:
            writer.write([result("3")])
        with pytest.raises(OutputError):
            writer.write([result("4")])
    assert str(caught.value) == f"cannot write {out}: No space left on device"
    writer.abort()

    assert out.read_bytes().endswith(b"\n")  # the half line was cut back off
    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (2, 0)
    writer = open_writer(out)
    writer.write([result("3"), result("4")])
    writer.close()
    assert ids(out) == ["1", "2", "3", "4"]


def test_disk_full_during_parquet_commit_leaves_no_half_part_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=2)
    writer.write([result("1"), result("2")])
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 100)
        with pytest.raises(OutputError, match="No space left on device"):
            writer.write([result("3"), result("4")])
        writer.abort()  # still full: logs, keeps nothing half-written, does not raise

    parts = sorted(p.name for p in (tmp_path / "out.parquet.parts").iterdir())
    assert parts == ["part-000000.parquet"]
    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (2, 0)
    writer = open_writer(out)
    writer.write([result("3"), result("4")])
    writer.close()
    assert ids(out) == ["1", "2", "3", "4"]


def test_disk_full_during_parquet_journal_write_keeps_earlier_rows_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.parquet.parts" / "journal-000000.jsonl"
    writer = open_writer(out, part_rows=100)
    writer.write([result("1"), result("2")])
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 30)  # half a line fits, then the disk is full
        with pytest.raises(OutputError, match=f"cannot write {journal}: No space left"):
            writer.write([result("3")])
        writer.abort()  # cannot commit a part either; the journal keeps rows 1 and 2

    assert journal.read_bytes().endswith(b"\n")  # the half line was cut back off
    state = load_resume_state(out)
    assert (state.rows_found, state.torn) == (2, 0)
    writer = open_writer(out)
    writer.write([result("3")])
    writer.close()
    assert ids(out) == ["1", "2", "3"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_while_finishing_leaves_output_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    writer = open_writer(out, part_rows=2)
    writer.write([result("1", status="error"), result("2"), result("1")])  # forces a rewrite
    writer.checkpoint()
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 50)
        with pytest.raises(OutputError, match=f"cannot finish {out}: No space left on device"):
            writer.close()

    assert not (tmp_path / f"out.{fmt}.tmp").exists()
    assert not (tmp_path / f"out.{fmt}.lock").exists()
    state = load_resume_state(out)
    assert state.is_done("1", "m", retry_failed=True)
    assert state.is_done("2", "m", retry_failed=True)
    open_writer(out).close()  # the rerun has nothing to send and just finishes
    assert sorted((r["id"], r["status"]) for r in read_rows(out)) == [("1", "ok"), ("2", "ok")]


def test_abort_saves_buffered_parquet_rows_without_compacting(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out, part_rows=100)
    writer.write([result("1")])
    writer.abort()
    assert not out.exists()
    assert load_resume_state(out).is_done("1", "m", retry_failed=False)


def test_second_writer_on_the_same_output_is_refused_until_the_first_finishes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    first = open_writer(out)
    with pytest.raises(OutputError, match="being written by another batchrunner run"):
        open_writer(out)
    first.close()
    assert not (tmp_path / "out.parquet.lock").exists()
    open_writer(out).abort()


def test_write_after_close_is_refused(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "out.jsonl")
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        writer.write([result("1")])


def test_public_surface_is_the_protocol_and_open_writer() -> None:
    assert writers.__all__ == ["ResultWriter", "open_writer"]
