"""The comparison of a cluster's directors: VIP holders, configuration drift, sync daemons, connection tables."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ipvsman.cluster.state import ClusterSnapshot, NodeState, TableKeys
from ipvsman.cluster.wire import service_table_key
from ipvsman.model import (
    Daemon,
    Dest,
    DestKey,
    Service,
    ServiceKey,
    connection_total,
    daemons_known,
    join_host_port,
    service_sort_key,
)
from ipvsman.topology import Configuration

# What a drift row is about, in the order view 6 lists them.
SERVICE = "service"  # present on some nodes only
REAL_SERVER = "real server"  # present on some nodes only
SCHEDULER = "scheduler"
PERSISTENCE = "persistence"
FLAGS = "flags"
PE = "pe"
FORWARD = "forward"
WEIGHT = "weight"
UPPER = "upper threshold"
LOWER = "lower threshold"
TIMEOUTS = "timeouts"
DRIFT_KINDS = (TIMEOUTS, SERVICE, SCHEDULER, PERSISTENCE, FLAGS, PE, REAL_SERVER, FORWARD, WEIGHT, UPPER, LOWER)
ABSENT = "absent"
PRESENT = "present"


def fold_nodes(names: Iterable[str]) -> str:
    """lvs-1, lvs-3 -> lvs-[1,3], as ClusterShell writes a nodeset."""
    names = list(names)
    try:
        from ClusterShell.NodeSet import NodeSet

        return str(NodeSet.fromlist(names))
    except Exception:  # a name NodeSet cannot parse: listed as it is
        return ",".join(names)


# How TableKeys.by_service names a service's entries ("TCP 10.0.0.1:80"): the agent's own function,
# so that the comparison looks entries up as every agent keyed them.
service_table_label = service_table_key


# -- the report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSummary:
    """One node as view 6's node list shows it."""

    name: str
    reachable: bool
    since: float | None
    error: str | None
    poll_age: float | None  # seconds since its newest snapshot was taken; None before the first
    agent_version: str | None
    kernel: str | None
    ipvs_version: str | None
    role: str  # "master", "backup", "master+backup", "no sync daemon", "unknown"
    held: tuple[str, ...]  # the VIPs it holds
    services: int | None  # how many virtual services it has; None without a snapshot

    @property
    def header_role(self) -> str:
        """What the dashboard's header says of the node beside its name."""
        holds = f", holds {len(self.held)} VIP{'s' if len(self.held) != 1 else ''}" if self.held else ""
        if not self.reachable:
            return f"unreachable{holds}"
        return f"{self.role}{holds}"


@dataclass(frozen=True)
class VipHolding:
    """One VIP of the cluster's services: which nodes hold it, and a warning unless exactly one does."""

    address: str
    services: tuple[ServiceKey, ...]
    holders: tuple[tuple[str, str], ...]  # (node, interface)
    unknown: tuple[str, ...]  # reachable nodes whose addresses are not known
    vrrp_instance: str | None
    warning: str | None

    @property
    def holder(self) -> str | None:
        return self.holders[0][0] if len(self.holders) == 1 else None


@dataclass(frozen=True)
class ClusterDrift:
    """One way the nodes' configurations differ: the value of `kind` on each node."""

    kind: str  # one of DRIFT_KINDS
    service: ServiceKey | None  # None for the node-wide timeouts
    dest: DestKey | None
    values: tuple[tuple[str, str], ...]  # (node, value shown) for every compared node
    reference: str  # the node the others are compared with (the VIP holder when there is one)
    text: str  # "lvs-2: tcp 10.10.10.80:80 -> 10.10.20.13:80 weight 0, lvs-1: 50"

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes whose value differs from the reference node's."""
        wanted = dict(self.values)[self.reference]
        return tuple(node for node, value in self.values if value != wanted)


@dataclass(frozen=True)
class NodeSync:
    node: str
    daemons: tuple[Daemon, ...] | None  # None: not known (unreachable, or the agent cannot read them)


@dataclass(frozen=True)
class TableDiff:
    """A service's connections on the VIP holder against one backup."""

    service: ServiceKey
    master: str
    backup: str
    master_count: int  # the master's kernel counters (active + inactive)
    backup_count: int | None  # None when the backup lacks the service
    missing: int | None  # master's entries the backup lacks; None when it cannot be told
    extra: int | None  # backup's entries the master lacks (exact comparisons only)
    exact: bool
    note: str  # "exact", "estimate from ...", or why nothing can be said

    @property
    def text(self) -> str:
        if self.missing is None:
            return f"{self.backup}: {self.note}"
        approx = "" if self.exact else "~"
        return f"{self.backup}: {approx}{self.missing} of {self.master}'s {self.master_count} missing"


