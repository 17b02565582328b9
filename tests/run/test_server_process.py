"""Finding a url target's server process: by pid, by command line, by port, and why not (remote,
nothing listening), and the scenario's checks of target.process."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from harness.errors import UserError
from harness.run.server_process import is_this_machine, locate
from harness.scenario.schema import ServerProcess, Target
from tests.support.rawserver import dead_port


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_a_remote_target_says_why_it_has_no_server_resources() -> None:
    found = locate(None, "192.0.2.10", 80)  # TEST-NET-1: never this machine
    assert found.pid is None and found.message.startswith("no server resources: 192.0.2.10 is not this machine")
    assert is_this_machine("127.0.0.1") and is_this_machine("localhost") and not is_this_machine("no-such-host.invalid")


def test_a_local_port_nobody_listens_on_is_said_too() -> None:
    port = dead_port()
    found = locate(None, "127.0.0.1", port)
    assert found.pid is None and f"no process this user may inspect listens on port {port}" in found.message


def test_the_harness_own_listening_socket_is_not_the_server(listener: int) -> None:
    # this test process listens; it is the harness here, so it is never taken for the server
    assert locate(None, "127.0.0.1", listener).pid is None
    with pytest.raises(UserError, match=f"no process listening on port {listener}"):
        locate(ServerProcess(port=listener), "127.0.0.1", listener)


def test_given_pid_and_match_that_find_nothing_are_clear_errors() -> None:
    with pytest.raises(UserError, match="target.process.pid: no process 4194303 on this machine"):
        locate(ServerProcess(pid=4194303), "127.0.0.1", 1)
    with pytest.raises(UserError, match="no process's command line matches"):
        locate(ServerProcess(match="no-process-has-this-in-its-command-line-3f9a"), "127.0.0.1", 1)
    parent = locate(ServerProcess(pid=os.getppid()), "127.0.0.1", 1)
    assert parent.pid == os.getppid() and "as target.process.pid says" in parent.message


@pytest.mark.parametrize("doc,fragment", [
    ({"pid": 1, "port": 80}, "give exactly one of pid, match and port, got pid, port"),
    ({}, "give exactly one of pid, match and port, got none"),
    ({"match": "gunicorn(["}, "not a regular expression"),
    ({"port": 70000}, "less than or equal to 65535"),
])
def test_the_process_spec_is_checked(doc: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        ServerProcess.model_validate(doc)


def test_process_is_for_url_targets() -> None:
    with pytest.raises(ValueError, match="the harness watches the bundled server it starts itself"):
        Target.model_validate({"process": {"pid": 1}})
    assert Target.model_validate({"url": "http://127.0.0.1:8000", "process": {"match": "uvicorn"}}).process


def test_a_server_that_started_the_harness_is_not_taken_by_its_port(listener: int) -> None:
    """A test serving from its own process and running the harness as a child: the child must not
    sample its parent (its own CPU would count as the server's)."""
    import subprocess
    import sys

    code = ("from harness.run.server_process import locate; "
            f"print(locate(None, '127.0.0.1', {listener}).message)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"port {listener} is served by the process that started the harness (pid {os.getpid()})" in out.stdout, \
        out.stdout + out.stderr
