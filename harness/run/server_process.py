"""Which local process is the server under test, when the harness did not start it.

`target.process` names it by pid, by a regular expression over command lines, or by the TCP port
it listens on; without it a target on this machine is looked up by its URL's port. The process
found is sampled as the `server` role and its descendants, re-read every tick as workers come and
go, as `server_worker`: the same roles, charts and verdicts as the bundled server's. Where no
process can be known (a remote target, a socket owned by a user this process may not inspect),
`locate` says why instead of leaving the report's resources silently empty.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

import psutil

from harness.errors import UserError
from harness.scenario.schema import ServerProcess as ProcessSpec

SHOWN = 5  # candidates listed when a match is ambiguous


@dataclass(frozen=True)
class Located:
    """The server's process (None when none is known) and the sentence that says how, or why not."""

    pid: int | None
    message: str

    def as_meta(self) -> dict[str, object]:
        return {"pid": self.pid, "note": self.message}


def command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "?"


def is_this_machine(host: str) -> bool:
    """The host is a loopback address, or one of this machine's own addresses or names."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    own = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in own for a in addresses)


def ours() -> set[int]:
    """This process and everything it started (the generators): never the server."""
    me = psutil.Process()
    return {me.pid, *(c.pid for c in me.children(recursive=True))}


def ancestors() -> set[int]:
    """The processes that started this one: a server found among them (a test or a driver serving
    from the process that runs the harness) would count the harness's own CPU as the server's."""
    return {p.pid for p in psutil.Process().parents()}


def roots(pids: set[int]) -> list[int]:
    """The pids whose parent is not in the set: a server's master rather than its workers."""
    out = []
    for pid in sorted(pids):
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.Error:
            continue
        if parent not in pids:
            out.append(pid)
    return out


def _listens(conns: list[Any], port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def listening_on(port: int) -> set[int]:
    """Pids with a TCP socket listening on `port` (any address), each climbed to the highest
    ancestor holding the same socket: psutil names one owner per socket, a pre-forked worker as
    often as its master. psutil.AccessDenied propagates."""
    found = {c.pid for c in psutil.net_connections(kind="tcp")
             if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid is not None}
    out = set()
    for pid in found:
        try:
            proc = psutil.Process(pid)
            while (parent := proc.parent()) is not None and _listens(parent.net_connections(kind="tcp"), port):
                proc = parent
        except psutil.Error:
            pass
        out.add(proc.pid)
    return out


def _by_pid(pid: int) -> Located:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise UserError(f"target.process.pid: no process {pid} on this machine") from None
    return Located(pid, f"server resources: pid {pid} ({command_line(proc)}), as target.process.pid says")


def _by_match(pattern: str) -> Located:
    regex, skip = re.compile(pattern), ours()
    matches = {p.pid for p in psutil.process_iter() if p.pid not in skip and regex.search(command_line(p))}
    top = roots(matches)
    if not top:
        raise UserError(f"target.process.match: no process's command line matches {pattern!r}")
    if len(top) > 1:
        shown = "; ".join(f"{pid}: {command_line(psutil.Process(pid))}" for pid in top[:SHOWN])
        raise UserError(f"target.process.match: {pattern!r} matches {len(top)} unrelated processes ({shown}); "
                        "make it narrower or give target.process.pid")
    pid = top[0]
    return Located(pid, f"server resources: pid {pid} ({command_line(psutil.Process(pid))}), the process whose "
                        f"command line matches {pattern!r}")


def _by_port(port: int, given: bool) -> Located:
    try:
        pids = listening_on(port) - ours()
    except psutil.AccessDenied:
        why = f"this user may not list which process owns port {port} (run as its owner or give target.process.pid)"
        if given:
            raise UserError(f"target.process.port: {why}") from None
        return Located(None, f"no server resources: {why}")
    parents = set() if given else pids & ancestors()
    if parents and parents == pids:
        return Located(None, f"no server resources: port {port} is served by the process that started the harness "
                             f"(pid {min(parents)}), whose CPU would include the harness's own; give "
                             "target.process.pid to sample it anyway")
    top = roots(pids - parents)
    if len(top) == 1:
        pid = top[0]
        return Located(pid, f"server resources: pid {pid} ({command_line(psutil.Process(pid))}), found listening "
                            f"on port {port}")
    if given:
        raise UserError(f"target.process.port: {'no process' if not top else f'{len(top)} processes'} "
                        f"listening on port {port} that this user may inspect")
    if not top:
        return Located(None, f"no server resources: no process this user may inspect listens on port {port} "
                             "(a container or another user's server: give target.process.pid)")
    return Located(None, f"no server resources: {len(top)} unrelated processes listen on port {port} "
                         f"({', '.join(map(str, top))}); give target.process.pid")


def locate(spec: ProcessSpec | None, host: str, port: int) -> Located:
    """The server's process for a target the harness did not start (see the module docstring)."""
    if spec is not None and spec.pid is not None:
        return _by_pid(spec.pid)
    if spec is not None and spec.match is not None:
        return _by_match(spec.match)
    if spec is not None and spec.port is not None:
        return _by_port(spec.port, given=True)
    if not is_this_machine(host):
        return Located(None, f"no server resources: {host} is not this machine, and the harness samples only "
                             "local processes (run it beside the server, or watch the server's own /metrics)")
    return _by_port(port, given=False)
