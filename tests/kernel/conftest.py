"""Fixtures for kernel tests: each test owns fresh network namespaces, so IPVS state never leaks."""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys

import pytest

from ipvsman import guest
from waiting import wait_until

_counter = itertools.count()


class NetNs:
    """A network namespace made for one test; `run` executes a shell command inside it."""

    def __init__(self, name: str):
        self.name = name
        self._background: list[subprocess.Popen] = []
        _ip("netns", "add", name)
        self.run("ip link set lo up")

    def run(self, command: str, check: bool = True, timeout: float = 300, input: str | None = None):
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in netns {self.name}: {command!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def python(self, *args: str, check: bool = True, timeout: float = 600):
        """Run this interpreter inside the namespace: python(-c, code) or python(-m, module, ...)."""
        return self.run(" ".join(shlex.quote(a) for a in (sys.executable, *args)), check=check, timeout=timeout)

    def popen(self, command: str, **kwargs) -> subprocess.Popen:
        """Start a background command in the namespace; it is killed when the test ends."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "sh", "-c", command], start_new_session=True, **kwargs
        )
        self._background.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._background:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", self.name, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


@pytest.fixture(scope="session", autouse=True)
def _ipvs_kernel():
    """Load the IPVS modules once (in the guest or on an IPVS host running as root)."""
    if not (guest.in_guest() or guest.host_has_ipvs()):
        pytest.fail("kernel tests need IPVS; they should have been sent to the guest")
    guest.load_modules()
    yield


def new_netns(prefix: str = "t") -> NetNs:
    return NetNs(f"ipvsman-{prefix}{os.getpid()}-{next(_counter)}")


@pytest.fixture
def netns():
    ns = new_netns()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def netns_pair():
    """Namespaces a and b joined by a veth pair: va 10.99.0.1 / fd99::1, vb 10.99.0.2 / fd99::2."""
    a, b = new_netns("a"), new_netns("b")
    try:
        _ip("link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name)
        for ns, dev, v4, v6 in ((a, "va", "10.99.0.1/24", "fd99::1/64"), (b, "vb", "10.99.0.2/24", "fd99::2/64")):
            ns.run(
                f"ip addr add {v4} dev {dev} && ip -6 addr add {v6} dev {dev} nodad && ip link set {dev} up"
            )
        wait_until(lambda: "UP" in a.run("ip -br link show va").stdout, "veth va up")
        yield a, b
    finally:
        a.close()
        b.close()

