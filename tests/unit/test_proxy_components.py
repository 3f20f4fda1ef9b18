"""Parts of a proxy run in isolation: mixture sampler, epoch accounting, fused loss, presets, precision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proxy_models.data import PreparedData
from proxy_models.device import autocast_dtype, resolve_device
from proxy_models.lm_loss import linear_cross_entropy
from proxy_models.presets import PRESETS, run_flops
from proxy_models.sampler import EpochCapError, MixtureSampler, check_epochs, eval_windows, normalized_weights

SEQ = 16


@pytest.fixture(scope="module")
def proxy_synthetic(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """Three domains of known size whose token ids encode (domain, position): 5000, 2000 and 321 tokens."""
    root = tmp_path_factory.mktemp("synthetic")
    sizes = {"a": 5_000, "b": 2_000, "c": 321}
    for i, n in enumerate(sizes.values()):
        (np.arange(n) % 1000 + 1000 * i).astype(np.uint16).tofile(root / f"{i:03d}.train.bin")
        np.zeros(0, dtype=np.uint16).tofile(root / f"{i:03d}.val.bin")
    meta = {"format": 1, "domains": list(sizes), "vocab_size": 3000, "train_tokens": sizes,
            "val_tokens": dict.fromkeys(sizes, 0), "key": "synthetic"}  # fmt: skip
    (root / "meta.json").write_text(json.dumps(meta))
    return PreparedData.load(root)


def domain_of(x: np.ndarray) -> np.ndarray:
    return x[:, 0] // 1000


def test_sampler_proportions_match_weights(proxy_synthetic: PreparedData) -> None:
    weights = {"a": 0.55, "b": 0.3, "c": 0.15}
    sampler = MixtureSampler(proxy_synthetic, weights, batch_size=8, seq_len=SEQ, seed=0)
    counts = np.zeros(3)
    for _ in range(50):
        x, y, ids = sampler.next_batch()
        assert x.shape == y.shape == (8, SEQ) and np.array_equal(x[:, 1:], y[:, :-1])
        assert np.array_equal(domain_of(x), ids)  # each sequence comes from the domain it is labelled with
        counts += np.bincount(ids, minlength=3)
    assert counts / counts.sum() == pytest.approx([0.55, 0.3, 0.15], abs=1 / 400)


def test_sampler_is_deterministic_and_seeded(proxy_synthetic: PreparedData) -> None:
    def draws(seed: int) -> list[np.ndarray]:
        s = MixtureSampler(proxy_synthetic, {"a": 0.5, "b": 0.5}, batch_size=4, seq_len=SEQ, seed=seed)
        return [s.next_batch()[0] for _ in range(5)]

    assert all(np.array_equal(p, q) for p, q in zip(draws(1), draws(1), strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(draws(1), draws(2), strict=True))


def test_sampler_wraps_around_and_counts_epochs(proxy_synthetic: PreparedData) -> None:
    sampler = MixtureSampler(proxy_synthetic, {"c": 1.0}, batch_size=4, seq_len=SEQ, seed=0)
    windows = (321 - 1) // SEQ  # 20 windows of 16 tokens
    starts = [tuple(x[:, 0]) for x in (sampler.next_batch()[0] for _ in range(windows // 4))]
    first_epoch = [s for batch in starts for s in batch]
    assert sorted(first_epoch) == [2000 + SEQ * i for i in range(windows)]  # every window exactly once
    assert sampler.epochs()["c"] == pytest.approx(windows * SEQ / 321)
    sampler.next_batch()  # the second epoch starts: a fresh permutation
    assert sampler.epochs()["c"] == pytest.approx((windows + 4) * SEQ / 321)


def test_sampler_state_round_trips(proxy_synthetic: PreparedData) -> None:
    a = MixtureSampler(proxy_synthetic, {"a": 0.2, "b": 0.3, "c": 0.5}, batch_size=8, seq_len=SEQ, seed=5)
    for _ in range(7):
        a.next_batch()
    b = MixtureSampler(proxy_synthetic, {"a": 1.0}, batch_size=8, seq_len=SEQ, seed=5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(10):
        assert all(np.array_equal(p, q) for p, q in zip(a.next_batch(), b.next_batch(), strict=True))
    assert np.array_equal(a.domain_batch("b", 3)[0], b.domain_batch("b", 3)[0])


def test_changed_weights_take_effect(proxy_synthetic: PreparedData) -> None:
    sampler = MixtureSampler(proxy_synthetic, {"a": 1.0}, batch_size=10, seq_len=SEQ, seed=0)
    assert set(sampler.next_batch()[2]) == {0}
    sampler.set_weights({"b": 3, "c": 1})  # normalised
    ids = np.concatenate([sampler.next_batch()[2] for _ in range(4)])
    assert np.bincount(ids, minlength=3).tolist() == [0, 30, 10]


def test_epoch_check_names_the_offending_domains() -> None:
    tokens = {"a": 1_000, "b": 100_000}
    assert check_epochs(tokens, {"a": 0.5, "b": 0.5}, 8_000, max_epochs=4) == {"a": 4.0, "b": 0.04}
    with pytest.raises(EpochCapError, match=r"'a' would be repeated 5.00 times .* at most 0.4 fits") as info:
        check_epochs(tokens, {"a": 0.5, "b": 0.5}, 10_000, max_epochs=4)
    assert info.value.epochs == {"a": 5.0, "b": 0.05}


@pytest.mark.parametrize("weights", [{"a": -0.1, "b": 1.1}, {"a": 0.0}, {"zzz": 1.0}, {"a": float("nan")}])
def test_bad_weights_are_rejected(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        normalized_weights(("a", "b"), weights)


def test_eval_windows_do_not_overlap() -> None:
    w = eval_windows(np.arange(100), seq_len=16, max_tokens=48)
    assert w.shape == (3, 17) and w[1, 0] == 16 and w[2, -1] == 48
    assert eval_windows(np.arange(10), seq_len=16, max_tokens=48).shape == (1, 10)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_loss_matches_cross_entropy(dtype: torch.dtype | None) -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2500, 32, generator=gen, requires_grad=True)  # more rows than one chunk
    w = (0.3 * torch.randn(300, 32, generator=gen)).requires_grad_()
    y = torch.randint(0, 300, (2500,), generator=gen)
    scale = torch.rand(2500, generator=gen)  # a non-uniform upstream gradient
    grads = []
    for fused in (True, False):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = (
                linear_cross_entropy(h, w, y)
                if fused
                else F.cross_entropy((h @ w.t()).float(), y, reduction="none")
            )
        (loss * scale).sum().backward()
        grads.append((loss.detach(), h.grad, w.grad))
        h.grad = w.grad = None
    tol = 1e-5 if dtype is None else 1e-2
    for fused, plain in zip(*grads, strict=True):
        assert torch.allclose(fused, plain, atol=tol * plain.abs().max(), rtol=0)
    with torch.no_grad():  # the evaluation path (no autocast here: fp32)
        reference = F.cross_entropy(h @ w.t(), y, reduction="none")
        assert torch.allclose(linear_cross_entropy(h, w, y), reference, atol=1e-5)


def test_presets_have_the_advertised_sizes() -> None:
    sizes = {name: p.model_config().non_embedding_params for name, p in PRESETS.items()}
    assert 0.35e6 <= sizes["xs"] <= 0.65e6
    assert 1.6e6 <= sizes["s"] <= 2.6e6
    assert 6.5e6 <= sizes["m"] <= 9.5e6
    assert PRESETS["xs"].tokens < PRESETS["s"].tokens < PRESETS["m"].tokens
    xs = PRESETS["xs"].model_config()
    assert run_flops("xs", 1000) == pytest.approx(1000 * xs.flops_per_token())
    assert (
        6 * xs.non_embedding_params
        < xs.flops_per_token()
        < 6 * xs.params + 6 * xs.n_layer * xs.seq_len * xs.d_model
    )
    with pytest.raises(ValueError, match="unknown proxy preset"):
        run_flops("xxl", 1)


def test_precision_choice() -> None:
    cpu = resolve_device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "auto") in (None, torch.bfloat16)  # measured once, then cached
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "fp8")


def test_prepared_data_rejects_other_formats(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format"):
        PreparedData.load(tmp_path)


def test_tqdm_progress_follows_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy_models.train import Progress, TqdmProgress

    bar = TqdmProgress("unit")
    for step in (3, 7, 10):
        bar(Progress(step=step, total_steps=10, tokens=step * 100, loss=5.0 - step / 10, elapsed_s=step))
    out = capsys.readouterr().err
    assert "unit" in out and "10/10" in out and "loss=4.000" in out


_FAULTS_PER_STEP = """
import resource, statistics, sys, torch
from proxy_models.device import retain_freed_memory
from proxy_models.model import GPT, batch_loss
from proxy_models.presets import PRESETS
if sys.argv[1] == "tuned" and not retain_freed_memory():
    sys.exit(3)
p = PRESETS["xs"]
model = GPT(p.model_config())
opt = torch.optim.AdamW(model.parameters(), fused=True)
x = torch.randint(0, 4096, (p.batch_size, p.seq_len))
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = batch_loss(model, x, x)
    loss.backward()
    opt.step()
def faults(fn):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(3):
    step()
print(statistics.median(faults(step) for _ in range(20)))
"""


def _faults_per_step(allocator: str) -> float | None:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_PER_STEP, allocator], capture_output=True, text=True, timeout=120
    )
    if out.returncode == 3:
        return None
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_training_steps_reuse_freed_memory_instead_of_faulting_it_back_in() -> None:
    """Each count comes from a fresh process, so the glibc defaults are measured in the same environment.

    The median step of 20 is counted: now and then a single tuned step faults in thousands of pages
    (3,713 in one of 20 once), and such a step in a mean of five once made a tuned run look only 2.6x
    better than the default. Tuned, most steps fault in no page at all; by default most fault in
    thousands, their number varying with the machine.
    """
    tuned = _faults_per_step("tuned")
    if tuned is None:
        pytest.skip("not glibc: malloc cannot be tuned")
    default = _faults_per_step("default")
    assert default is not None
    assert tuned < default / 3, (tuned, default)
