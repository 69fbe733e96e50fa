"""`ipvsman --once`: one snapshot of the director printed as text or as JSON, for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from ipvsman.backend import Backend
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
    join_host_port,
)
from ipvsman.poller import snapshot_once

# Exit codes of print_once. Every failure to read the director, lack of permission included,
# is EXIT_FAILED: the message on stderr says which it was.
EXIT_OK = 0
EXIT_FAILED = 1


def print_once(
    backend: Backend,
    as_json: bool,
    connections: bool,
    stream: IO[str] | None = None,
    read_connections: bool = True,
    error_stream: IO[str] | None = None,
) -> int:
    """Poll `backend` once and print the snapshot; returns the exit code.

    The connection table is read for the counts by state unless `read_connections` is false,
    and listed only when `connections` is true. A failure prints one line,
    `ipvsman: <message>`, on `error_stream` (stderr) and returns EXIT_FAILED.
    """
    stream = stream if stream is not None else sys.stdout
    error_stream = error_stream if error_stream is not None else sys.stderr
    try:
        snapshot = snapshot_once(backend, connections=connections or read_connections)
    except Exception as exc:  # a backend that fails in an unforeseen way still gets one line
        print(f"ipvsman: {describe_exception(exc)}", file=error_stream)
        return EXIT_FAILED
    if snapshot.error:
        print(f"ipvsman: {snapshot.error}", file=error_stream)
        return EXIT_FAILED
    try:
        if as_json:
            json.dump(snapshot_to_dict(snapshot, connections), stream, indent=2)
            stream.write("\n")
        else:
            stream.write(snapshot_to_text(snapshot, connections))
        stream.flush()
    except BrokenPipeError:
        # The reader stopped early (`ipvsman --once | head`): not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush does not complain either.
        if stream is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK


def describe_exception(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# -- JSON ------------------------------------------------------------------------------------------


def snapshot_to_dict(snapshot: Snapshot, connections: bool) -> dict[str, Any]:
    """The snapshot as plain JSON-ready data; the connection table only when `connections`."""
    state = snapshot.state
    document: dict[str, Any] = {
        "backend": snapshot.backend,
        "taken_at": round(snapshot.taken_at, 3),
        "ipvs": {"version": state.info.version, "conn_table_size": state.info.conn_table_size},
        "services": [_service_dict(service, snapshot) for service in state.services],
        "daemons": [_daemon_dict(daemon) for daemon in state.daemons],
        "timeouts": {"tcp": state.timeouts.tcp, "tcp_fin": state.timeouts.tcp_fin, "udp": state.timeouts.udp},
        "sync_version": state.sync_version,
    }
    if connections:
        document["connections"] = [_connection_dict(conn) for conn in snapshot.connections]
    document["errors"] = [snapshot.error] if snapshot.error else []
    document["skipped"] = dict(state.skipped)
    document["warnings"] = list(state.warnings)
    return document


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


def snapshot_to_text(snapshot: Snapshot, connections: bool) -> str:
    """The snapshot as text: `ipvsadm -Ln --stats --rate` with more in it, exact numbers."""
    state = snapshot.state
    lines = [
        f"IP Virtual Server version {state.info.version or '?'} (size={state.info.conn_table_size}), "
        f"{snapshot.backend} backend",
        f"Timeouts (tcp tcpfin udp): {state.timeouts.tcp} {state.timeouts.tcp_fin} {state.timeouts.udp}"
        + (f"    sync version {state.sync_version}" if state.sync_version is not None else ""),
    ]
    if state.daemons:
        lines.extend(f"Sync daemon: {_daemon_text(daemon)}" for daemon in state.daemons)
    else:
        lines.append("Sync daemons: none")
    lines.append("")
    if not state.services:
        lines.append("No virtual services.")
    else:
        lines.extend(_services_text(snapshot))
    if connections:
        lines.append("")
        lines.extend(_connections_text(snapshot.connections))
    if state.skipped:
        lines.append("")
        lines.append("Skipped: " + ", ".join(f"{reason} ({count})" for reason, count in state.skipped.items()))
    for warning in state.warnings:
        lines.append(f"Warning: {warning}")
    return "\n".join(lines) + "\n"


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


__all__ = ["print_once", "snapshot_to_dict", "snapshot_to_text", "EXIT_OK", "EXIT_FAILED"]