@dataclass(frozen=True)
class ClusterReport:
    taken_at: float
    nodes: tuple[NodeSummary, ...] = ()
    vips: tuple[VipHolding, ...] = ()
    drift: tuple[ClusterDrift, ...] = ()
    sync: tuple[NodeSync, ...] = ()
    sync_problems: tuple[str, ...] = ()
    tables: tuple[TableDiff, ...] = ()
    masters: Mapping[ServiceKey, str] = field(default_factory=dict)  # the node whose table is the reference

    def node(self, name: str) -> NodeSummary | None:
        return next((node for node in self.nodes if node.name == name), None)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every line that needs the operator: VIP holders, unreachable nodes, sync mismatches."""
        lines = [f"{node.name}: unreachable: {node.error or 'no answer'}" for node in self.nodes if not node.reachable]
        lines += [vip.warning for vip in self.vips if vip.warning]
        lines += self.sync_problems
        return tuple(lines)

    @property
    def missing_total(self) -> int:
        return sum(diff.missing or 0 for diff in self.tables)


def compare_cluster(
    cluster: ClusterSnapshot, configuration: Configuration | None = None, now: float | None = None
) -> ClusterReport:
    """Compare every node of `cluster`; `configuration` (keepalived.conf) names each VIP's vrrp_instance."""
    now = cluster.taken_at if now is None else now
    compared = [node for node in cluster.nodes if node.reachable and node.snapshot is not None]
    vips = _vip_holdings(cluster.nodes, compared, configuration)
    holder_of = {vip.address: vip.holder for vip in vips}
    masters = _masters(compared, holder_of)
    drift = _drift(compared, masters)
    sync, problems = _sync(cluster.nodes, compared)
    tables = _tables(compared, masters)
    held_by: dict[str, list[str]] = {}
    for vip in vips:
        for node, _ in vip.holders:
            held_by.setdefault(node, []).append(vip.address)
    summaries = tuple(_summary(node, now, tuple(held_by.get(node.name, ()))) for node in cluster.nodes)
    return ClusterReport(now, summaries, vips, drift, sync, problems, tables, masters)


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _role(node: NodeState) -> str:
    if node.snapshot is None or not daemons_known(node.snapshot.daemons):
        return "unknown"
    states = sorted({daemon.state for daemon in node.snapshot.daemons})
    return "+".join(states) if states else "no sync daemon"


def _summary(node: NodeState, now: float, held: tuple[str, ...]) -> NodeSummary:
    snapshot = node.snapshot
    return NodeSummary(
        name=node.name,
        reachable=node.reachable,
        since=node.since,
        error=node.error,
        poll_age=max(0.0, now - snapshot.taken_at) if snapshot is not None else None,
        agent_version=node.agent_version,
        kernel=node.kernel,
        ipvs_version=snapshot.state.info.version if snapshot is not None else None,
        role=_role(node),
        held=held,
        services=len(snapshot.services) if snapshot is not None else None,
    )


def _vip_holdings(
    nodes: Sequence[NodeState], compared: Sequence[NodeState], configuration: Configuration | None
) -> tuple[VipHolding, ...]:
    services: dict[str, list[ServiceKey]] = {}
    for node in compared:
        for service in node.snapshot.services:
            if service.key.fwmark or not service.key.address:
                continue  # a firewall-mark service has no VIP of its own
            keys = services.setdefault(_normal(service.key.address), [])
            if service.key not in keys:
                keys.append(service.key)
    instance_of: dict[str, str] = {}
    for instance in configuration.vrrp_instances if configuration is not None else ():
        for virtual in instance.addresses:
            instance_of.setdefault(_normal(virtual.address), instance.name)
    holdings = []
    for address in sorted(services, key=lambda address: service_sort_key(services[address][0])):
        holders, unknown = [], []
        for node in nodes:
            if not node.reachable:
                continue
            if node.addresses is None:
                unknown.append(node.name)
                continue
            interface = next((ifname for held, ifname in node.addresses if _normal(held) == address), None)
            if interface is not None:
                holders.append((node.name, interface))
        if len(holders) > 1:
            where = ", ".join(f"{name} ({interface})" for name, interface in holders)
            warning = f"{address} is held by {len(holders)} nodes: {where}"
        elif not holders and not unknown:
            warning = f"{address} is held by no node"
        else:
            warning = None
        holdings.append(VipHolding(address, tuple(sorted(services[address], key=service_sort_key)), tuple(holders),
                                   tuple(unknown), instance_of.get(address), warning))  # fmt: skip
    return tuple(holdings)


