"""The agent's line protocol: snapshots round-trip through --once --json's schema, table keys, commands and refusals."""

from __future__ import annotations

import json

import pytest

from ipvsman.cluster import wire
from ipvsman.cluster.state import AGENT_PROTOCOL, Command, TableKeys, connection_key
from ipvsman.demo import DemoBackend
from ipvsman.model import (
    UNKNOWN_DAEMONS,
    Connection,
    Daemon,
    Dest,
    IpvsInfo,
    RawState,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    Timeouts,
)
from ipvsman.output import snapshot_to_dict
from ipvsman.poller import snapshot_once


def through_json(document):
    return json.loads(json.dumps(document))


@pytest.mark.parametrize("seed", [1, 7])
def test_demo_snapshot_round_trips_through_the_once_json_schema(seed):
    snapshot = snapshot_once(DemoBackend(seed=seed), connections=True)
    document = through_json(snapshot_to_dict(snapshot, connections=True))
    assert document["connections"] and any(s["fwmark"] for s in document["services"])  # the cases worth covering
    decoded = wire.snapshot_from_dict(document)
    assert through_json(snapshot_to_dict(decoded, connections=True)) == document
    assert decoded.find_service(snapshot.services[0].key).dests == snapshot.services[0].dests


def test_unknowns_errors_and_estimates_round_trip():
    service = Service(ServiceKey("inet6", "udp", "2001:db8::53", 53), "sh", persistent=300, netmask="64",
                      flags=("sh-port",), pe_name="sip", stats=Stats(1, 2, 3, 4, 5),
                      dests=(Dest("2001:db8::1", 53, "tunnel", 0, 10, 2, af="inet6"),))  # fmt: skip
    state = RawState(IpvsInfo(), Timeouts(), (service,), UNKNOWN_DAEMONS, None, None, {"malformed /proc lines": 2},
                     ("netlink refused",))  # fmt: skip
    snapshot = Snapshot(1, 1700000000.1234, 0.0, "kernel", False, state, error="poll failed: boom")
    document = through_json(snapshot_to_dict(snapshot, connections=False))
    decoded = wire.snapshot_from_dict(document)
    assert through_json(snapshot_to_dict(decoded, connections=False)) == document
    assert decoded.state.daemons is UNKNOWN_DAEMONS and decoded.state.info.version is None
    assert decoded.error == "poll failed: boom" and decoded.state.connections is None


def test_snapshot_line_carries_what_the_schema_has_not():
    snapshot = snapshot_once(DemoBackend(seed=2), connections=True, conn_budget=5.0)
    line = wire.encode_snapshot(snapshot)
    assert line.endswith("\n") and line.count("\n") == 1
    envelope, decoded = wire.decode_agent_line(line)
    assert envelope["type"] == "snapshot" and decoded.seq == snapshot.seq and decoded.writable == snapshot.writable
    assert decoded.table.read.complete == snapshot.table.read.complete
    assert snapshot_to_dict(decoded, False) == through_json(snapshot_to_dict(snapshot, False))


def test_daemons_round_trip():
    state = RawState(IpvsInfo("1.2.1", 4096), Timeouts(900, 120, 300), (),
                     (Daemon("master", "eth1", 10, 1472), Daemon("backup", "eth1", 11)), sync_version=1)  # fmt: skip
    decoded = wire.snapshot_from_dict(snapshot_to_dict(Snapshot(1, 5.0, 0.0, "kernel", True, state), False))
    assert decoded.state.daemons == state.daemons and decoded.state.timeouts == state.timeouts


def test_table_keys_leave_templates_out_and_round_trip():
    rows = [
        Connection("TCP", "192.0.2.1", 40000, "10.0.0.80", 80, "10.0.1.1", 80, "ESTABLISHED", 100),
        Connection("UDP", "192.0.2.2", 53, "10.0.0.53", 53, "10.0.1.2", 53, "UDP", 100),
        Connection("IP", "192.0.2.1", 0, "10.0.0.80", 0, "10.0.1.1", 0, "NONE", 100),  # a persistence template
    ]
    table = wire.table_keys(rows, complete=False, fraction=0.25, read_at=12.5)
    first = connection_key("TCP", "192.0.2.1", 40000, "10.0.0.80", 80, "10.0.1.1", 80)
    assert table.keys == {first, connection_key("UDP", "192.0.2.2", 53, "10.0.0.53", 53, "10.0.1.2", 53)}
    assert table.by_service["TCP 10.0.0.80:80"] == {first} and set(table.by_service) == {"TCP 10.0.0.80:80",
                                                                                          "UDP 10.0.0.53:53"}
    assert (table.complete, table.fraction) == (False, 0.25)
    assert wire.decode_agent_line(wire.encode_table(table)) == table


def test_hello_addresses_reply_lines():
    hello = wire.decode_agent_line(wire.encode_hello("9.9", "6.1.0-1", "lvs-1", True))
    assert hello == wire.Hello(AGENT_PROTOCOL, "9.9", "6.1.0-1", "lvs-1", True)
    addresses = wire.decode_agent_line(wire.encode_addresses([("10.0.0.80", "eth0")]))
    assert addresses.addresses == (("10.0.0.80", "eth0"),)
    assert wire.decode_agent_line(wire.encode_addresses(None, "cannot list")).error == "cannot list"
    reply = wire.decode_agent_line(wire.encode_reply(4, False, "two\nlines", {"key": 2**64 - 1}))
    assert reply == wire.Reply(4, False, "two lines", {"key": 2**64 - 1})


