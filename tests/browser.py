"""A headless Chromium page for the QC-report tests (Playwright driving the system browser).

Why shared: every report test needs the same finding of the browser, the same rule (CI must
have it, a developer's machine may skip), and the same collection of page errors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def chromium() -> str | None:
    """The system Chromium's path, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def headless_page(problems: list[str]) -> Iterator[object]:
    """An offline page; console errors, page errors and failed requests go to `problems`.

    Skips without Chromium or Playwright, except under CI (which installs both) where a
    missing browser fails.
    """
    browser_path = chromium()
    if browser_path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Chromium (see .ci/run)")
        pytest.skip("no Chromium installed: apt-get install chromium to run this check")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_context(offline=True).new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed request {r.url}"))
        try:
            yield page
        finally:
            browser.close()
