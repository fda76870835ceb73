"""Reading result files and rendering the report in every format."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import InputFileError
from batchrunner.output.read import load_results
from batchrunner.report.files import stats_from_files
from batchrunner.report.render import FORMATS, render, render_summary
from batchrunner.results import RESULT_SCHEMA, Result
from batchrunner.stats.run_stats import StatsSnapshot

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GEMINI, OSS = "google/gemini-2.5-flash", "openai/gpt-oss-120b-maas"


def make_results(n: int = 60, seed: int = 1) -> list[Result]:
    """Both models answer every id; gpt-oss fails every 7th id."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        for model, scale, price in ((GEMINI, 1.0, 2e-4), (OSS, 1.8, 5e-5)):
            start = T0 + timedelta(seconds=i * 0.5)
            if model == OSS and i % 7 == 0:
                rows.append(
                    Result(
                        id=f"q{i}",
                        model=model,
                        status="error",
                        attempts=3,
                        http_status=429,
                        error_type="rate_limited",
                        error_message="quota",
                        started_at=start,
                        finished_at=start + timedelta(seconds=1),
                    )
                )
                continue
            latency = scale * rng.lognormvariate(0, 0.4)
            reasoning = rng.randint(0, 300)
            rows.append(
                Result(
                    id=f"q{i}",
                    model=model,
                    status="ok",
                    row=i,
                    output=f"answer {i}",
                    finish_reason="stop",
                    prompt_tokens=rng.randint(20, 200),
                    completion_tokens=reasoning + rng.randint(5, 80),
                    reasoning_tokens=reasoning,
                    cached_tokens=0,
                    total_tokens=None,
                    cost_usd=price * rng.uniform(0.5, 1.5),
                    latency_s=latency,
                    ttft_s=latency * 0.3,
                    ttfo_s=latency * 0.6,
                    itl_s=0.01,
                    output_tps=100.0,
                    attempts=1,
                    http_status=200,
                    started_at=start,
                    finished_at=start + timedelta(seconds=latency),
                )
            )
    return rows


def write_jsonl(path: Path, rows: list[Result]) -> None:
    with path.open("wb") as f:
        for r in rows:
            f.write(orjson.dumps(r.to_dict()) + b"\n")


def write_parquet(path: Path, rows: list[Result]) -> None:
    table = pa.Table.from_pylist([r.to_dict() for r in rows], schema=RESULT_SCHEMA)
    pq.write_table(table, path)


def test_jsonl_rows_read_back_equal(tmp_path: Path) -> None:
    rows = make_results(10)
    path = tmp_path / "out.jsonl"
    write_jsonl(path, rows)
    assert list(load_results([path])) == rows


def test_jsonl_torn_last_line_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = make_results(10)
    path = tmp_path / "out.jsonl"
    write_jsonl(path, rows)
    with path.open("ab") as f:
        f.write(orjson.dumps(rows[0].to_dict())[:37])  # a write cut short by a crash
    assert list(load_results([path])) == rows
    assert "torn" in caplog.text


def test_jsonl_corrupt_line_in_the_middle_raises(tmp_path: Path) -> None:
    rows = make_results(3)
    path = tmp_path / "out.jsonl"
    write_jsonl(path, rows[:2])
    with path.open("ab") as f:
        f.write(b'{"id": "broken\n')
    write_jsonl(tmp_path / "rest.jsonl", rows[2:])
    path.write_bytes(path.read_bytes() + (tmp_path / "rest.jsonl").read_bytes())
    with pytest.raises(InputFileError, match=r"out\.jsonl:3"):
        list(load_results([path]))


def test_parquet_written_with_result_schema_reads_back(tmp_path: Path) -> None:
    rows = make_results(10)
    path = tmp_path / "out.parquet"
    write_parquet(path, rows)
    assert list(load_results([path])) == rows


def test_unknown_or_missing_file_raises_input_file_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        list(load_results([tmp_path / "absent.jsonl"]))
    (tmp_path / "out.csv").write_text("id,model\n")
    with pytest.raises(InputFileError):
        list(load_results([tmp_path / "out.csv"]))


def test_jsonl_and_parquet_give_the_same_statistics(tmp_path: Path) -> None:
    rows = make_results(40)
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_parquet(tmp_path / "a.parquet", rows)
    from_jsonl = stats_from_files([tmp_path / "a.jsonl"])
    from_parquet = stats_from_files([tmp_path / "a.parquet"])
    assert from_jsonl == from_parquet


@pytest.fixture
def snapshot(tmp_path: Path) -> StatsSnapshot:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, make_results())
    return stats_from_files([path])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_each_model(snapshot: StatsSnapshot, fmt: str) -> None:
    text = render(snapshot, fmt)
    assert GEMINI in text
    assert OSS in text


def test_unknown_format_is_refused(snapshot: StatsSnapshot) -> None:
    with pytest.raises(ValueError, match="format"):
        render(snapshot, "pdf")


def test_json_report_round_trips_the_numbers(snapshot: StatsSnapshot) -> None:
    data = json.loads(render(snapshot, "json"))
    by_model = {m["model"]: m for m in data["models"]}
    for stats in snapshot.models:
        got = by_model[stats.model]
        assert got["rows"] == stats.rows
        assert got["cost_usd"] == stats.cost_usd
        assert got["latency"]["p99"] == stats.latency.p99
        assert got["errors_by_type"] == dict(stats.errors_by_type)
    assert data["comparison"]["common_ids"] == snapshot.comparison.common_ids  # type: ignore[union-attr]


