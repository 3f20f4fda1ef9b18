"""Name → strategy. Built-ins are imported lazily so the API process never pays for torch or BoTorch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from strategies.base import Strategy, StrategyError

# One line per built-in strategy: "name": "module:factory".
_BUILTIN: dict[str, str] = {
    "uniform": "strategies.baselines:Uniform",
    "natural": "strategies.baselines:Natural",
    "temperature": "strategies.baselines:Temperature",
    "random": "strategies.baselines:RandomSearch",
    "regmix": "strategies.regmix:RegMix",
    "admire": "strategies.admire:Admire",
    "climb": "strategies.climb:Climb",
}
_EXTRA: dict[str, Callable[..., Strategy]] = {}


def register(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    """Decorator adding a third-party strategy factory; duplicate names are an error."""

    def deco(factory: Callable[..., Strategy]) -> Callable[..., Strategy]:
        if name in _BUILTIN or name in _EXTRA:
            raise StrategyError(f"a strategy named {name!r} is already registered")
        _EXTRA[name] = factory
        return factory

    return deco


def available_strategies() -> list[str]:
    return sorted({*_BUILTIN, *_EXTRA})


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by name; ``params`` go to its constructor (unknown ones are an error)."""
    if name in _EXTRA:
        factory = _EXTRA[name]
    elif name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        factory = getattr(importlib.import_module(module), attr)
    else:
        raise StrategyError(f"unknown strategy {name!r}; available: {', '.join(available_strategies())}")
    try:
        return factory(**params)
    except TypeError as e:
        raise StrategyError(f"bad parameters for strategy {name!r}: {e}") from e
