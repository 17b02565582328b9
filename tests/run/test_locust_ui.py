"""Locust's web UI in a real (headless) browser: `harness ui` starts it, a swarm runs, it stops."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.engines.ports import free_port
from tests.support import ARTIFACTS, ROOT
from tests.support.browser import chrome_driver
from tests.support.cli import assert_all_gone

pytestmark = pytest.mark.e2e


def interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C `harness ui` as a user would; kill it only if it does not stop within a minute."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


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
        interrupt(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "locust-ui" and summary["requests"] > 0
    assert (ARTIFACTS / "locust-ui.png").stat().st_size > 10_000
    assert_all_gone(out)




def test_ui_moves_off_a_taken_port_and_requires_its_login(tmp_path: Path) -> None:
    """8089 taken (by us, or already by someone else): the UI picks a free port; without the
    HARNESS_WEB_AUTH login every page and API call is refused, so nobody else can start load."""
    import requests

    from tests.support.rawserver import OK_JSON, RawServer, respond_forever

    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 8089))
        held.listen()
    except OSError:
        pass  # already taken by another process: the situation under test
    out, log = tmp_path / "ui-run", tmp_path / "ui.log"
    env = {**os.environ, "HARNESS_WEB_AUTH": "tester:s3cret:with-colon"}
    with RawServer(respond_forever(OK_JSON)) as target, open(log, "w") as log_file:
        target_url = f"http://127.0.0.1:{target.port}"
        proc = subprocess.Popen([sys.executable, "-m", "harness", "ui", str(ROOT / "scenarios" / "smoke.yaml"),
                                 "--out", str(out), "--url", target_url], cwd=ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env)
        try:
            found = wait_for(lambda: re.search(r"Locust web UI: http://127\.0\.0\.1:(\d+)", log.read_text()),
                             90, "the UI address")
            port = int(found.group(1))
            assert port != 8089
            ui = f"http://127.0.0.1:{port}"

            def answering() -> list[requests.Response]:  # a list: a 401 response is falsy
                try:
                    return [requests.get(ui + "/", timeout=5)]
                except requests.ConnectionError:
                    return []

            anonymous = wait_for(answering, 30, "the UI to answer")[0]
            children = psutil.Process(proc.pid).children(recursive=True)
            assert children  # Locust
            assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
            swarm = {"user_count": 2, "spawn_rate": 10, "host": target_url}
            assert requests.post(ui + "/swarm", data=swarm, timeout=5).status_code == 401
            assert requests.get(ui + "/stats/requests", auth=("tester", "wrong"), timeout=5).status_code == 401

            login = ("tester", "s3cret:with-colon")
            assert requests.get(ui + "/", auth=login, timeout=5).status_code == 200
            assert requests.post(ui + "/swarm", data=swarm, auth=login, timeout=5).json()["success"]
            wait_for(lambda: requests.get(ui + "/stats/requests", auth=login, timeout=5).json()["total_rps"] > 0,
                     30, "the authorised swarm to send")
        finally:
            interrupt(proc)
            held.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert json.loads((out / "summary.json").read_text())["requests"] > 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_ui_refuses_a_malformed_login_setting(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "harness", "ui", str(ROOT / "scenarios" / "smoke.yaml"),
                             "--out", str(tmp_path / "ui"), "--url", "http://127.0.0.1:9"], cwd=ROOT,
                            env={**os.environ, "HARNESS_WEB_AUTH": "no-colon"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "HARNESS_WEB_AUTH must be USER:PASSWORD" in result.stderr and "Traceback" not in result.stderr
