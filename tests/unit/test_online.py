"""Online mixing strategies: the simplex contract, direction of response, JSON state, and the trainer hook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy_models.corpora import write_corpus
from proxy_models.data import PreparedData, prepare
from proxy_models.online import OnlineController
from proxy_models.presets import PRESETS, Preset
from proxy_models.train import Progress, RunConfig, TrainResult, train_proxy
from strategies.base import Fidelity, SearchSpace, StrategyError
from strategies.online import Signal, available_online_strategies, get_online_strategy
from strategies.online.base import OnlineStrategy

DOMAINS = ("a", "b", "c")


def make_space(tokens: tuple[int, ...] = (10_000, 10_000, 10_000), max_epochs: float = 4.0) -> SearchSpace:
    return SearchSpace(
        domains=DOMAINS,
        tokens=tokens,
        target={d: 1 / 3 for d in DOMAINS},
        fidelities=(Fidelity("xs", tokens=20_000, cost=1.0),),
        max_epochs=max_epochs,
    )


def random_signal(rng: np.random.Generator, step: int) -> Signal:
    return Signal(
        step=step,
        losses={d: float(rng.uniform(1, 6)) for d in DOMAINS},
        alignment={d: float(rng.normal()) for d in DOMAINS},
        reference_losses={d: float(rng.uniform(1, 6)) for d in DOMAINS},
    )


def strategy(name: str, **params: object) -> OnlineStrategy:
    return get_online_strategy(name, **params)


def test_registry_lists_and_builds() -> None:
    assert available_online_strategies() == ["aioli", "dga", "doremi"]
    for name in available_online_strategies():
        assert isinstance(strategy(name), OnlineStrategy)
    with pytest.raises(StrategyError, match="unknown online strategy"):
        get_online_strategy("nope")
    with pytest.raises(StrategyError, match="bad parameters"):
        get_online_strategy("dga", no_such_param=1)
    with pytest.raises(StrategyError, match="eta"):
        get_online_strategy("aioli", eta=0)


@pytest.mark.parametrize("name", ["aioli", "dga", "doremi"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_stay_on_the_capped_simplex(name: str, seed: int) -> None:
    # Domain "a" has so few tokens that the epoch cap holds it at 4 * 1000 / 20000 = 0.2.
    space = make_space(tokens=(1_000, 30_000, 30_000))
    s = strategy(name, eta=3.0, budget_tokens=20_000)
    rng = np.random.default_rng(seed)
    state = s.start(space, seed=seed)
    seen = [s.weights(state)]
    for step in range(1, 60):
        state, w = s.update(state, random_signal(rng, step * 10))
        assert w == s.weights(state)
        seen.append(w)
    for w in seen:
        assert len(w) == 3
        assert abs(sum(w) - 1) < 1e-9
        assert min(w) >= -1e-12
        assert w[0] <= 0.2 + 1e-9
    assert len({tuple(np.round(w, 6)) for w in seen}) > 1


def simulate_aioli(
    drop_per_unit: np.ndarray, updates: int, trend: float = 0.0, **params: object
) -> tuple[dict, list[tuple[float, ...]]]:
    """Feed Aioli a world where training on mixture w lowers the losses by ``drop_per_unit @ w + trend``."""
    s = strategy("aioli", **params)
    state = s.start(make_space(), seed=3)
    losses = np.full(3, 5.0)
    w = s.weights(state)
    trajectory = [w]
    for step in range(1, updates + 1):
        losses = losses - drop_per_unit @ np.asarray(w) - trend
        state, w = s.update(state, Signal(step, dict(zip(DOMAINS, losses.tolist(), strict=True))))
        trajectory.append(w)
    return state, trajectory


def test_aioli_gives_weight_to_the_domain_whose_loss_drops_fastest() -> None:
    # Training on "a" lowers a's loss three times as fast as training on b or c lowers theirs.
    A = np.diag([0.3, 0.1, 0.1])
    state, trajectory = simulate_aioli(A, updates=1 + 3 + 4 + 3, exploit_updates=4, settle_updates=0)
    assert state["round"] == 2
    final = trajectory[-1]
    assert final[0] > 1 / 3 + 0.05
    assert final[1] < 1 / 3 and final[2] < 1 / 3
    # Without settling, each probe's drop is exactly A times its mixture, so A is recovered exactly.
    np.testing.assert_allclose(state["interactions"], A, atol=1e-9)
    # The probes of one round lean on each domain once.
    assert sorted(state["order"]) == [0, 1, 2]


def test_aioli_settles_on_the_mixture_between_probes() -> None:
    A = np.diag([0.3, 0.1, 0.1])
    state, trajectory = simulate_aioli(A, updates=1 + 3 * 3, settle_updates=2, probe_share=1.0)
    assert state["round"] == 1
    # warm-up on p; then each probe leans on one domain and is followed by two intervals back on p.
    p = trajectory[0]
    for n, j in enumerate(state["order"]):
        probe, *settle = trajectory[1 + 3 * n : 4 + 3 * n]
        assert probe[j] == pytest.approx(1.0)
        assert settle == [p, p]
    assert trajectory[-1][0] > 1 / 3 + 0.05
    # Settling on p adds the same drop to every probe; it shifts each row of A by a constant, no more.
    shift = np.asarray(state["interactions"]) - A
    np.testing.assert_allclose(shift, shift[:, :1] * np.ones((1, 3)), atol=1e-9)


def test_aioli_ignores_progress_shared_by_every_probe() -> None:
    # Equal help for every domain plus a large common trend: nothing to prefer, the mixture stays put.
    state, trajectory = simulate_aioli(np.full((3, 3), 0.1), updates=1 + 6, trend=0.7)
    assert state["round"] == 1
    np.testing.assert_allclose(trajectory[-1], [1 / 3] * 3, atol=1e-9)


def test_aioli_probes_only_the_rounds_asked_for() -> None:
    state, trajectory = simulate_aioli(np.diag([0.3, 0.1, 0.1]), updates=12, rounds=0)
    assert state["round"] == 0
    assert all(w == trajectory[0] for w in trajectory)


def test_aioli_probe_mixtures_lean_on_one_domain() -> None:
    s = strategy("aioli", probe_share=0.5)
    state = s.start(make_space(), seed=0)
    state, w = s.update(state, Signal(1, dict.fromkeys(DOMAINS, 4.0)))
    assert state["phase"] == "probe"
    leaned = state["order"][0]
    assert w[leaned] == pytest.approx(0.5 / 3 + 0.5)
    assert sum(w) == pytest.approx(1.0)


def test_dga_gives_weight_to_the_aligned_domain() -> None:
    s = strategy("dga")
    state = s.start(make_space())
    w0 = s.weights(state)
    for step in range(1, 6):
        state, w = s.update(
            state, Signal(step, dict.fromkeys(DOMAINS, 3.0), alignment={"a": 0.8, "b": 0.1, "c": -0.3})
        )
    assert w[0] > w0[0] + 0.05
    assert w[2] < w0[2]
    assert w[0] > w[1] > w[2]


def test_doremi_gives_weight_to_the_domain_with_large_excess_loss() -> None:
    s = strategy("doremi", reference={"a": 3.0, "b": 3.0, "c": 3.0})
    state = s.start(make_space())
    for step in range(1, 4):
        state, w = s.update(state, Signal(step, {"a": 3.1, "b": 4.5, "c": 2.0}))
    assert w[1] > 0.5
    assert w[1] > w[0] > w[2]
    # The signal's own reference wins over the parameter.
    high = dict.fromkeys(DOMAINS, 9.0)
    state, w2 = s.update(state, Signal(4, {"a": 3.1, "b": 4.5, "c": 2.0}, reference_losses=high))
    assert w2 == pytest.approx(w)
    assert abs(sum(state["average"]) - 1) < 1e-9


def test_doremi_without_reference_is_an_error() -> None:
    s = strategy("doremi")
    with pytest.raises(StrategyError, match="reference"):
        s.update(s.start(make_space()), Signal(1, dict.fromkeys(DOMAINS, 3.0)))


@pytest.mark.parametrize("name", ["aioli", "dga", "doremi"])
def test_state_round_trips_through_json(name: str) -> None:
    s = strategy(name, reference=dict.fromkeys(DOMAINS, 2.0)) if name == "doremi" else strategy(name)
    rng = np.random.default_rng(7)
    state = s.start(make_space(), seed=11)
    for step in range(1, 8):
        state, _ = s.update(state, random_signal(rng, step))
    restored = json.loads(json.dumps(state))
    assert restored == state
    before, snapshot = state, json.dumps(state)
    for step in range(8, 16):
        signal = random_signal(rng, step)
        state, w = s.update(state, signal)
        restored, w_restored = s.update(json.loads(json.dumps(restored)), signal)
        assert w == w_restored
        assert json.dumps(state) == json.dumps(restored)
    # update never mutates the state it was given.
    assert json.dumps(before) == snapshot


@pytest.mark.parametrize("name", ["aioli", "dga", "doremi"])
def test_bad_signals_are_rejected(name: str) -> None:
    s = strategy(name, reference=dict.fromkeys(DOMAINS, 2.0)) if name == "doremi" else strategy(name)
    state = s.start(make_space())
    rng = np.random.default_rng(0)
    state, _ = s.update(state, random_signal(rng, 10))
    with pytest.raises(StrategyError, match="before the last update"):
        s.update(state, random_signal(rng, 5))
    with pytest.raises(StrategyError, match="lack domains"):
        s.update(state, Signal(11, {"a": 1.0}, alignment={"a": 1.0}))
    with pytest.raises(StrategyError, match="not finite"):
        nan = dict.fromkeys(DOMAINS, float("nan"))
        s.update(state, Signal(11, nan, alignment=nan, reference_losses=dict.fromkeys(DOMAINS, 1.0)))
    other = "dga" if name != "dga" else "aioli"
    with pytest.raises(StrategyError, match="belongs to strategy"):
        strategy(other).update(state, random_signal(rng, 11))


# ---------------------------------------------------------------- inside the proxy trainer

TINY = Preset(
    "online-tiny", n_layer=1, n_head=2, d_model=32, seq_len=32, batch_size=8, tokens=24 * 256, lr=1e-2
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    root = tmp_path_factory.mktemp("online")
    files = write_corpus(root / "raw", sources=("sports", "code", "legal"), max_chars=30_000)
    return prepare(files, root / "prepared", vocab_size=512, max_val_tokens=2_000)


@pytest.fixture
def tiny_preset(monkeypatch: pytest.MonkeyPatch) -> Preset:
    monkeypatch.setitem(PRESETS, TINY.name, TINY)
    return TINY


def tiny_space(data: PreparedData) -> SearchSpace:
    return SearchSpace(
        domains=data.domains,
        tokens=tuple(data.train_tokens[d] for d in data.domains),
        target={"sports": 0.5, "legal": 0.5},
        fidelities=(Fidelity("tiny", tokens=TINY.tokens, cost=0.0),),
    )


def tiny_run(data: PreparedData, controller: OnlineController, **kwargs: Any) -> TrainResult:
    cfg = RunConfig(TINY.name, controller.weights, device="cpu", precision="fp32", eval_tokens=1_024)
    return train_proxy(data, cfg, controller=controller, threads=1, **kwargs)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("aioli", {"warmup_updates": 1, "exploit_updates": 1, "settle_updates": 0}),
        ("dga", {}),
        ("doremi", {"reference": {"sports": 3.0, "code": 2.0, "legal": 2.0}}),
    ],
)
def test_online_controller_steers_a_proxy_run(
    tiny_data: PreparedData, tiny_preset: Preset, name: str, params: dict[str, Any]
) -> None:
    space = tiny_space(tiny_data)
    controller = OnlineController(name, space, every=3, seed=0, probe_windows=4, grad_batch_size=4, **params)
    result = tiny_run(tiny_data, controller)
    steps = [s for s, _ in result.trajectory]
    assert steps == [0, 3, 6, 9, 12, 15, 18, 21]
    assert controller.state["updates"] == 7
    mixtures = [tuple(w[d] for d in space.domains) for _, w in result.trajectory]
    assert len(set(mixtures)) > 2
    for w in mixtures:
        assert sum(w) == pytest.approx(1.0)
    assert result.trajectory[-1][1] == pytest.approx(controller.weights)
    assert np.isfinite(list(result.losses.values())).all()


def test_online_run_resumes_with_its_strategy_state(
    tiny_data: PreparedData, tiny_preset: Preset, tmp_path: Path
) -> None:
    space = tiny_space(tiny_data)

    def controller() -> OnlineController:
        return OnlineController("aioli", space, every=3, seed=1, probe_windows=4, exploit_updates=1)

    whole = tiny_run(tiny_data, controller())

    def stop_at_step_10(p: Progress) -> None:
        if p.step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_run(
            tiny_data,
            controller(),
            checkpoint=tmp_path / "ckpt.pt",
            on_progress=stop_at_step_10,
            progress_interval_s=0.0,
        )
    resumed_controller = controller()
    resumed = tiny_run(tiny_data, resumed_controller, checkpoint=tmp_path / "ckpt.pt")
    assert resumed.resumed_at == 10
    assert resumed.trajectory == whole.trajectory
    assert resumed.losses == pytest.approx(whole.losses)


def test_online_controller_measures_on_heldout_text(tiny_data: PreparedData, tiny_preset: Preset) -> None:
    heldout = {d: tiny_data.tokens(d, "val") for d in tiny_data.domains}
    controller = OnlineController("aioli", tiny_space(tiny_data), every=3, probe_windows=4, heldout=heldout)
    result = tiny_run(tiny_data, controller)
    windows = controller.state_dict()["windows"]
    for d in tiny_data.domains:
        x, y = windows[d]
        assert x.shape == (4, TINY.seq_len)
        np.testing.assert_array_equal(x[0].numpy(), heldout[d][: TINY.seq_len])
        np.testing.assert_array_equal(y[-1].numpy(), heldout[d][-TINY.seq_len :])
    assert len({tuple(w.values()) for _, w in result.trajectory}) > 1
