"""Rendering statistics as text, Markdown, JSON or HTML.

:func:`render` and :func:`render_summary` turn a :class:`StatsSnapshot` into a string, from
the tables of ``batchrunner.report.sections``; HTML comes from ``batchrunner.report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence

from batchrunner.report.html import render_html
from batchrunner.report.sections import Section, sections
from batchrunner.stats.run_stats import StatsSnapshot

__all__ = ["FORMATS", "render", "render_summary"]

logger = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "json", "html")


def _text_table(section: Section) -> str:
    table = [section.header, *section.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(section.header))]
    lines = [section.title, "=" * len(section.title)]
    left = 1 if section.title != "Errors" else len(section.header)  # text columns align left
    for n, row in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(row[:left], widths[:left], strict=True)] + [
            c.rjust(w) for c, w in zip(row[left:], widths[left:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"* {note}" for note in section.notes]
    return "\n".join(lines)


def _markdown_table(section: Section) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = [f"## {section.title}", "", cells(section.header)]
    lines.append("|" + "|".join([":---", *["---:"] * (len(section.header) - 1)]) + "|")
    lines += [cells(row) for row in section.rows]
    if section.notes:
        lines.append("")
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines)


def render(snapshot: StatsSnapshot, fmt: str = "text") -> str:
    """The report in ``fmt``: ``text``, ``markdown``, ``json`` or ``html``."""
    if fmt == "text":
        return "\n\n".join(_text_table(s) for s in sections(snapshot)) + "\n"
    if fmt == "markdown":
        body = "\n\n".join(_markdown_table(s) for s in sections(snapshot))
        return f"# batchrunner report\n\n{body}\n"
    if fmt == "json":
        return json.dumps(snapshot.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "html":
        # Imported here: the HTML module draws its tables from sections() above.
        return render_html(snapshot)
    raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")


def render_summary(snapshot: StatsSnapshot, *, title: str = "Run summary") -> str:
    """The short end-of-run summary, drawn like the text report."""
    tables = sections(snapshot, summary=True)
    tables[0] = dataclasses.replace(tables[0], title=title)
    return "\n\n".join(_text_table(s) for s in tables) + "\n"
