"""mixlab-client on its own: installed (not editable) into a fresh venv of the oldest Python it supports,
with nothing but its own dependencies, it runs the shipped ask/tell example against a live server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import MixlabProcess, free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def _interpreter(version: str) -> tuple[str, dict[str, str]] | None:
    """``python<version>`` and the environment that runs it (pyenv shims need PYENV_VERSION)."""
    exe = shutil.which(f"python{version}")
    if exe is None:
        return None
    env = dict(os.environ)
    if shutil.which("pyenv"):
        bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        if matches := [v for v in bare if v.startswith(f"{version}.")]:
            env["PYENV_VERSION"] = matches[-1]
    ok = subprocess.run([exe, "-c", "import sys"], env=env, capture_output=True).returncode == 0
    return (exe, env) if ok else None


@pytest.mark.slow
def test_the_client_alone_on_python_3_9_drives_a_live_server(
    settings_env: dict[str, str], key: str, tmp_path: Path
) -> None:
    found = _interpreter("3.9")
    if found is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    exe, env = found
    venv = tmp_path / "venv"
    subprocess.run([exe, "-m", "venv", str(venv)], env=env, check=True)
    py = str(venv / "bin" / "python")
    source = shutil.copytree(CLIENT, tmp_path / "mixlab-client")  # pip builds in the source tree
    install = subprocess.run([py, "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    installed = subprocess.run(
        [py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    assert "mixlab-client==0.1.0" in installed and "torch" not in installed and "fastapi" not in installed

    port = free_port()
    server = MixlabProcess(
        ["serve", "--port", str(port), "--no-migrate"], settings_env, tmp_path / "serve.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: serving(url), "the server", logs=[tmp_path / "serve.log"])
        example = CLIENT / "examples" / "ask_tell.py"
        out = subprocess.run(
            [py, str(example), "--url", url, "--key", key, "--budget", "6"],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,  # not the repository: only the installed client is importable
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run ") == 6 and "recommended {" in out.stdout, out.stdout

    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.models import Experiment, Run

    with session_scope() as session:  # the example's heartbeats carried each run's learning curve
        example = select(func.max(Experiment.id)).where(Experiment.name == "ask-tell example")
        mine = (Run.experiment_id == example.scalar_subquery(), Run.status == "succeeded")
        curves = session.scalars(select(Run.curve).where(*mine)).all()
    assert len(curves) == 6 and all([p["step"] for p in c] == [100, 200, 300] for c in curves)
