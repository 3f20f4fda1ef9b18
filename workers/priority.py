"""Background work yields the CPU to serving: planner fits and training run at a lower priority.

On a shared machine (embedded mode, or a small box running the API beside a worker) a refit using every
core would otherwise slow every request; niced, it takes only the CPU that requests leave idle, and on
a dedicated worker machine it changes nothing. Linux keeps niceness per thread, and threads started by
a niced thread inherit it (a fit's thread pool does); where the OS refuses, nothing changes.
"""

from __future__ import annotations

import logging
import os
import threading

from app.core.config import get_settings

log = logging.getLogger(__name__)


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
