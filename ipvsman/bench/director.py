"""A large director for the kernel benchmarks: namespaces, services made with `ipvsadm -R`, timed ipvsadm runs.

Everything here happens inside network namespaces made for the run (in the guest, or on a host
with IPVS), so the host's own IPVS is never touched. A NetnsWorker is a thread that entered a
namespace: netlink sockets opened there, /proc/thread-self/net and every process it starts
(ipvsadm) all see that namespace, with no `ip netns exec` in between to time.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ipvsman.kernel.backend import enter_netns, leave_netns

PREFIX = "ipvsman-bench"
DEST_PORT = 8080
VIP_PORT = 80


def vip(index: int) -> str:
    """The virtual address of service `index` (up to 62,500 services)."""
    return f"10.{10 + index // 250}.{index % 250}.1"


def rip(number: int) -> str:
    """The address of real server `number` (each service has its own)."""
    return f"172.{16 + number // 62500}.{number // 250 % 250}.{number % 250 + 1}"


def rules(first: int, last: int, dests: int) -> str:
    """ipvsadm -R input for TCP services first..last-1, each with `dests` NAT real servers."""
    lines = []
    for index in range(first, last):
        service = f"{vip(index)}:{VIP_PORT}"
        lines.append(f"-A -t {service} -s wlc")
        for number in range(index * dests, (index + 1) * dests):
            lines.append(f"-a -t {service} -r {rip(number)}:{DEST_PORT} -m -w {1 + number % 5}")
    return "\n".join(lines) + "\n"


def run(argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


class Netns:
    """A network namespace made for the benchmark, deleted (with its processes) by close()."""

    def __init__(self, role: str):
        self.name = f"{PREFIX}-{role}-{os.getpid()}"
        run(["ip", "netns", "add", self.name])
        self.run("ip link set lo up")

    def run(self, command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.name, "sh", "-c", command], check=check, **kwargs)

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        pids = run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", self.name], check=False)


def veth_pair(a: Netns, b: Netns) -> None:
    """Join a and b: va 10.99.0.1/24 in a, vb 10.99.0.2/24 in b."""
    run(["ip", "link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name])
    a.run("ip addr add 10.99.0.1/24 dev va && ip link set va up")
    b.run("ip addr add 10.99.0.2/24 dev vb && ip link set vb up")
    deadline = time.monotonic() + 60
    while "UP" not in a.run("ip -br link show va").stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("the veth pair did not come up")
        time.sleep(0.2)


class NetnsWorker:
    """One thread inside a namespace; call(fn, *args) runs fn there and returns its result."""

    def __init__(self, netns: Netns):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bench-netns")
        self._home = self._pool.submit(enter_netns, netns.name).result()

    def call(self, function: Callable, *args, **kwargs):
        return self._pool.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.submit(leave_netns, self._home).result()
        self._pool.shutdown()


class Director:
    """A namespace with `services` TCP services of `dests` real servers each, grown on demand."""

    def __init__(self, dests: int = 10):
        self.dests = dests
        self.services = 0
        self.netns = Netns("director")
        self.worker = NetnsWorker(self.netns)

    def grow(self, services: int) -> float:
        """Add services up to `services`; returns the seconds ipvsadm -R took."""
        if services <= self.services:
            return 0.0
        text = rules(self.services, services, self.dests)
        started = time.perf_counter()
        self.worker.call(run, ["ipvsadm", "-R"], input=text)
        self.services = services
        return time.perf_counter() - started

    def ipvsadm(self, *args: str) -> float:
        """Seconds one ipvsadm run takes in the namespace, its output thrown away (as watch draws it)."""
        return self.ipvsadm_with_cpu(*args)[0]

    def ipvsadm_with_cpu(self, *args: str) -> tuple[float, float]:
        """Seconds of one ipvsadm run (as ipvsadm()) and the CPU seconds (user + system) it used."""

        def once():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(["ipvsadm", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

        return self.worker.call(once)

    def count_listed(self) -> tuple[int, int]:
        """(services, real servers) as ipvsadm lists them: a check that the director is what we think."""
        text = self.worker.call(run, ["ipvsadm", "-Ln"]).stdout
        services = sum(1 for line in text.splitlines() if line.startswith(("TCP", "UDP", "SCTP", "FWM")))
        dests = sum(1 for line in text.splitlines() if line.strip().startswith("->") and "RemoteAddress" not in line)
        return services, dests

    def close(self) -> None:
        self.worker.close()
        self.netns.close()


def ipvsadm_version() -> str:
    if shutil.which("ipvsadm") is None:
        return "not installed"
    proc = run(["ipvsadm", "--version"], check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"


def environment(where: str) -> dict:
    import pyroute2

    return {
        "kernel benchmarks": f"{where}, {os.cpu_count()} CPUs; Linux {platform.release()}; {ipvsadm_version()}; "
        f"pyroute2 {getattr(pyroute2, '__version__', '?')}; Python {platform.python_version()}"
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def terminal_env() -> dict:
    """The environment of a measured ipvsman or ipvsadm: a colour terminal, and this checkout importable."""
    env = dict(os.environ)
    env["TERM"] = "xterm-256color"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
    return env
