"""A worker that leads its own session lowers its scheduling group; one started from a shell does not.
Refits and training run niced, proposals (what asks wait for) do not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = (
    "from workers.priority import lower_this_session; lower_this_session(); "
    "print(open('/proc/self/autogroup').read())"
)


def _nice_of(autogroup: str) -> int:
    """The nice value in ``/proc/<pid>/autogroup`` ("/autogroup-85 nice 0"). A process in a cgroup
    with its own CPU controller (a CI container) belongs to no autogroup and reads an empty file."""
    if not autogroup.strip():
        pytest.skip("this process belongs to no autogroup (its cgroup schedules it)")
    return int(autogroup.split()[-1])


def _group_nice(new_session: bool) -> int:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MIXLAB_BACKGROUND_NICE": "7"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=new_session,
    )
    return _nice_of(out.stdout)


needs_autogroup = pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="the kernel does not group by session"
)


@needs_autogroup
def test_a_session_leader_lowers_its_group() -> None:
    assert _group_nice(new_session=True) == 7


@needs_autogroup
def test_a_process_in_another_session_leaves_it_alone() -> None:
    before = _nice_of(Path("/proc/self/autogroup").read_text())
    assert _group_nice(new_session=False) == before


def _thread_nice(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


def test_the_embedded_worker_nices_refits_and_training_but_not_proposals(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asks wait for proposals once the look-ahead drains: that loop keeps serving priority."""
    from app.core.config import get_settings
    from workers.embedded import EmbeddedWorker

    monkeypatch.setenv("MIXLAB_BACKGROUND_NICE", "5")
    get_settings.cache_clear()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    worker = EmbeddedWorker(poll_s=0.05).start()
    try:
        ids = {name: loop.thread.native_id for name, loop in worker.loops.items()}
        assert all(ids.values())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            _thread_nice(ids[name]) == min(19, base + 5) for name in ("refit", "train")
        ):
            time.sleep(0.02)
        assert _thread_nice(ids["refit"]) == _thread_nice(ids["train"]) == min(19, base + 5)
        assert _thread_nice(ids["propose"]) == base
    finally:
        worker.stop()
