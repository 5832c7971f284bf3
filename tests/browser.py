"""Helpers for the headless-Chromium tests of the web page, which runs under its Content Security Policy
(``script-src 'self'``): Playwright's ``wait_for_function`` compiles its predicate inside the page, which that
policy forbids, so waits poll with ``page.evaluate`` (the DevTools protocol, outside the page's policy); and every
test can collect the policy violations the page itself causes."""

from __future__ import annotations

import time
from typing import Any


def wait_until(page: Any, expression: str, timeout: float) -> None:
    """Poll the JavaScript ``expression`` until it is truthy; AssertionError after ``timeout`` ms (Playwright's
    unit)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout / 1000:.0f} s: {expression}")
        time.sleep(0.05)


def csp_violations(page: Any) -> list[str]:
    """A list that fills with the page's Content Security Policy violations (console errors) from now on."""
    seen: list[str] = []
    page.on("console", lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None)
    return seen
