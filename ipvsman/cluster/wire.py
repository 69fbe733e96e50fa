"""The agent's line protocol: one JSON object a line, each way, encoded and decoded without I/O.

Agent to dashboard, each line an object with "type":
  hello     {"protocol", "version", "kernel", "node", "read_only"}: the first line, the version header
  snapshot  {"seq", "writable", "paused", "poll_seconds", "interval", "data"}: data is what
            ipvsman.output.snapshot_to_dict writes (`ipvsman --once --json`'s schema)
  addresses {"addresses": [[address, interface], ...] or null, "error"}: the node's local addresses
  table     {"complete", "fraction", "read_at", "by_service": {"TCP 10.0.0.1:80": base64 keys}}
  reply     {"id", "ok", "message", "data"}: the answer to one command
  refused   {"message"}: a line that was no command at all (garbage, too long)
Dashboard to agent: {"id": n, "kind": "set-weight", "args": {...}}.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ipvsman.cluster.state import AGENT_PROTOCOL, Command, TableKeys, connection_key
from ipvsman.model import (
    FORWARD_LABELS,
    WEIGHT_MAX,
    Connection,
    Daemon,
    Dest,
    DestStates,
    IpvsInfo,
    Rates,
    RawState,
    Service,
    ServiceKey,
    Snapshot,
    StateCounts,
    Stats,
    TableRead,
    TableStatus,
    Timeouts,
    UNKNOWN_DAEMONS,
    join_host_port,
    split_host_port,
)

MAX_COMMAND_LINE = 64 * 1024  # bytes of one command line the agent reads; a longer one is refused
COMMAND_KINDS = ("set-weight", "add-dest", "remove-dest", "resync", "sync-test", "read-table", "sync-probe",
                 "probe-watch")  # fmt: skip
CHANGES = frozenset(("set-weight", "add-dest", "remove-dest"))  # what the audit log records
_KEY = struct.Struct(">Q")
COMPACT = (",", ":")


class WireError(ValueError):
    """A line that cannot be decoded; the message is one line naming what is wrong."""


def _line(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=COMPACT) + "\n"


# -- agent to dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    protocol: int
    version: str
    kernel: str | None
    node: str | None
    read_only: bool


@dataclass(frozen=True)
class Addresses:
    addresses: tuple[tuple[str, str], ...] | None
    error: str | None = None


@dataclass(frozen=True)
class Reply:
    id: int | None
    ok: bool
    message: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Refused:
    message: str


def encode_hello(version: str, kernel: str | None, node: str | None, read_only: bool) -> str:
    return _line({"type": "hello", "protocol": AGENT_PROTOCOL, "version": version, "kernel": kernel,
                  "node": node, "read_only": read_only})  # fmt: skip


def encode_snapshot(snapshot: Snapshot) -> str:
    """The snapshot line; the services are written by output.compact_json (fast at 10,000 real servers)."""
    from ipvsman.output import compact_json

    head = {"type": "snapshot", "seq": snapshot.seq, "writable": snapshot.writable, "paused": snapshot.paused,
            "poll_seconds": round(snapshot.poll_seconds, 4), "interval": snapshot.interval}  # fmt: skip
    return json.dumps(head, separators=COMPACT)[:-1] + ',"data":' + compact_json(snapshot, False) + "}\n"


def encode_addresses(addresses: Iterable[tuple[str, str]] | None, error: str | None = None) -> str:
    listed = None if addresses is None else [[address, interface] for address, interface in addresses]
    return _line({"type": "addresses", "addresses": listed, "error": error})


def service_table_key(protocol: str, virtual: str, virtual_port: int) -> str:
    """TableKeys.by_service's key for connections to a VIP and port: "TCP 10.0.0.1:80"
    (protocol as /proc spells it; a firewall-mark service cannot be named from /proc)."""
    return f"{protocol.upper()} {join_host_port(virtual, virtual_port)}"


def table_keys(connections: Iterable[Connection], complete: bool, fraction: float, read_at: float) -> TableKeys:
    """The TableKeys of a table read: every entry but the persistence templates, by service."""
    by_service: dict[str, set[int]] = {}
    for conn in connections:
        if conn.is_template:
            continue
        key = connection_key(conn.protocol, conn.client, conn.client_port, conn.virtual, conn.virtual_port,
                             conn.dest, conn.dest_port)  # fmt: skip
        by_service.setdefault(service_table_key(conn.protocol, conn.virtual, conn.virtual_port), set()).add(key)
    frozen = {service: frozenset(keys) for service, keys in by_service.items()}
    everything = frozenset().union(*frozen.values()) if frozen else frozenset()
    return TableKeys(everything, complete, 1.0 if complete else fraction, read_at, frozen)


def encode_table(table: TableKeys) -> str:
    # 8 bytes a key in base64: a third of the keys as decimal JSON numbers.
    by_service = {service: base64.b64encode(b"".join(map(_KEY.pack, sorted(keys)))).decode()
                  for service, keys in table.by_service.items()}  # fmt: skip
    return _line({"type": "table", "complete": table.complete, "fraction": table.fraction,
                  "read_at": table.read_at, "by_service": by_service})  # fmt: skip


def encode_reply(request_id: int | None, ok: bool, message: str, data: Mapping[str, Any] | None = None) -> str:
    return _line({"type": "reply", "id": request_id, "ok": ok, "message": one_line(message), "data": dict(data or {})})


def encode_refused(message: str) -> str:
    return _line({"type": "refused", "message": one_line(message)})


def one_line(text: str, limit: int = 300) -> str:
    """A message as one line of at most `limit` characters: what the agent says is always one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_agent_line(line: str | bytes) -> Hello | tuple[dict, Snapshot] | Addresses | TableKeys | Reply | Refused:
    """One line from an agent; a snapshot line gives (its envelope, the Snapshot). WireError otherwise."""
    document = _object(line, "agent line")
    kind = document.get("type")
    try:
        if kind == "hello":
            protocol = document["protocol"]
            if not isinstance(protocol, int) or isinstance(protocol, bool):
                raise WireError(f"hello: protocol must be a number, got {protocol!r}")
            return Hello(protocol, str(document.get("version")), document.get("kernel"), document.get("node"),
                         bool(document.get("read_only")))  # fmt: skip
        if kind == "snapshot":
            envelope = {key: value for key, value in document.items() if key != "data"}
            snapshot = snapshot_from_dict(document["data"], seq=int(document.get("seq") or 0),
                                          writable=bool(document.get("writable")),
                                          paused=bool(document.get("paused")),
                                          poll_seconds=float(document.get("poll_seconds") or 0.0),
                                          interval=document.get("interval"))  # fmt: skip
            return envelope, snapshot
        if kind == "addresses":
            listed = document.get("addresses")
            pairs = None if listed is None else tuple((str(a), str(i)) for a, i in listed)
            return Addresses(pairs, document.get("error"))
        if kind == "table":
            by_service = {service: frozenset(key for (key,) in _KEY.iter_unpack(base64.b64decode(text, validate=True)))
                          for service, text in document["by_service"].items()}  # fmt: skip
            everything = frozenset().union(*by_service.values()) if by_service else frozenset()
            return TableKeys(everything, bool(document["complete"]), float(document["fraction"]),
                             float(document["read_at"]), by_service)  # fmt: skip
        if kind == "reply":
            request_id = document.get("id")
            return Reply(request_id if isinstance(request_id, int) else None, bool(document["ok"]),
                         str(document["message"]), dict(document.get("data") or {}))  # fmt: skip
        if kind == "refused":
            return Refused(str(document["message"]))
    except WireError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, struct.error) as exc:
        raise WireError(f"bad {kind} line: {type(exc).__name__}: {exc}") from None
    raise WireError(f"unknown line type {kind!r}")


