"""A worker that leads its own session lowers its scheduling group; one started from a shell does not."""

from __future__ import annotations

import os
import subprocess
import sys
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


pytestmark = pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="the kernel does not group by session"
)


def test_a_session_leader_lowers_its_group() -> None:
    assert _group_nice(new_session=True) == 7


def test_a_process_in_another_session_leaves_it_alone() -> None:
    before = _nice_of(Path("/proc/self/autogroup").read_text())
    assert _group_nice(new_session=False) == before
