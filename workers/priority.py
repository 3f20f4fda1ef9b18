"""Background work yields the CPU to serving: interim refits and training run at a lower priority.

On a shared machine (embedded mode, or a small box running the API beside a worker) a refit using every
core would otherwise slow every request; niced, it takes only the CPU that requests leave idle, and on
a dedicated worker machine it changes nothing. Linux keeps niceness per thread, and threads started by
a niced thread inherit it (a fit's thread pool does); where the OS refuses, nothing changes.

Proposing is not background work: once the look-ahead drains, every ask waits for the next propose
pass. Niced by 10 beside saturated servers, that pass gets about a tenth of the CPU share of each
(scheduler weight 110 against 1024), crawls, and asks queue behind it (``python bench/api_load.py``:
the back-to-back ask p99 at 10,000 runs). So the proposal loop, and a worker that consumes only the
proposal queue, keep serving priority (``background``).

Linux with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on in most distribution
kernels) first shares the CPU fairly between sessions, and a thread's niceness only counts within its
own session. A worker run as a service (a container, a unit, a daemon) leads its own session, so its
niced fits would still take a session's full share beside the API's: ``lower_this_session`` lowers
that session's group as well. ``bench/api_load.py`` shows the difference: with a 10,000-run refit
taking both cores, asks paced at 200 pairs/s queued for hundreds of milliseconds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from app.core.config import get_settings
from workers.queues import PLAN_QUEUE

log = logging.getLogger(__name__)


def background(queues: Iterable[str]) -> bool:
    """Whether a worker consuming ``queues`` does background work: training or refits (see above)."""
    return not set(queues) <= {PLAN_QUEUE}


def lower_this_thread() -> None:
    """Renice the calling thread (the whole process where threads have no own priority) by
    ``MIXLAB_BACKGROUND_NICE``."""
    nice = get_settings().background_nice
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        target = threading.get_native_id() if os.uname().sysname == "Linux" else 0
        os.setpriority(os.PRIO_PROCESS, target, min(19, os.getpriority(os.PRIO_PROCESS, target) + nice))
    except OSError as e:
        log.warning("could not lower the priority of background work: %s", e)


def lower_this_session() -> None:
    """For a process that does only background work: lower its session's scheduling group by
    ``MIXLAB_BACKGROUND_NICE`` where it leads that session (started as a service, so the group holds
    nothing else) and the kernel groups by session. A worker started from a shell shares the shell's
    session and is left alone."""
    nice = get_settings().background_nice
    group = Path("/proc/self/autogroup")
    if nice <= 0 or not group.exists() or os.getsid(0) != os.getpid():
        return
    try:
        group.write_text(str(min(19, nice)))
    except OSError as e:
        log.warning("could not lower the priority of this worker's session: %s", e)
