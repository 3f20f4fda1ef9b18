"""Online mixing strategies: change the mixture during one training run from the signals it produces.

Each is a pure state machine (``start`` → ``update`` → ``update`` …) over a JSON state; see
:mod:`strategies.online.base` for the contract and :func:`get_online_strategy` for the registry.
"""

from strategies.online.base import (
    OnlineState,
    OnlineStrategy,
    Signal,
    available_online_strategies,
    get_online_strategy,
    register_online,
)

__all__ = [
    "OnlineState",
    "OnlineStrategy",
    "Signal",
    "available_online_strategies",
    "get_online_strategy",
    "register_online",
]