def _object(line: str | bytes, what: str) -> dict:
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"{what} is not JSON: {one_line(str(exc), 80)}") from None
    if not isinstance(document, dict):
        raise WireError(f"{what} is not a JSON object")
    return document


# -- snapshots: the inverse of output.snapshot_to_dict ----------------------------------------------------


def snapshot_from_dict(document: Mapping[str, Any], *, seq: int = 0, writable: bool = False, paused: bool = False,
                       poll_seconds: float = 0.0, interval: float | None = None) -> Snapshot:  # fmt: skip
    """The Snapshot that snapshot_to_dict(snapshot, connections=...) turned into `document`:
    snapshot_to_dict of the result gives `document` back (its "drift" aside, which no Snapshot holds).
    Rate history and arrangement are not in the document: a node's snapshot has none."""
    table = document.get("connection_table")
    estimated = bool(table and table["conn_states_estimated"])
    services, service_states, dest_states = [], {}, {}
    for entry in document["services"]:
        service = _service(entry)
        services.append(service)
        if entry.get("conn_states"):
            service_states[service.key] = StateCounts(entry["conn_states"], estimated)
        counted = {(dest["address"], dest["port"]): dest["conn_states"] for dest in entry["dests"]
                   if dest.get("conn_states")}  # fmt: skip
        if counted:
            dest_states[service.key] = counted
    ipvs, timeouts = document["ipvs"], document["timeouts"]
    daemons = document.get("daemons")
    connections = document.get("connections")
    state = RawState(
        info=IpvsInfo(ipvs.get("version"), ipvs.get("conn_table_size")),
        timeouts=Timeouts(timeouts.get("tcp"), timeouts.get("tcp_fin"), timeouts.get("udp")),
        services=tuple(services),
        daemons=UNKNOWN_DAEMONS if daemons is None else tuple(Daemon(**daemon) for daemon in daemons),
        connections=None if connections is None else tuple(_connection(conn) for conn in connections),
        sync_version=document.get("sync_version"),
        skipped=dict(document.get("skipped") or {}),
        warnings=tuple(document.get("warnings") or ()),
    )
    errors = document.get("errors") or []
    return Snapshot(
        seq=seq,
        taken_at=float(document["taken_at"]),
        poll_seconds=poll_seconds,
        backend=str(document["backend"]),
        writable=writable,
        state=state,
        service_states=service_states,
        dest_states=DestStates(dest_states),
        error=errors[0] if errors else None,
        paused=paused,
        table=_table_status(table),
        interval=interval,
    )


