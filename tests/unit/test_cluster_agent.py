"""`ipvsman agent` on the demo director: its stream, commands checked and carried out, refusals in one line, its audit log."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipvsman.cluster import syncprobe, wire
from ipvsman.cluster.agent import Agent, agent_audit_log, command_lines
from ipvsman.demo import DemoBackend
from ipvsman.ui.audit import AuditLog

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30  # seconds before a test calls the agent stuck; never a measured figure


class Lines(io.TextIOBase):
    """The agent's stdout as a list of decoded lines, waited on by the test."""

    def __init__(self):
        self.lines: list[dict] = []
        self.changed = threading.Condition()

    def write(self, text: str) -> int:
        assert text.endswith("\n") and text.count("\n") == 1, "every write is one whole line"
        with self.changed:
            self.lines.append(json.loads(text))
            self.changed.notify_all()
        return len(text)

    def wait_for(self, test, what: str):
        deadline = time.monotonic() + WAIT
        with self.changed:
            while True:
                found = next((line for line in self.lines if test(line)), None)
                if found is not None:
                    return found
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no {what} in {WAIT} s: {[line['type'] for line in self.lines]}")

    def reply(self, request_id: int) -> dict:
        return self.wait_for(lambda line: line["type"] == "reply" and line["id"] == request_id, f"reply {request_id}")


@pytest.fixture
def agent_and_lines():
    made = []

    def make(**options):
        lines = Lines()
        agent = Agent(DemoBackend(seed=1), lines, interval=0.1, **options)
        agent.start()
        made.append(agent)
        lines.wait_for(lambda line: line["type"] == "snapshot", "first snapshot")
        return agent, lines

    yield make
    for agent in made:
        agent.stop()


def send(agent, request_id: int, kind: str, **args) -> None:
    agent.feed(json.dumps({"id": request_id, "kind": kind, "args": args}) + "\n")


def first_dest(agent):
    service = next(s for s in agent.snapshot.services if s.dests and not s.key.fwmark)
    return service, service.dests[0]


def test_stream_opens_with_the_version_header_then_snapshots_addresses_and_table(agent_and_lines):
    agent, lines = agent_and_lines()
    assert lines.lines[0]["type"] == "hello" and lines.lines[0]["protocol"] == wire.AGENT_PROTOCOL
    snapshot = lines.wait_for(lambda line: line["type"] == "snapshot", "snapshot")
    assert snapshot["data"]["backend"] == "demo" and snapshot["data"]["services"]
    addresses = lines.wait_for(lambda line: line["type"] == "addresses", "addresses")
    assert ["10.10.10.80", "demo0"] in addresses["addresses"]
    table = wire.decode_agent_line(json.dumps(lines.wait_for(lambda line: line["type"] == "table", "table")))
    assert table.keys and table.complete


def test_set_weight_is_carried_out_and_the_next_snapshots_show_it(agent_and_lines):
    agent, lines = agent_and_lines()
    service, dest = first_dest(agent)
    new_weight = dest.weight + 3
    send(agent, 1, "set-weight", service=str(service.key), address=dest.address, port=dest.port, weight=new_weight)
    reply = lines.reply(1)
    assert reply["ok"] and f"-> {new_weight}" in reply["message"]
    deadline = time.monotonic() + WAIT
    while agent.snapshot.find_service(service.key).find_dest(dest.address, dest.port).weight != new_weight:
        assert time.monotonic() < deadline, "the new weight never showed"
        time.sleep(0.05)


def test_add_and_remove_a_real_server(agent_and_lines):
    agent, lines = agent_and_lines()
    service, _ = first_dest(agent)
    send(agent, 1, "add-dest", service=str(service.key), address="10.10.99.9", port=service.key.port, forward="masq",
         weight=2)  # fmt: skip
    assert lines.reply(1)["ok"], lines.reply(1)
    deadline = time.monotonic() + WAIT
    while agent.snapshot.find_service(service.key).find_dest("10.10.99.9", service.key.port) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    send(agent, 2, "add-dest", service=str(service.key), address="10.10.99.9", port=service.key.port, forward="masq",
         weight=2)  # fmt: skip
    assert "already there" in lines.reply(2)["message"] and not lines.reply(2)["ok"]
    send(agent, 3, "remove-dest", service=str(service.key), address="10.10.99.9", port=service.key.port)
    assert lines.reply(3)["ok"]


