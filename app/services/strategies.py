"""What each strategy takes: its parameters as a JSON Schema, read off its constructor, and the check
that ``strategy_params`` / online ``params`` match it (422 naming the parameter, with the allowed ones).

The constructor's signature is the contract (names, types, defaults); the ``Parameters:`` block that
ends the class docstring gives the descriptions (see ``_described``). Range checks stay in the
constructors, whose ``StrategyError`` messages already say what is allowed.
"""

from __future__ import annotations

import inspect
import re
from functools import lru_cache
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from app.errors import InvalidInput
from strategies import StrategyError
from strategies.online.base import ONLINE_STRATEGIES
from strategies.registry import STRATEGIES, Registry

Kind = Literal["offline", "online"]
REGISTRIES: dict[Kind, Registry[Any]] = {"offline": STRATEGIES, "online": ONLINE_STRATEGIES}


def describe_all() -> list[dict[str, Any]]:
    """Every strategy: name, kind, one-line summary and its parameters' JSON Schema."""
    out = []
    for kind, registry in REGISTRIES.items():
        for name in registry.available():
            factory = registry.factory(name)
            doc = inspect.getdoc(factory) or ""
            out.append(
                {
                    "name": name,
                    "kind": kind,
                    "summary": doc.split("\n\n")[0].replace("\n", " "),
                    "parameters": _model(kind, name).model_json_schema(),
                }
            )
    return out


def check_params(
    kind: Kind, name: str, params: dict[str, Any], field: str, unknown_code: str = "unknown_strategy"
) -> None:
    """422 unless ``params`` are parameters of the strategy, of the right types."""
    try:
        model = _model(kind, name)
    except StrategyError as e:
        raise InvalidInput(str(e), code=unknown_code) from e
    allowed = ", ".join(model.model_fields) or "none"
    try:
        model.model_validate(params)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}.{where}: {name} has no such parameter")
            else:
                problems.append(f"{field}.{where}: {err['msg']}")
        raise InvalidInput(f"{'; '.join(problems)} (allowed: {allowed})", code="bad_strategy_params") from e


@lru_cache
def _model(kind: Kind, name: str) -> type[BaseModel]:
    factory = REGISTRIES[kind].factory(name)
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    hints = get_type_hints(target)
    doc = inspect.getdoc(factory) or ""
    fields: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), Field(default, description=_described(doc, p.name)))
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, title=f"{name} parameters")
    return create_model(f"{name}_parameters", __config__=config, **fields)  # type: ignore[call-overload,no-any-return]


def _described(doc: str, param: str) -> str | None:
    """The docstring's one-line description of ``param``.

    Strategies list their parameters at the end of the class (or factory) docstring, one per line::

        Parameters:
            name: what it does, units, typical values
                (a long one may wrap onto deeper-indented lines).

    An explicit block is read by exact name, so a description never picks up a neighbour's words, as
    prose phrases did. Docstrings without the block (third-party strategies) fall back to the first
    "``name`` description" phrase, up to the next ';' or '.'.
    """
    block = re.search(r"^Parameters:[ \t]*\n((?:[ \t]+\S.*(?:\n|$))+)", doc, re.M)
    if not block:
        match = re.search(rf"``{re.escape(param)}``\s*([^;]+?)(?:;|\.\s|\.$)", " ".join(doc.split()))
        return match.group(1).strip() if match else None
    lines = block.group(1)
    indent = re.escape(lines[: len(lines) - len(lines.lstrip())])
    entry = re.search(rf"^{indent}{re.escape(param)}:(.*(?:\n{indent}[ \t]+\S.*)*)", lines, re.M)
    text = " ".join(entry.group(1).split()) if entry else ""
    return text or None
