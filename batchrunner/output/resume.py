"""Resuming a run: which (id, model) pairs OUTPUT already holds, and whether it is the same job.

``batchrunner.output.ondisk`` describes what a run leaves on disk and reads its pieces; this module
gathers the keys already written (of finished rows, and of failed ones for
``--retry-failed``) and compares the run's identity with the one recorded beside OUTPUT.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from batchrunner.errors import RESTART_ADVICE, ConfigError
from batchrunner.output.durable import ensure_parent, output_error, write_atomically
from batchrunner.output.keyindex import DEFAULT_MEMORY_BYTES, KeyIndex, remove_index_dir
from batchrunner.output.ondisk import (
    KEY_COLUMNS,
    Entry,
    iter_parquet_entries,
    key_of,
    manifest_path,
    output_format,
    parse_line,
    read_part_entries,
    read_parts_through,
    scan_parts,
)

if TYPE_CHECKING:
    from batchrunner.config import RunConfig

__all__ = [
    "ResumeState",
    "RunIdentity",
    "check_identity",
    "key_of",
    "load_resume_state",
    "record_budget_spent",
    "run_identity",
]

logger = logging.getLogger(__name__)

# --- resume state --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumeState:
    """What OUTPUT already holds, as ``key_of(id, model)`` keys in a ``KeyIndex``.

    Every key that has a result is done; its last result is final unless it is an error
    (the key's mark) and failed rows are being retried. Memory: 8 bytes per (id, model)
    written, up to the index's bound; past it, sorted runs in ``OUTPUT.index/`` probed with
    one read each. ``close()`` drops them.
    """

    index: KeyIndex | None = None
    done_count: int = 0  # distinct (id, model) pairs with a result
    failed_count: int = 0  # of which the last result is an error
    rows_found: int = 0  # readable rows, counting a resent row each time it appears
    torn: int = 0  # torn or unreadable lines, half-written or unreadable parts skipped
    spent_usd: float = 0.0  # the sum of cost_usd over every row read: the job's spend so far
    budget_spent: float | None = None  # the --max-cost an earlier run stopped at, if one did

    def is_done(self, id: str, model: str, *, retry_failed: bool) -> bool:
        """True when (id, model) must not be sent again."""
        if not self.done_count:  # a fresh run: skip hashing every row
            return False
        return self.is_key_done(key_of(id, model), retry_failed=retry_failed)

    def is_key_done(self, key: int, *, retry_failed: bool) -> bool:
        if self.index is None:
            return False
        mark = self.index.get(key)
        if mark is None:
            return False
        return not (retry_failed and mark)

    def is_failed(self, id: str, model: str) -> bool:
        """True when the last result OUTPUT holds for (id, model) is an error."""
        return self.index is not None and self.index.get(key_of(id, model)) == 1

    def count_done(self, *, retry_failed: bool) -> int:
        """How many (id, model) pairs will be skipped."""
        return self.done_count - (self.failed_count if retry_failed else 0)

    def close(self) -> None:
        """Drop the index's files, if it spilled any."""
        if self.index is not None:
            self.index.close()


class _Collector:
    __slots__ = ("index", "rows", "spent")

    def __init__(self, index: KeyIndex) -> None:
        self.index = index
        self.rows = 0
        self.spent = 0.0

    def add(self, entry: Entry) -> None:
        self.rows += 1
        if entry.cost is not None:
            self.spent += entry.cost
        self.index.put(entry.key, entry.status == "error")


def load_resume_state(
    path: str | os.PathLike[str],
    *,
    index_dir: Path | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> ResumeState:
    """Read OUTPUT (and, for Parquet, its uncompacted parts and journals) into a ResumeState.

    The keys are held in at most ``memory_bytes``, spilling to ``index_dir`` (emptied first:
    OUTPUT is the source of truth) past it; without ``index_dir`` they stay in memory.

    Streams the files (a journal holds at most one part's rows); a missing OUTPUT gives an
    empty state. ``spent_usd`` sums the rows' ``cost_usd``: what earlier runs into OUTPUT
    spent, read from the rows themselves so that it survives a crash (``--max-cost``).
    Torn JSONL or journal lines, Parquet temp files (deleted here) and unreadable parts are
    skipped and counted in ``torn``: their rows are not done and will be sent again.
    """
    out = Path(path)
    fmt = output_format(out)
    if index_dir is not None:
        remove_index_dir(index_dir)
    index = KeyIndex(index_dir, memory_bytes=memory_bytes)
    collector = _Collector(index)
    try:
        try:
            torn = _load_jsonl(out, collector) if fmt == "jsonl" else _load_parquet(out, collector)
            index.compact()  # each key once, in one run: exact counts and one probe per row
        except OSError as exc:
            raise output_error("read", out, exc) from exc
    except BaseException:
        index.close()
        raise
    if torn:
        logger.warning(
            "%s: skipped %d torn or unreadable entries; their rows will be resent", out, torn
        )
    return ResumeState(
        index,
        index.stored(),
        index.count_marked(),
        collector.rows,
        torn,
        collector.spent,
        _budget_spent(out),
    )


def _budget_spent(out: Path) -> float | None:
    """The budget an earlier run into ``out`` spent, from the manifest (None if none did)."""
    try:
        stored = orjson.loads(manifest_path(out).read_bytes()).get("budget_spent")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    return float(stored) if isinstance(stored, int | float) else None


def record_budget_spent(path: str | os.PathLike[str], budget: float) -> None:
    """Record beside OUTPUT that ``budget`` is spent, so a rerun at that budget sends nothing.

    The spend itself is read from the rows; this records only that admission stopped at
    ``budget``, since what the requests in flight then cost may leave the rows' sum a
    little under it. A later run with a larger budget continues.
    """
    out = Path(path)
    manifest = manifest_path(out)
    try:
        data = orjson.loads(manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise output_error("read", manifest, OSError(str(exc))) from exc
    data["budget_spent"] = budget
    try:
        write_atomically(
            manifest,
            orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n",
        )
    except OSError as exc:
        raise output_error("write", manifest, exc) from exc


def _load_jsonl(path: Path, collector: _Collector) -> int:
    torn = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0
    with f:
        for number, line in enumerate(f):
            entry = parse_line(line)
            if entry is None:
                if number == 0 and line.endswith(b"\n"):
                    raise not_our_output(path)
                torn += 1
            else:
                collector.add(entry)
    return torn


def not_our_output(path: Path) -> ConfigError:
    return ConfigError(f"existing {path} does not look like batchrunner output; {RESTART_ADVICE}")


def _load_parquet(path: Path, collector: _Collector) -> int:
    # Parts and live journals in number order, so the last result of a key wins.
    parts_through = read_parts_through(path)
    if path.exists():
        try:
            for entry in iter_parquet_entries(path, columns=[*KEY_COLUMNS, "cost_usd"]):
                collector.add(entry)
        except pa.ArrowException as exc:
            raise ConfigError(f"existing {path} cannot be read ({exc}); {RESTART_ADVICE}") from exc
    on_disk = scan_parts(path, parts_through)
    torn = on_disk.temps_removed
    journals = dict(on_disk.journals)
    for seq, source in sorted([*on_disk.parts, *on_disk.journals]):
        if seq in journals:
            torn += _load_journal(source, collector)
            continue
        entries = read_part_entries(source)
        if entries is None:
            torn += 1
            continue
        for entry in entries:
            collector.add(entry)
    return torn


def _load_journal(path: Path, collector: _Collector) -> int:
    """Add a journal's complete lines; a torn last line (killed mid-write) is counted, not kept."""
    torn = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:  # removed since the directory was listed
        return 0
    with f:
        for line in f:
            entry = parse_line(line)
            if entry is None:
                torn += 1
            else:
                collector.add(entry)
    return torn


# --- run identity --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What makes two runs the same job: input, models, request settings. JSON-serialisable."""

    fields: Mapping[str, object]


def _normalise(fields: Mapping[str, object]) -> object:
    # A JSON round trip makes tuples lists and keys strings, exactly as the manifest stores them.
    return orjson.loads(orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS))


def _changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            if key not in old or key not in new:
                changed.append(prefix + key)
            else:
                changed.extend(_changed_keys(old[key], new[key], f"{prefix}{key}."))
        return changed
    return [] if old == new else [prefix.rstrip(".") or "(everything)"]


def check_identity(path: str | os.PathLike[str], identity: RunIdentity, *, restart: bool) -> None:
    """Refuse to resume OUTPUT with a different job; record the job's identity beside OUTPUT.

    The manifest ``OUTPUT.run.json`` is written (atomically) when missing or when
    ``restart`` is set; when present and different, a ConfigError names the changed keys.
    """
    out = Path(path)
    manifest = manifest_path(out)
    wanted = _normalise(identity.fields)
    if not restart:
        try:
            raw: bytes | None = manifest.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise output_error("read", manifest, exc) from exc
        if raw is not None:
            try:
                stored = orjson.loads(raw)["identity"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{manifest} is unreadable; {RESTART_ADVICE}") from exc
            if stored == wanted:
                return
            changed = ", ".join(_changed_keys(stored, wanted))
            raise ConfigError(
                f"{out} was produced with a different request configuration "
                f"(changed: {changed}); {RESTART_ADVICE}"
            )
    data = orjson.dumps({"identity": wanted}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    try:
        ensure_parent(out)
        write_atomically(manifest, data + b"\n")
    except OSError as exc:
        raise output_error("write", manifest, exc) from exc


def run_identity(config: RunConfig) -> RunIdentity:
    """What makes two runs the same job: input, models and the request they send."""
    request = config.request
    return RunIdentity(
        {
            "input": str(config.input.resolve()),
            "models": list(config.models) or None,
            "default_model": config.default_model if not config.models else None,
            "system": request.system,
            "params": dict(request.params),
            "google": dict(request.google),
            "stream": request.stream,
            "fields": {
                "id": config.fields.id,
                "prompt": config.fields.prompt,
                "messages": config.fields.messages,
                "system": config.fields.system,
                "model": config.fields.model,
                "params": config.fields.params,
            },
        }
    )
