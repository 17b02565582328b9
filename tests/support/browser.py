"""Headless Chromium for browser tests: installed from Debian by scripts/install-browser.sh."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from tests.support import ARTIFACTS, ROOT

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def ensure_browser() -> None:
    """Install chromium and chromium-driver if missing; skip (with the reason) if that fails."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh")], capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0 or not shutil.which("chromedriver"):
        pytest.skip(f"headless Chromium could not be installed: {result.stderr.strip()[-300:]}")


def chrome_driver(width: int = 1400, height: int = 900):  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    ensure_browser()
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS + [f"--window-size={width},{height}",
                                  f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                            options=options)
