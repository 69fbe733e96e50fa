"""ipvsmand's verdicts in views 1-3, a stale or hostile state file, H (reload) and the guided drain, with real keys."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
import urwid.testing
from uihelpers import (
    TAKEN_AT,
    TOPOLOGY,
    WEB,
    WEB1,
    WEB2,
    WEB3,
    WEB_TLS,
    make_dashboard,
    make_services,
    make_snapshot,
    screen,
)

from ipvsman.daemon import health
from ipvsman.daemon.engine import Daemon
from ipvsman.model import DestKey
from ipvsman.poller import CommandResult, RemoveDest, SetWeight
from ipvsman.ui.app import Dashboard
from ipvsman.verdicts import VerdictReader

SIZE = (100, 30)
TLS2 = DestKey(WEB_TLS, "10.1.0.12", 8443)
SPARE = DestKey(WEB, "10.1.0.14", 80)  # ipvsmand has it, the kernel does not


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def select(board, view_key, row_key):
    press(board, view_key)
    assert board.view.select(row_key), f"no row {row_key} in view {view_key}"


def entry(key: DestKey, state="up", applied=None, configured=50, reason="", since=TAKEN_AT - 200.0, **fields):
    found = {
        "service": str(key.service), "address": key.address, "port": key.port, "state": state, "since": since,
        "good": 3, "rise": 3, "bad": 0, "fall": 3, "check": "http", "last_check_at": TAKEN_AT, "last_ok": not reason,
        "reason": reason, "latency_ms": None if reason else 2.3, "configured_weight": configured,
        "applied_weight": configured if applied is None else applied, "action": "quiesce",
    }  # fmt: skip
    found.update(fields)
    return found


def state_document(**fields):
    document = {
        "ipvsmand": 1, "version": "0.9", "pid": 4321, "topology": "/etc/ipvsman/topology",
        "applied_at": TAKEN_AT - 3600, "written_at": TAKEN_AT + 1, "heartbeat": 5.0, "errors": [],
        "real_servers": [
            entry(WEB1, configured=100),
            entry(WEB2, "falling", bad=1, reason="HTTP 503"),
            entry(WEB3, "down", applied=0, bad=3, good=0, reason="HTTP 503"),  # kernel weight 0: agrees
            entry(TLS2, "rising", applied=0, good=2, configured=10),  # kernel weight 10: drift
            entry(SPARE, configured=20),  # not in the kernel: drift
        ],
    }  # fmt: skip
    document.update(fields)
    return document


class Process:
    def __init__(self, cmdline):
        self._cmdline = cmdline

    def cmdline(self):
        return self._cmdline


@pytest.fixture
def state_path(tmp_path):
    path = tmp_path / "ipvsmand.json"
    path.write_text(json.dumps(state_document()))
    return path


def watching(state_path, poller, clock, tmp_path, **options) -> Dashboard:
    """A dashboard given --ipvsmand-state, with the file read as the reader thread reads it."""
    board = make_dashboard(poller, clock, tmp_path, names=False, ipvsmand_state=str(state_path), **options)
    reread(board)
    return board


def reread(board):
    reader = board.ipvsmand.reader or VerdictReader(board.ipvsmand.path, board.ipvsmand.apply)
    board.ipvsmand.reader = reader
    result = reader.read_if_changed()
    if result is not None:
        board.ipvsmand.apply(result)
    board.refresh()


def row_of(lines, text):
    found = [line for line in lines if text in line]
    assert found, f"no line with {text!r}:\n" + "\n".join(lines)
    return found[0]


def test_no_state_file_no_verdicts(dashboard):
    press(dashboard, "2")
    lines = screen(dashboard)
    assert "IPVSMAND" not in "\n".join(lines)
    assert "DRIFT" not in lines[3]  # no column for a disagreement nobody can have


def test_view_2_shows_verdicts_beside_the_weights_and_marks_drift(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    press(board, "2")
    lines = screen(board)
    header = row_of(lines, "REAL SERVER")
    assert "IPVSMAND" in header and "DRIFT" in header
    assert header.index("STATE") < header.index("IPVSMAND") < header.index("WEIGHT")
    web1 = row_of(lines, "10.1.0.11:80 ")
    assert "UP" in web1 and web1.rstrip().endswith("100")
    assert "falling 1/3" in row_of(lines, "10.1.0.12:80 ")
    web3 = row_of(lines, "10.1.0.13:80 ")
    assert "DOWN" in web3 and "ipvsmand" not in web3  # weight 0 and DOWN agree
    tls2 = row_of(lines, "10.1.0.12:8443")
    assert "rising 2/3" in tls2 and tls2.rstrip().endswith("ipvsmand")  # weight 10 while ipvsmand holds it out
    assert row_of(lines, "10.1.0.53:53").split()[-4] == "-"  # ipvsmand names no DNS server
    assert "IPVSMAND DRIFT 2" in lines[0]


def test_view_3_says_since_when_and_why_and_the_drift(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    select(board, "3", WEB3)
    lines = screen(board, (100, 60))
    assert 'ipvsmand DOWN since 22:10:00 "HTTP 503"  (http, weight 50, applied 0)' in "\n".join(lines)
    assert 'ipvsmand UP since 22:10:00  (http, 2.3 ms, weight 100, applied 100)' in "\n".join(lines)
    assert "DRIFT  kernel weight 10, ipvsmand says rising 2/3 (weight 0)" in "\n".join(lines)


def test_view_1_sums_up_a_service_and_lists_its_drift(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    press(board, "1")
    text = "\n".join(screen(board, (100, 60)))
    assert 'ipvsmand 1 UP, 1 DOWN, 1 falling  10.1.0.12:80 falling 1/3 "HTTP 503"' in text
    assert "DRIFT  10.1.0.14:80 ipvsmand has it at weight 20, the kernel does not" in text
    assert "DRIFT  10.1.0.12:8443 kernel weight 10, ipvsmand says rising 2/3 (weight 0)" in text


def test_the_operator_draining_a_server_ipvsmand_keeps_up_is_drift(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    board.apply_snapshot(make_snapshot(seq=2, services=make_services(web_weights=(0, 50, 0))))
    press(board, "2")
    assert row_of(screen(board), "10.1.0.11:80 ").rstrip().endswith("ipvsmand")
    assert "IPVSMAND DRIFT 3" in screen(board)[0]


def test_a_stale_state_file_is_said_in_the_header_and_the_status_line(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    assert "OLD" not in screen(board)[0]
    clock.now = TAKEN_AT + 1 + 41  # no rewrite for 41 s with a heartbeat of 5
    board.tick()
    lines = screen(board)
    assert "IPVSMAND 41s OLD" in lines[0]
    assert "ipvsmand state 41 s old: the daemon stopped or froze" in lines[-1]
    replacement = state_path.parent / "new.json"
    replacement.write_text(json.dumps(state_document(written_at=clock.now)))
    os.replace(replacement, state_path)  # the daemon writes again
    reread(board)
    assert "OLD" not in screen(board)[0]


@pytest.mark.parametrize(
    "content, said",
    [
        (bytes(range(256)) * 40, "not UTF-8 text"),
        (b"\x1b[2J" + b"{" * 50_000, "not JSON"),
        (json.dumps(state_document(ipvsmand=2)).encode(), "schema version 2, this ipvsman reads 1"),
        (json.dumps(state_document(heartbeat=float("nan"))).encode(), "not JSON"),
        (json.dumps({"ipvsmand": 1, "real_servers": [1]}).encode(), "heartbeat: missing"),
    ],
    ids=["binary", "nested", "schema-2", "nan", "missing-fields"],
)
def test_a_hostile_state_file_is_one_line_and_shows_nothing(state_path, poller, clock, tmp_path, content, said):
    state_path.write_bytes(content)
    board = watching(state_path, poller, clock, tmp_path)
    press(board, "2")
    lines = screen(board)
    message = board.status.history[-1].text
    assert said in message and message.startswith(f"ipvsmand state {state_path}: ") and "\n" not in message
    assert lines[-1].strip().startswith("ipvsmand state ")  # on the status line, cut to its width
    assert "IPVSMAND ?" in lines[0]
    assert all("UP" not in line and "DOWN" not in line for line in lines[4:])  # no verdict from a bad file
    assert row_of(lines, "10.1.0.11:80 ").split()[-4] == "-"


def test_escape_sequences_in_a_reason_are_shown_harmless(state_path, poller, clock, tmp_path):
    document = state_document()
    document["real_servers"][2]["reason"] = "\x1b]0;pwned\x07\x1b[2Jbad\nline"
    state_path.write_text(json.dumps(document))
    board = watching(state_path, poller, clock, tmp_path)
    select(board, "3", WEB3)
    text = "\n".join(screen(board, (100, 60)))
    assert '"?]0;pwned??[2Jbad?line"' in text


def test_h_asks_naming_pid_and_topology_then_sends_sighup(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    sent = []
    board.ipvsmand.process_of = lambda pid: Process(["/usr/bin/python3", "/usr/local/bin/ipvsmand", "--topology", "t"])
    board.ipvsmand.kill = lambda pid, sig: sent.append((pid, sig))
    press(board, "H")
    text = "\n".join(screen(board))
    assert "send SIGHUP to ipvsmand (pid 4321) to reload /etc/ipvsman/topology? y/n" in text
    press(board, "n")
    assert sent == [] and "ipvsmand not reloaded" in screen(board)[-1]
    press(board, "H", "y")
    assert sent == [(4321, signal.SIGHUP)]
    assert "ipvsmand (pid 4321) told to reload its topology (SIGHUP)" in screen(board)[-1]
    log = (tmp_path / "audit" / "changes.log").read_text().splitlines()
    assert [line.rsplit("result=", 1)[1] for line in log] == ['"attempt"', '"ok"']
    assert 'action=reload-ipvsmand pid=4321 topology="/etc/ipvsman/topology"' in log[0]


def test_h_refuses_a_pid_that_is_not_ipvsmand(state_path, poller, clock, tmp_path):
    state_path.write_text(json.dumps(state_document(pid=os.getpid())))  # this test: running, not ipvsmand
    board = watching(state_path, poller, clock, tmp_path)
    board.ipvsmand.kill = lambda pid, sig: pytest.fail("SIGHUP sent to a process that is not ipvsmand")
    press(board, "H")
    assert board.dialog is None
    assert f"reload ipvsmand: pid {os.getpid()} is not ipvsmand" in screen(board)[-1]


def test_h_refuses_in_read_only_without_a_file_and_in_the_demo(state_path, poller, clock, tmp_path, dashboard):
    board = watching(state_path, poller, clock, tmp_path, read_only=True)
    press(board, "H")
    assert board.dialog is None and "reload ipvsmand disabled: read-only mode (--read-only)" in screen(board)[-1]
    press(dashboard, "H")
    assert "reload ipvsmand: no state file watched (--ipvsmand-state PATH)" in screen(dashboard)[-1]
    dashboard.ipvsmand.use_demo()
    press(dashboard, "H")
    assert "reload ipvsmand: not in the demo" in screen(dashboard)[-1]


def test_the_demo_shows_made_up_verdicts(dashboard):
    from ipvsman.demo import DemoBackend

    backend = DemoBackend(seed=1, tick=1.0)
    backend.open()
    demo = make_snapshot(services=backend.poll().services)
    dashboard.ipvsmand.use_demo()
    dashboard.apply_snapshot(demo)
    press(dashboard, "2")
    text = "\n".join(screen(dashboard, (100, 60)))
    assert "IPVSMAND DRIFT 1" in text and "rising 2/3" in text and "DOWN" in text
    assert any(line.rstrip().endswith("ipvsmand") for line in text.splitlines())


def test_the_demo_daemon_keeps_its_verdicts_times_until_a_weight_changes(dashboard):
    # As a real daemon's: "DOWN since" stays put from poll to poll; a weight changed by the
    # operator makes the demo's verdicts again (its configured weight follows the kernel's).
    from ipvsman.demo import DemoBackend
    from ipvsman.poller import Poller

    backend = DemoBackend(seed=1, tick=1.0)
    backend.open()
    poller = Poller(backend, on_snapshot=lambda snapshot: None)
    dashboard.ipvsmand.use_demo()
    first = poller.poll_once()
    dashboard.apply_snapshot(first)
    down = next(v for v in dashboard.ipvsmand.verdicts.real_servers if v.state == "down")
    second = poller.poll_once()
    assert second.layout == first.layout and second.taken_at > first.taken_at
    dashboard.apply_snapshot(second)
    kept = dashboard.ipvsmand.verdicts
    assert kept.by_dest[down.dest].since == down.since and kept.written_at == second.taken_at
    assert not kept.stale(second.taken_at + 10)

    service = next(s for s in second.services if any(d.weight for d in s.dests))
    dest = next(d for d in service.dests if d.weight)
    SetWeight(DestKey(service.key, dest.address, dest.port), dest.weight, dest.weight + 7).run(backend)
    third = poller.poll_once()
    dashboard.apply_snapshot(third)
    remade = dashboard.ipvsmand.verdicts.by_dest[DestKey(service.key, dest.address, dest.port)]
    assert remade.configured_weight == dest.weight + 7


class SnapshotIpvs:
    """ipvsmand's kernel: the snapshot's IPVS, read and never changed (the operator has not let it act yet)."""

    async def read_services(self):
        return make_services()

    async def apply(self, action):
        pass


def test_what_the_daemon_writes_the_dashboard_shows(poller, clock, tmp_path):
    topology = tmp_path / "topology"
    topology.write_text(TOPOLOGY)
    state_path = tmp_path / "run" / "ipvsmand.json"
    daemon = Daemon(str(topology), SnapshotIpvs(), state_path=str(state_path))

    async def check_and_write():
        assert await daemon.load()
        for key, result in ((WEB1, health.CheckResult(True, "", 1.5)), (WEB2, health.CheckResult(False, "refused"))):
            monitor = daemon.monitors[key]
            for _ in range(3):
                monitor.health = health.observe(monitor.health, result, TAKEN_AT - 200.0)
        await daemon.reconcile()
        daemon.write_state()

    asyncio.run(check_and_write())
    board = watching(state_path, poller, clock, tmp_path)
    press(board, "2")
    lines = screen(board)
    assert "UP" in row_of(lines, "10.1.0.11:80 ") and "ipvsmand" not in row_of(lines, "10.1.0.11:80 ")
    assert row_of(lines, "10.1.0.12:80 ").rstrip().endswith("ipvsmand")  # DOWN at weight 0; the kernel has 50
    assert "SUSPENDED" in row_of(lines, "10.1.0.13:80 ")  # -w0 in the topology
    assert "unknown" in row_of(lines, "10.1.0.53:53")  # not checked yet
    assert "IPVSMAND DRIFT 2" in lines[0]  # and 10.1.0.14, which it would add
    select(board, "3", WEB2)
    text = "\n".join(screen(board, (100, 60)))
    assert 'ipvsmand DOWN since 22:10:00 "refused"  (tcp, weight 50, applied 0)' in text
    assert "DRIFT  kernel weight 50, ipvsmand says DOWN (weight 0)" in text
    assert 'ipvsmand UP since 22:10:00  (tcp, 1.5 ms, weight 100, applied 100)' in text


# -- the guided drain ---------------------------------------------------------------------------------
def web2_with(active, inactive, persistent, weight=0):
    services = list(make_services(web_weights=(100, weight, 0)))
    web = services[0]
    dests = list(web.dests)
    dests[1] = dests[1]._replace(active_conns=active, inactive_conns=inactive, persist_conns=persistent)
    services[0] = type(web)(web.key, web.scheduler, dests=tuple(dests), rates=web.rates)
    return tuple(services)


def test_zero_counts_down_estimates_then_offers_remove_or_restore(dashboard, poller, tmp_path):
    select(dashboard, "3", WEB2)
    press(dashboard, "0")
    assert poller.submitted == [SetWeight(WEB2, 50, 0)]
    dashboard.apply_result(CommandResult(poller.submitted[-1], True, "done"))
    for second in range(11):  # 2 connections fewer a second
        dashboard.apply_snapshot(make_snapshot(seq=2 + second, services=web2_with(30 - 2 * second, 10, 0)))
    text = "\n".join(screen(dashboard, (100, 60)))
    assert "draining: 10 active, 10 inactive, 0 persistent; empty in ~10 s" in text
    select(dashboard, "2", WEB2)
    assert "DRAIN" in row_of(screen(dashboard), "10.1.0.12:80 ")
    dashboard.apply_snapshot(make_snapshot(seq=20, services=web2_with(0, 0, 0)))
    assert "10.1.0.12:80 of tcp 192.0.2.10:80 is drained empty: x removes it, 0 restores weight 50" in screen(
        dashboard)[-1]  # fmt: skip
    assert "EMPTY" in row_of(screen(dashboard), "10.1.0.12:80 ")
    press(dashboard, "x", "y")
    assert poller.submitted[-1] == RemoveDest(WEB2)
    log = (tmp_path / "audit" / "weights.log").read_text()
    assert 'action=drain service="tcp 192.0.2.10:80" server=10.1.0.12:80 step="started"' in log
    assert 'step="empty" detail="x removes it, 0 restores weight 50"' in log


def test_a_drain_that_will_not_empty_is_warned_about(dashboard, poller):
    select(dashboard, "2", WEB2)
    press(dashboard, "0")
    dashboard.apply_result(CommandResult(poller.submitted[-1], True, "done"))
    for second in range(35):  # the persistence templates stay: clients keep coming back
        dashboard.apply_snapshot(make_snapshot(seq=2 + second, services=web2_with(0, 1, 25)))
    assert "will not empty: persistence templates are being renewed" in screen(dashboard)[-1]
    assert "STUCK" in row_of(screen(dashboard), "10.1.0.12:80 ")
    press(dashboard, "i")
    assert "will not empty" in "\n".join(screen(dashboard))


def test_a_reload_ipvsmand_refused_is_said_once(state_path, poller, clock, tmp_path):
    board = watching(state_path, poller, clock, tmp_path)
    replacement = state_path.parent / "new.json"
    errors = ["/etc/ipvsman/topology:12: unknown check 'htp'", "/etc/ipvsman/topology:14: port 70000"]
    replacement.write_text(json.dumps(state_document(errors=errors, written_at=TAKEN_AT + 2)))
    os.replace(replacement, state_path)
    reread(board)
    said = [m.text for m in board.status.history if "kept its running topology" in m.text]
    assert said == ["ipvsmand kept its running topology: /etc/ipvsman/topology:12: unknown check 'htp' (+1 more)"]
    replacement.write_text(json.dumps(state_document(errors=errors, written_at=TAKEN_AT + 7)))
    os.replace(replacement, state_path)  # the heartbeat rewrites it with the same refusals
    reread(board)
    assert sum("kept its running topology" in m.text for m in board.status.history) == 1