def _masters(compared: Sequence[NodeState], holder_of: Mapping[str, str | None]) -> dict[ServiceKey, str]:
    """Per service, the node the others are compared with: the one holding its VIP, else the one
    running the only master sync daemon, else the first node that has the service."""
    daemon_masters = [node.name for node in compared
                      if any(daemon.state == "master" for daemon in node.snapshot.daemons)]  # fmt: skip
    masters: dict[ServiceKey, str] = {}
    for node in compared:
        for service in node.snapshot.services:
            key = service.key
            if key in masters:
                continue
            holder = holder_of.get(_normal(key.address)) if key.address else None
            if holder is None and len(daemon_masters) == 1:
                holder = daemon_masters[0]
            masters[key] = holder or node.name
    return masters


def _dest_values(dest: Dest) -> dict[str, str]:
    return {
        FORWARD: dest.forward,
        WEIGHT: str(dest.weight),
        UPPER: str(dest.upper_threshold),
        LOWER: str(dest.lower_threshold),
    }


def _service_values(service: Service) -> dict[str, str]:
    if service.persistent is None:
        persistence = "none"
    else:
        persistence = f"{service.persistent}s" + (f" mask {service.netmask}" if service.netmask else "")
    return {
        SCHEDULER: service.scheduler,
        PERSISTENCE: persistence,
        FLAGS: ",".join(sorted(service.flags)) or "none",
        PE: service.pe_name or "none",
    }


def _drift_row(kind: str, subject: str, service: ServiceKey | None, dest: DestKey | None,
               values: Sequence[tuple[str, str]], reference: str) -> ClusterDrift | None:  # fmt: skip
    """A drift row when the nodes' values differ: the odd groups first, the reference node's group last."""
    groups: dict[str, list[str]] = {}
    for node, value in values:
        groups.setdefault(value, []).append(node)
    if len(groups) < 2:
        return None
    wanted = dict(values)[reference]
    ordered = [(value, nodes) for value, nodes in groups.items() if value != wanted] + [(wanted, groups[wanted])]
    head = subject if kind in (SERVICE, REAL_SERVER) else f"{subject} {kind}".strip()
    parts = [f"{fold_nodes(nodes)}: {head} {value}" if number == 0 else f"{fold_nodes(nodes)}: {value}"
             for number, (value, nodes) in enumerate(ordered)]  # fmt: skip
    return ClusterDrift(kind, service, dest, tuple(values), reference, ", ".join(parts))


