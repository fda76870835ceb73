from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.config import InputFields
from batchrunner.errors import InputFileError
from batchrunner.input.readers import BadRow, InputRow, read_rows


def test_jsonl_rows_stream_in_order_with_positional_ids_for_rows_without_id(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n\n{"prompt": "y"}\n{"id": 7, "prompt": "z"}\n')
    rows = list(read_rows(path))
    assert [r.id for r in rows] == ["a", "row-1", "7"]
    assert [r.index for r in rows] == [0, 1, 2]
    assert all(isinstance(r, InputRow) for r in rows)


def test_generated_ids_are_stable_across_reads(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"prompt": "p{i}"}}\n' for i in range(5)))
    assert [r.id for r in read_rows(path)] == [r.id for r in read_rows(path)]


def test_bad_lines_become_bad_rows_naming_the_line_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "ok1", "prompt": "x"}\n'
        b"{not json\n"
        b"[1, 2]\n"
        b'{"id": "bad\xff", "prompt": "x"}\n'
        b'{"id": true, "prompt": "x"}\n'
        b'{"id": "ok2", "prompt": "x"}\n'
    )
    rows = list(read_rows(path))
    assert [r.id for r in rows if isinstance(r, InputRow)] == ["ok1", "ok2"]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert [b.where for b in bad] == [
        "in.jsonl line 2",
        "in.jsonl line 3",
        "in.jsonl line 4",
        "in.jsonl line 5",
    ]
    assert "invalid JSON" in bad[0].problem
    assert "expected a JSON object" in bad[1].problem
    assert "UTF-8" in bad[2].problem
    assert "'id'" in bad[3].problem


def test_gzipped_jsonl_is_read(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"id": "g", "prompt": "x"}\n')
    assert [r.id for r in read_rows(path)] == ["g"]


def test_parquet_is_read_by_batches_with_custom_field_names(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    n = 10_000
    pq.write_table(
        pa.table({"qid": [f"q{i}" for i in range(n)], "question": ["hi"] * n}),
        path,
        row_group_size=1000,
    )
    rows = list(read_rows(path, InputFields(id="qid", prompt="question")))
    assert len(rows) == n
    assert rows[-1].id == f"q{n - 1}" and rows[-1].index == n - 1
    assert rows[5].where == "in.parquet row 5"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file"),
        ("in.csv", "a,b\n", "unsupported input format"),
        ("broken.parquet", "not parquet", "not a readable Parquet file"),
    ],
)
def test_unusable_input_file_raises_one_clear_error(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=message) as info:
        list(read_rows(path))
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_a_row_nested_300_deep_is_read_and_sent_whole(tmp_path: Path) -> None:
    from batchrunner.config import RequestDefaults
    from batchrunner.input.bodies import build_requests

    deep = 300
    params = {"deep": json.loads("[" * deep + "1" + "]" * deep)}
    path = tmp_path / "in.jsonl"
    # orjson encodes at most 254 levels: this row's request body needs the standard library
    path.write_text(json.dumps({"id": "nested-300", "prompt": "hi", "params": params}) + "\n")
    rows = list(read_rows(path))
    assert all(isinstance(r, InputRow) for r in rows)
    assert [r.id for r in rows] == ["nested-300"]
    first = rows[0]
    assert isinstance(first, InputRow)
    specs = build_requests(
        first,
        fields=InputFields(),
        models=("google/gemini-2.5-flash",),
        default_model="google/gemini-2.5-flash",
        defaults=RequestDefaults(),
    )
    assert json.loads(specs[0].body)["deep"] == params["deep"]


def test_an_unparseable_deep_line_keeps_its_leading_id_else_is_named_by_line(
    tmp_path: Path,
) -> None:
    # past both orjson's (1024) and the standard library's (the recursion limit) depth
    too_deep = "[" * 5000 + "]" * 5000
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "deep-1", "prompt": "x", "meta": ' + too_deep + "}\n"
        '{"prompt": "x", "meta": ' + too_deep + "}\n"
    )
    rows = list(read_rows(path))
    assert all(isinstance(r, BadRow) for r in rows)
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert bad[0].id == "deep-1"
    assert "nested deeper than the parser's limit" in bad[0].problem
    assert bad[1].id == "row-1" and bad[1].where == "in.jsonl line 2"
