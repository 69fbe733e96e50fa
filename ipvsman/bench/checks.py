"""Health check benchmark: checks a second one core sustains (tcp, http on loopback) and ipvsmand's CPU at 1,000 real servers a second.

The servers run in a subprocess of their own (`python -m ipvsman.bench.checks --serve KIND`),
so the CPU measured here is the checker's alone. The daemon runs its real engine (checks, state
machine, state file) with an in-memory IPVS: the host has no IPVS, and with every real server
up the daemon sends IPVS nothing but its periodic read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

from ipvsman.bench import Figure, Report

HTTP_ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# -- the servers (a subprocess) -------------------------------------------------------------------


async def _serve(kind: str) -> None:
    async def tcp(reader, writer):
        writer.transport.abort()

    async def http(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(HTTP_ANSWER)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        writer.close()

    # 0.0.0.0: one listener answers every loopback address (127.0.0.0/8), so 1,000 real servers
    # can share one port.
    server = await asyncio.start_server(tcp if kind == "tcp" else http, "0.0.0.0", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


class Servers:
    """A server subprocess on loopback; its port."""

    def __init__(self, kind: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "ipvsman.bench.checks", "--serve", kind],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- checks a second ----------------------------------------------------------------------------


async def _hammer(kind: str, port: int, seconds: float, concurrency: int) -> tuple[int, int, float, float]:
    from ipvsman.daemon.checks import load_check, run_check

    check = load_check(kind, {})
    done = failed = 0
    stop_at = time.monotonic() + seconds

    async def worker(number: int):
        nonlocal done, failed
        address = f"127.0.{number // 250}.{number % 250 + 1}"
        while time.monotonic() < stop_at:
            result = await run_check(check, address, port, 2.0)
            done += 1
            failed += not result.ok

    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return done, failed, time.monotonic() - wall, time.process_time() - cpu


def checks_per_second(kind: str, seconds: float, concurrency: int = 64) -> tuple[float, float, int]:
    """(checks a CPU second of the checker, checks a wall second, failures) against one local server."""
    servers = Servers(kind)
    try:
        done, failed, wall, cpu = asyncio.run(_hammer(kind, servers.port, seconds, concurrency))
    finally:
        servers.close()
    return done / cpu, done / wall, failed


# -- the daemon at 1,000 real servers -------------------------------------------------------------


def _topology(kind: str, port: int, servers: int, per_service: int = 100) -> str:
    lines = []
    for number in range(0, servers, per_service):
        dests = ", ".join(
            f'"r{n}:127.0.{n // 250}.{n % 250 + 1}:{port}"' for n in range(number, min(number + per_service, servers))
        )
        lines.append(f"S{number}:t:10.{number // 250}.{number % 250}.1:80 [{dests}] "
                     f"(--check {kind} --interval 1 --timeout 1 --rise 2 --fall 2)")  # fmt: skip
    return "\n".join(lines) + "\n"


class _IdleKernel:
    """IPVS that already holds the topology: the daemon reads it and finds nothing to do."""

    def __init__(self):
        self.services = ()
        self.actions = 0

    async def read_services(self):
        return self.services

    async def apply(self, action):
        self.actions += 1


async def _daemon_run(kind: str, port: int, servers: int, seconds: float, directory: str) -> dict:
    from ipvsman.daemon import desired
    from ipvsman.daemon.engine import Daemon
    from ipvsman.model import Dest, Service
    from ipvsman.topology import read_topology

    path = os.path.join(directory, "topology")
    with open(path, "w") as out:
        out.write(_topology(kind, port, servers))
    kernel = _IdleKernel()
    daemon = Daemon(path, kernel, state_path=os.path.join(directory, "ipvsmand.json"), heartbeat=5.0)
    # IPVS as ipvsmand would have made it, so the plan is empty while everything is up.
    plan = desired.plan(read_topology(path).services, (), lambda key: True)
    services: dict = {}
    for action in plan:
        if isinstance(action, desired.CreateService):
            services[action.key] = []
        else:
            services[action.service].append(Dest(action.address, action.port, action.forward, action.weight))
    kernel.services = tuple(Service(key, "wlc", dests=tuple(dests)) for key, dests in services.items())
    runner = asyncio.create_task(daemon.run())
    await asyncio.sleep(3.0)  # every check started and spread over its interval
    checks, wall, cpu = daemon.checks_done, time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    checks, wall, cpu = daemon.checks_done - checks, time.monotonic() - wall, time.process_time() - cpu
    down = sum(1 for monitor in daemon.monitors.values() if not monitor.health.in_service)
    daemon.stop()
    await runner
    return {"checks_per_s": checks / wall, "cpu_share": cpu / wall, "down": down, "actions": kernel.actions}


def daemon_cpu_apart(kind: str, servers: int, seconds: float) -> dict:
    """daemon_cpu in a fresh process: nothing left by an earlier stage (sockets, threads) counts."""
    proc = subprocess.run(
        [sys.executable, "-m", "ipvsman.bench.checks", "--daemon", kind, "--servers", str(servers),
         "--daemon-seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds * 5 + 120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind} daemon stage failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def daemon_cpu(kind: str, servers: int, seconds: float) -> dict:
    server = Servers(kind)
    try:
        with tempfile.TemporaryDirectory() as directory:
            return asyncio.run(_daemon_run(kind, server.port, servers, seconds, directory))
    finally:
        server.close()


# -- the benchmark ------------------------------------------------------------------------------


def run(seconds: float = 10.0, daemon_seconds: float = 30.0, servers: int = 1000, log=print) -> Report:
    report = Report()
    for kind in ("tcp", "http"):
        log(f"checks: {kind} checks a second, {seconds:g} s against a loopback server")
        per_cpu, per_wall, failed = checks_per_second(kind, seconds)
        report.figures.append(Figure("checks", f"{kind} checks per CPU second (one core)", round(per_cpu), "checks/s",
                                     note=f"{per_wall:.0f} a wall second; {failed} failed"))  # fmt: skip
    for kind in ("tcp", "http"):
        log(f"checks: ipvsmand with {servers} {kind}-checked real servers at 1 s, {daemon_seconds:g} s")
        found = daemon_cpu_apart(kind, servers, daemon_seconds)
        report.figures.append(Figure(
            "checks", f"ipvsmand CPU, {servers} real servers ({kind}) every 1 s", round(found["cpu_share"] * 100, 1),
            "% of a core", target="< 100% (one core keeps up)", met=found["cpu_share"] < 1.0,
            note=f"{found['checks_per_s']:.0f} checks/s done; {found['down']} wrongly down; {found['actions']} IPVS changes",
        ))  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipvsman.bench.checks", description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("tcp", "http"), help=argparse.SUPPRESS)
    parser.add_argument("--daemon", choices=("tcp", "http"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--daemon-seconds", type=float, default=30.0)
    parser.add_argument("--servers", type=int, default=1000)
    options = parser.parse_args(argv)
    if options.serve:
        asyncio.run(_serve(options.serve))
        return 0
    if options.daemon:
        print(json.dumps(daemon_cpu(options.daemon, options.servers, options.daemon_seconds)))
        return 0
    from ipvsman.bench import render

    print(render(run(options.seconds, options.daemon_seconds, options.servers,
                     log=lambda text: print(text, file=sys.stderr))))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