def _drift(compared: Sequence[NodeState], masters: Mapping[ServiceKey, str]) -> tuple[ClusterDrift, ...]:
    if len(compared) < 2:
        return ()
    rows: list[ClusterDrift] = []
    first = compared[0].name
    timeouts = [(node.name, node.snapshot.state.timeouts) for node in compared]
    if all(value.known for _, value in timeouts):
        values = [(name, f"tcp {t.tcp}s tcp-fin {t.tcp_fin}s udp {t.udp}s") for name, t in timeouts]
        row = _drift_row(TIMEOUTS, "", None, None, values, first)
        if row is not None:
            rows.append(row)
    found: dict[str, dict[ServiceKey, Service]] = {
        node.name: {service.key: service for service in node.snapshot.services} for node in compared
    }
    for key in sorted(set().union(*found.values()), key=service_sort_key):
        reference = masters.get(key, first)
        if key not in found.get(reference, {}):
            reference = next(name for name, services in found.items() if key in services)
        subject = str(key)
        presence = [(name, PRESENT if key in services else ABSENT) for name, services in found.items()]
        row = _drift_row(SERVICE, subject, key, None, presence, reference)
        if row is not None:
            rows.append(row)
        having = [(name, services[key]) for name, services in found.items() if key in services]
        if len(having) < 2:
            continue
        per_node = [(name, _service_values(service)) for name, service in having]
        for kind in (SCHEDULER, PERSISTENCE, FLAGS, PE):
            row = _drift_row(kind, subject, key, None, [(name, values[kind]) for name, values in per_node], reference)
            if row is not None:
                rows.append(row)
        endpoints: dict[tuple[str, int], None] = {}
        for _, service in having:
            for dest in service.dests:
                endpoints.setdefault((dest.address, dest.port), None)
        for address, port in endpoints:
            dest_key = DestKey(key, address, port)
            dests = [(name, service.find_dest(address, port)) for name, service in having]
            subject_dest = str(dest_key)
            presence = [(name, PRESENT if dest is not None else ABSENT) for name, dest in dests]
            row = _drift_row(REAL_SERVER, subject_dest, key, dest_key, presence, reference)
            if row is not None:
                rows.append(row)
            present = [(name, _dest_values(dest)) for name, dest in dests if dest is not None]
            if len(present) < 2:
                continue
            dest_reference = reference if any(name == reference for name, _ in present) else present[0][0]
            for kind in (FORWARD, WEIGHT, UPPER, LOWER):
                values = [(name, found_values[kind]) for name, found_values in present]
                # The kernel turns any method into "local" for an address the director holds: on
                # one node the real server may be local and on the others not, legitimately.
                if kind == FORWARD and any(value == "local" for _, value in values):
                    continue
                row = _drift_row(kind, subject_dest, key, dest_key, values, dest_reference)
                if row is not None:
                    rows.append(row)
    return tuple(rows)


def _sync(nodes: Sequence[NodeState], compared: Sequence[NodeState]) -> tuple[tuple[NodeSync, ...], tuple[str, ...]]:
    sync = tuple(
        NodeSync(node.name, tuple(node.snapshot.daemons)
                 if node.snapshot is not None and daemons_known(node.snapshot.daemons) else None)  # fmt: skip
        for node in nodes
    )
    known = [(item.node, item.daemons) for item in sync
             if item.daemons is not None and any(n.name == item.node for n in compared)]  # fmt: skip
    problems: list[str] = []
    masters = [(name, daemon) for name, daemons in known for daemon in daemons if daemon.state == "master"]
    backups = {name: [daemon for daemon in daemons if daemon.state == "backup"] for name, daemons in known}
    if not masters:
        if any(backups.values()):
            problems.append("no node runs a master sync daemon: the backups receive nothing")
        return sync, tuple(problems)
    for master_name, master in masters:
        for name, daemons in known:
            if name == master_name:
                continue
            listening = backups[name]
            if not listening:
                problems.append(f"{name} runs no backup sync daemon: it receives nothing from {master_name}")
                continue
            if any(_receives(backup, master) for backup in listening):
                continue
            backup = listening[0]
            if backup.syncid and backup.syncid != master.syncid:
                problems.append(f"syncid mismatch: {master_name} master syncid {master.syncid}, {name} backup "
                                f"syncid {backup.syncid}: {name} drops {master_name}'s messages")  # fmt: skip
            else:
                problems.append(f"{name} backup listens on {backup.group}:{backup.port}, {master_name} master "
                                f"sends to {master.group}:{master.port}")  # fmt: skip
    return sync, tuple(problems)


def _receives(backup: Daemon, master: Daemon) -> bool:
    """Whether a backup daemon accepts what a master sends: same group and port, and the master's
    syncid unless the backup's is 0 (which accepts any)."""
    syncid_ok = backup.syncid == 0 or backup.syncid == master.syncid
    return syncid_ok and backup.group == master.group and backup.port == master.port


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%" if fraction >= 0.01 else f"{fraction * 100:.1g}%"


def _tables(compared: Sequence[NodeState], masters: Mapping[ServiceKey, str]) -> tuple[TableDiff, ...]:
    by_name = {node.name: node for node in compared}
    diffs: list[TableDiff] = []
    for key in sorted(masters, key=service_sort_key):
        master = by_name.get(masters[key])
        if master is None or key.fwmark or not key.address:
            continue  # /proc names no firewall mark: a mark service's entries cannot be told apart
        service = master.snapshot.find_service(key)
        if service is None:
            continue
        label = service_table_label(key.protocol or "", key.address, key.port)
        master_count = connection_total(service.dests)
        for backup in compared:
            if backup is master:
                continue
            other = backup.snapshot.find_service(key)
            backup_count = connection_total(other.dests) if other is not None else None
            diffs.append(table_diff(key, master.name, master.table, master_count, backup.name, backup.table,
                                    backup_count, label))  # fmt: skip
    return tuple(diffs)


