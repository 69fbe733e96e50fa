"""`ipvsman --once`: the JSON schema of issue 2, the text report, unknown values, drift, and one-line failures."""

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

from ipvsman import model
from ipvsman.backend import Backend, IpvsUnavailable, NotPermitted
from ipvsman.demo import DemoBackend
from ipvsman.drift import EXTRA, MISSING, WEIGHT
from ipvsman.kernel import netlink
from ipvsman.kernel.backend import NOT_PERMITTED
from ipvsman.model import FORWARD_LABELS, RawState, Snapshot
from ipvsman.output import (
    EXIT_DRIFT,
    EXIT_NO_IPVS,
    EXIT_OK,
    print_once,
    read_configurations,
    snapshot_to_dict,
    snapshot_to_text,
)
from ipvsman.poller import snapshot_once
from ipvsman.topology import ConfiguredDest, ConfiguredService, Configuration, parse_topology

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
# What was not read is null: the IPVS version and table size, the timeouts, the daemon list.
DRIFT = {
    "kind": str,
    "service": str,
    "dest": (str, type(None)),
    "origin": (str, type(None)),
    "note": (str, type(None)),
    "text": str,
}
DOCUMENT = {
    "ipvs": {"version": (str, type(None)), "conn_table_size": (int, type(None))},
    "services": [SERVICE],
    "daemons": ([DAEMON], type(None)),
    "timeouts": {"tcp": (int, type(None)), "tcp_fin": (int, type(None)), "udp": (int, type(None))},
    "drift": ([DRIFT], type(None)),
    "errors": [str],
    "skipped": dict,
    "warnings": [str],
}


def check(value, schema, where="$"):
    """Assert that `value` has every key of `schema` with a value of the right type."""
    if isinstance(schema, tuple) and any(isinstance(choice, (dict, list)) for choice in schema):
        # a list or object, or null: e.g. ([DAEMON], None) for daemons that were not read
        if value is None:
            assert type(None) in schema, f"{where}: null"
            return
        check(value, next(choice for choice in schema if isinstance(choice, (dict, list))), where)
    elif isinstance(schema, dict):
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
    # The demo's kernel settings are known: real values, never null.
    assert None not in (*document["ipvs"].values(), *document["timeouts"].values())
    assert document["drift"] is None  # no configuration was compared


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
    state = RawState(info=model.IpvsInfo("1.2.1", 4096), timeouts=model.Timeouts(900, 120, 300), daemons=())
    snapshot = Snapshot(seq=1, taken_at=0.0, poll_seconds=0.0, backend="kernel", writable=True, state=state)
    document = snapshot_to_dict(snapshot, connections=True)
    check(document, {**DOCUMENT, "connections": [CONNECTION]})
    assert document["services"] == [] and document["connections"] == []
    assert document["daemons"] == []  # read, and none running: not null
    assert "Sync daemons: none" in snapshot_to_text(snapshot, connections=False)


def test_what_was_not_read_is_null_in_json_and_unknown_in_text():
    # A state nobody filled in (RawState's defaults) knows nothing of the kernel's settings.
    snapshot = Snapshot(seq=1, taken_at=0.0, poll_seconds=0.0, backend="kernel", writable=False, state=RawState())
    document = snapshot_to_dict(snapshot, connections=False)
    check(document, DOCUMENT)
    assert document["ipvs"] == {"version": None, "conn_table_size": None}
    assert document["timeouts"] == {"tcp": None, "tcp_fin": None, "udp": None}
    assert document["daemons"] is None
    lines = snapshot_to_text(snapshot, connections=False).splitlines()
    assert lines[:3] == [
        "IP Virtual Server version unknown (size=unknown), kernel backend",
        "Timeouts (tcp tcpfin udp): unknown",
        "Sync daemons: unknown",
    ]
    # One timeout read and two not: each says so for itself.
    partial = dataclasses.replace(snapshot.state, timeouts=model.Timeouts(tcp=900))
    text = snapshot_to_text(dataclasses.replace(snapshot, state=partial), connections=False)
    assert "Timeouts (tcp tcpfin udp): 900 unknown unknown" in text


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


class Unprivileged(Backend):
    """Polls as the kernel backend does without CAP_NET_ADMIN: an unread netlink dump (built as
    KernelBackend.poll builds it), the connection table and a warning."""

    name = "kernel"
    writable = False
    read_only_reason = NOT_PERMITTED

    def open(self):
        pass

    def poll(self, connections=True):
        dump = netlink.IpvsDump(model.IpvsInfo(), model.Timeouts(), (), ())
        return RawState(
            info=dump.info,
            timeouts=dump.timeouts,
            services=dump.services,
            daemons=dump.daemons,
            connections=(),
            sync_version=1,
            warnings=(f"{NOT_PERMITTED}: showing only the connection table",),
        )

    def set_weight(self, dest, weight):
        raise AssertionError("not called")


@pytest.mark.parametrize("as_json", [False, True])
def test_without_cap_net_admin_nothing_is_printed_and_the_exit_is_not_zero(as_json):
    code, out, err = once(Unprivileged(), as_json=as_json)
    assert (code, out) == (EXIT_NO_IPVS, "")
    assert err == "ipvsman: needs CAP_NET_ADMIN: run as root\n"


