"""A weight change that races the removal of its real server, through the real Poller and KernelBackend."""

from __future__ import annotations

import queue
from types import SimpleNamespace

import pytest

from ipvsman.kernel.backend import KernelBackend
from ipvsman.model import ServiceKey
from ipvsman.poller import Poller, SetWeight
from ipvsman.ui.audit import AuditLog, backend_label
from ipvsman.ui.changes import Changes

pytestmark = pytest.mark.kernel

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
TIMEOUT = 300.0  # guest time: the first poll imports pyroute2 (about 15 s there)


class Status:
    """What the status bar would have shown."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def post(self, text, level="info", seconds=None):
        self.lines.append((text, level))

    def set_pending(self, key, text):
        pass


@pytest.mark.parametrize(
    "removal, reasons",
    [
        # Gone before the backend's fresh dump: it finds no such real server in it.
        ("ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.1:8080", ("the real server is gone",)),
        # The whole service: the dump of its real servers is empty (or refused, ESRCH).
        ("ipvsadm -D -t 10.0.0.1:80", ("the real server is gone", "no such virtual service")),
    ],
)
def test_a_weight_change_racing_the_removal_is_one_line_and_two_audit_entries(netns, tmp_path, removal, reasons):
    netns.run(
        "ipvsadm -A -t 10.0.0.1:80 -s wlc && ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 10 "
        "&& ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 20"
    )
    snapshots: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    poller = Poller(KernelBackend(netns=netns.name), snapshots.put, results.put, interval=0.5, connections=False)
    poller.start()
    try:
        def newest():
            snapshot = snapshots.get(timeout=TIMEOUT)
            while not snapshots.empty():
                snapshot = snapshots.get_nowait()
            return snapshot

        snapshot = newest()
        while snapshot.find_service(WEB) is None:
            assert snapshot.error is None, snapshot.error
            snapshot = newest()
        service = snapshot.find_service(WEB)
        key = service.dest_key(service.find_dest("10.0.1.1", 8080))
        log = tmp_path / "audit.log"
        status = Status()
        changes = Changes(
            AuditLog(str(log), user="tester", backend=backend_label("kernel", netns.name)),
            status,
            poller=lambda: poller,
            snapshot=lambda: snapshot,  # the dashboard's view when the operator pressed +
            configs=lambda: SimpleNamespace(keepalived=None, topology=None),
            read_only_reason=lambda: None,
        )

        netns.run(removal)  # after the choice was made from the snapshot, before the change
        assert changes.change_weight(key, +1)
        result = results.get(timeout=TIMEOUT)
        assert result.command == SetWeight(key, 10, 11) and not result.ok
        changes.apply_result(result)

        errors = [text for text, level in status.lines if level == "error"]
        assert len(errors) == 1 and "\n" not in errors[0], status.lines
        assert any(errors[0] == f"weight 10 -> 11 of {key} refused: {reason}" for reason in reasons), errors[0]
        lines = log.read_text().splitlines()
        head = f'user="tester" backend=kernel netns={netns.name} service="{WEB}" server=10.0.1.1:8080 old=10 new=11'
        assert len(lines) == 2 and all(head in line for line in lines), lines
        assert lines[0].endswith(' result="attempt"')
        assert lines[1].split(" result=", 1)[1].startswith('"refused: ') and any(r in lines[1] for r in reasons)
        assert changes.pending == {}
        print(errors[0])  # shown in the session's summary: what the operator reads
        print(lines[1])
    finally:
        poller.stop(timeout=TIMEOUT)
