"""Locust's web UI in a real (headless) browser: `harness ui` starts it, a swarm runs, it stops;
its port choice (8089, another free one, or a refused --web-port) and its login."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import psutil
import pytest
import requests

from tests.support import ARTIFACTS, SMOKE
from tests.support.browser import chrome_driver
from tests.support.cli import HarnessProcess, assert_all_gone, harness, wait_until
from tests.support.rawserver import OK_JSON, HeldPort, RawServer, dead_port, respond_forever

pytestmark = pytest.mark.e2e
UI_ADDRESS = re.compile(r"Locust web UI: http://127\.0\.0\.1:(\d+)")


def interrupt(proc: HarnessProcess) -> int:
    """Ctrl-C `harness ui` as a user would; HarnessProcess kills it if it does not stop in a minute."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)


def ui_port(proc: HarnessProcess) -> int:
    """The port `harness ui` chose and printed."""
    found = wait_until(lambda: UI_ADDRESS.search(proc.stdout), 90, "the UI address", proc=proc)
    return int(found.group(1))


def test_web_ui_swarm_start_count_stop(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = tmp_path / "ui-run"
    with HarnessProcess("ui", str(SMOKE), "--out", str(out), "--web-port", "0") as proc:  # 0: any free port
        driver = None
        try:
            port = ui_port(proc)
            driver = chrome_driver()
            driver.get(f"http://127.0.0.1:{port}/")
            users = wait_until(lambda: driver.find_elements(By.NAME, "userCount"), 30, "the swarm form",
                               poll=0.3)[0]
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

            assert wait_until(counted, 30, "requests counted in the UI's statistics table", poll=0.3) > 0
            users_shown = driver.find_elements(By.XPATH, "//*[normalize-space()='Users']/following-sibling::*[1]")
            assert users_shown and users_shown[0].text.strip() == "3"
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "locust-ui.png"))
            driver.find_element(By.XPATH, "//button[normalize-space()='Stop']").click()
            lower = "translate(normalize-space(), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
            wait_until(lambda: driver.find_elements(By.XPATH, f"//*[{lower}='stopped']"), 30, "the stopped state",
                       poll=0.3)
        finally:
            if driver is not None:
                driver.quit()
        assert interrupt(proc) == 0, proc.output_tail()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "locust-ui" and summary["requests"] > 0
    assert (ARTIFACTS / "locust-ui.png").stat().st_size > 10_000
    assert_all_gone(out)


def test_ui_moves_off_a_taken_port_and_requires_its_login(tmp_path: Path) -> None:
    """8089 taken (by us, or already by someone else): the UI picks a free port; without the
    HARNESS_WEB_AUTH login every page and API call is refused, so nobody else can start load.
    8089 is held only until the UI has chosen its port."""
    out = tmp_path / "ui-run"
    env = {**os.environ, "HARNESS_WEB_AUTH": "tester:s3cret:with-colon"}
    with RawServer(respond_forever(OK_JSON)) as target:
        target_url = f"http://127.0.0.1:{target.port}"
        held = HeldPort(8089)
        with held, HarnessProcess("ui", str(SMOKE), "--out", str(out), "--url", target_url, env=env) as proc:
            port = ui_port(proc)
            held.sock.close()  # chosen: 8089 need not stay taken
            assert port != 8089
            ui = f"http://127.0.0.1:{port}"

            def answering() -> list[requests.Response]:  # a list: a 401 response is falsy
                try:
                    return [requests.get(ui + "/", timeout=5)]
                except requests.ConnectionError:
                    return []

            anonymous = wait_until(answering, 30, "the UI to answer", proc=proc, poll=0.3)[0]
            children = proc.descendants()
            assert any("locust" in " ".join(c.cmdline()) for c in children)
            assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
            swarm = {"user_count": 2, "spawn_rate": 10, "host": target_url}
            assert requests.post(ui + "/swarm", data=swarm, timeout=5).status_code == 401
            assert requests.get(ui + "/stats/requests", auth=("tester", "wrong"), timeout=5).status_code == 401

            login = ("tester", "s3cret:with-colon")
            assert requests.get(ui + "/", auth=login, timeout=5).status_code == 200
            assert requests.post(ui + "/swarm", data=swarm, auth=login, timeout=5).json()["success"]
            wait_until(lambda: requests.get(ui + "/stats/requests", auth=login, timeout=5).json()["total_rps"] > 0,
                       30, "the authorised swarm to send", proc=proc, poll=0.3)
            assert interrupt(proc) == 0, proc.output_tail()
    assert json.loads((out / "summary.json").read_text())["requests"] > 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_taken_web_port_is_refused_with_exit_2(tmp_path: Path) -> None:
    with HeldPort() as held:
        result = harness("ui", str(SMOKE), "--out", str(tmp_path / "ui"), "--url",
                         f"http://127.0.0.1:{dead_port()}", "--web-port", str(held.port), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--web-port {held.port}: 127.0.0.1:{held.port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_ui_refuses_a_malformed_login_setting(tmp_path: Path) -> None:
    result = harness("ui", str(SMOKE), "--out", str(tmp_path / "ui"), "--url", f"http://127.0.0.1:{dead_port()}",
                     env={**os.environ, "HARNESS_WEB_AUTH": "no-colon"}, timeout=60)
    assert result.returncode == 2
    assert "HARNESS_WEB_AUTH must be USER:PASSWORD" in result.stderr and "Traceback" not in result.stderr