def test_text_report_shows_errors_tokens_cost_and_latency(snapshot: StatsSnapshot) -> None:
    text = render(snapshot, "text")
    oss = snapshot.model(OSS)
    assert f"rate_limited {oss.errors_by_type['rate_limited']}" in text
    assert f"{snapshot.model(GEMINI).reasoning_tokens:,}" in text
    for label in ("latency p50", "latency p99", "TTFT p90", "cost per 1k rows", "retries"):
        assert label in text


def test_comparison_counts_only_ids_both_models_answered_ok(tmp_path: Path) -> None:
    rows = make_results(70)
    path = tmp_path / "out.parquet"
    write_parquet(path, rows)
    snapshot = stats_from_files([path])
    ok = {(r.id, r.model): r for r in rows if r.status == "ok"}
    common = sorted({i for i, _ in ok if (i, GEMINI) in ok and (i, OSS) in ok})
    comparison = snapshot.comparison
    assert comparison is not None
    assert comparison.common_ids == len(common)
    gemini, oss = comparison.entries
    assert gemini.cost_usd == pytest.approx(sum(ok[i, GEMINI].cost_usd or 0 for i in common))
    assert oss.cost_ratio == pytest.approx(
        sum(ok[i, OSS].cost_usd or 0 for i in common)
        / sum(ok[i, GEMINI].cost_usd or 0 for i in common)
    )
    assert comparison.winners["cost"] == OSS
    text = render(snapshot, "text")
    assert "Comparison" in text
    assert f"over the {len(common)} ids" in text


def test_single_model_report_has_no_comparison(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [r for r in make_results(20) if r.model == GEMINI])
    snapshot = stats_from_files([path])
    assert snapshot.comparison is None
    assert "Comparison" not in render(snapshot, "markdown")


def cells(text: str) -> dict[str, list[str]]:
    """Row label → cells of the first text table in ``text``."""
    table = text.split("\n\n")[0].splitlines()[4:]
    return {parts[0]: parts[1:] for parts in (re.split(r"\s{2,}", line) for line in table)}


def test_summary_is_short_and_drawn_like_the_text_report(snapshot: StatsSnapshot) -> None:
    summary = render_summary(snapshot)
    full = render(snapshot, "text")
    assert len(summary.splitlines()) < len(full.splitlines())
    short, long = cells(summary), cells(full)
    labels = (
        "rows",
        "ok",
        "error",
        "output tokens",
        "cost",
        "latency p50",
        "latency p90",
        "latency p99",
        "wall time",
        "rows/s",
    )
    for label in labels:
        assert short[label] == long[label], label


def test_html_page_fetches_nothing(snapshot: StatsSnapshot) -> None:
    page = render(snapshot, "html")
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "url(" not in page


def test_html_draws_one_cdf_line_per_model(snapshot: StatsSnapshot) -> None:
    page = render(snapshot, "html")
    cdf = re.search(r'data-chart="latency-cdf".*?</svg>', page, re.S)
    assert cdf is not None
    assert cdf.group(0).count("<polyline") == len(snapshot.models)


CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)

# Appended to a copy of the page under test: records what Chromium laid out for each chart.
PROBE = """<script>
for (const svg of document.querySelectorAll("svg.chart")) {
  const box = svg.getBoundingClientRect();
  let length = 0, area = 0;
  for (const line of svg.querySelectorAll("polyline")) length += line.getTotalLength();
  for (const bar of svg.querySelectorAll("rect.bar")) {
    const b = bar.getBBox(); area += b.width * b.height;
  }
  svg.setAttribute("data-probe", [box.width, box.height, length, area].join(","));
}
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_html_charts_render_in_headless_chromium(snapshot: StatsSnapshot, tmp_path: Path) -> None:
    page = render(snapshot, "html").replace("</body>", PROBE + "</body>")
    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1800",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    charts = dict(re.findall(r'<svg[^>]*data-chart="([\w-]+)"[^>]*data-probe="([^"]+)"', dom))
    assert set(charts) == {"latency-cdf", "ttft-cdf", "cost", "tokens"}
    for name, probe in charts.items():
        width, height, length, area = map(float, probe.split(","))
        assert width > 300, name
        assert height > 100, name
        if name.endswith("cdf"):
            assert length > 100, name  # the lines were laid out, not just present
        else:
            assert area > 100, name
    svgs = re.findall(r'<svg[^>]*data-chart="([\w-]+)".*?</svg>', dom, re.S)
    assert len(svgs) == 4
    latency_svg = re.search(r'data-chart="latency-cdf".*?</svg>', dom, re.S)
    assert latency_svg is not None
    assert latency_svg.group(0).count("<polyline") == len(snapshot.models)


@pytest.mark.parametrize("fmt", FORMATS)
def test_report_of_no_rows_renders(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    snapshot = stats_from_files([path])
    assert snapshot.models == ()
    assert render(snapshot, fmt)
    assert render_summary(snapshot)


def test_parquet_with_other_column_types_is_coerced(tmp_path: Path) -> None:
    path = tmp_path / "loose.parquet"
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "model": ["m", "m"],
            "status": ["ok", "error"],
            "latency_s": pa.array([1, 2], pa.int32()),
            "attempts": pa.array([1, None], pa.int64()),
            "started_at": pa.array([T0, T0], pa.timestamp("ms", tz="UTC")),
        }
    )
    pq.write_table(table, path)
    rows = list(load_results([path]))
    assert [(r.id, r.latency_s, r.attempts, r.started_at) for r in rows] == [
        ("1", 1.0, 1, T0),
        ("2", 2.0, 0, T0),
    ]


def test_gzipped_jsonl_is_read(tmp_path: Path) -> None:
    import gzip

    rows = make_results(5)
    plain = tmp_path / "out.jsonl"
    write_jsonl(plain, rows)
    packed = tmp_path / "out.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(load_results([packed])) == rows
