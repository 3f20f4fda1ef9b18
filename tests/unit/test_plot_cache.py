"""The dashboard's plot cache draws a version once, however many viewers miss it at the same moment."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from app.services.dashboard import _PlotCache


def test_concurrent_misses_draw_once_and_share_the_result() -> None:
    cache, calls, start = _PlotCache(), [], threading.Barrier(8)

    def draw() -> Any:
        calls.append(1)
        time.sleep(0.2)  # long enough for every viewer to arrive while it draws
        return object()

    results: list[Any] = []

    def viewer() -> None:
        start.wait()
        results.append(cache.get_or_draw(("exp", 1), draw))

    threads = [threading.Thread(target=viewer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1 and len(results) == 8


def test_a_failed_draw_is_not_cached_and_the_next_viewer_draws_again() -> None:
    cache = _PlotCache()

    def broken() -> Any:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        cache.get_or_draw(("exp", 1), broken)
    drawn = object()
    assert cache.get_or_draw(("exp", 1), lambda: drawn) is drawn
