"""A run does not load pandas: pyarrow would, on its first Python-to-Arrow conversion.

Where pandas is installed, that import costs a run about 50 MB of memory and a quarter of
a second, for nothing it uses. Each check runs in a fresh interpreter in which importing
pandas ends the process, so it holds whether or not pandas is installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pyarrow.parquet as pq

_FORBID_PANDAS = """
import sys

class _Forbid:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise SystemExit("pandas was imported")

sys.meta_path.insert(0, _Forbid())
"""


def run_without_pandas(code: str) -> None:
    script = _FORBID_PANDAS + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def output_ids(path: Path) -> list[str]:
    ids: list[str] = pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


def test_writing_parquet_parts_and_finishing(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    run_without_pandas(
        f"""
        from batchrunner.results import Result
        from batchrunner.output.writers import open_writer

        writer = open_writer({str(out)!r}, part_rows=10)
        for i in range(25):
            writer.write([Result(id=str(i), model="m", status="ok", output="x", attempts=1)])
        writer.close(distinct=True)
        """
    )
    assert sorted(output_ids(out), key=int) == [str(i) for i in range(25)]


def test_finishing_a_resumed_output_that_holds_a_row_twice(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    run_without_pandas(
        f"""
        from batchrunner.results import Result
        from batchrunner.output.writers import open_writer

        writer = open_writer({str(out)!r}, part_rows=10)
        writer.write([Result(id=str(i), model="m", status="error") for i in range(15)])
        writer.close()
        writer = open_writer({str(out)!r}, part_rows=10)  # the resumed run resends row 3
        writer.write([Result(id="3", model="m", status="ok", output="x", attempts=1)])
        writer.close()
        """
    )
    table = pq.read_table(out, columns=["id", "status"])
    assert sorted(output_ids(out), key=int) == [str(i) for i in range(15)]
    assert table.column("status").to_pylist().count("ok") == 1


def test_percentiles_past_the_exact_store(tmp_path: Path) -> None:
    run_without_pandas(
        """
        from batchrunner.stats.quantiles import EXACT_MAX, Quantiles

        q = Quantiles(float(i % 1000) / 1000 for i in range(EXACT_MAX + 10_000))
        assert not q.exact
        assert 0.49 < q.quantiles([0.5])[0] < 0.51 and 0.49 < q.mean() < 0.51
        """
    )


def test_sorting_a_jsonl_output_by_row(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run_without_pandas(
        f"""
        from batchrunner.results import Result
        from batchrunner.output.writers import open_writer

        writer = open_writer({str(out)!r})
        for i in reversed(range(3000)):
            for model in ("b", "a"):
                writer.write([Result(id=str(i), model=model, status="ok", row=i, attempts=1)])
        writer.write([Result(id="x", model="a", status="ok", attempts=1)])  # no position
        writer.close(ordered=True)
        """
    )
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    expected = [(str(i), model) for i in range(3000) for model in ("a", "b")] + [("x", "a")]
    assert [(r["id"], r["model"]) for r in rows] == expected