def _service(entry: Mapping[str, Any]) -> Service:
    fwmark = entry.get("fwmark") or 0
    key = ServiceKey(entry["af"], None if fwmark else entry["protocol"], "" if fwmark else entry["address"],
                     0 if fwmark else entry["port"], fwmark)  # fmt: skip
    return Service(
        key=key,
        scheduler=entry["scheduler"],
        persistent=entry.get("persistent"),
        netmask=entry.get("netmask") or "",
        flags=tuple(entry.get("flags") or ()),
        pe_name=entry.get("pe_name") or None,
        stats=Stats(**entry["stats"]),
        rates=Rates(**entry["rates"]),
        dests=tuple(_dest(dest, key.af) for dest in entry["dests"]),
    )


def _dest(entry: Mapping[str, Any], af: str) -> Dest:
    # A real server of an IPv4 service may be IPv6 (tunnelling): its own address says which.
    dest_af = "inet6" if ":" in entry["address"] else "inet" if "." in entry["address"] else af
    return Dest(entry["address"], entry["port"], entry["forward"], entry["weight"], entry["upper_threshold"],
                entry["lower_threshold"], entry["active_conns"], entry["inactive_conns"], entry["persist_conns"],
                Stats(**entry["stats"]), Rates(**entry["rates"]), dest_af)  # fmt: skip


def _connection(entry: Mapping[str, Any]) -> Connection:
    return Connection(entry["protocol"].upper(), entry["client"], entry["client_port"], entry["virtual"],
                      entry["virtual_port"], entry["dest"], entry["dest_port"], entry["state"], entry["expires"],
                      entry.get("origin"), entry.get("pe_name") or "", entry.get("pe_data") or "")  # fmt: skip


def _table_status(table: Mapping[str, Any] | None) -> TableStatus:
    if table is None:
        return TableStatus()
    read = TableRead(seq=0, complete=bool(table["complete"]), entries=int(table["entries_read"]), started_at=0.0,
                     cpu_seconds=0.0, wall_seconds=0.0)  # fmt: skip
    return TableStatus(read=read, current=not table["conn_states_estimated"], expected=table.get("entries_expected"))


# -- dashboard to agent: commands --------------------------------------------------------------------------


def encode_command(request_id: int, command: Command) -> str:
    return _line({"id": request_id, "kind": command.kind, "args": dict(command.args)})


def decode_command(line: str | bytes) -> tuple[int | None, Command]:
    """(request id, Command) of one line from the dashboard, its arguments checked and normalised.

    Raises WireError with the request id (or None) in `.request_id` and a one-line reason."""
    if len(line) > MAX_COMMAND_LINE:
        raise _refusal(None, f"command line of {len(line):,} bytes refused: at most {MAX_COMMAND_LINE:,}")
    try:
        document = _object(line, "command")
    except WireError as exc:
        raise _refusal(None, str(exc)) from None
    request_id = document.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise _refusal(None, f"command without a numeric id: {one_line(repr(request_id), 40)}")
    kind = document.get("kind")
    args = document.get("args", {})
    if not isinstance(args, dict):
        raise _refusal(request_id, f"{kind}: args must be an object")
    try:
        checker = _CHECKS[kind]
    except (KeyError, TypeError):
        raise _refusal(request_id, f"unknown command {one_line(repr(kind), 40)}: known are {', '.join(COMMAND_KINDS)}")
    try:
        normal = checker(args)
    except (WireError, ValueError) as exc:
        raise _refusal(request_id, f"{kind}: {exc}") from None
    unknown = sorted(set(args) - set(normal) - _OPTIONAL.get(kind, set()))
    if unknown:
        raise _refusal(request_id, f"{kind}: unknown argument {', '.join(map(repr, unknown))}")
    return request_id, Command(kind, normal)


