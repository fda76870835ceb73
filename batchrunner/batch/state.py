"""A batch run's state beside OUTPUT: the jobs it staged and submitted, written durably.

``OUTPUT.batch.json`` lists every file the run staged, and the job made of it once Vertex
named one; it is replaced atomically (``output.durable``) at each step, and always before
the run waits. ``OUTPUT.batch/file-NNNNNN.ids.json`` holds each file's ``[id, row]`` pairs.
A run that finds jobs here not yet collected reattaches to them instead of submitting their
rows again; a file recorded as staged but without a job name is looked up by its display
name before it is submitted, so a create cut short by a crash is never repeated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrunner.errors import RESTART_ADVICE, ConfigError
from batchrunner.output.durable import ensure_parent, output_error, write_atomically
from batchrunner.output.ondisk import batch_dir, batch_state_path, key_of

__all__ = ["BatchState", "StagedFile"]


@dataclass(frozen=True, slots=True)
class StagedFile:
    """One input file of a batch run and the job that answers it."""

    seq: int
    model: str
    location: str
    round: int  # 0: first submission; 1: the follow-up for lines that failed
    display_name: str
    input_uri: str
    output_prefix: str
    job: str | None = None  # the job's resource name once created
    state: str | None = None  # the last state seen
    collected: bool = False  # its answers are in OUTPUT
    cleaned: bool = False  # its staged objects are deleted (or kept on purpose)
    output_directory: str | None = None
    api_root: str | None = None  # where the job lives when not on Google's own hosts

    @property
    def job_id(self) -> str | None:
        return self.job.rsplit("/", 1)[-1] if self.job else None


class BatchState:
    """The files and jobs of OUTPUT's batch run; every change is written before it returns."""

    def __init__(self, output: Path, files: list[StagedFile]) -> None:
        self.output = output
        self.path = batch_state_path(output)
        self.files = files

    @classmethod
    def load(cls, output: Path) -> BatchState:
        path = batch_state_path(output)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(output, [])
        except OSError as exc:
            raise output_error("read", path, exc) from exc
        try:
            data = orjson.loads(raw)
            files = [StagedFile(**entry) for entry in data["files"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is unreadable; {RESTART_ADVICE}") from exc
        return cls(output, files)

    def save(self) -> None:
        data = {"files": [dataclasses.asdict(f) for f in self.files]}
        try:
            ensure_parent(self.path)
            write_atomically(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            raise output_error("write", self.path, exc) from exc

    def update(self, seq: int, **changes: Any) -> StagedFile:
        for i, staged in enumerate(self.files):
            if staged.seq == seq:
                self.files[i] = dataclasses.replace(staged, **changes)
                self.save()
                return self.files[i]
        raise KeyError(seq)

    def add(self, staged: StagedFile, ids: list[tuple[str, int]]) -> None:
        """Record a file and its rows (the rows first: a file is never listed without them)."""
        path = self.ids_path(staged.seq)
        try:
            ensure_parent(path)
            write_atomically(path, orjson.dumps(ids))
        except OSError as exc:
            raise output_error("write", path, exc) from exc
        self.files.append(staged)
        self.save()

    def next_seq(self) -> int:
        return max((f.seq for f in self.files), default=-1) + 1

    def ids_path(self, seq: int) -> Path:
        return batch_dir(self.output) / f"file-{seq:06d}.ids.json"

    def local_path(self, seq: int) -> Path:
        return batch_dir(self.output) / f"file-{seq:06d}.jsonl"

    def ids(self, seq: int) -> list[tuple[str, int]]:
        path = self.ids_path(seq)
        try:
            return [(str(i), int(r)) for i, r in orjson.loads(path.read_bytes())]
        except (OSError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is unreadable; {RESTART_ADVICE}") from exc

    def open_files(self) -> Iterator[StagedFile]:
        """Files whose answers are not in OUTPUT yet."""
        return (f for f in self.files if not f.collected)

    def in_flight(self) -> set[int]:
        """``key_of(id, model)`` of every row in a file not yet collected."""
        keys: set[int] = set()
        for staged in self.open_files():
            keys.update(key_of(id_, staged.model) for id_, _ in self.ids(staged.seq))
        return keys
