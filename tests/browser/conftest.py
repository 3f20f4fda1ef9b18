"""A live mixlab server (uvicorn in a thread, SQLite) and Debian's headless Chromium driven by Playwright.

Chromium must be installed (`apt-get install -y chromium chromium-driver`); if it is missing the browser
tests fail with that instruction rather than skip. Set MIXLAB_CHROMIUM to use another binary, and
MIXLAB_UPDATE_DOCS=1 to refresh docs/dashboard.png from the experiment-page screenshot.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_insights import populate

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("MIXLAB_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 900}
# Cheap RegMix settings so every refit during the setup takes a fraction of a second.
QUICK_REGMIX = {
    "n_search": 2000,
    "average_top": 20,
    "regressor_params": {"lightgbm": {"n_estimators": 300, "learning_rate": 0.05}},
}


@dataclass
class LiveServer:
    """The served app, and an in-process client of the same database for setting up data.

    Writes go through the in-process client: it returns only once the request's transaction has committed,
    while over HTTP a response can reach the client before its commit (see the lead's note on get_db).
    """

    url: str
    key: str
    other_key: str
    done: dict[str, Any] = field(default_factory=dict)  # a finished experiment (RegMix)
    running: dict[str, Any] = field(default_factory=dict)  # one still asking for runs

    def api(self) -> Any:
        from fastapi.testclient import TestClient

        from app.main import create_app

        return TestClient(create_app(), headers={"Authorization": f"Bearer {self.key}"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _new_key(project: str) -> str:
    from app.core.db import session_scope
    from app.services.projects import create_project

    with session_scope() as session:
        return create_project(session=session, name=project)[1]


@pytest.fixture(scope="session", autouse=True)
def chromium() -> Path:
    """Checked first (autouse), so a missing browser fails every test at once with the fix to apply."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: install it with "
            "`apt-get install -y chromium chromium-driver` (or point MIXLAB_CHROMIUM at a Chromium binary)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real app on a free localhost port, with two populated experiments in a fresh SQLite file."""
    import uvicorn

    from app.core.config import get_settings
    from app.core.migrate import upgrade
    from app.main import create_app

    tmp = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{tmp / 'mixlab.sqlite'}"
    upgrade(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXLAB_DATABASE_URL", url)
        mp.setenv("MIXLAB_STORAGE_DIR", str(tmp / "storage"))
        mp.setenv("MIXLAB_EXECUTOR", "embedded")
        get_settings.cache_clear()
        port = _free_port()
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the uvicorn test server did not start")
            time.sleep(0.05)
        live = LiveServer(f"http://127.0.0.1:{port}", _new_key("mixture-lab"), _new_key("another-team"))
        auth = {"Authorization": f"Bearer {live.key}"}
        with live.api() as client:
            live.done = populate(
                client,
                auth,
                n_big=60,
                n_small=24,
                finish=True,
                name="web-code-law",
                strategy="regmix",
                strategy_params=QUICK_REGMIX,
            )
            live.running = populate(
                client, auth, n_big=10, n_small=0, seed=1, name="still-running", budget=50
            )
        try:
            yield live
        finally:
            server.should_exit = True
            thread.join(10)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@dataclass
class PageWatch:
    """A fresh browser context (no cookies) whose console errors and uncaught exceptions are recorded."""

    page: Any
    errors: list[str]

    def login(self, live: LiveServer, key: str | None = None, path: str = "/ui") -> None:
        self.page.goto(live.url + path)
        self.page.wait_for_selector("#login-form")
        self.page.fill("#key", key or live.key)
        with self.page.expect_navigation():
            self.page.click("#login-form button[type=submit]")

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def watch(browser: Any) -> Iterator[PageWatch]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    try:
        yield PageWatch(page, errors)
    finally:
        context.close()
