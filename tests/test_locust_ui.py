"""Locust's web UI in a real (headless) browser: `harness ui` starts it, a swarm runs, it stops."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, chrome_driver
from tests.test_cli_e2e import ROOT, assert_all_gone

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_web_ui_swarm_start_count_stop(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = free_port()
    out = tmp_path / "ui-run"
    log = tmp_path / "ui.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "ui", str(ROOT / "scenarios" / "smoke.yaml"),
                                 "--out", str(out), "--web-port", str(port)], cwd=ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_for(lambda: "Locust web UI: http://127.0.0.1:" in log.read_text(), 90, "the UI address")
        driver = chrome_driver()
        driver.get(f"http://127.0.0.1:{port}/")
        users = wait_for(lambda: driver.find_elements(By.NAME, "userCount"), 30, "the swarm form")[0]
        users.send_keys(Keys.CONTROL, "a")  # clear() does not reach React's state
        users.send_keys("3")
        rate = driver.find_element(By.NAME, "spawnRate")
        rate.send_keys(Keys.CONTROL, "a")
        rate.send_keys("10")
        driver.find_element(By.XPATH, "//button[@type='submit' and normalize-space()='Start']").click()

        def counted() -> int:
            cells = driver.find_elements(By.XPATH, "//tr[td[normalize-space()='/predict']]/td")
            numbers = [c.text for c in cells if c.text.isdigit()]
            return int(numbers[0]) if numbers else 0

        assert wait_for(counted, 30, "requests counted in the UI's statistics table") > 0
        users_shown = driver.find_elements(By.XPATH, "//*[normalize-space()='Users']/following-sibling::*[1]")
        assert users_shown and users_shown[0].text.strip() == "3"
        time.sleep(1)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "locust-ui.png"))
        driver.find_element(By.XPATH, "//button[normalize-space()='Stop']").click()
        lower = "translate(normalize-space(), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        wait_for(lambda: driver.find_elements(By.XPATH, f"//*[{lower}='stopped']"), 30, "the stopped state")
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "locust-ui" and summary["requests"] > 0
    assert (ARTIFACTS / "locust-ui.png").stat().st_size > 10_000
    assert_all_gone(out)