@pytest.mark.parametrize("line, reason", [
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"type": "snapshot", "data": {}}', "bad snapshot line"),
    ('{"type": "hello", "protocol": "one"}', "protocol must be a number"),
    ('{"type": "telemetry"}', "unknown line type"),
])  # fmt: skip
def test_bad_agent_lines_are_one_line_errors(line, reason):
    with pytest.raises(wire.WireError, match=reason) as caught:
        wire.decode_agent_line(line)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, key", [
    ("tcp 10.0.0.1:80", ServiceKey("inet", "tcp", "10.0.0.1", 80)),
    ("udp [2001:db8::1]:53", ServiceKey("inet6", "udp", "2001:db8::1", 53)),
    ("fwmark 5", ServiceKey("inet", None, "", 0, 5)),
    ("fwmark 5 (IPv6)", ServiceKey("inet6", None, "", 0, 5)),
])  # fmt: skip
def test_service_text_parses_back_to_its_key(text, key):
    assert wire.parse_service(text) == key and str(key) == text


def test_commands_round_trip_normalised():
    command = Command("set-weight", {"service": "tcp 10.0.0.1:80", "address": "10.0.1.1", "port": 80, "weight": 5})
    assert wire.decode_command(wire.encode_command(7, command)) == (7, command)
    request_id, decoded = wire.decode_command('{"id": 8, "kind": "add-dest", "args": {"service": "tcp [2001:db8:0::1]:80",'
                                              ' "address": "2001:DB8::2", "port": 80, "weight": 1, "forward": "route"}}')  # fmt: skip
    assert request_id == 8 and decoded.args["address"] == "2001:db8::2"
    assert decoded.args["service"] == "tcp [2001:db8::1]:80"
    assert wire.decode_command('{"id": 9, "kind": "resync", "args": {}}')[1] == Command("resync", {"service": None})
    assert wire.decode_command('{"id": 1, "kind": "read-table", "args": {"keys": [3]}}')[1].args == {"keys": [3]}


@pytest.mark.parametrize("line, request_id, reason", [
    ("garbage", None, "not JSON"),
    ('{"kind": "resync"}', None, "without a numeric id"),
    ('{"id": 3, "kind": "reboot"}', 3, "unknown command 'reboot'"),
    ('{"id": 3, "kind": "set-weight", "args": []}', 3, "args must be an object"),
    ('{"id": 3, "kind": "set-weight", "args": {"service": "tcp 10.0.0.1:80", "address": "10.0.1.1", "port": 80, '
     '"weight": 70000}}', 3, "weight must be a whole number from 0 to 65535"),
    ('{"id": 3, "kind": "set-weight", "args": {"service": "tcp 10.0.0.1:80", "address": "nowhere", "port": 80, '
     '"weight": 1}}', 3, "not an IP address"),
    ('{"id": 3, "kind": "remove-dest", "args": {"service": "icmp 10.0.0.1:80", "address": "10.0.1.1", "port": 80}}',
     3, "service must be"),
    ('{"id": 3, "kind": "add-dest", "args": {"service": "tcp 10.0.0.1:80", "address": "10.0.1.1", "port": 80, '
     '"weight": 1, "forward": "teleport"}}', 3, "forward must be one of"),
    ('{"id": 3, "kind": "remove-dest", "args": {"service": "tcp 10.0.0.1:80", "address": "10.0.1.1", "port": 80, '
     '"force": true}}', 3, "unknown argument 'force'"),
    ('{"id": 3, "kind": "read-table", "args": {"keys": [-1]}}', 3, "keys must be"),
    ('{"id": 4, "kind": "sync-probe", "args": {"series": 1, "seq": 0, "timeout": 10}}', 4, "seq must be a whole"),
    ('{"id": 4, "kind": "sync-probe", "args": {"series": 1, "seq": 2}}', 4, "timeout must be a whole number"),
    ('{"id": 4, "kind": "probe-watch", "args": {"series": 1, "seq": 2, "wait": 600}}', 4, "wait must be a number"),
    ('{"id": 4, "kind": "probe-watch", "args": {"series": -1, "seq": 2, "wait": 1}}', 4, "series must be"),
])  # fmt: skip
def test_bad_commands_are_refused_in_one_line_naming_why(line, request_id, reason):
    with pytest.raises(wire.WireError, match=reason) as caught:
        wire.decode_command(line)
    assert caught.value.request_id == request_id and "\n" not in str(caught.value)


def test_probe_commands_round_trip_normalised():
    watch = Command("probe-watch", {"series": 2**32 - 1, "seq": 9, "wait": 3})
    assert wire.decode_command(wire.encode_command(5, watch)) == (5, Command("probe-watch", {**watch.args, "wait": 3.0}))
    send = Command("sync-probe", {"series": 0, "seq": 1, "timeout": 10})
    assert wire.decode_command(wire.encode_command(6, send)) == (6, send)


def test_a_huge_command_line_is_refused_before_parsing():
    line = '{"id": 1, "kind": "resync", "args": {"pad": "' + "x" * wire.MAX_COMMAND_LINE + '"}}'
    with pytest.raises(wire.WireError, match="refused: at most") as caught:
        wire.decode_command(line)
    assert len(str(caught.value)) < 200


def test_table_keys_value_is_what_the_contract_says():
    table = wire.table_keys([], complete=True, fraction=0.5, read_at=1.0)
    assert table == TableKeys(frozenset(), True, 1.0, 1.0, {})