def _refusal(request_id: int | None, message: str) -> WireError:
    error = WireError(one_line(message))
    error.request_id = request_id
    return error


def parse_service(text: object) -> ServiceKey:
    """The ServiceKey that str(ServiceKey) wrote: "tcp 10.0.0.1:80", "udp [2001:db8::1]:53", "fwmark 5 (IPv6)"."""
    if not isinstance(text, str):
        raise WireError(f"service must be text such as 'tcp 10.0.0.1:80', got {one_line(repr(text), 40)}")
    words = text.split(" ", 1)
    if words[0] == "fwmark" and len(words) == 2:
        mark, _, rest = words[1].partition(" ")
        if not mark.isdigit() or not 0 < int(mark) < 2**32 or rest not in ("", "(IPv6)"):
            raise WireError(f"bad firewall-mark service {text!r}")
        return ServiceKey("inet6" if rest else "inet", None, "", 0, int(mark))
    if len(words) != 2 or words[0] not in ("tcp", "udp", "sctp"):
        raise WireError(f"service must be 'tcp|udp|sctp ADDRESS:PORT' or 'fwmark N', got {one_line(repr(text), 60)}")
    address, port = split_host_port(words[1])
    return ServiceKey("inet6" if ":" in address else "inet", words[0], address, port)


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise WireError(f"address must be text, got {one_line(repr(value), 40)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise WireError(f"not an IP address: {one_line(repr(value), 60)}") from None


def _number(args: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError(f"{name} must be a whole number from {low} to {high}, got {one_line(repr(value), 40)}")
    return value


def _dest_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"service": str(parse_service(args.get("service"))), "address": _address(args.get("address")),
            "port": _number(args, "port", 0, 65535)}  # fmt: skip


def _set_weight(args: Mapping[str, Any]) -> dict[str, Any]:
    return {**_dest_args(args), "weight": _number(args, "weight", 0, WEIGHT_MAX)}


def _add_dest(args: Mapping[str, Any]) -> dict[str, Any]:
    forward = args.get("forward")
    if forward not in FORWARD_LABELS:
        raise WireError(f"forward must be one of {', '.join(FORWARD_LABELS)}, got {one_line(repr(forward), 40)}")
    return {**_set_weight(args), "forward": forward}


def _resync(args: Mapping[str, Any]) -> dict[str, Any]:
    service = args.get("service")
    return {"service": None if service is None else str(parse_service(service))}


def _sync_test(args: Mapping[str, Any]) -> dict[str, Any]:
    return _resync(args)


def _read_table(args: Mapping[str, Any]) -> dict[str, Any]:
    keys = args.get("keys", [])
    if not isinstance(keys, list) or len(keys) > 1000 or not all(
        isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 2**64 for key in keys
    ):
        raise WireError("keys must be a list of at most 1000 connection keys (0 to 2**64-1)")
    return {"keys": keys} if keys else {}


def _probe(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"series": _number(args, "series", 0, 2**32 - 1), "seq": _number(args, "seq", 1, 2**32 - 1)}


def _sync_probe(args: Mapping[str, Any]) -> dict[str, Any]:
    return {**_probe(args), "timeout": _number(args, "timeout", 1, 3600)}


def _probe_watch(args: Mapping[str, Any]) -> dict[str, Any]:
    wait = args.get("wait")
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 < wait <= 60:
        raise WireError(f"wait must be a number of seconds from 0 to 60, got {one_line(repr(wait), 40)}")
    return {**_probe(args), "wait": float(wait)}


_CHECKS = {"set-weight": _set_weight, "add-dest": _add_dest, "remove-dest": _dest_args, "resync": _resync,
           "sync-test": _sync_test, "read-table": _read_table, "sync-probe": _sync_probe,
           "probe-watch": _probe_watch}  # fmt: skip
_OPTIONAL = {"read-table": {"keys"}, "resync": {"service"}, "sync-test": {"service"}}
