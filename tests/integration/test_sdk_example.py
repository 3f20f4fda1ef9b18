"""The examples/ script: a PyTorch loop driven by the SDK against a live server (uvicorn on a local port)."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_with_mixlab.py"


def test_example_runs_against_a_live_server(settings_env, key, capsys) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    from app.main import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        spec = importlib.util.spec_from_file_location("train_with_mixlab", EXAMPLE)
        assert spec and spec.loader
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        final = example.main(f"http://127.0.0.1:{port}", key, budget=3, steps=12, chars=20_000)
    finally:
        server.should_exit = True
        thread.join(10)
    out = capsys.readouterr().out
    assert out.count("run ") == 3 and "recommended" in out and "online session" in out
    assert set(final) == {"sports", "politics", "code"} and all(v < 5.6 for v in final.values())  # < ln(256)
