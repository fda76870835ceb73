"""Opening OUTPUT for a run: the job's identity checked, the lock taken, what it holds read.

Both routes (online and batch) start here, so a rerun of either resumes the same way.
"""

from __future__ import annotations

from batchrunner.config import RunConfig
from batchrunner.errors import ConfigError, OutputError
from batchrunner.output.keyindex import remove_index_dir
from batchrunner.output.ondisk import index_dir
from batchrunner.output.resume import ResumeState, check_identity, load_resume_state, run_identity
from batchrunner.output.writers import ResultWriter, open_writer

__all__ = ["index_memory_bytes", "open_run_output"]


def index_memory_bytes(config: RunConfig) -> int:
    """Each of a run's two key indexes (ids seen, keys done) gets half of index_memory_mb."""
    return max(1, int(config.index_memory_mb * 1024 * 1024 / 2))


def open_run_output(config: RunConfig) -> tuple[ResumeState, ResultWriter]:
    """Check the run's identity, open OUTPUT for writing and read what it already holds.

    Blocking: call it off the event loop. An unusable output path is a ``ConfigError``
    (nothing has been sent yet, so it is a usage error).
    """
    try:
        check_identity(config.output, run_identity(config), restart=config.restart)
        # The writer takes the output's lock first, so no other run appends while we read.
        writer = open_writer(config.output, restart=config.restart, part_rows=config.part_rows)
        try:
            # A killed run's index is stale: OUTPUT is the source of truth.
            remove_index_dir(index_dir(config.output))
            state = (
                ResumeState()
                if config.restart
                else load_resume_state(
                    config.output,
                    index_dir=index_dir(config.output) / "done",
                    memory_bytes=index_memory_bytes(config),
                )
            )
        except BaseException:
            writer.abort()
            raise
        return state, writer
    except OutputError as exc:
        raise ConfigError(str(exc)) from None
