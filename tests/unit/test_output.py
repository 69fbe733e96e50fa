"""`ipvsman --once`: the JSON schema of issue 2, the text report, and one-line failures."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipvsman.backend import Backend, IpvsUnavailable, NotPermitted
from ipvsman.demo import DemoBackend
from ipvsman.model import FORWARD_LABELS, RawState, Snapshot
from ipvsman.output import EXIT_FAILED, EXIT_OK, print_once, snapshot_to_dict
from ipvsman.poller import snapshot_once

ROOT = Path(__file__).resolve().parents[2]

# The schema of issue 2: every key with the types its value may have.
STATS = {"conns": int, "inpkts": int, "outpkts": int, "inbytes": int, "outbytes": int}
RATES = {"cps": int, "inpps": int, "outpps": int, "inbps": int, "outbps": int}
DEST = {
    "address": str,
    "port": int,
    "forward": str,
    "weight": int,
    "upper_threshold": int,
    "lower_threshold": int,
    "active_conns": int,
    "inactive_conns": int,
    "persist_conns": int,
    "stats": STATS,
    "rates": RATES,
}
SERVICE = {
    "af": str,
    "protocol": (str, type(None)),
    "address": (str, type(None)),
    "port": (int, type(None)),
    "fwmark": (int, type(None)),
    "scheduler": str,
    "persistent": (int, type(None)),
    "flags": [str],
    "stats": STATS,
    "rates": RATES,
    "dests": [DEST],
}
DAEMON = {
    "state": str,
    "interface": str,
    "syncid": int,
    "maxlen": int,
    "group": str,
    "port": int,
    "ttl": int,
}
CONNECTION = {
    "protocol": str,
    "client": str,
    "client_port": int,
    "virtual": str,
    "virtual_port": int,
    "dest": str,
    "dest_port": int,
    "state": str,
    "expires": int,
    "origin": (str, type(None)),
}
DOCUMENT = {
    "ipvs": {"version": str, "conn_table_size": int},
    "services": [SERVICE],
    "daemons": [DAEMON],
    "timeouts": {"tcp": int, "tcp_fin": int, "udp": int},
    "errors": [str],
    "skipped": dict,
    "warnings": [str],
}


def check(value, schema, where="$"):
    """Assert that `value` has every key of `schema` with a value of the right type."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        for key, inner in schema.items():
            assert key in value, f"{where}.{key} missing"
            check(value[key], inner, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            check(item, schema[0], f"{where}[{index}]")
    else:
        assert isinstance(value, schema) and not isinstance(value, bool), f"{where}: {value!r}"


def once(backend: Backend, as_json: bool, connections: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = print_once(backend, as_json=as_json, connections=connections, stream=out, error_stream=err)
    return code, out.getvalue(), err.getvalue()


def test_json_follows_the_schema():
    code, out, err = once(DemoBackend(seed=1, tick=1.0), as_json=True, connections=True)
    assert (code, err) == (EXIT_OK, "")
    document = json.loads(out)
    check(document, {**DOCUMENT, "connections": [CONNECTION]})
    assert document["errors"] == [] and document["warnings"] == [] and document["skipped"] == {}
    for service in document["services"]:
        assert service["af"] in ("inet", "inet6")
        assert service["protocol"] in ("tcp", "udp", "sctp", None)
        if service["fwmark"] is None:
            assert ipaddress.ip_address(service["address"]).compressed == service["address"]
            assert service["protocol"] is not None
        else:
            assert service["protocol"] is None and service["address"] is None
        for dest in service["dests"]:
            assert dest["forward"] in FORWARD_LABELS
            assert ipaddress.ip_address(dest["address"]).compressed == dest["address"]
    assert {s["af"] for s in document["services"]} == {"inet", "inet6"}
    assert any(s["fwmark"] == 10 for s in document["services"])
    assert document["daemons"][0]["state"] == "master"


def test_json_agrees_with_the_snapshot():
    snapshot = snapshot_once(DemoBackend(seed=2, tick=1.0))
    document = json.loads(json.dumps(snapshot_to_dict(snapshot, connections=True)))
    assert len(document["connections"]) == len(snapshot.connections)
    assert len(document["services"]) == len(snapshot.services)
    for service, entry in zip(snapshot.services, document["services"]):
        assert entry["stats"]["conns"] == service.stats.conns
        assert entry["rates"]["inbps"] == service.rates.inbps
        assert entry["persistent"] == service.persistent
        for dest, dest_entry in zip(service.dests, entry["dests"]):
            assert (dest_entry["address"], dest_entry["weight"]) == (dest.address, dest.weight)
            # Counts by state add up to the kernel's active and inactive counts.
            states = dest_entry["conn_states"]
            assert states.get("ESTABLISHED", 0) == dest_entry["active_conns"]
            assert sum(states.values()) - states.get("ESTABLISHED", 0) == dest_entry["inactive_conns"]
    first = document["connections"][0]
    assert first["protocol"] == snapshot.connections[0].protocol.lower()


def test_json_without_connections_has_no_table():
    code, out, _ = once(DemoBackend(tick=1.0), as_json=True, connections=False)
    assert code == EXIT_OK
    assert "connections" not in json.loads(out)


def test_errors_skipped_and_warnings_are_carried():
    snapshot = snapshot_once(DemoBackend(tick=1.0))
    state = dataclasses.replace(snapshot.state, skipped={"malformed /proc line": 2}, warnings=("read-only: not root",))
    document = snapshot_to_dict(dataclasses.replace(snapshot, state=state, error="poll failed: EIO"), False)
    assert document["errors"] == ["poll failed: EIO"]
    assert document["skipped"] == {"malformed /proc line": 2}
    assert document["warnings"] == ["read-only: not root"]
    check(document, DOCUMENT)


def test_an_empty_director_still_follows_the_schema():
    snapshot = Snapshot(seq=1, taken_at=0.0, poll_seconds=0.0, backend="kernel", writable=True, state=RawState())
    document = snapshot_to_dict(snapshot, connections=True)
    check(document, {**DOCUMENT, "connections": [CONNECTION]})
    assert document["services"] == [] and document["connections"] == []


def test_text_report():
    backend = DemoBackend(seed=1, tick=1.0)
    snapshot = snapshot_once(DemoBackend(seed=1, tick=1.0))
    code, out, err = once(backend, as_json=False, connections=True)
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0] == "IP Virtual Server version 1.2.1 (size=4096), demo backend"
    assert "Timeouts (tcp tcpfin udp): 900 120 300" in out
    assert "Sync daemon: master (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)" in out
    assert "TCP  10.10.10.100:389 wlc (Weighted Least-Connection) persistent 300 [persistent]" in lines
    assert any(line.startswith("TCP  [2001:db8:10::80]:443 wlc") for line in lines)
    assert any(line.startswith("UDP  10.10.10.53:53 rr") for line in lines)
    assert any(line.startswith("FWM  10 wlc") for line in lines)
    # Every real server is a row whose numbers are the snapshot's.
    for service in snapshot.services:
        for dest in service.dests:
            rows = [line for line in lines if line.startswith(f"  -> {dest.endpoint} ")]
            row = next(r for r in rows if r.split()[2] == FORWARD_LABELS[dest.forward])
            numbers = [int(word) for word in row.split()[3:]]
            assert numbers[:6] == [
                dest.weight,
                dest.upper_threshold,
                dest.lower_threshold,
                dest.active_conns,
                dest.inactive_conns,
                dest.persist_conns,
            ]
            assert numbers[6:11] == list(dest.stats)
            assert numbers[11:] == list(dest.rates)
    # The states line of a service adds up.
    web = next(i for i, line in enumerate(lines) if line.startswith("TCP  10.10.10.80:80 "))
    states_line = lines[web + 3]
    assert states_line.startswith("     connections: ESTABLISHED")
    total = snapshot.service_states[next(s.key for s in snapshot.services if s.key.port == 80)].total
    assert states_line.endswith(f"(total {total})")
    # The connection table, one row per entry, expiry as mm:ss.
    header = lines.index(f"IPVS connection entries ({len(snapshot.connections)})")
    rows = lines[header + 2 : header + 2 + len(snapshot.connections)]
    assert len(rows) == len(snapshot.connections)
    first = snapshot.connections[0]
    assert rows[0].split()[:3] == [first.protocol, f"{first.expires // 60:02d}:{first.expires % 60:02d}", first.state]


NOT_LOADED = "IPVS is not loaded: modprobe ip_vs"
NOT_ROOT = "reading IPVS needs root (CAP_NET_ADMIN)"


class Failing(Backend):
    name = "kernel"

    def __init__(self, open_error=None, poll_error=None):
        self.open_error, self.poll_error = open_error, poll_error

    def open(self):
        if self.open_error:
            raise self.open_error

    def poll(self, connections=True):
        raise self.poll_error

    def set_weight(self, dest, weight):
        raise AssertionError("not called")


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (Failing(poll_error=IpvsUnavailable(NOT_LOADED)), NOT_LOADED),
        (Failing(open_error=NotPermitted(NOT_ROOT)), NOT_ROOT),
        (Failing(poll_error=OSError(5, "Input/output error")), "poll failed: OSError: [Errno 5] Input/output error"),
        (Failing(open_error=RuntimeError("socket exploded\nsecond line")), "RuntimeError: socket exploded"),
    ],
)
def test_a_failure_is_one_line_on_stderr(backend, message, as_json):
    code, out, err = once(backend, as_json=as_json)
    assert code == EXIT_FAILED
    assert out == ""
    assert err == f"ipvsman: {message}\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ipvsman", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def test_cli_demo_once_json_is_json_and_reproducible():
    first, second = run_cli("--demo", "--once", "--json"), run_cli("--demo", "--once", "--json")
    assert first.returncode == 0, first.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    check(one, DOCUMENT)
    one.pop("taken_at"), two.pop("taken_at")
    assert one == two
    other = json.loads(run_cli("--demo", "--seed", "2", "--once", "--json").stdout)
    other.pop("taken_at")
    assert other != one


def test_cli_demo_once_text_and_connections():
    text = run_cli("--demo", "--once")
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.startswith("IP Virtual Server version 1.2.1")
    listed = run_cli("--demo", "--once", "--json", "--connections")
    check(json.loads(listed.stdout), {**DOCUMENT, "connections": [CONNECTION]})


def test_cli_output_cut_short_is_not_an_error():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipvsman", "--demo", "--once", "--connections"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and err == ""
