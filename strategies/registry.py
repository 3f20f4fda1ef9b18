"""Name → strategy. Built-ins are imported lazily so the API process never pays for torch or BoTorch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from strategies.base import Strategy, StrategyError

T = TypeVar("T")


class Registry(Generic[T]):
    """Built-ins as ``"module:factory"`` strings (imported on first use) plus registered factories."""

    def __init__(self, kind: str, builtin: Mapping[str, str]) -> None:
        self.kind = kind
        self._builtin = dict(builtin)
        self._extra: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding a third-party factory; duplicate names are an error."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._builtin or name in self._extra:
                raise StrategyError(f"a {self.kind} named {name!r} is already registered")
            self._extra[name] = factory
            return factory

        return deco

    def available(self) -> list[str]:
        return sorted({*self._builtin, *self._extra})

    def factory(self, name: str) -> Callable[..., T]:
        """The class (or function) that builds ``name``: its signature is the parameters' contract."""
        if name in self._extra:
            return self._extra[name]
        if name in self._builtin:
            module, attr = self._builtin[name].split(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        raise StrategyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}")

    def get(self, name: str, **params: Any) -> T:
        """Build one by name; ``params`` go to its constructor (unknown ones are an error)."""
        factory = self.factory(name)
        try:
            return factory(**params)
        except TypeError as e:
            raise StrategyError(f"bad parameters for {self.kind} {name!r}: {e}") from e


# One line per built-in strategy: "name": "module:factory".
STRATEGIES: Registry[Strategy] = Registry(
    "strategy",
    {
        "uniform": "strategies.baselines:Uniform",
        "natural": "strategies.baselines:Natural",
        "temperature": "strategies.baselines:Temperature",
        "random": "strategies.baselines:RandomSearch",
        "regmix": "strategies.regmix:RegMix",
        "admire": "strategies.admire:Admire",
        "climb": "strategies.climb:Climb",
    },
)
register = STRATEGIES.register
available_strategies = STRATEGIES.available
get_strategy = STRATEGIES.get
