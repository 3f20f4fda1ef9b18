"""A worker that leads its own session lowers its scheduling group; one started from a shell does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="the kernel does not group by session"
)

PROBE = (
    "from workers.priority import lower_this_session; lower_this_session(); "
    "print(open('/proc/self/autogroup').read().split()[-1])"
)


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
    return int(out.stdout.strip())


def test_a_session_leader_lowers_its_group() -> None:
    assert _group_nice(new_session=True) == 7


def test_a_process_in_another_session_leaves_it_alone() -> None:
    before = int(Path("/proc/self/autogroup").read_text().split()[-1])
    assert _group_nice(new_session=False) == before
