"""Fuzz the live API from its own OpenAPI document with schemathesis: no 5xx, no undocumented status, no
schema-valid request refused.

Starts `mixlab serve` on PostgreSQL (a fresh database; rate limit off, since the fuzzer is one client
sending thousands of requests), seeds a project, a running external experiment with a leased run and a
draft, then runs ``schemathesis run`` against ``/openapi.json`` with the project's key, bounded by
``--max-examples`` per operation and ``--max-time``. Counts unique failures from schemathesis's summary:

- ``server_errors``: responses ≥ 500 (check ``not_a_server_error``);
- ``undocumented_status``: statuses the document does not list (``status_code_conformance``);
- ``rejected_valid``: schema-valid requests answered with an error other than 401/403/404/409
  (``positive_data_acceptance``: a 404 for a random id or a 409 for the experiment's state is an
  answer, not a rejection). One exemption, written in the generated config: a 422 from the
  operations whose bodies are keyed by the experiment's own domain names or must sum to 1 (create,
  result, import, online update, a heartbeat's per-domain eval losses), must be real text in the
  named format (corpus uploads) or depend on the strategy named (online-session parameters), rules a
  static schema cannot state;
- also response-schema, content-type, Allow-header and unsupported-method failures (``other``), and
  requests that got no answer at all (``errors``).

    python bench/fuzz_api.py [--quick] [--max-examples 50] [--max-time 600] [--seed 0]

``make test`` runs a bounded version (tests/integration/test_fuzz.py). Ends with
``RESULT cases=… server_errors=… undocumented_status=… rejected_valid=… other=… errors=…``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_load import database, free_port, processes  # noqa: E402

CHECKS = (
    "not_a_server_error,status_code_conformance,positive_data_acceptance,response_schema_conformance,"
    "content_type_conformance,allow_header_conformance,unsupported_method"
)
KINDS = {
    "ST101": "server_errors",
    "ST102": "server_errors",
    "ST103": "undocumented_status",
    "ST202": "rejected_valid",
}
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", 401, 403, 404, 409]

[[operations]]
include-path-regex = "^/api/v1/experiments$|/result$|/import$|/update$|/heartbeat$|/corpus$|/online-sessions$"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 403, 404, 409, 422]
"""


def seed(url: str, key: str) -> None:
    """State for the fuzzer to find: a running external experiment with a leased run, and a draft."""
    auth = {"Authorization": f"Bearer {key}"}
    spec = {
        "name": "fuzz",
        "executor": "external",
        "strategy": "random",
        "domains": [{"name": "web", "tokens": 10**9}, {"name": "code", "tokens": 10**9}],
        "fidelities": [{"name": "proxy", "tokens": 10**8, "cost": 1.0}],
        "budget": 50,
    }
    with httpx.Client(base_url=url, headers=auth, timeout=30) as api:
        exp = api.post("/api/v1/experiments", json=spec).json()
        api.post(f"/api/v1/experiments/{exp['id']}/start").raise_for_status()
        api.post(f"/api/v1/experiments/{exp['id']}/ask", params={"wait": 10}).raise_for_status()
        draft = {"name": "draft", "domains": [{"name": "web"}, {"name": "code"}]}
        api.post("/api/v1/experiments", json=draft).raise_for_status()


def fuzz(url: str, key: str, args: argparse.Namespace, workdir: Path) -> tuple[Counter[str], str]:
    """Run schemathesis; unique failures per kind, as its summary counts them, and its report."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(args.max_examples),
        "--max-time",
        str(args.max_time),
        "--seed",
        str(args.seed),
        "--workers",
        "2",
        "--request-timeout",
        "75",  # ask may long-poll ?wait= up to 60 s
        "--no-color",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir).stdout
    counts: Counter[str] = Counter()
    if m := re.search(r"^\s*(\d+) generated", out, re.M):
        counts["cases"] = int(m.group(1))
    summary = out[out.rfind("Failures:") :] if "Failures:" in out else ""
    for code, n in re.findall(r"(ST\d+) [^:\n]*: (\d+)", summary.split("\n\n")[0]):
        counts[KINDS.get(code, "other")] += int(n)
    errors = out[out.rfind("Errors:") :].split("\n\n")[0] if "Errors:" in out else ""
    counts["errors"] = sum(int(n) for n in re.findall(r"^\s*🚫 [^:\n]+: (\d+)", errors, re.M))
    return counts, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 examples per operation, 45 s at most")
    ap.add_argument("--max-examples", type=int, default=50, help="examples per operation")
    ap.add_argument("--max-time", type=int, default=600, help="seconds for the whole run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=20_000, help="characters of schemathesis's report to print")
    args = ap.parse_args()
    if args.quick:
        args.max_examples, args.max_time = min(args.max_examples, 10), min(args.max_time, 45)
    with tempfile.TemporaryDirectory(prefix="mixlab-fuzz-") as tmp, database(False, Path(tmp)) as db_url:
        env = {
            "MIXLAB_DATABASE_URL": db_url,
            "MIXLAB_STORAGE_DIR": str(Path(tmp) / "storage"),
            "MIXLAB_EXECUTOR": "embedded",
            "MIXLAB_EMBEDDED_TRAINER": "false",
            "MIXLAB_RATE_LIMIT": "",
        }
        os.environ.update(env)
        from app.core.config import get_settings
        from app.core.db import session_scope
        from app.services.projects import create_project

        get_settings.cache_clear()
        with session_scope() as session:
            _, key = create_project(session=session, name="fuzz")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with processes(env, True, port, Path(tmp) / "server.log", workers=1):
            seed(url, key)
            counts, report = fuzz(url, key, args, Path(tmp))
    print(report[-args.show :], file=sys.stderr)
    keys = ("cases", "server_errors", "undocumented_status", "rejected_valid", "other", "errors")
    print("RESULT " + " ".join(f"{k}={counts[k]}" for k in keys))


if __name__ == "__main__":
    main()