def test_commands_on_what_is_not_there_are_refused(agent_and_lines):
    agent, lines = agent_and_lines()
    send(agent, 1, "set-weight", service="tcp 10.99.0.1:80", address="10.0.0.1", port=80, weight=1)
    send(agent, 2, "add-dest", service="tcp 10.99.0.1:80", address="10.0.0.1", port=80, forward="masq", weight=1)
    send(agent, 3, "remove-dest", service="tcp 10.99.0.1:80", address="10.0.0.1", port=80)
    assert "is not in the kernel" in lines.reply(1)["message"]
    assert "no service tcp 10.99.0.1:80" in lines.reply(2)["message"]
    assert "is not in the kernel" in lines.reply(3)["message"]
    assert not any(lines.reply(n)["ok"] for n in (1, 2, 3))


def test_read_only_refuses_every_command_each_in_one_line(agent_and_lines):
    agent, lines = agent_and_lines(read_only=True)
    service, dest = first_dest(agent)
    target = {"service": str(service.key), "address": dest.address, "port": dest.port}
    commands = [("set-weight", {**target, "weight": 0}), ("add-dest", {**target, "weight": 1, "forward": "masq"}),
                ("remove-dest", target), ("resync", {}), ("sync-test", {})]  # fmt: skip
    for number, (kind, args) in enumerate(commands, 1):
        send(agent, number, kind, **args)
    for number, (kind, _) in enumerate(commands, 1):
        reply = lines.reply(number)
        assert not reply["ok"] and reply["message"] == f"{kind}: refused: the agent runs with --read-only"
    assert lines.lines[0]["read_only"] is True
    time.sleep(0.3)
    assert agent.snapshot.find_service(service.key).find_dest(dest.address, dest.port).weight == dest.weight


def test_resync_and_sync_test_are_refused_in_the_demo(agent_and_lines):
    agent, lines = agent_and_lines()
    send(agent, 1, "resync")
    send(agent, 2, "sync-test", service="tcp 10.10.10.80:80")
    for number in (1, 2):
        assert "not in the demo" in lines.reply(number)["message"] and not lines.reply(number)["ok"]


def test_read_table_answers_after_a_read_with_the_keys_found(agent_and_lines):
    agent, lines = agent_and_lines()
    table = lines.wait_for(lambda line: line["type"] == "table", "table")
    known = next(iter(wire.decode_agent_line(json.dumps(table)).keys))
    send(agent, 1, "read-table", keys=[known, 12345])
    reply = lines.reply(1)
    assert reply["ok"] and reply["data"]["entries"] > 0
    assert known in reply["data"]["found"] or not reply["data"]["complete"]  # the demo's entries expire
    assert 12345 not in reply["data"]["found"]


def test_garbage_unknown_and_undecodable_lines_are_refused_and_the_agent_goes_on(agent_and_lines):
    agent, lines = agent_and_lines()
    agent.feed("this is not json\n")
    agent.feed(b"\xff\xfe\n")
    agent.feed('{"id": 5, "kind": "format-disk"}\n')
    agent.feed("\n")  # blank lines are nothing, not a refusal
    refusals = [line for line in lines.lines if line["type"] == "refused"]
    assert [r["message"].split(":")[0] for r in refusals] == ["command is not JSON", "command is not UTF-8 text"]
    assert lines.reply(5)["message"].startswith("unknown command 'format-disk'")
    service, dest = first_dest(agent)
    send(agent, 6, "set-weight", service=str(service.key), address=dest.address, port=dest.port, weight=9)
    assert lines.reply(6)["ok"]


def test_a_huge_line_is_cut_refused_and_the_next_line_still_read():
    huge = b'{"id": 1, "kind": "resync", "args": {"x": "' + b"y" * (3 * wire.MAX_COMMAND_LINE) + b'"}}\n'
    stream = io.BytesIO(huge + b'{"id": 2, "kind": "read-table"}\n')
    got = list(command_lines(stream))
    assert len(got) == 2 and len(got[0]) == wire.MAX_COMMAND_LINE + 1
    with pytest.raises(wire.WireError, match="refused: at most"):
        wire.decode_command(got[0])
    assert wire.decode_command(got[1])[0] == 2


