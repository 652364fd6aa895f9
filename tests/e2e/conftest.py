"""Fixtures of the browser tests: Debian's chromium (`make setup` installs it with apt) driven by Playwright,
never a browser Playwright downloads."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt: make setup")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make setup` installs Debian's chromium (apt)")
    with sync_api.sync_playwright() as playwright:
        # as root (CI containers) chromium runs only without its own sandbox
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=chromium, args=args)
        yield launched
        launched.close()
