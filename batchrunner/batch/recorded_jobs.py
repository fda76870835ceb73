"""``batch-status`` and ``batch-cancel``: the jobs recorded beside OUTPUT, looked up or cancelled.

Both read ``OUTPUT.batch.json`` and ask Vertex about each job not yet collected, with the
credentials a run would use. Cancelling leaves the job's finished lines to be collected by
the next run of the same command; its other rows are submitted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchrunner.auth.tokens import Authenticator
from batchrunner.batch.jobs import TERMINAL_STATES, JobsApi, JobsError
from batchrunner.batch.state import BatchState, StagedFile
from batchrunner.errors import ConfigError
from batchrunner.output.ondisk import batch_state_path

__all__ = ["JobStatus", "cancel_jobs", "job_statuses", "load_recorded"]


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One recorded file and what Vertex says of its job now."""

    file: StagedFile
    state: str | None
    successful: int | None
    failed: int | None
    error: str | None  # why the job could not be looked up, or the job's own error


def load_recorded(output: Path) -> BatchState:
    if not batch_state_path(output).exists():
        raise ConfigError(f"{output}: no batch run recorded ({batch_state_path(output)} missing)")
    return BatchState.load(output)


def _api(staged: StagedFile, auth: Authenticator) -> JobsApi:
    assert staged.job is not None
    project = staged.job.split("/")[1]
    return JobsApi(project, auth, api_root=staged.api_root)


async def job_statuses(output: Path, auth: Authenticator) -> Sequence[JobStatus]:
    """Every recorded file, with its job's live state for those not yet collected."""
    state = load_recorded(output)
    out = []
    for staged in state.files:
        if staged.job is None or staged.collected:
            out.append(JobStatus(staged, staged.state, None, None, None))
            continue
        api = _api(staged, auth)
        try:
            job = await api.get(staged.job)
        except JobsError as exc:
            out.append(JobStatus(staged, staged.state, None, None, str(exc)))
            continue
        finally:
            await api.aclose()
        stats = job.get("completionStats") or {}
        error = (job.get("error") or {}).get("message")
        out.append(
            JobStatus(
                staged,
                job.get("state"),
                int(stats.get("successfulCount") or 0),
                int(stats.get("failedCount") or 0),
                error,
            )
        )
    return out


async def cancel_jobs(output: Path, auth: Authenticator) -> list[tuple[str, str | None]]:
    """Cancel every recorded job still running: ``(job, problem or None)`` for each."""
    state = load_recorded(output)
    done: list[tuple[str, str | None]] = []
    for staged in state.open_files():
        if staged.job is None or staged.state in TERMINAL_STATES:
            continue
        api = _api(staged, auth)
        try:
            await api.cancel(staged.job)
            done.append((staged.job, None))
        except JobsError as exc:
            done.append((staged.job, str(exc)))
        finally:
            await api.aclose()
    return done
