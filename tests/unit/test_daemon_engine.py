"""ipvsmand's core against an in-memory IPVS and real HTTP checks on loopback: fail, drain, recover, reload."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_daemon_helpers import FakeKernel, Web

from ipvsman import model
from ipvsman.daemon.engine import Daemon
from ipvsman.daemon.history import History
from ipvsman.daemon.statefile import read_state

WEB = model.ServiceKey("inet", "tcp", "10.0.0.1", 80)
FOREIGN = model.ServiceKey("inet", "tcp", "10.9.9.9", 443)  # keepalived's: never ipvsmand's
FAST = "--interval 0.05 --timeout 0.5 --rise 2 --fall 2"


def topology_text(ports: list[int], options: str = "") -> str:
    dests = ", ".join(f'"w{i}:127.0.0.1:{port} -w {10 * (i + 1)}"' for i, port in enumerate(ports))
    return f"Web:t:10.0.0.1:80 [{dests}] (-m -s wrr --check http --path /health {FAST} {options})\n"


async def until(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def touched(kernel: FakeKernel, key: model.ServiceKey) -> bool:
    return any(getattr(action, "service", getattr(action, "key", None)) == key for action in kernel.actions)


@pytest.fixture
def webs():
    servers = [Web(), Web(), Web()]
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def setup(tmp_path, webs):
    foreign = model.Service(FOREIGN, "rr", dests=(model.Dest("127.0.0.1", webs[0].port, "route", 5),))
    kernel = FakeKernel((foreign,))
    topology = tmp_path / "topology"
    topology.write_text(topology_text([webs[0].port, webs[1].port]))
    daemon = Daemon(str(topology), kernel, state_path=str(tmp_path / "run" / "ipvsmand.json"),
                    history=History(str(tmp_path / "history")), heartbeat=0.2, reconcile_every=0.2)  # fmt: skip
    return daemon, kernel, topology, foreign


def test_a_failing_server_is_quiesced_and_restored_and_the_foreign_service_untouched(setup, webs, tmp_path):
    daemon, kernel, topology, foreign = setup
    a, b = webs[0].port, webs[1].port

    async def scenario():
        runner = asyncio.create_task(daemon.run())
        await until(lambda: WEB in kernel.services and len(kernel.services[WEB].dests) == 2, "the service made")
        assert kernel.services[WEB].scheduler == "wrr"
        assert (kernel.weight(WEB, "127.0.0.1", a), kernel.weight(WEB, "127.0.0.1", b)) == (10, 20)

        webs[0].status = 503
        await until(lambda: kernel.weight(WEB, "127.0.0.1", a) == 0, "a quiesced")
        assert kernel.weight(WEB, "127.0.0.1", b) == 20
        path = daemon.state_path
        await until(lambda: read_state(path).find(str(WEB), "127.0.0.1", a).applied_weight == 0, "the file to say so")
        server = read_state(path).find(str(WEB), "127.0.0.1", a)
        assert (server.state, server.reason, server.configured_weight, server.bad >= 2) == ("down", "HTTP 503", 10, True)

        webs[0].status = 200
        await until(lambda: kernel.weight(WEB, "127.0.0.1", a) == 10, "a restored")
        await until(lambda: read_state(path).find(str(WEB), "127.0.0.1", a).state == "up", "up in the file")
        assert not touched(kernel, FOREIGN) and kernel.services[FOREIGN] == foreign
        daemon.stop()
        assert await runner == 0

    asyncio.run(scenario())


def test_reload_adds_a_server_and_a_broken_line_keeps_the_running_configuration(setup, webs):
    daemon, kernel, topology, _ = setup
    a, b, c = (web.port for web in webs)

    async def scenario():
        runner = asyncio.create_task(daemon.run())
        await until(lambda: WEB in kernel.services and len(kernel.services[WEB].dests) == 2, "the service made")
        topology.write_text(topology_text([a, b, c]))
        daemon.request_reload()
        await until(lambda: kernel.weight(WEB, "127.0.0.1", c) == 30, "the third server added")
        assert len(daemon.history.numbers()) == 2 and "add tcp 10.0.0.1:80 -> 127.0.0.1:" in daemon.history.get(2).actions[0]

        topology.write_text(topology_text([a]) + "Broken:t:10.0.0.3 [nonsense\n")
        assert await daemon.load() is False
        assert len(daemon.errors) == 1 and daemon.errors[0].startswith(f"{topology}:2: "), daemon.errors
        await asyncio.sleep(0.3)
        assert kernel.weight(WEB, "127.0.0.1", c) == 30 and len(daemon.monitors) == 3  # nothing changed
        await until(lambda: read_state(daemon.state_path).errors == daemon.errors, "the refusal in the file")

        topology.write_text(topology_text([a], options="--check nosuch"))
        assert await daemon.load() is False and "no check named 'nosuch'" in daemon.errors[0]

        topology.write_text(topology_text([a]))  # good again: b and c leave the service
        assert await daemon.load() is True and daemon.errors == ()
        await until(lambda: len(kernel.services[WEB].dests) == 1, "b and c removed")
        daemon.stop()
        assert await runner == 0

    asyncio.run(scenario())


def test_remove_on_failure_and_an_unchanged_server_keeps_its_history_across_a_reload(setup, webs):
    daemon, kernel, topology, _ = setup
    a = webs[0].port
    topology.write_text(topology_text([a], options="--on-failure remove"))

    async def scenario():
        runner = asyncio.create_task(daemon.run())
        await until(lambda: WEB in kernel.services and kernel.weight(WEB, "127.0.0.1", a) == 10, "made")
        webs[0].status = 500
        await until(lambda: kernel.weight(WEB, "127.0.0.1", a) is None, "a removed")
        key = model.DestKey(WEB, "127.0.0.1", a)
        await until(lambda: daemon.monitors[key].applied_weight is None, "applied weight null")
        since = daemon.monitors[key].health.since
        topology.write_text(topology_text([a], options="--on-failure remove") + "# a comment\n")
        assert await daemon.load() is True
        assert daemon.monitors[key].health.state == "down" and daemon.monitors[key].health.since == since
        webs[0].status = 200
        await until(lambda: kernel.weight(WEB, "127.0.0.1", a) == 10, "a added back")
        daemon.stop()
        await runner

    asyncio.run(scenario())


def test_a_first_topology_with_errors_starts_nothing(tmp_path):
    topology = tmp_path / "topology"
    topology.write_text('Web:t:10.0.0.1:80 ["w:127.0.0.1:1"] (--check http --bogus 1)\n')
    kernel = FakeKernel()
    daemon = Daemon(str(topology), kernel, state_path=str(tmp_path / "s.json"), heartbeat=0.2)
    assert asyncio.run(daemon.run()) == 1
    assert kernel.actions == []
    assert read_state(str(tmp_path / "s.json")).errors == (
        f"{topology}:1: check http: unknown parameter --bogus (it takes: --method, --path, --host, --expect, "
        "--match, --max-body)",
    )