def table_diff(
    service: ServiceKey,
    master: str,
    master_table: TableKeys | None,
    master_count: int,
    backup: str,
    backup_table: TableKeys | None,
    backup_count: int | None,
    label: str | None = None,
) -> TableDiff:
    """How many of the master's entries of `service` the backup lacks: exact when both tables were
    read whole; else estimated from the master's sample and the share of the backup's table read
    (a table is read in hash order, so a prefix is a sample of it)."""
    label = label or service_table_label(service.protocol or "", service.address, service.port)

    def unknown(note: str) -> TableDiff:
        return TableDiff(service, master, backup, master_count, backup_count, None, None, False, note)

    for name, table in ((master, master_table), (backup, backup_table)):
        if table is None:
            return unknown(f"no connection table from {name} yet")
    ours = master_table.by_service.get(label, frozenset())
    theirs = backup_table.by_service.get(label, frozenset())
    if master_table.complete and backup_table.complete:
        return TableDiff(service, master, backup, master_count, backup_count, len(ours - theirs), len(theirs - ours),
                         True, "exact")  # fmt: skip
    if not ours:
        return unknown(f"estimate: no entry of this service in the {_percent(master_table.fraction)} of "
                       f"{master}'s table read")  # fmt: skip
    if backup_table.fraction <= 0:
        return unknown(f"estimate: nothing of {backup}'s table read yet")
    present_share = min(1.0, len(ours & theirs) / (backup_table.fraction * len(ours)))
    missing = round((1.0 - present_share) * master_count)
    note = (f"estimate from {_percent(master_table.fraction)} of {master}'s table and "
            f"{_percent(backup_table.fraction)} of {backup}'s")  # fmt: skip
    return TableDiff(service, master, backup, master_count, backup_count, missing, None, False, note)


# -- JSON ------------------------------------------------------------------------------------------------


def cluster_to_dict(report: ClusterReport) -> dict[str, Any]:
    """The comparison for --nodes --once --json: plain values only."""
    return {
        "taken_at": report.taken_at,
        "nodes": [
            {
                "name": node.name,
                "reachable": node.reachable,
                "since": node.since,
                "error": node.error,
                "poll_age": node.poll_age,
                "role": node.role,
                "holds": list(node.held),
                "services": node.services,
                "agent_version": node.agent_version,
                "kernel": node.kernel,
                "ipvs_version": node.ipvs_version,
            }
            for node in report.nodes
        ],
        "vips": [
            {
                "address": vip.address,
                "services": [str(key) for key in vip.services],
                "holders": [{"node": node, "interface": interface} for node, interface in vip.holders],
                "unknown": list(vip.unknown),
                "vrrp_instance": vip.vrrp_instance,
                "warning": vip.warning,
            }
            for vip in report.vips
        ],
        "drift": [
            {
                "kind": row.kind,
                "service": str(row.service) if row.service is not None else None,
                "dest": join_host_port(row.dest.address, row.dest.port) if row.dest is not None else None,
                "values": dict(row.values),
                "reference": row.reference,
                "text": row.text,
            }
            for row in report.drift
        ],
        "sync": {
            "daemons": {
                item.node: None if item.daemons is None else [
                    {"state": d.state, "interface": d.interface, "syncid": d.syncid, "group": d.group, "port": d.port}
                    for d in item.daemons
                ]
                for item in report.sync
            },
            "problems": list(report.sync_problems),
            "tables": [
                {
                    "service": str(diff.service),
                    "master": diff.master,
                    "backup": diff.backup,
                    "master_connections": diff.master_count,
                    "backup_connections": diff.backup_count,
                    "missing": diff.missing,
                    "extra": diff.extra,
                    "exact": diff.exact,
                    "note": diff.note,
                }
                for diff in report.tables
            ],
        },
        "warnings": list(report.warnings),
    }


def node_roles(report: ClusterReport | None) -> Callable[[str], str]:
    """name -> what the header says of the node ("master, holds 2 VIPs"); "" while unknown."""

    def role(name: str) -> str:
        summary = report.node(name) if report is not None else None
        return summary.header_role if summary is not None else ""

    return role
