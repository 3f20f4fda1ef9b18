"""The HTTP client: experiments, ask/tell under leases, recommendations, online sessions.

from mixlab_client import Client
mx = Client("http://127.0.0.1:8000", api_key="mlx_...")
exp = mx.create_experiment(name="demo", domains=[{"name": "web", "tokens": 10**9}, ...], executor="external")
exp.start()
trial = exp.ask()                      # weights to train on, under a lease
exp.tell(trial, losses={...})          # per-domain validation losses (LeaseLost if the lease ran out)
print(exp.recommendation(wait=True))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)
RETRY_STATUSES = {502, 503, 504}


class ApiError(Exception):
    """The server said no: ``status`` (HTTP), ``code`` (machine-readable) and a message to act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class LeaseLost(ApiError):
    """The trial's lease expired and its run was handed out again: drop the result and ask anew."""


@dataclass(frozen=True)
class Trial:
    """A leased run: train ``weights`` at ``fidelity``, then ``tell`` its losses before the lease ends."""

    run_id: int
    weights: dict[str, float]
    fidelity: str
    seed: int
    lease_token: str
    lease_expires_at: str


class Client:
    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 60.0, retries: int = 4, backoff_s: float = 0.5
    ) -> None:
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries and exponential backoff on connection errors and 502/503/504."""
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise
                log.warning("%s %s failed (%s); retrying", method, path, e)
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return _decode(resp)
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def text(self, method: str, path: str, **kwargs: Any) -> str:
        """A call whose answer is a file (CSV, YAML, …), not JSON; errors raise as ``request`` does."""
        resp = self._http.request(method, path, **kwargs)
        if not resp.is_success:
            _decode(resp)
        return resp.text

    def create_experiment(self, **spec: Any) -> Experiment:
        return Experiment(self, self.request("POST", "/experiments", json=spec))

    def experiment(self, experiment_id: int) -> Experiment:
        return Experiment(self, self.request("GET", f"/experiments/{experiment_id}"))

    def experiments(self, page_size: int = 50, **filters: Any) -> Iterator[Experiment]:
        """Newest first; ``filters``: status, tag, name (a substring), archived (bool)."""
        params = {k: v for k, v in filters.items() if v is not None}
        for item in self.paginate("/experiments", page_size=page_size, **params):
            yield Experiment(self, item)

    def paginate(self, path: str, page_size: int = 100, **params: Any) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            cursor: dict[str, Any] = {"after": after} if after is not None else {}
            page = self.request("GET", path, params={**params, "limit": page_size, **cursor})
            yield from page["items"]
            after = page["next_after"]
            if after is None:
                return


class Experiment:
    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client, self.data, self.id = client, data, data["id"]
        self._path = f"/experiments/{self.id}"

    def refresh(self) -> dict[str, Any]:
        self.data = self.client.request("GET", self._path)
        return self.data

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def upload(self, domain: str, path: str | Path) -> dict[str, Any]:
        """Upload one domain's corpus (.txt, .jsonl, or .gz of either), streamed from disk."""
        path = Path(path)
        with path.open("rb") as fh:
            return self.client.request(  # type: ignore[no-any-return]
                "PUT", f"{self._path}/domains/{domain}/corpus", params={"filename": path.name}, content=fh
            )

    def upload_unlabeled(self, path: str | Path) -> dict[str, Any]:
        """Upload the one corpus a clustering experiment splits into domains."""
        path = Path(path)
        with path.open("rb") as fh:
            self.data = self.client.request(
                "PUT", f"{self._path}/corpus", params={"filename": path.name}, content=fh
            )
        return self.data

    def start(self) -> dict[str, Any]:
        self.data = self.client.request("POST", f"{self._path}/start")
        return self.data

    def cancel(self) -> dict[str, Any]:
        self.data = self.client.request("POST", f"{self._path}/cancel")
        return self.data

    def delete(self, force: bool = False) -> None:
        """Delete it with its runs and files; ``force`` also while workers train its runs."""
        self.client.request("DELETE", self._path, params={"force": force})

    def update(self, **fields: Any) -> dict[str, Any]:
        """Change ``name``, ``tags`` or ``notes``."""
        self.data = self.client.request("PATCH", self._path, json=fields)
        return self.data

    def clone(self, name: str | None = None, seed: int | None = None) -> Experiment:
        body = {k: v for k, v in (("name", name), ("seed", seed)) if v is not None}
        return Experiment(self.client, self.client.request("POST", f"{self._path}/clone", json=body))

    def extend(self, budget: float) -> dict[str, Any]:
        """Add budget; a done experiment resumes."""
        self.data = self.client.request("POST", f"{self._path}/extend", json={"budget": budget})
        return self.data

    def export(self, fmt: str = "json") -> str:
        """The recommended mixture as a file's text: ``json``, ``yaml`` or ``hf`` (a datasets snippet)."""
        return self.client.text("GET", f"{self._path}/dashboard/export", params={"format": fmt})

    def runs_csv(self, **filters: Any) -> str:
        """Every run (``filters``: status, fidelity, origin) as CSV."""
        params = {"format": "csv", **{k: v for k, v in filters.items() if v is not None}}
        return self.client.text("GET", f"{self._path}/runs", params=params)

    def runs(
        self, status: str | None = None, page_size: int = 200, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Runs in creation order; ``filters``: fidelity, origin."""
        params = {k: v for k, v in {"status": status, **filters}.items() if v is not None}
        return self.client.paginate(f"{self._path}/runs", page_size=page_size, **params)

    def ask(self, timeout: float | None = 600.0, wait_s: float = 20.0) -> Trial:
        """Lease the next proposed mixture. While none is ready (the planner is catching up, or every
        run is leased) the server long-polls ``wait_s`` seconds a call; this retries until ``timeout``
        (None: forever), then raises the ``no_run_ready`` ApiError. Other errors raise at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = wait_s if deadline is None else max(0.0, min(wait_s, deadline - time.monotonic()))
            try:
                data = self.client.request("POST", f"{self._path}/ask", params={"wait": round(left, 3)})
                break
            except ApiError as e:  # the server waited ``left`` seconds already: ask again at once
                if e.code != "no_run_ready" or (deadline is not None and time.monotonic() >= deadline):
                    raise
        run = data["run"]
        return Trial(
            run["id"],
            run["weights"],
            run["fidelity"],
            run["seed"],
            data["lease_token"],
            data["lease_expires_at"],
        )

    def tell(self, trial: Trial, losses: Mapping[str, float], cost: float | None = None) -> dict[str, Any]:
        """Report the trial's per-domain losses; raises ``LeaseLost`` if its lease ran out meanwhile."""
        body: dict[str, Any] = {"lease_token": trial.lease_token, "losses": dict(losses)}
        if cost is not None:
            body["cost"] = cost
        return self.client.request("POST", f"{self._path}/runs/{trial.run_id}/result", json=body)  # type: ignore[no-any-return]

    def heartbeat(
        self, trial: Trial, *, points: Sequence[Mapping[str, Any]] = (), **progress: Any
    ) -> dict[str, Any]:
        """Extend the trial's lease (call it well within ``lease_s``) and record progress.

        ``step=…, total_steps=…`` in ``progress`` give the run an ETA; ``points`` are learning-curve
        points since the last heartbeat (``{"step", "train_loss", "tokens"?, "eval_losses"?}``), drawn
        live on the run's page.
        """
        body = {"lease_token": trial.lease_token, "progress": progress, "points": list(points)}
        return self.client.request("POST", f"{self._path}/runs/{trial.run_id}/heartbeat", json=body)  # type: ignore[no-any-return]

    def fail(self, trial: Trial, error: str) -> dict[str, Any]:
        body = {"lease_token": trial.lease_token, "error": error}
        return self.client.request("POST", f"{self._path}/runs/{trial.run_id}/fail", json=body)  # type: ignore[no-any-return]

    def retry(self, run_id: int) -> dict[str, Any]:
        return self.client.request("POST", f"{self._path}/runs/{run_id}/retry")  # type: ignore[no-any-return]

    def import_runs(self, runs: Sequence[Mapping[str, Any]]) -> list[int]:
        return self.client.request("POST", f"{self._path}/runs/import", json={"runs": list(runs)})["run_ids"]  # type: ignore[no-any-return]

    def wait(
        self,
        timeout: float | None = None,
        poll_s: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the experiment is done, failed or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = self.refresh()
            if on_update:
                on_update(data)
            if data["status"] in ("done", "failed", "cancelled"):
                return data
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self.id} is still {data['status']} after {timeout} s")
            time.sleep(poll_s)

    def recommendation(self, wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """The latest recommendation; with ``wait``, the final one once the experiment is done."""
        if wait:
            data = self.wait(timeout)
            if data["status"] != "done":
                raise ApiError(409, data["status"], data.get("error") or f"experiment is {data['status']}")
        return self.client.request("GET", f"{self._path}/recommendation")  # type: ignore[no-any-return]

    def predict_scale(self, **ladder: Any) -> dict[str, Any]:
        """Start a scale prediction of the (done) experiment's recommendation; ``ladder``: presets,
        token_scales, seeds, baselines, target_params, target_tokens (see the API docs)."""
        body = {k: v for k, v in ladder.items() if v is not None}
        return self.client.request("POST", f"{self._path}/scale-prediction", json=body)  # type: ignore[no-any-return]

    def scale_prediction(
        self, wait: bool = False, timeout: float | None = None, poll_s: float = 2.0
    ) -> dict[str, Any]:
        """The latest scale prediction; with ``wait``, once its ladder has finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data: dict[str, Any] = self.client.request("GET", f"{self._path}/scale-prediction")
            if not wait or data["status"] != "running":
                return data
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"scale prediction {data['id']} is still running after {timeout} s")
            time.sleep(poll_s)

    def online_session(self, strategy: str = "aioli", seed: int = 0, **params: Any) -> OnlineSession:
        data = self.client.request(
            "POST",
            f"{self._path}/online-sessions",
            json={"strategy": strategy, "params": params, "seed": seed},
        )
        return OnlineSession(self.client, data)


class OnlineSession:
    """Re-weights domains during one training run: post per-domain losses every k steps, get new weights."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client, self.data, self.id = client, data, data["id"]
        self._path = f"/experiments/{data['experiment_id']}/online-sessions/{self.id}"

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.data["weights"])

    def update(
        self,
        step: int,
        losses: Mapping[str, float],
        alignment: Mapping[str, float] | None = None,
        reference_losses: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        body: dict[str, Any] = {"step": step, "losses": dict(losses)}
        if alignment is not None:
            body["alignment"] = dict(alignment)
        if reference_losses is not None:
            body["reference_losses"] = dict(reference_losses)
        self.data = self.client.request("POST", f"{self._path}/update", json=body)
        return self.weights


def _decode(resp: httpx.Response) -> Any:
    if resp.is_success:
        return resp.json() if resp.content else None
    try:
        err = resp.json()["error"]
        error = LeaseLost if err["code"] == "lease_lost" else ApiError
        raise error(resp.status_code, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(resp.status_code, "http_error", resp.text[:500]) from None
