"""Accessibility checks with axe-core (WCAG 2.1 A and AA rules) in the browser tests.

    from tests.support.axe import assert_no_axe_violations
    assert_no_axe_violations(page, "desktop login, password tab")

axe-core is the npm package pinned in tests/e2e/package.json (`npm install` there when it is missing,
as the relying-party tests do). Its script is evaluated in the page through the DevTools protocol,
which the pages' Content-Security-Policy does not govern: the page is checked with its policy intact
(`page.add_script_tag` would be refused by `script-src 'self'`). Each call checks the page as it is
now (a state: a tab, a message, an open keyboard), so call it once per state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.browser import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Page

E2E = Path(__file__).resolve().parent.parent / "e2e"
AXE_SCRIPT = E2E / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
NPM_INSTALL_TIMEOUT = 150  # s


@cache
def axe_source() -> str:
    """axe.min.js, installed by `npm install` in tests/e2e when missing (skips without npm, fails in CI)."""
    if not AXE_SCRIPT.is_file():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed (bash scripts/services installs it): axe-core cannot be installed")
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=E2E,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT,
                env={**os.environ, "NODE_ENV": "development"},
            )
        except subprocess.TimeoutExpired:
            unavailable(f"npm install in tests/e2e took more than {NPM_INSTALL_TIMEOUT} s")
        if done.returncode != 0 or not AXE_SCRIPT.is_file():
            unavailable(f"npm install in tests/e2e failed ({done.returncode}): {done.stderr[-1500:]}")
    return AXE_SCRIPT.read_text(encoding="utf-8")


def axe_violations(page: Page, tags: tuple[str, ...] = WCAG_TAGS) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it is now, for the rules tagged `tags`."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_source() + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {
                runOnly: { type: "tag", values: tags },
                resultTypes: ["violations"],
            });
            return { violations: result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                nodes: v.nodes.map((n) => ({ target: n.target, html: n.html, summary: n.failureSummary })),
            })) };
        }""",
        list(tags),
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    """One paragraph per rule broken: its id, impact and help, then each element and what is wrong."""
    lines = []
    for violation in violations:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"]:
            lines.append(f"    at {json.dumps(node['target'], ensure_ascii=False)}: {node['html'][:160]}")
            for line in (node["summary"] or "").splitlines():
                lines.append(f"      {line}")
    return "\n".join(lines)


def assert_no_axe_violations(page: Page, context: str) -> None:
    """Fail with a readable list when axe-core finds WCAG 2.1 A/AA violations in the page's current
    state; `context` names the state in the message ("desktop login, QR tab")."""
    violations = axe_violations(page)
    assert not violations, f"axe-core: {len(violations)} rule(s) broken on {context} ({page.url}):\n" + describe(
        violations
    )
