"""`ipvsman --once`: one snapshot of the director printed as text or as JSON, for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from ipvsman.backend import Backend
from ipvsman.drift import Drift, DriftReport, find_drift
from ipvsman.model import (
    FORWARD_LABELS,
    SCHEDULER_NAMES,
    TCP_STATES,
    Connection,
    Daemon,
    Dest,
    Rates,
    Service,
    Snapshot,
    StateCounts,
    Stats,
    Timeouts,
    daemons_known,
    join_host_port,
)
from ipvsman.poller import snapshot_once
from ipvsman.topology import ConfigError, Configuration

# Exit codes of `ipvsman --once`, distinct so that a monitoring system can tell "the director
# drifted" from "the check itself could not run". `ipvsman --help` lists them.
EXIT_OK = 0
EXIT_DRIFT = 1  # --check-drift found drift
EXIT_BAD_INPUT = 2  # argparse's own code for bad options; also a named file that cannot be read
EXIT_NO_IPVS = 3  # IPVS could not be read: not loaded, no CAP_NET_ADMIN, the poll failed

EXIT_CODES_HELP = f"""\
exit status of --once:
  {EXIT_OK}  the snapshot was printed (and, with --check-drift, there is no drift)
  {EXIT_DRIFT}  --check-drift: the kernel differs from --keepalived / --topology
  {EXIT_BAD_INPUT}  bad options, or a --keepalived / --topology file cannot be read
  {EXIT_NO_IPVS}  IPVS cannot be read (ip_vs not loaded, no CAP_NET_ADMIN, poll failed)"""


def print_once(
    backend: Backend,
    as_json: bool,
    connections: bool,
    stream: IO[str] | None = None,
    read_connections: bool = True,
    error_stream: IO[str] | None = None,
    drift_against: Configuration | None = None,
    check_drift: bool = False,
    conn_budget: float | None = None,
) -> int:
    """Poll `backend` once and print the snapshot; returns the exit code (EXIT_*).

    The connection table is read for the counts by state unless `read_connections` is false,
    and listed only when `connections` is true. With `drift_against`, the drift against that
    configuration is printed too, and with `check_drift` any drift returns EXIT_DRIFT.
    A failure to read IPVS, lack of CAP_NET_ADMIN included, prints one line,
    `ipvsman: <message>`, on `error_stream` (stderr) and returns EXIT_NO_IPVS: an empty
    service list printed then would read as "this director serves nothing".
    """
    stream = stream if stream is not None else sys.stdout
    error_stream = error_stream if error_stream is not None else sys.stderr
    try:
        # A listing asked for (--connections) reads the whole table; counts by state alone are
        # read as the dashboard's first read would be: a prefix of a large table (estimates).
        snapshot = snapshot_once(
            backend, connections=connections or read_connections, conn_budget=None if connections else conn_budget
        )
    except Exception as exc:  # a backend that fails in an unforeseen way still gets one line
        print(f"ipvsman: {describe_exception(exc)}", file=error_stream)
        return EXIT_NO_IPVS
    failure = snapshot.error or unread_reason(backend, snapshot)
    if failure:
        print(f"ipvsman: {failure}", file=error_stream)
        return EXIT_NO_IPVS
    drift = find_drift(snapshot, drift_against) if drift_against is not None else None
    code = EXIT_DRIFT if check_drift and drift else EXIT_OK
    try:
        if as_json:
            if _is_terminal(stream):
                stream.write(json_text(snapshot_to_dict(snapshot, connections, drift), indent=True))
            else:
                stream.write(compact_json(snapshot, connections, drift))
            stream.write("\n")
        else:
            stream.write(snapshot_to_text(snapshot, connections, drift, drift_against))
        stream.flush()
    except BrokenPipeError:
        # The reader stopped early (`ipvsman --once | head`): not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush does not complain either.
        if stream is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    return code


def json_text(document: dict[str, Any], indent: bool) -> str:
    """Indented for a person at a terminal; compact for a program, which is many times faster
    (json's C encoder serves no indented output: 10,000 real servers took seconds in the guest)."""
    return json.dumps(document, indent=2) if indent else json.dumps(document, separators=COMPACT)


COMPACT = (",", ":")

# A real server as compact JSON, the same text json.dumps(_dest_dict(...)) gives, made by one
# %-format: --once --json of 10,000 real servers spent most of its time building and encoding
# their dicts. Its strings are an address (inet_ntop's spelling) and a forwarding method
# (FORWARD_LABELS' keys): never anything JSON must escape.
_DEST_JSON = (
    '{"address":"%s","port":%d,"forward":"%s","weight":%d,"upper_threshold":%d,"lower_threshold":%d,'
    '"active_conns":%d,"inactive_conns":%d,"persist_conns":%d,'
    '"stats":{"conns":%d,"inpkts":%d,"outpkts":%d,"inbytes":%d,"outbytes":%d},'
    '"rates":{"cps":%d,"inpps":%d,"outpps":%d,"inbps":%d,"outbps":%d},"conn_states":%s}'
)


# The same with no counts by state (no table read, or none of its connections here): the common case.
_DEST_JSON_NO_STATES = _DEST_JSON.replace('"conn_states":%s}', '"conn_states":{}}')

# A service as compact JSON up to its real servers, the same text json.dumps(_service_dict(...))
# gives: its numbers %-formatted as for real servers, the rest (strings, null, the flags) as
# json.dumps writes them (_json_scalar).
_SERVICE_JSON = (
    '{"af":%s,"protocol":%s,"address":%s,"port":%s,"fwmark":%s,"scheduler":%s,"persistent":%s,"netmask":%s,'
    '"pe_name":%s,"flags":%s,"stats":{"conns":%d,"inpkts":%d,"outpkts":%d,"inbytes":%d,"outbytes":%d},'
    '"rates":{"cps":%d,"inpps":%d,"outpps":%d,"inbps":%d,"outbps":%d},"conn_states":%s,"dests":['
)
_json_texts: dict[object, str] = {}  # strings and flag tuples as json.dumps writes them: few, and repeated
JSON_TEXTS_KEPT = 1 << 14


def compact_json(snapshot: Snapshot, connections: bool, drift: DriftReport | None = None) -> str:
    """json_text(snapshot_to_dict(...), indent=False), with the services and real servers written straight to text."""
    document = snapshot_to_dict(snapshot, connections, drift, services=False)
    parts = []
    for key, value in document.items():
        text = _services_json(snapshot) if key == "services" else json.dumps(value, separators=COMPACT)
        parts.append(f"{json.dumps(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def _states_json(counts: StateCounts) -> str:
    # State names are the kernel's words (TCP_STATES, "UDP", ...): nothing to escape.
    return "{" + ",".join(['"%s":%d' % (state, counts[state]) for state in _ordered_states(counts)]) + "}"


def _json_scalar(value: object) -> str:
    """json.dumps(value) of a service's string, number or None; strings kept (schedulers, netmasks
    and families repeat, an address is one a service)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is not str and kind is not tuple:
        return json.dumps(value)
    text = _json_texts.get(value)
    if text is None:
        if len(_json_texts) >= JSON_TEXTS_KEPT:
            _json_texts.clear()
        text = _json_texts[value] = json.dumps(list(value) if kind is tuple else value, separators=COMPACT)
    return text


def _services_json(snapshot: Snapshot) -> str:
    """The services as compact JSON, each with its real servers, as json.dumps writes _service_dict()s."""
    texts = []
    service_states = snapshot.service_states
    dest_states = snapshot.dest_states if len(snapshot.dest_states) else None  # len: once, not per dest
    scalar = _json_scalar
    for service in snapshot.state.services:
        key = service.key
        fwmark = key.fwmark
        states = service_states.get(key)
        head = _SERVICE_JSON % (
            scalar(key.af), scalar(None if fwmark else key.protocol), scalar(None if fwmark else key.address),
            scalar(None if fwmark else key.port), scalar(fwmark or None), scalar(service.scheduler),
            scalar(service.persistent), scalar(service.netmask or None), scalar(service.pe_name or None),
            scalar(tuple(service.flags)), *service.stats, *service.rates, _states_json(states) if states else "{}",
        )  # fmt: skip
        if dest_states is None:
            # A Dest is a tuple: its first nine fields, then Stats and Rates, are _DEST_JSON's order.
            dests = [_DEST_JSON_NO_STATES % (*dest[:9], *dest[9], *dest[10]) for dest in service.dests]
        else:
            dests = []
            for dest in service.dests:
                states = dest_states.get(service.dest_key(dest))
                dests.append(_DEST_JSON % (*dest[:9], *dest[9], *dest[10], _states_json(states) if states else "{}"))
        texts.append(head + ",".join(dests) + "]}")
    return "[" + ",".join(texts) + "]"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def unread_reason(backend: Backend, snapshot: Snapshot) -> str | None:
    """Why the poll could not ask IPVS anything although it did not fail, or None when it could.

    The kernel backend polls without CAP_NET_ADMIN (for the dashboard's connection table) and
    says why in read_only_reason, NOT_PERMITTED: "needs CAP_NET_ADMIN: run as root".
    """
    if snapshot.state.info.known:
        return None
    reason = None if backend.writable else backend.read_only_reason
    if not reason and snapshot.state.warnings:
        reason = snapshot.state.warnings[0]
    return reason or f"the {backend.name} backend returned no IPVS information"


# -- configurations (--keepalived, --topology) ---------------------------------------------------


def read_configurations(
    topology_path: str | None, keepalived_path: str | None, error_stream: IO[str] | None = None
) -> tuple[Configuration | None, Configuration | None, bool]:
    """Read the files named by --topology and --keepalived, as the dashboard does
    (ipvsman.ui.config, which imports urwid: too slow to start for a script).

    Every error is printed on `error_stream` (stderr) as `ipvsman: file:line: message`, as the
    dashboard lists them in view 5. Returns (topology, keepalived, whether every named file
    could be read).
    """
    from ipvsman import keepalived, topology

    error_stream = error_stream if error_stream is not None else sys.stderr
    found: list[Configuration | None] = []
    readable = True
    for path, read in ((topology_path, topology.read_topology), (keepalived_path, keepalived.read_keepalived)):
        if path is None:
            found.append(None)
            continue
        try:
            config = read(path)
        except Exception as exc:  # the parsers report bad input as errors; this is for the unexpected
            config = Configuration("", path, errors=(ConfigError(path, 0, f"cannot read: {describe_exception(exc)}"),))
        for error in config.errors:
            print(f"ipvsman: {config_error_line(error)}", file=error_stream)
        readable = readable and not cannot_read(config)
        found.append(config)
    return found[0], found[1], readable


def cannot_read(config: Configuration) -> bool:
    """Whether the file itself could not be read (an error on its line 0), not one of its lines."""
    return any(error.line == 0 and error.path == config.path for error in config.errors)


def config_error_line(error: ConfigError) -> str:
    if error.line:
        return str(error)
    # "cannot read" errors are about the whole file: no line 0, and the path said once.
    return error.message if error.path in error.message else f"{error.path}: {error.message}"


def drift_source(topology: Configuration | None, keepalived: Configuration | None) -> Configuration | None:
    """keepalived.conf, else the topology: the dashboard's choice (ui.config.Configurations.drift_source);
    one that configures no service would call every kernel service extra, so it is skipped."""
    for config in (keepalived, topology):
        if config is not None and config.services:
            return config
    return None


def describe_exception(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# -- JSON ------------------------------------------------------------------------------------------


def snapshot_to_dict(
    snapshot: Snapshot, connections: bool, drift: DriftReport | None = None, services: bool = True
) -> dict[str, Any]:
    """The snapshot as plain JSON-ready data; the connection table only when `connections`.

    What was not read is null (version, table size, timeouts, daemons), never "" or 0 or [];
    "drift" is null when no configuration was compared, else the list of differences.
    `services` false leaves the service list empty (compact_json writes it itself).
    """
    state = snapshot.state
    document: dict[str, Any] = {
        "backend": snapshot.backend,
        "taken_at": round(snapshot.taken_at, 3),
        "ipvs": {"version": state.info.version, "conn_table_size": state.info.conn_table_size},
        "services": [_service_dict(service, snapshot) for service in state.services] if services else [],
        "daemons": [_daemon_dict(daemon) for daemon in state.daemons] if daemons_known(state.daemons) else None,
        "timeouts": {"tcp": state.timeouts.tcp, "tcp_fin": state.timeouts.tcp_fin, "udp": state.timeouts.udp},
        "sync_version": state.sync_version,
        "drift": [_drift_dict(item) for item in drift.drifts] if drift is not None else None,
    }
    document["connection_table"] = _table_dict(snapshot)
    if connections:
        document["connections"] = [_connection_dict(conn) for conn in snapshot.connections]
    document["errors"] = [snapshot.error] if snapshot.error else []
    document["skipped"] = dict(state.skipped)
    document["warnings"] = list(state.warnings)
    return document


def _table_dict(snapshot: Snapshot) -> dict[str, Any] | None:
    """The read behind conn_states: whole or a prefix (then conn_states are scaled estimates)."""
    read = snapshot.table.read
    if read is None:
        return None
    return {
        "complete": read.complete,
        "entries_read": read.entries,
        "entries_expected": snapshot.table.expected,
        "conn_states_estimated": not snapshot.table.current,
    }


def _stats_dict(stats: Stats) -> dict[str, int]:
    return {
        "conns": stats.conns,
        "inpkts": stats.inpkts,
        "outpkts": stats.outpkts,
        "inbytes": stats.inbytes,
        "outbytes": stats.outbytes,
    }


def _rates_dict(rates: Rates) -> dict[str, int]:
    return {
        "cps": rates.cps,
        "inpps": rates.inpps,
        "outpps": rates.outpps,
        "inbps": rates.inbps,
        "outbps": rates.outbps,
    }


def _states_dict(counts: StateCounts | None) -> dict[str, int]:
    return {state: counts[state] for state in _ordered_states(counts)} if counts else {}


def _service_dict(service: Service, snapshot: Snapshot) -> dict[str, Any]:
    key = service.key
    return {
        "af": key.af,
        "protocol": key.protocol if not key.fwmark else None,
        # A fwmark service has no address or port of its own: null, not "" and 0.
        "address": key.address if not key.fwmark else None,
        "port": key.port if not key.fwmark else None,
        "fwmark": key.fwmark or None,
        "scheduler": service.scheduler,
        "persistent": service.persistent,
        "netmask": service.netmask or None,
        "pe_name": service.pe_name or None,
        "flags": list(service.flags),
        "stats": _stats_dict(service.stats),
        "rates": _rates_dict(service.rates),
        "conn_states": _states_dict(snapshot.service_states.get(key)),
        "dests": [_dest_dict(service, dest, snapshot) for dest in service.dests],
    }


def _dest_dict(service: Service, dest: Dest, snapshot: Snapshot) -> dict[str, Any]:
    return {
        "address": dest.address,
        "port": dest.port,
        "forward": dest.forward,
        "weight": dest.weight,
        "upper_threshold": dest.upper_threshold,
        "lower_threshold": dest.lower_threshold,
        "active_conns": dest.active_conns,
        "inactive_conns": dest.inactive_conns,
        "persist_conns": dest.persist_conns,
        "stats": _stats_dict(dest.stats),
        "rates": _rates_dict(dest.rates),
        "conn_states": _states_dict(snapshot.dest_states.get(service.dest_key(dest))),
    }


def _daemon_dict(daemon: Daemon) -> dict[str, Any]:
    return {
        "state": daemon.state,
        "interface": daemon.interface,
        "syncid": daemon.syncid,
        "maxlen": daemon.maxlen,
        "group": daemon.group,
        "port": daemon.port,
        "ttl": daemon.ttl,
    }


def _drift_dict(drift: Drift) -> dict[str, Any]:
    return {
        "kind": drift.kind,
        "service": str(drift.service),
        "dest": join_host_port(drift.dest.address, drift.dest.port) if drift.dest else None,
        "configured": _drift_value(drift.configured),
        "actual": _drift_value(drift.actual),
        "origin": drift.origin or None,
        "note": drift.note or None,
        "text": str(drift),
    }


def _drift_value(value: object) -> object:
    # Weights stay numbers; a service key (missing or extra service) and anything else become text.
    if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    return str(value)


def _connection_dict(conn: Connection) -> dict[str, Any]:
    return {
        "protocol": conn.protocol.lower(),
        "client": conn.client,
        "client_port": conn.client_port,
        "virtual": conn.virtual,
        "virtual_port": conn.virtual_port,
        "dest": conn.dest,
        "dest_port": conn.dest_port,
        "state": conn.state,
        "expires": conn.expires,
        "origin": conn.origin,
        "template": conn.is_template,
        "pe_name": conn.pe_name or None,
        "pe_data": conn.pe_data or None,
    }


# -- text ------------------------------------------------------------------------------------------

DEST_HEADER = (
    "  -> RemoteAddress:Port",
    "Forward",
    "Weight",
    "UThresh",
    "LThresh",
    "ActiveConn",
    "InActConn",
    "PersistConn",
    "Conns",
    "InPkts",
    "OutPkts",
    "InBytes",
    "OutBytes",
    "CPS",
    "InPPS",
    "OutPPS",
    "InBPS",
    "OutBPS",
)


def snapshot_to_text(
    snapshot: Snapshot, connections: bool, drift: DriftReport | None = None, drift_against: Configuration | None = None
) -> str:
    """The snapshot as text: `ipvsadm -Ln --stats --rate` with more in it, exact numbers, and
    "unknown" for what was not read; then the drift against `drift_against` when given."""
    state = snapshot.state
    info, timeouts = state.info, state.timeouts
    timeout_values = (timeouts.tcp, timeouts.tcp_fin, timeouts.udp)
    lines = [
        f"IP Virtual Server version {_or_unknown(info.version)} (size={_or_unknown(info.conn_table_size)}), "
        f"{snapshot.backend} backend",
        "Timeouts (tcp tcpfin udp): "
        + (" ".join(map(_or_unknown, timeout_values)) if timeouts != Timeouts() else "unknown")
        + (f"    sync version {state.sync_version}" if state.sync_version is not None else ""),
    ]
    if not daemons_known(state.daemons):
        lines.append("Sync daemons: unknown")
    elif state.daemons:
        lines.extend(f"Sync daemon: {_daemon_text(daemon)}" for daemon in state.daemons)
    else:
        lines.append("Sync daemons: none")
    table = _table_text(snapshot)
    if table:
        lines.append(table)
    lines.append("")
    if not state.services:
        lines.append("No virtual services.")
    else:
        lines.extend(_services_text(snapshot))
    if connections:
        lines.append("")
        lines.extend(_connections_text(snapshot.connections))
    if drift is not None:
        lines.append("")
        lines.extend(_drift_text(drift, drift_against))
    if state.skipped:
        lines.append("")
        lines.append("Skipped: " + ", ".join(f"{reason} ({count})" for reason, count in state.skipped.items()))
    for warning in state.warnings:
        lines.append(f"Warning: {warning}")
    return "\n".join(lines) + "\n"


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def _drift_text(drift: DriftReport, against: Configuration | None) -> list[str]:
    where = f" against {against.path}" if against is not None else ""
    if not drift:
        return [f"Drift{where}: none"]
    count = len(drift)
    return [f"Drift{where}: {count} difference{'s' if count != 1 else ''}", *(f"  {item}" for item in drift.drifts)]


def _table_text(snapshot: Snapshot) -> str:
    """Where the counts by state come from: the whole table, or a prefix of it scaled (estimates)."""
    read = snapshot.table.read
    if read is None:
        return ""
    if read.complete:
        return f"Connection table: all {read.entries:,} entries read"
    expected = f" of ~{snapshot.table.expected:,}" if snapshot.table.expected else ""
    return (f"Connection table: first {read.entries:,}{expected} entries read (--conn-budget): counts by state "
            "are estimates, scaled to the kernel's totals")  # fmt: skip


def _daemon_text(daemon: Daemon) -> str:
    return (
        f"{daemon.state} (mcast={daemon.interface}, syncid={daemon.syncid}, maxlen={daemon.maxlen}, "
        f"group={daemon.group}, port={daemon.port}, ttl={daemon.ttl})"
    )


def _services_text(snapshot: Snapshot) -> list[str]:
    # Real-server rows of every service share one set of column widths, as in ipvsadm.
    blocks: list[tuple[list[str], list[Sequence[str]]]] = []
    for service in snapshot.services:
        heading = _service_heading(service, snapshot.service_states.get(service.key))
        rows = [_dest_row(dest) for dest in service.dests]
        blocks.append((heading, rows))
    widths = _column_widths([DEST_HEADER, *(row for _, rows in blocks for row in rows)])
    lines: list[str] = []
    for heading, rows in blocks:
        if lines:
            lines.append("")
        lines.extend(heading)
        lines.append(_format_row(DEST_HEADER, widths))
        if rows:
            lines.extend(_format_row(row, widths) for row in rows)
        else:
            lines.append("  -> (no real servers)")
    return lines


def _service_heading(service: Service, states: StateCounts | None) -> list[str]:
    key = service.key
    if key.fwmark:
        first = f"FWM  {key.fwmark}" + (" IPv6" if key.af == "inet6" else "")
    else:
        first = f"{(key.protocol or '').upper():<4} {join_host_port(key.address, key.port)}"
    first += f" {service.scheduler}"
    long_name = SCHEDULER_NAMES.get(service.scheduler)
    if long_name:
        first += f" ({long_name})"
    if service.persistent is not None:
        first += f" persistent {service.persistent}"
        if service.netmask and service.netmask not in ("255.255.255.255", "128"):
            first += f" mask {service.netmask}"
    if service.pe_name:
        first += f" pe {service.pe_name}"
    if service.flags:
        first += f" [{','.join(service.flags)}]"
    stats, rates = service.stats, service.rates
    lines = [
        first,
        f"     stats: {stats.conns} conns, in {stats.inpkts} pkts {stats.inbytes} bytes, "
        f"out {stats.outpkts} pkts {stats.outbytes} bytes",
        f"     rates: {rates.cps} conn/s, in {rates.inpps} pkt/s {rates.inbps} B/s, "
        f"out {rates.outpps} pkt/s {rates.outbps} B/s",
    ]
    if states is not None:
        lines.append(f"     connections: {_states_text(states)}")
    return lines


def _states_text(states: StateCounts) -> str:
    if not states.total:
        return "none"
    parts = [f"{state} {states[state]}" for state in _ordered_states(states)]
    return ", ".join(parts) + f" (total {states.total})"


def _ordered_states(states: StateCounts | None) -> list[str]:
    """TCP states in the views' order, then any other state (UDP, SCTP's) by name."""
    if not states:
        return []
    known = [state for state in TCP_STATES if states[state]]
    others = sorted(state for state in states if state not in TCP_STATES and states[state])
    return known + others


def _dest_row(dest: Dest) -> tuple[str, ...]:
    stats, rates = dest.stats, dest.rates
    values: Iterable[int] = (
        dest.weight,
        dest.upper_threshold,
        dest.lower_threshold,
        dest.active_conns,
        dest.inactive_conns,
        dest.persist_conns,
        stats.conns,
        stats.inpkts,
        stats.outpkts,
        stats.inbytes,
        stats.outbytes,
        rates.cps,
        rates.inpps,
        rates.outpps,
        rates.inbps,
        rates.outbps,
    )
    return (
        f"  -> {dest.endpoint}",
        FORWARD_LABELS.get(dest.forward, dest.forward),
        *(str(value) for value in values),
    )


def _column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def _format_row(row: Sequence[str], widths: Sequence[int]) -> str:
    # The address and forwarding method read left to right; numbers line up on the right.
    cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
    cells.extend(cell.rjust(width) for cell, width in zip(row[2:], widths[2:]))
    return " ".join(cells).rstrip()


def _connections_text(connections: Sequence[Connection]) -> list[str]:
    lines = [f"IPVS connection entries ({len(connections)})"]
    header = ("Pro", "Expire", "State", "Source", "Virtual", "Destination", "Origin")
    rows = [
        (
            conn.protocol,
            _minutes_seconds(conn.expires),
            conn.state,
            join_host_port(conn.client, conn.client_port),
            join_host_port(conn.virtual, conn.virtual_port),
            join_host_port(conn.dest, conn.dest_port),
            conn.origin or "-",
        )
        for conn in connections
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append(" ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return lines


def _minutes_seconds(seconds: int) -> str:
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


__all__ = [
    "print_once",
    "read_configurations",
    "drift_source",
    "snapshot_to_dict",
    "snapshot_to_text",
    "EXIT_OK",
    "EXIT_DRIFT",
    "EXIT_BAD_INPUT",
    "EXIT_NO_IPVS",
]