def run_agent(*args: str, stdin: bytes, timeout: float = WAIT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ipvsman", "agent", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=env, cwd=ROOT)  # fmt: skip


def test_the_subcommand_speaks_the_protocol_and_ends_at_eof():
    huge = b"x" * (2 * wire.MAX_COMMAND_LINE) + b"\n"
    proc = run_agent("--demo", "--interval", "0.2", "--read-only",
                     stdin=huge + b'{"id": 1, "kind": "set-weight", "args": {}}\n')  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert lines[0]["type"] == "hello" and lines[0]["version"]
    assert any(line["type"] == "refused" and "at most" in line["message"] for line in lines)
    assert any(line["type"] == "reply" and line["id"] == 1 and not line["ok"] for line in lines)


def test_bad_options_are_one_line():
    proc = run_agent("--demo", "--netns", "x", stdin=b"")
    assert proc.returncode == 2 and proc.stderr.decode().strip().splitlines()[-1].endswith("pick one")


# -- the sync probe's commands ------------------------------------------------------------------------------


def test_probe_commands_the_demo_cannot_serve_are_refused_and_read_only_refuses_only_the_send(agent_and_lines):
    agent, lines = agent_and_lines()
    send(agent, 1, "sync-probe", series=7, seq=1, timeout=10)
    send(agent, 2, "probe-watch", series=7, seq=1, wait=1)
    assert lines.reply(1)["message"] == "sync-probe: refused: not in the demo (it would send to the real network)"
    assert lines.reply(2)["message"] == "probe-watch: refused: not in the demo (it has no kernel table to look in)"
    found = {"ports": set()}
    reader, lines = agent_and_lines(read_only=True, probe_scan=lambda series, wanted: found["ports"])
    send(reader, 3, "sync-probe", series=7, seq=1, timeout=10)
    assert lines.reply(3)["message"] == "sync-probe: refused: the agent runs with --read-only"
    found["ports"] = {syncprobe.probe_port(4)}  # a look, not a change: served under --read-only
    send(reader, 4, "probe-watch", series=7, seq=4, wait=5)
    reply = lines.reply(4)
    assert reply["ok"] and reply["data"]["found"] and reply["data"]["found_at"] <= time.time()
    send(reader, 5, "probe-watch", series=7, seq=5, wait=0.2)
    assert lines.reply(5)["data"]["found"] is False and "not in the table after 0.2 s" in lines.reply(5)["message"]


# -- every change in this node's audit log ----------------------------------------------------------------


def test_every_change_is_in_the_nodes_own_audit_log_attempt_then_result(agent_and_lines, tmp_path):
    path = tmp_path / "node-audit.log"
    audit = AuditLog(str(path), user="root", backend="kernel agent node=lvs-2 from=10.0.0.9")
    agent, lines = agent_and_lines(audit=audit)
    service, dest = first_dest(agent)
    target = {"service": str(service.key), "address": dest.address, "port": dest.port}
    send(agent, 1, "set-weight", **target, weight=dest.weight + 1)
    assert lines.reply(1)["ok"]
    send(agent, 2, "add-dest", service=str(service.key), address="10.10.99.9", port=service.key.port, forward="masq",
         weight=2)  # fmt: skip
    assert lines.reply(2)["ok"]
    send(agent, 3, "remove-dest", service=str(service.key), address="10.10.99.9", port=service.key.port)
    assert lines.reply(3)["ok"]
    logged = path.read_text().splitlines()
    assert len(logged) == 6 and all("backend=kernel agent node=lvs-2 from=10.0.0.9" in line for line in logged)
    assert [line.rsplit("result=", 1)[1] for line in logged] == ['"attempt"', '"ok"'] * 3
    assert f"old={dest.weight} new={dest.weight + 1}" in logged[0] and "action=add" in logged[2]
    assert "action=remove" in logged[4] and "server=10.10.99.9:" in logged[5]


def test_a_change_this_node_cannot_log_is_not_made(agent_and_lines, tmp_path):
    blocked = tmp_path / "no-dir-here"
    blocked.write_text("")  # a file where the log's directory should be
    agent, lines = agent_and_lines(audit=AuditLog(str(blocked / "audit.log"), user="root"))
    service, dest = first_dest(agent)
    send(agent, 1, "set-weight", service=str(service.key), address=dest.address, port=dest.port, weight=dest.weight + 5)
    reply = lines.reply(1)
    assert not reply["ok"] and "refused: audit log" in reply["message"] and "not writable" in reply["message"]
    time.sleep(0.3)
    assert agent.snapshot.find_service(service.key).find_dest(dest.address, dest.port).weight == dest.weight


def test_the_agents_audit_lines_name_its_node_and_where_the_ssh_session_came_from(tmp_path):
    audit = agent_audit_log(str(tmp_path / "a.log"), DemoBackend(seed=1),
                            environ={"SSH_CONNECTION": "10.0.0.9 50122 10.0.0.2 22"})  # fmt: skip
    assert audit.backend == f"demo agent node={socket.gethostname()} from=10.0.0.9"
    assert agent_audit_log(str(tmp_path / "a.log"), DemoBackend(seed=1), environ={}).backend.endswith(
        f"node={socket.gethostname()}")  # fmt: skip
