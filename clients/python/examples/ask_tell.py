"""An ask/tell loop as a training pipeline would run it, with a stand-in for training.

    python examples/ask_tell.py --url http://127.0.0.1:8000 --key mlx_... [--budget 12]

Creates an external experiment over three domains, then asks for a mixture, "trains" on it (here: a
fixed mixing law instead of a model) while heartbeating, tells the per-domain losses, and prints the
recommendation. Replace ``train_and_eval`` with your own training and evaluation.
"""

from __future__ import annotations

import argparse
import math

from mixlab_client import ApiError, Client, Experiment, LeaseLost, Trial

DOMAINS = {"web": 8_000_000_000, "code": 900_000_000, "books": 2_000_000_000}


def train_and_eval(exp: Experiment, trial: Trial) -> dict[str, float]:
    """Stand-in: more of a domain lowers its loss, with diminishing returns."""
    total_steps = 300
    for step in (100, 200, 300):
        train_loss = 3.5 + 6.0 / math.sqrt(step)  # what your trainer logs
        # extends the lease while a long run trains; the points draw its live learning curve
        exp.heartbeat(
            trial, step=step, total_steps=total_steps, points=[{"step": step, "train_loss": train_loss}]
        )
    return {d: 3.5 - 0.8 * math.sqrt(w) for d, w in trial.weights.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True, help="a project key (mixlab project create NAME)")
    ap.add_argument("--budget", type=float, default=12)
    args = ap.parse_args()
    with Client(args.url, api_key=args.key) as mx:
        exp = mx.create_experiment(
            name="ask-tell example",
            executor="external",
            strategy="random",
            budget=args.budget,
            domains=[{"name": d, "tokens": t} for d, t in DOMAINS.items()],
            fidelities=[{"name": "proxy", "tokens": 1_000_000_000, "cost": 1.0}],
            target={"web": 0.5, "code": 0.5},
        )
        exp.start()
        while True:
            try:
                trial = exp.ask()
            except ApiError as e:
                if e.code == "budget_spent":
                    break
                raise
            losses = train_and_eval(exp, trial)
            try:
                exp.tell(trial, losses)
            except LeaseLost:
                continue  # too slow: the run was handed out again, and that result will count
            print(f"run {trial.run_id}: {trial.weights} -> {losses}")
        rec = exp.recommendation(wait=True)
        print(f"recommended {rec['weights']} (predicted target loss {rec['predicted_loss']:.4f})")


if __name__ == "__main__":
    main()
