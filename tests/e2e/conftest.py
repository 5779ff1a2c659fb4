"""E2E fixtures: a real ``ragserve serve`` process and Debian's Chromium driven by Playwright.

The browser is ``/usr/bin/chromium`` from apt (scripts/test.sh installs it); Playwright never downloads one.
Every page records console errors and uncaught exceptions; a test fails if any occurred.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright import sync_api

from tests.integration.server import free_port, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
DESKTOP: sync_api.ViewportSize = {"width": 1280, "height": 800}
PHONE: sync_api.ViewportSize = {"width": 375, "height": 812}


@dataclass
class BrowserErrors:
    messages: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("e2e-server")
    port = free_port()
    process = start_server(root / "data", port, model_cache, root / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# Module scope, not session: while Playwright's sync API is open its event loop counts as running in this thread,
# and the asyncio tests that run after the e2e tests could not start theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _watch(page: sync_api.Page, errors: BrowserErrors) -> None:
    page.on("console", lambda m: m.type == "error" and errors.messages.append(f"console: {m.text} @ {m.location}"))
    page.on("pageerror", lambda e: errors.messages.append(f"pageerror: {e}"))


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


def _page(
    browser: sync_api.Browser, server_url: str, viewport: sync_api.ViewportSize, errors: BrowserErrors
) -> Iterator[sync_api.Page]:
    context = browser.new_context(base_url=server_url, viewport=viewport)
    context.set_default_timeout(15_000)
    page = context.new_page()
    _watch(page, errors)
    yield page
    context.close()
    assert errors.messages == [], "the browser reported errors"


@pytest.fixture
def page(browser: sync_api.Browser, server_url: str, browser_errors: BrowserErrors) -> Iterator[sync_api.Page]:
    yield from _page(browser, server_url, DESKTOP, browser_errors)


@pytest.fixture
def phone_page(browser: sync_api.Browser, server_url: str, browser_errors: BrowserErrors) -> Iterator[sync_api.Page]:
    yield from _page(browser, server_url, PHONE, browser_errors)


def copy_fixture(name: str, directory: Path, as_name: str | None = None) -> Path:
    """A fixture file copied under a new name, so each test's upload is its own document."""
    target = directory / (as_name or name)
    shutil.copyfile(Path(__file__).resolve().parents[1] / "fixtures" / "files" / name, target)
    return target
