"""The dashboard's changes without a terminal: the attempt logged before each command, the result after, refusals."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest

from ipvsman.backend import Backend
from ipvsman.keepalived import parse_keepalived
from ipvsman.model import Dest, DestKey, RawState, Service, ServiceKey
from ipvsman.poller import AddDest, CommandResult, RemoveDest, SetWeight, snapshot_once
from ipvsman.topology import parse_topology
from ipvsman.ui.audit import AuditLog
from ipvsman.ui.changes import Changes, weight_refusal

WEB = ServiceKey("inet", "tcp", "192.0.2.10", 80)
WEB1 = DestKey(WEB, "10.1.0.11", 80)
WEB2 = DestKey(WEB, "10.1.0.12", 80)
STAMP = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
TOPOLOGY = 'Web:t:192.0.2.10:80 ["web1:10.1.0.11 -w100", "web2:10.1.0.12 -w50", "web4:10.1.0.14"] (-m -swlc)\n'


class StaticBackend(Backend):
    name = "kernel"

    def __init__(self, *dests: Dest):
        self.dests = dests

    def open(self):
        pass

    def poll(self, connections=True):
        return RawState(services=(Service(WEB, "wlc", dests=self.dests),), connections=())

    def set_weight(self, dest, weight):
        raise AssertionError("the tests run no command")


def snapshot(*dests: Dest):
    return snapshot_once(StaticBackend(*dests))


STEADY = snapshot(Dest("10.1.0.11", 80, "masq", 100), Dest("10.1.0.12", 80, "masq", 50))


class Status:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []
        self.pending: dict = {}

    def post(self, text, level="info", seconds=None):
        self.lines.append((text, level))

    def set_pending(self, key, text):
        if text is None:
            self.pending.pop(key, None)
        else:
            self.pending[key] = text

    def last(self, level=None):
        return [text for text, lvl in self.lines if level in (None, lvl)][-1]


class LogReadingPoller:
    """Records commands, and what the audit log held when each was submitted."""

    def __init__(self, path):
        self.path = path
        self.submitted = []
        self.log_at_submit = []

    def submit(self, command):
        self.submitted.append(command)
        self.log_at_submit.append(self.path.read_text().splitlines() if self.path.exists() else [])


def make_changes(tmp_path, path=None, *, poller=True, state=STEADY, configs=None, read_only=None):
    log_path = tmp_path / "audit.log"
    audit = AuditLog(str(path or log_path), user="alice", clock=lambda: STAMP, backend="kernel netns=lb-1")
    status = Status()
    fake = LogReadingPoller(log_path) if poller else None
    current = {"snapshot": state}
    changes = Changes(
        audit,
        status,
        poller=lambda: fake,
        snapshot=lambda: current["snapshot"],
        configs=lambda: configs or SimpleNamespace(keepalived=None, topology=None),
        read_only_reason=lambda: read_only,
    )
    return SimpleNamespace(changes=changes, status=status, poller=fake, log=log_path, current=current)


def log_lines(path):
    return path.read_text().splitlines()


def test_the_attempt_is_logged_before_the_command_and_the_result_after(tmp_path):
    t = make_changes(tmp_path)
    assert t.changes.change_weight(WEB2, +1)
    assert t.poller.submitted == [SetWeight(WEB2, 50, 51)]
    attempt = (
        '2024-05-01T12:00:00+00:00 user="alice" backend=kernel netns=lb-1 service="tcp 192.0.2.10:80" '
        'server=10.1.0.12:80 old=50 new=51 result="attempt"'
    )
    assert t.poller.log_at_submit == [[attempt]]
    assert t.changes.shown_pending() == {WEB2: (50, 51)}
    t.changes.apply_result(CommandResult(t.poller.submitted[0], True, "weight of ... 50 -> 51"))
    assert log_lines(t.log) == [attempt, attempt.replace('result="attempt"', 'result="ok"')]
    t.changes.settle(snapshot(Dest("10.1.0.11", 80, "masq", 100), Dest("10.1.0.12", 80, "masq", 51)))
    assert t.changes.pending == {} and t.status.last() == f"confirmed: weight of {WEB2} is 51"


def test_an_unwritable_audit_log_refuses_every_kind_of_change(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "audit.log"  # its parent is a file: fails for root too
    configs = SimpleNamespace(keepalived=None, topology=parse_topology(TOPOLOGY, "topology.txt"))
    t = make_changes(tmp_path, path, configs=configs)
    reason = f"audit log {path} not writable: Not a directory"
    assert not t.changes.change_weight(WEB1, -1)
    assert t.status.last("error") == f"weight of {WEB1} not changed: {reason}"
    assert not t.changes.toggle_drain(WEB1)
    assert t.changes.drained == {} and t.changes.pending == {} and t.status.pending == {}
    offer = t.changes.offer_add(WEB1)
    assert not t.changes.add(offer.service, offer.entries[0][1])
    assert t.status.last("error") == f"10.1.0.14:80 not added to {WEB}: {reason}"
    assert not t.changes.remove(WEB2)
    assert t.status.last("error") == f"10.1.0.12:80 not removed from {WEB}: {reason}"
    assert t.poller.submitted == []


def test_a_result_that_cannot_be_logged_is_said_as_the_change_is_already_made(tmp_path):
    t = make_changes(tmp_path)
    assert t.changes.change_weight(WEB1, +1)
    (tmp_path / "gone").write_text("")
    t.changes.audit.path = str(tmp_path / "gone" / "audit.log")  # the disk went away meanwhile
    t.changes.apply_result(CommandResult(t.poller.submitted[0], True, "done"))
    warning = t.status.last("warn")
    assert "not writable: Not a directory" in warning and "not logged" in warning and "\n" not in warning
    assert t.changes.pending[WEB1].outstanding == 0  # still confirmed by the next snapshot


def test_drain_and_restore(tmp_path):
    t = make_changes(tmp_path)
    assert t.changes.toggle_drain(WEB1)
    assert t.changes.drained == {WEB1: 100}
    t.changes.apply_result(CommandResult(t.poller.submitted[-1], True, "done"))
    drained = snapshot(Dest("10.1.0.11", 80, "masq", 0), Dest("10.1.0.12", 80, "masq", 50))
    t.current["snapshot"] = drained
    t.changes.settle(drained)
    assert t.changes.toggle_drain(WEB1)
    assert t.poller.submitted == [SetWeight(WEB1, 100, 0), SetWeight(WEB1, 0, 100)]
    assert [line.split(" old=")[1] for line in log_lines(t.log)] == [
        '100 new=0 result="attempt"',
        '100 new=0 result="ok"',
        '0 new=100 result="attempt"',
    ]


def test_a_refused_change_is_one_line_and_logged(tmp_path):
    t = make_changes(tmp_path)
    t.changes.change_weight(WEB1, +1)
    command = t.poller.submitted[0]
    message = f"{command.describe()}: refused: set weight of {WEB1}: the real server is gone"
    t.changes.apply_result(CommandResult(command, False, message))
    assert t.status.last("error") == f"weight 100 -> 101 of {WEB1} refused: the real server is gone"
    assert t.changes.pending == {} and t.status.pending == {}
    assert log_lines(t.log)[1].endswith(f'old=100 new=101 result="refused: {message}"')


@pytest.mark.parametrize(
    "message, line",
    [
        ("set weight of X to 2: refused: Operation not permitted", "weight 1 -> 2 of {d} refused: Operation not permitted"),
        ("set weight of X to 2: failed: boom", "weight 1 -> 2 of {d} failed: boom"),
        ("something else", "weight 1 -> 2 of {d} refused: something else"),
    ],
)
def test_weight_refusal_keeps_only_the_reason(message, line):
    assert weight_refusal(SetWeight(WEB1, 1, 2), message) == line.format(d=WEB1)


def test_add_and_remove_log_attempt_and_result(tmp_path):
    keepalived = parse_keepalived(
        "virtual_server 192.0.2.10 80 {\n protocol TCP\n real_server 10.1.0.12 80 { weight 50 }\n}\n",
        "keepalived.conf",
    )
    configs = SimpleNamespace(keepalived=keepalived, topology=parse_topology(TOPOLOGY, "topology.txt"))
    t = make_changes(tmp_path, configs=configs)
    offer = t.changes.offer_add(WEB2)
    assert [label for label, _ in offer.entries] == ["10.1.0.14:80  weight 1  Masq"]
    assert t.changes.add(offer.service, offer.entries[0][1])
    removal = t.changes.ask_remove(WEB2)
    assert removal.question == f"remove 10.1.0.12:80 from {WEB}? y/n"
    assert "keepalived's next reload adds it back" in removal.details
    assert t.changes.remove(removal.key)
    assert t.poller.submitted == [AddDest(WEB, "10.1.0.14", 80, "masq", 1), RemoveDest(WEB2)]
    for command in t.poller.submitted:
        t.changes.apply_result(CommandResult(command, True, "done"))
    results = [line.split(" action=")[1] for line in log_lines(t.log)]
    assert results == [
        'add service="tcp 192.0.2.10:80" server=10.1.0.14:80 forward=masq weight=1 result="attempt"',
        'remove service="tcp 192.0.2.10:80" server=10.1.0.12:80 result="attempt"',
        'add service="tcp 192.0.2.10:80" server=10.1.0.14:80 forward=masq weight=1 result="ok"',
        'remove service="tcp 192.0.2.10:80" server=10.1.0.12:80 result="ok"',
    ]


def test_nothing_is_logged_without_a_poller_to_run_it(tmp_path):
    t = make_changes(tmp_path, poller=False)
    assert not t.changes.change_weight(WEB1, +1)
    assert "not connected to a poller" in t.status.last("error")
    assert not t.log.exists() and t.changes.pending == {}


def test_read_only_refuses_before_logging(tmp_path):
    t = make_changes(tmp_path, read_only="read-only mode (--read-only)")
    assert not t.changes.change_weight(WEB1, +1) and not t.changes.remove(WEB1)
    assert t.status.last() == "remove disabled: read-only mode (--read-only)"
    assert not t.log.exists()
