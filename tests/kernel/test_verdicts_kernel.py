"""ipvsmand's verdicts beside a real kernel's weights: views 2 and 3 of the dashboard on a namespace's IPVS."""

from __future__ import annotations

import argparse
import json
import time

import pytest
import urwid.testing

from ipvsman.kernel.backend import KernelBackend
from ipvsman.model import DestKey, ServiceKey
from ipvsman.poller import snapshot_once
from ipvsman.ui.app import Dashboard
from ipvsman.verdicts import VerdictReader

pytestmark = pytest.mark.kernel

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
SIZE = (100, 30)


def entry(address, state, configured, applied, reason=""):
    now = time.time()
    return {
        "service": str(WEB), "address": address, "port": 8080, "state": state, "since": now - 60, "good": 3,
        "rise": 3, "bad": 0 if state == "up" else 3, "fall": 3, "check": "http", "last_check_at": now,
        "last_ok": state == "up", "reason": reason, "latency_ms": 1.0 if state == "up" else None,
        "configured_weight": configured, "applied_weight": applied, "action": "quiesce",
    }  # fmt: skip


def test_views_show_the_daemons_verdicts_and_drift_against_the_kernel(netns, tmp_path):
    # ipvsmand's service (10.0.0.1:80) and one it does not name, made by ipvsadm as keepalived would.
    netns.run(
        "ipvsadm -A -t 10.0.0.1:80 -s wlc && ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 10 "
        "&& ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 0 && ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:8080 -m -w 0 "
        "&& ipvsadm -A -t 10.0.0.2:443 -s rr && ipvsadm -a -t 10.0.0.2:443 -r 10.0.2.1:443 -m -w 1"
    )
    state = tmp_path / "ipvsmand.json"
    state.write_text(json.dumps({
        "ipvsmand": 1, "version": "test", "pid": 1, "topology": "/etc/ipvsman/topology",
        "applied_at": time.time() - 600, "written_at": time.time(), "heartbeat": 60.0, "errors": [],
        "real_servers": [
            entry("10.0.1.1", "up", 10, 10),
            entry("10.0.1.2", "down", 10, 0, "HTTP 503"),  # weight 0 in the kernel too: agreed
            entry("10.0.1.3", "up", 20, 20),  # weight 0 in the kernel while ipvsmand keeps it up: drift
        ],
    }))  # fmt: skip
    snapshot = snapshot_once(KernelBackend(netns=netns.name), connections=False)
    assert snapshot.error is None, snapshot.error
    options = argparse.Namespace(read_only=True, weight_step=1, audit_log=None, interval=1.0, connections=True,
                                 netns=netns.name, ipvsmand_state=str(state))  # fmt: skip
    board = Dashboard(options, backend=KernelBackend(netns=netns.name), hostname="guest")
    board.apply_snapshot(snapshot)
    result = VerdictReader(str(state), board.ipvsmand.apply).read_if_changed()
    board.ipvsmand.apply(result)
    board.apply_snapshot(snapshot)

    urwid.testing.press(board.top, SIZE, "2")
    lines = urwid.testing.render_text(board.top, SIZE, focus=True, strip=True)
    rows = {address: next(line for line in lines if f"{address}:" in line) for address in
            ("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.2.1")}  # fmt: skip
    assert " UP " in rows["10.0.1.1"] and not rows["10.0.1.1"].rstrip().endswith("ipvsmand")
    assert " DOWN " in rows["10.0.1.2"] and not rows["10.0.1.2"].rstrip().endswith("ipvsmand")
    assert " UP " in rows["10.0.1.3"] and rows["10.0.1.3"].rstrip().endswith("ipvsmand")
    assert rows["10.0.2.1"].split()[-4] == "-"  # the service ipvsmand does not name: no verdict
    assert ("header.drift", "IPVSMAND DRIFT 1") in board.ipvsmand.header_words(time.time())  # the header is cut here
    assert board.ipvsmand.drift == {DestKey(WEB, "10.0.1.3", 8080): "kernel weight 0, ipvsmand says UP (weight 20)"}

    urwid.testing.press(board.top, SIZE, "3")
    text = "\n".join(urwid.testing.render_text(board.top, (100, 60), focus=True, strip=True))
    assert 'ipvsmand DOWN since' in text and '"HTTP 503"' in text
