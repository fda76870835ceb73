"""The HTML report: one self-contained page with inline SVG charts and the report tables.

No script, stylesheet or font is fetched: the charts are SVG drawn here (latency CDF per
model, time-to-first-token CDF when streamed, cost per 1k rows, tokens per row by kind)
and the tables come from :func:`batchrunner.report.render.sections`, like the text report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from batchrunner.report.sections import (
    Section,
    answer_warnings,
    fmt_int,
    fmt_num,
    fmt_s,
    fmt_usd,
    sections,
)
from batchrunner.stats.run_stats import Distribution, ModelStats, StatsSnapshot

__all__ = ["render_html"]

# Okabe–Ito: distinguishable with the common forms of colour blindness.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
TOKEN_KINDS = (
    ("prompt", "#8DA0CB"),
    ("cached prompt", "#C6D0E8"),
    ("output", "#FC8D62"),
    ("reasoning", "#E5C494"),
)
_W, _H = 640, 300  # chart size in CSS pixels
_ML, _MR, _MT, _MB = 64, 28, 16, 44  # margins: left, right, top, bottom

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
margin:0;background:#f6f7f9}
main{max-width:1360px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6475;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#5b6475;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
figure{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:0;padding:12px}
figcaption{font-weight:600;margin-bottom:6px}
svg{width:100%;height:auto;display:block}
svg text{font:12px system-ui,sans-serif;fill:#3a4150}
.legend{display:flex;flex-wrap:wrap;gap:12px;margin-top:6px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e8;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{background:#eef1f5}
.notes{color:#5b6475;font-size:12px;margin:6px 0 0;padding-left:18px}
.scroll{overflow-x:auto}
.verdict{margin:0 0 4px;padding-left:18px;font-size:15px}
.warn{margin:12px 0 0;padding:8px 8px 8px 28px;background:#fff4e5;border:1px solid #f0c080;
border-radius:8px;color:#7a4300}
"""


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _tick(seconds: float) -> str:
    """A short axis label: 250 ms, 1 s, 2.5 s, 10 s."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def _legend(names: Sequence[str], colors: Sequence[str]) -> str:
    items = "".join(
        f'<span><i style="background:{c}"></i>{escape(n)}</span>'
        for n, c in zip(names, colors, strict=True)
    )
    return f'<div class="legend">{items}</div>'


def _svg(kind: str, body: str, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{kind}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def cdf_chart(kind: str, title: str, series: Sequence[tuple[str, Distribution]]) -> str:
    """Empirical CDFs (x: seconds, y: share of rows), log x when the range is wide."""
    drawn = [(name, d, _color(i)) for i, (name, d) in enumerate(series) if d.cdf]
    if not drawn:
        return ""
    lo = min(d.cdf[0] for _, d, _ in drawn)
    hi = max(d.cdf[-1] for _, d, _ in drawn)
    log = lo > 0 and hi / lo >= 20
    x0: float
    x1: float
    if log:
        x0, x1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        x1 = max(x1, x0 + 1)
        ticks = [10.0**e for e in range(x0, x1 + 1)]
    else:
        step = _nice_step(max(hi, 1e-9))
        x0, x1 = 0, math.ceil(hi / step) * step or step
        ticks = [i * step for i in range(round(x1 / step) + 1)]
    pw, ph = _W - _ML - _MR, _H - _MT - _MB

    def sx(v: float) -> float:
        if log:
            return _ML + (math.log10(max(v, 1e-12)) - x0) / (x1 - x0) * pw
        return _ML + (v - x0) / (x1 - x0) * pw

    def sy(q: float) -> float:
        return _MT + (1 - q) * ph

    parts = [f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccd2db"/>']
    for q in (0.25, 0.5, 0.75, 0.9, 0.99):
        y = sy(q)
        parts.append(
            f'<line x1="{_ML}" x2="{_ML + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceff3"/>'
        )
        parts.append(f'<text x="{_ML - 6}" y="{y + 4:.1f}" text-anchor="end">p{q * 100:g}</text>')
    for t in ticks:
        x = sx(t)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_MT}" y2="{_MT + ph}" stroke="#eceff3"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{_MT + ph + 16}" text-anchor="middle">{_tick(t)}</text>'
        )
    parts.append(
        f'<text x="{_ML + pw / 2}" y="{_H - 6}" text-anchor="middle">'
        f"{escape(title)}{' (log scale)' if log else ''}</text>"
    )
    for name, d, color in drawn:
        n = len(d.cdf) - 1
        points = " ".join(f"{sx(v):.1f},{sy(i / n):.1f}" for i, v in enumerate(d.cdf))
        parts.append(
            f'<polyline class="series" data-model="{escape(name)}" points="{points}" '
            f'fill="none" stroke="{color}" stroke-width="2.5" stroke-linejoin="round"/>'
        )
    figure = _svg(kind, "".join(parts), f"{title} CDF per model")
    legend = _legend([n for n, _, _ in drawn], [c for _, _, c in drawn])
    caption = f"{escape(title)}: share of rows at or below"
    return f"<figure><figcaption>{caption}</figcaption>{figure}{legend}</figure>"


def _bars(
    kind: str,
    caption: str,
    rows: Sequence[tuple[str, list[tuple[float, str]], str]],
    legend: str = "",
) -> str:
    """Horizontal (optionally stacked) bars: (label, [(value, colour)…], value text)."""
    total = max((sum(v for v, _ in segs) for _, segs, _ in rows), default=0.0)
    if not rows or total <= 0:
        return ""
    left, right = 170, 110
    bar_h, gap = 26, 14
    height = _MT + len(rows) * (bar_h + gap) + 8
    pw = _W - left - right
    parts = []
    for i, (label, segs, text) in enumerate(rows):
        y = _MT + i * (bar_h + gap)
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + bar_h / 2 + 4}" text-anchor="end">{escape(short)}</text>'
        )
        x = float(left)
        for value, color in segs:
            w = value / total * pw
            if w > 0:
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{bar_h}" fill="{color}"/>'
                )
                x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + bar_h / 2 + 4}">{escape(text)}</text>')
    body = "".join(parts)
    svg = (
        f'<svg class="chart" data-chart="{kind}" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-label="{escape(caption)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}{legend}</figure>"


def cost_chart(models: Sequence[ModelStats]) -> str:
    rows = [
        (m.model, [(m.cost_per_1k_rows, _color(i))], fmt_usd(m.cost_per_1k_rows))
        for i, m in enumerate(models)
        if m.cost_per_1k_rows is not None
    ]
    return _bars("cost", "Cost per 1,000 rows (USD)", rows)


def tokens_chart(models: Sequence[ModelStats]) -> str:
    rows = []
    for m in models:
        if not m.ok:
            continue
        cached = m.cached_tokens / m.ok
        prompt = m.prompt_tokens / m.ok - cached
        reasoning = m.reasoning_tokens / m.ok
        output = m.completion_tokens / m.ok - reasoning
        segs = [
            (max(v, 0.0), c)
            for v, (_, c) in zip((prompt, cached, output, reasoning), TOKEN_KINDS, strict=True)
        ]
        rows.append(
            (m.model, segs, f"{fmt_num((m.prompt_tokens + m.completion_tokens) / m.ok, 0)}")
        )
    legend = _legend([k for k, _ in TOKEN_KINDS], [c for _, c in TOKEN_KINDS])
    return _bars("tokens", "Tokens per ok row, by kind", rows, legend)


def _table(section: Section) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in section.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in section.rows
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in section.notes)
    return (
        f'<h2>{escape(section.title)}</h2><div class="scroll"><table><thead><tr>{head}</tr>'
        f"</thead><tbody>{body}</tbody></table></div>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
    )


def _cards(snapshot: StatsSnapshot) -> str:
    t = snapshot.total
    cards = [
        (fmt_int(t.rows), "rows"),
        (fmt_int(t.ok), "ok"),
        (fmt_int(t.errors), "error"),
        (fmt_int(t.empty_rows), "empty output"),
        (fmt_usd(t.cost_usd), "cost"),
        (fmt_s(t.wall_s), "wall time"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards
        )
        + "</div>"
    )


_VERDICT_NAMES = {
    "cost": "cheaper",
    "latency_p50": "faster at the median",
    "latency_p99": "faster at p99",
    "ttft_p50": "first token sooner",
    "output_tokens": "fewer output tokens",
}


def _verdict(snapshot: StatsSnapshot) -> str:
    """One line per winning model of the comparison, with the ratio against the others."""
    c = snapshot.comparison
    if c is None or not c.winners:
        return ""
    by_model: dict[str, list[str]] = {}
    for metric, model in c.winners.items():
        if metric in _VERDICT_NAMES:
            by_model.setdefault(model, []).append(_VERDICT_NAMES[metric])
    items = "".join(
        f"<li><b>{escape(model)}</b>: {escape(', '.join(wins))}</li>"
        for model, wins in by_model.items()
    )
    entries = "; ".join(
        f"{e.model} {fmt_usd(e.cost_per_1k_rows)}/1k rows, p50 {fmt_s(e.latency.p50)}"
        for e in c.entries
    )
    return (
        f'<h2>Verdict over {c.common_ids:,} shared ids</h2><ul class="verdict">{items}</ul>'
        f'<p class="sub">{escape(entries)}</p>'
    )


def _warnings(snapshot: StatsSnapshot) -> str:
    items = "".join(f"<li>{escape(w)}</li>" for w in answer_warnings(snapshot))
    return f'<ul class="warn">{items}</ul>' if items else ""


def render_html(snapshot: StatsSnapshot) -> str:
    """The whole report as one self-contained HTML page."""
    models = snapshot.models
    charts = [
        cdf_chart("latency-cdf", "Latency", [(m.model, m.latency) for m in models]),
        cdf_chart("ttft-cdf", "Time to first token", [(m.model, m.ttft) for m in models]),
        cost_chart(models),
        tokens_chart(models),
    ]
    chart_html = "".join(c for c in charts if c)
    names = ", ".join(m.model for m in models) or "no rows"
    tables = "".join(_table(s) for s in sections(snapshot))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>batchrunner report</title><style>{_CSS}</style></head><body><main>"
        f'<h1>batchrunner report</h1><p class="sub">{escape(names)}</p>'
        f"{_cards(snapshot)}{_warnings(snapshot)}{_verdict(snapshot)}"
        f'<h2>Charts</h2><div class="charts">{chart_html}</div>'
        f"{tables}</main></body></html>\n"
    )
