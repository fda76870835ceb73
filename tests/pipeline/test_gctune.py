"""The collector thresholds a batch process sets: raised, never lowered, start-up frozen."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _in_fresh_process(code: str) -> str:
    # The thresholds are process-wide: never change the test runner's own.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_thresholds_are_raised_and_start_up_objects_frozen() -> None:
    out = _in_fresh_process(
        """
        import gc
        from batchrunner.pipeline.gctune import collect_less_often
        gc.set_threshold(700, 10, 10)
        collect_less_often()
        print(gc.get_threshold(), gc.get_freeze_count() > 1000)
        """
    )
    assert out == "(20000, 20, 100) True"


def test_a_higher_threshold_chosen_by_the_user_is_kept() -> None:
    out = _in_fresh_process(
        """
        import gc
        from batchrunner.pipeline.gctune import collect_less_often
        gc.set_threshold(100_000, 5, 1_000)
        collect_less_often()
        print(gc.get_threshold())
        """
    )
    assert out == "(100000, 20, 1000)"


def test_the_run_command_collects_less_often() -> None:
    out = _in_fresh_process(
        """
        import gc, tempfile, pathlib
        from batchrunner.cli import main as cli
        tmp = pathlib.Path(tempfile.mkdtemp())
        (tmp / "in.jsonl").write_text('{"id": "a", "prompt": "hi"}\\n')
        status = cli.main(["run", str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl"),
                           "--simulate", "--progress", "off"])
        print(status, gc.get_threshold())
        """
    )
    assert out.splitlines()[-1] == "0 (20000, 20, 100)"