def test_an_unread_netlink_dump_knows_nothing():
    # The kernel backend builds this dump when netlink is refused: () must not read as "no daemon".
    dump = netlink.IpvsDump(model.IpvsInfo(), model.Timeouts(), (), ())
    assert not dump.info.known and not dump.timeouts.known and not model.daemons_known(dump.daemons)
    assert dump == netlink.IpvsDump.unread()
    read = netlink.IpvsDump(model.IpvsInfo("1.2.1", 4096), model.Timeouts(900, 120, 300), (), ())
    assert read.info.known and read.timeouts.known and model.daemons_known(read.daemons) and read.daemons == ()


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
    assert code == EXIT_NO_IPVS
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


# -- drift against a configuration (--keepalived, --topology) ---------------------------------------


def configuration_of(services, path="exact.topology") -> Configuration:
    """A configuration that says exactly what the kernel has: no drift."""
    configured = tuple(
        ConfiguredService(
            service.key,
            service.scheduler,
            tuple(ConfiguredDest(dest.address, dest.port, dest.forward, dest.weight) for dest in service.dests),
            persistent=service.persistent,
            netmask=service.netmask,
        )
        for service in services
    )
    return Configuration("topology", path, configured)


def once_against(configuration, check_drift, as_json):
    out, err = io.StringIO(), io.StringIO()
    code = print_once(DemoBackend(seed=1, tick=1.0), as_json=as_json, connections=False, stream=out,
                      error_stream=err, drift_against=configuration, check_drift=check_drift)  # fmt: skip
    assert err.getvalue() == ""
    return code, out.getvalue()


def test_drift_is_listed_and_check_drift_exits_1_only_when_there_is_some():
    services = snapshot_once(DemoBackend(seed=1, tick=1.0)).services
    exact = configuration_of(services)
    code, out = once_against(exact, check_drift=True, as_json=True)
    assert (code, json.loads(out)["drift"]) == (EXIT_OK, [])
    code, out = once_against(exact, check_drift=True, as_json=False)
    assert code == EXIT_OK and "Drift against exact.topology: none" in out.splitlines()

    # One weight changed, one real server more in the configuration, one service less.
    first, second, *rest = exact.services
    changed = dataclasses.replace(first.dests[0], weight=first.dests[0].weight + 7)
    spare = ConfiguredDest("10.99.99.99", first.key.port or 80, "masq", 1)
    first = dataclasses.replace(first, dests=(changed, *first.dests[1:], spare))
    drifted = dataclasses.replace(exact, services=(first, *rest))
    code, out = once_against(drifted, check_drift=True, as_json=True)
    document = json.loads(out)
    check(document, DOCUMENT)
    assert code == EXIT_DRIFT
    found = {(item["kind"], item["service"], item["dest"]) for item in document["drift"]}
    assert found == {
        (WEIGHT, str(first.key), model.join_host_port(changed.address, changed.port)),
        (MISSING, str(first.key), model.join_host_port(spare.address, spare.port)),
        (EXTRA, str(second.key), None),
    }
    weight = next(item for item in document["drift"] if item["kind"] == WEIGHT)
    assert (weight["configured"], weight["actual"]) == (changed.weight, changed.weight - 7)
    # Without --check-drift the same drift is reported and the exit is 0.
    code, out = once_against(drifted, check_drift=False, as_json=False)
    lines = out.splitlines()
    assert code == EXIT_OK
    heading = lines.index("Drift against exact.topology: 3 differences")
    assert sorted(lines[heading + 1 : heading + 4]) == sorted(f"  {item['text']}" for item in document["drift"])


def test_configuration_errors_go_to_stderr_and_an_unreadable_file_is_bad_input(tmp_path):
    topology = tmp_path / "director.topology"
    topology.write_text("Web:t:10.0.0.1:80 [\"web1:10.0.1.1\"] (-m)\nBroken:t:10.0.0.1\n", encoding="utf-8")
    err = io.StringIO()
    read_topology, read_keepalived, readable = read_configurations(str(topology), None, err)
    assert readable and read_keepalived is None and len(read_topology.services) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ipvsman: {topology}:2: ")

    missing = tmp_path / "missing.conf"
    err = io.StringIO()
    _, read_keepalived, readable = read_configurations(str(topology), str(missing), err)
    assert not readable and read_keepalived.services == ()
    lines = err.getvalue().splitlines()
    assert lines[-1] == f"ipvsman: cannot read {missing}: No such file or directory"


def test_topology_text_round_trip_agrees_with_drift():
    # The parser and the exact configuration agree: a topology line for the web service drifts
    # on nothing but the services it leaves out.
    services = snapshot_once(DemoBackend(seed=1, tick=1.0)).services
    web = next(s for s in services if s.key.port == 80 and s.key.protocol == "tcp")
    dests = ", ".join(f'"w{i}:{d.address}:{d.port} -w{d.weight}"' for i, d in enumerate(web.dests))
    parsed = parse_topology(f"Web:t:{web.key.address}:80 [{dests}] (-g -s{web.scheduler})", "web.topology")
    assert not parsed.errors
    code, out = once_against(parsed, check_drift=True, as_json=True)
    drift = json.loads(out)["drift"]
    assert code == EXIT_DRIFT
    assert {item["kind"] for item in drift} == {EXTRA}
    assert len(drift) == len(services) - 1


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_compact_json_is_exactly_what_json_makes_of_the_dicts(seed):
    import json

    from ipvsman.demo import DemoBackend
    from ipvsman.output import compact_json
    from ipvsman.poller import snapshot_once

    for budget in (None, 0.0):  # states counted, and none (the table not read)
        snapshot = snapshot_once(DemoBackend(seed=seed, tick=1.0), conn_budget=budget)
        for connections in (False, True):
            expected = json.dumps(snapshot_to_dict(snapshot, connections), separators=(",", ":"))
            assert compact_json(snapshot, connections) == expected
