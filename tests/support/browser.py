"""Headless Chromium for browser tests: installed from Debian by `scripts/install.sh --dev`."""
from __future__ import annotations

import shutil
import tempfile

import pytest

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str:
    """The headless browser, installed by `scripts/install.sh --dev` (scripts/install-browser.sh).
    Missing, the browser tests fail and say how to install it: they are never skipped."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("headless Chromium is not installed (chromium, chromedriver): run "
                    "`bash scripts/install.sh --dev` (it runs scripts/install-browser.sh)", pytrace=False)
    return browser


def chrome_driver(width: int = 1400, height: int = 900):  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser = chromium_path()
    options = Options()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS + [f"--window-size={width},{height}",
                                  f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                            options=options)
