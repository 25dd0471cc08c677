"""Pytest fixtures for browser tests (load with `pytest_plugins = ("tests.support.browser_fixtures",)`):
`browser` (session scope: one headless Chromium) and `page` (a fresh context and page per test, which
must end without console errors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import CHROMIUM_ARGS, PageProblems, chromium_path, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    yield from launched_browser()


def launched_browser() -> Iterator[Browser]:
    """Playwright's Chromium until the generator is closed. Playwright's sync API keeps an event loop
    running in the main thread meanwhile, so async tests (anyio) cannot run before it is closed: a
    module whose browser tests come before async modules launches its own (module scope)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        unavailable("Chromium is not installed (bash scripts/services installs Debian's chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no shared storage) and page, 1100x760, Chinese locale."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, locale="zh-CN")
    context.set_default_timeout(5000)
    opened = context.new_page()
    problems = PageProblems(opened)
    yield opened
    context.close()
    assert problems.messages == [], problems.messages
