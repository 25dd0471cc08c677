"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python: helpers (the
fixtures are in browser_fixtures.py).

Playwright's own browser download is never used: the browser is the system one. Without Playwright
or Chromium the browser tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("QRGATE_TEST_CHROMIUM", ""), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}, and CI=true requires the browser tests to run")
    pytest.skip(reason)


class PageProblems:
    """Console errors (a CSP violation, say) and uncaught exceptions of a page: a test ends with none.
    Chromium also logs every 4xx answer as an error; those are expected (a wrong password is a 401)."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.messages.append(message.text)


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot of the page's state under test-artifacts/ (CI keeps them)."""
    folder = Path("test-artifacts") / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
