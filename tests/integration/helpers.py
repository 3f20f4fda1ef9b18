"""Small builders shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def external_spec(**over: Any) -> dict[str, Any]:
    """An ask/tell experiment over three domains with two fidelities."""
    spec: dict[str, Any] = {
        "name": "ext",
        "executor": "external",
        "strategy": "random",
        "domains": [
            {"name": "web", "tokens": 10**9},
            {"name": "code", "tokens": 10**8},
            {"name": "law", "tokens": 10**8},
        ],
        "target": {"web": 0.5, "code": 0.5},
        "fidelities": [
            {"name": "small", "tokens": 10**6, "cost": 1.0},
            {"name": "big", "tokens": 10**7, "cost": 4.0},
        ],
        "budget": 4,
        "parallelism": 2,
    }
    spec.update(over)
    return spec


def fake_losses(weights: dict[str, float]) -> dict[str, float]:
    """A deterministic mixing law: more of a domain → lower loss on it."""
    return {d: 3.0 - 1.5 * w for d, w in weights.items()}


def error_code(resp: Any) -> str:
    return str(resp.json()["error"]["code"])


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until ``pred()`` is truthy: the planner works off the request path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
