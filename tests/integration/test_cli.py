"""`mixlab experiment …` against a live server, as a new user types it: inputs are checked before
anything is created, expected errors are one line with exit code 2, and every command has --json."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import MixlabProcess, external_spec, free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mixlab(settings_env: dict[str, str], key: str, tmp_path: Path) -> Any:
    port = free_port()
    server = MixlabProcess(
        ["serve", "--port", str(port), "--no-migrate"], settings_env, tmp_path / "serve.log"
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: serving(url), "the server", logs=[tmp_path / "serve.log"])
    env = {**os.environ, **settings_env, "MIXLAB_URL": url, "MIXLAB_API_KEY": key}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "experiment", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    yield run
    server.stop()


def _one_line_error(out: subprocess.CompletedProcess[str], phrase: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and phrase in out.stderr, (
        out.stderr
    )
    assert "Traceback" not in out.stderr


def test_create_checks_every_input_before_creating_anything(mixlab: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "w", "domains": [{"name": "web"}, {"name": "code"}]}))
    (tmp_path / "bad.json").write_text("{not json")
    corpus = tmp_path / "web.txt"
    corpus.write_text("the web\n\nmore of the web\n")
    _one_line_error(mixlab("create", str(tmp_path / "missing.json")), "no such file")
    _one_line_error(mixlab("create", str(tmp_path / "bad.json")), "not valid JSON")
    _one_line_error(mixlab("create", str(spec), "--corpus", f"books={corpus}"), "not a domain of the spec")
    _one_line_error(mixlab("create", str(spec), "--corpus", "web=/nonexistent.txt"), "not a readable file")
    _one_line_error(mixlab("create", str(spec), "--corpus", str(corpus)), "DOMAIN=PATH")
    bad_text = tmp_path / "code.txt"
    bad_text.write_bytes(b"caf\xe9\n")  # fails on the server, after the draft exists: the draft goes again
    _one_line_error(mixlab("create", str(spec), "--corpus", f"code={bad_text}"), "not valid UTF-8")
    assert json.loads(mixlab("list", "--json").stdout) == []

    made = mixlab("create", str(spec), "--corpus", f"web={corpus}", "--json")
    assert made.returncode == 0, made.stderr
    exp = json.loads(made.stdout)
    assert exp["status"] == "draft" and exp["domains"][0]["documents"] == 2
    shown = json.loads(mixlab("show", str(exp["id"]), "--json").stdout)
    assert shown["id"] == exp["id"]
    _one_line_error(mixlab("show", "999999"), "not found")


def test_list_start_runs_export_cancel_delete(mixlab: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(external_spec(name="cli")))
    exp = json.loads(mixlab("create", str(spec), "--start", "--json").stdout)
    assert exp["status"] == "running"
    listed = mixlab("list")
    assert listed.returncode == 0 and f"{exp['id']:>6}  running" in listed.stdout and "cli" in listed.stdout
    assert [e["id"] for e in json.loads(mixlab("list", "--json", "--status", "running").stdout)] == [
        exp["id"]
    ]

    def proposed() -> list[dict[str, Any]]:
        return json.loads(mixlab("runs", str(exp["id"]), "--json").stdout)

    runs = wait_for(proposed, "the planner's first proposals")
    table = list(csv.DictReader(io.StringIO(mixlab("runs", str(exp["id"]), "--csv").stdout)))
    assert [int(r["id"]) for r in table] == [r["id"] for r in runs]
    _one_line_error(mixlab("export", str(exp["id"])), "no recommendation yet")
    _one_line_error(mixlab("export", str(exp["id"]), "--format", "xml"), "use json, yaml or hf")
    assert "cancelled" in mixlab("cancel", str(exp["id"])).stdout
    watched = mixlab("watch", str(exp["id"]), "--every", "0.2")  # an ended experiment: one look, then done
    assert watched.returncode == 0 and f"experiment {exp['id']} 'cli': cancelled" in watched.stdout
    deleted = mixlab("delete", str(exp["id"]), "--yes")
    assert deleted.returncode == 0 and f"deleted experiment {exp['id']}" in deleted.stdout
    assert json.loads(mixlab("list", "--json").stdout) == []


def test_recommendation_prints_json_and_its_warnings(mixlab: Any, api: Any, auth: dict[str, str]) -> None:
    from tests.integration.test_insights import populate

    few = populate(api, auth, n_big=5, n_small=0)  # too few runs for 3 domains
    shown = mixlab("recommendation", str(few["id"]))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["experiment_id"] == few["id"]  # stdout stays JSON
    assert "runs at fidelity 'big' for 3 domains" in shown.stderr and "warning (few_runs): " in shown.stderr
