"""Every strategy parameter has a description in ``GET /api/v1/strategies``, read from the ``Parameters:``
block that ends its class docstring."""

from __future__ import annotations

import string

from app.services.strategies import _described, describe_all

DOC = """Summary line mentioning ``alpha`` in passing; not a description.

More prose.

Parameters:
    alpha: the first one
    alpha_beta: a longer one that wraps
        onto a second line
    gamma:
"""


def test_every_parameter_of_every_strategy_is_described() -> None:
    missing = []
    for strategy in describe_all():
        for name, schema in strategy["parameters"].get("properties", {}).items():
            text = (schema.get("description") or "").strip()
            if not text or text[0] in string.punctuation:
                missing.append(f"{strategy['name']}.{name}: {text!r}")
    assert not missing, missing


def test_parameters_block_is_read_by_exact_name() -> None:
    assert _described(DOC, "alpha") == "the first one"
    assert _described(DOC, "alpha_beta") == "a longer one that wraps onto a second line"
    assert _described(DOC, "beta") is None
    assert _described(DOC, "gamma") is None  # listed without words: no description


def test_prose_phrases_are_the_fallback_without_a_block() -> None:
    doc = "A strategy; ``alpha`` sets the step size. ``beta`` counts runs."
    assert _described(doc, "alpha") == "sets the step size"
    assert _described(doc, "beta") == "counts runs"
    assert _described(doc, "gamma") is None
