"""``bench/search_efficiency.py --admire-option``: admire tuned on the tuning family from the command line."""

from __future__ import annotations

import pytest

from bench.search_efficiency import admire_options


def test_admire_options_become_typed_keyword_arguments() -> None:
    assert admire_options(["pessimism=1.5", "n_initial=12"]) == {"pessimism": 1.5, "n_initial": 12}
    assert isinstance(admire_options(["n_initial=12"])["n_initial"], int)


@pytest.mark.parametrize("pair", ["pessimism", "pessimism=high", "bogus=1", "pessimism=-1"])
def test_bad_admire_options_stop_the_bench_with_a_message(pair: str) -> None:
    with pytest.raises(SystemExit, match="--admire-option"):
        admire_options([pair])
