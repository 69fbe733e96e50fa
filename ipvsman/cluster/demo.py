"""The demo cluster: a simulated master director and backups fed by a simulated (lossy) sync, in-process."""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ipvsman import __version__
from ipvsman.backend import Backend, BackendError
from ipvsman.cluster.wire import table_keys
from ipvsman.cluster.state import ClusterSnapshot, Command, CommandReply, NodeState, connection_key
from ipvsman.cluster.synctest import SYNC_TEST_WAIT
from ipvsman.demo import DemoBackend, DirectorSpec, check_weight, demo_director
from ipvsman.model import (
    FORWARD_LABELS,
    Connection,
    ConnectionTable,
    Dest,
    DestKey,
    RawState,
    Service,
    ServiceKey,
    Snapshot,
)
from ipvsman.poller import CallInPoller, CommandResult, Poller

MISSING_PER_MILLE = 30  # of the master's entries a demo backup never received: 3%
DEMO_KERNEL = "6.1.0-demo"
PROBE_LOSS = 0.01  # of the sync probes a demo backup never receives
PROBE_LATE = 0.03  # of them that reach it late, as on a backup busy for a moment
PROBE_MEDIAN = 0.0015  # seconds: one LAN hop and the backup's sync thread


def demo_probe_delay(seed: int, node: str, seq: int) -> float | None:
    """How late sync probe `seq` reaches demo backup `node`, None when it never does: seeded per
    node and probe, so that the figures are plausible and the same on every run."""
    rng = random.Random(f"probe-{seed}-{node}-{seq}")
    if rng.random() < PROBE_LOSS:
        return None
    delay = rng.lognormvariate(math.log(PROBE_MEDIAN), 0.4)
    if rng.random() < PROBE_LATE:
        delay += rng.uniform(0.02, 0.15)
    return delay


def expand_nodes(nodeset: str) -> list[str]:
    """The names of a ClusterShell nodeset ("lvs-[1-2]", "@group"); ValueError with a one-line reason."""
    try:
        from ClusterShell.NodeSet import NodeSet, NodeSetException

        try:
            names = list(NodeSet(nodeset))
        except NodeSetException as exc:
            raise ValueError(f"bad nodeset {nodeset!r}: {exc}") from None
    except ImportError:
        names = [name for name in nodeset.split(",") if name]
    if not names:
        raise ValueError(f"nodeset {nodeset!r} names no node")
    return names


def backup_director(master: DirectorSpec, rng: random.Random) -> DirectorSpec:
    """The master's configuration with one small drift a backup picked up (a weight set to 0 by hand
    and never copied back) and a backup daemon in place of the master's."""
    services = list(master.services)
    candidates = [(i, j) for i, spec in enumerate(services) for j, dest in enumerate(spec.dests) if dest.weight > 0]
    i, j = rng.choice(candidates)
    dests = list(services[i].dests)
    dests[j] = replace(dests[j], weight=0)
    services[i] = replace(services[i], dests=tuple(dests))
    daemons = tuple(replace(daemon, state="backup") for daemon in master.daemons if daemon.state == "master")
    return replace(master, services=tuple(services), daemons=daemons)


class BackupBackend(Backend):
    """A demo backup director: its own configuration, no traffic of its own, and in its connection
    table the master's entries as the sync daemon would have brought them, but for a seeded few
    that never arrived (until a resync sends them)."""

    name = "demo"

    def __init__(self, master: DemoBackend, director: DirectorSpec, node: str, missing_per_mille: int):
        self.master = master
        self.director = director
        self.node = node
        self.missing_per_mille = missing_per_mille
        self._lock = threading.Lock()
        self._resynced: frozenset[int] = frozenset()
        self._config: list[Service] = [
            Service(spec.key, spec.scheduler, spec.persistent,
                    "128" if spec.key.af == "inet6" else "255.255.255.255", spec.flags,
                    dests=tuple(Dest(d.address, d.port, d.forward, d.weight, d.upper_threshold, d.lower_threshold,
                                     af=spec.key.af) for d in spec.dests))  # fmt: skip
            for spec in director.services
        ]
        self._salt = int.from_bytes(hashlib.blake2b(node.encode(), digest_size=8).digest(), "big")  # per node

    def open(self) -> None:
        pass

    def received(self, conn: Connection) -> bool:
        """Whether this backup has the master's entry: the same entries miss on every poll."""
        key = connection_key(*conn[:7])
        return key in self._resynced or (key ^ self._salt) % 1000 >= self.missing_per_mille

    def resync(self) -> int:
        """Take every entry the master has now, as a resync would send it; returns how many were missing."""
        table, _, _ = self.master.read_table()
        sent = frozenset(connection_key(*conn[:7]) for conn in table if not conn.is_template)
        with self._lock:
            missing = sum(1 for conn in table if not conn.is_template and not self.received(conn))
            self._resynced = self._resynced | sent
        return missing

    def _table(self) -> list[Connection]:
        table, _, _ = self.master.read_table()
        return [conn._replace(origin="SYNC") for conn in table if self.received(conn)]

    def poll(self, connections: bool = True) -> RawState:
        with self._lock:
            table = self._table()
            services = tuple(self._counted(self._config, table))
        return RawState(
            info=self.director.info,
            timeouts=self.director.timeouts,
            services=services,
            daemons=self.director.daemons,
            connections=ConnectionTable.from_connections(table) if connections else None,
            sync_version=self.director.sync_version,
        )

    def _counted(self, config: Sequence[Service], table: Sequence[Connection]):
        """The configured services with their real servers' counters from the synced entries."""
        where: dict[tuple[str, str, int], ServiceKey] = {}
        for spec in self.director.services:
            if spec.key.fwmark:
                for protocol, address, port in spec.marked:
                    where[protocol.upper(), address, port] = spec.key
            else:
                where[(spec.key.protocol or "").upper(), spec.key.address, spec.key.port] = spec.key
        counts: dict[tuple[ServiceKey, str, int], list[int]] = {}
        for conn in table:
            if conn.is_template:
                continue
            key = where.get((conn.protocol, conn.virtual, conn.virtual_port))
            if key is not None:
                slot = counts.setdefault((key, conn.dest, conn.dest_port), [0, 0])
                slot[0 if conn.state == "ESTABLISHED" else 1] += 1
        for service in config:
            yield replace(service, dests=tuple(
                dest._replace(active_conns=found[0], inactive_conns=found[1])
                if (found := counts.get((service.key, dest.address, dest.port))) else dest
                for dest in service.dests
            ))  # fmt: skip

    # -- writes, on the backup's own configuration --------------------------------------------
    def _find(self, key: ServiceKey) -> int:
        for index, service in enumerate(self._config):
            if service.key == key:
                return index
        raise BackendError(f"no virtual service {key}")

    def set_weight(self, dest: DestKey, weight: int) -> None:
        check_weight(weight)
        with self._lock:
            index = self._find(dest.service)
            service = self._config[index]
            found = service.find_dest(dest.address, dest.port)
            if found is None:
                raise BackendError(f"no real server {dest}")
            dests = tuple(d._replace(weight=weight) if d is found else d for d in service.dests)
            self._config[index] = replace(service, dests=dests)

    def add_dest(self, service: ServiceKey, address: str, port: int, forward: str, weight: int) -> None:
        check_weight(weight)
        if forward not in FORWARD_LABELS:
            raise BackendError(f"forwarding method must be one of {', '.join(FORWARD_LABELS)}, got {forward!r}")
        with self._lock:
            index = self._find(service)
            config = self._config[index]
            if config.find_dest(address, port) is not None:
                raise BackendError(f"real server {address}:{port} already exists in {service}")
            self._config[index] = replace(config, dests=config.dests + (Dest(address, port, forward, weight,
                                                                              af=service.af),))  # fmt: skip

    def remove_dest(self, dest: DestKey) -> None:
        with self._lock:
            index = self._find(dest.service)
            config = self._config[index]
            if config.find_dest(dest.address, dest.port) is None:
                raise BackendError(f"no real server {dest}")
            self._config[index] = replace(config, dests=tuple(
                d for d in config.dests if (d.address, d.port) != (dest.address, dest.port)))  # fmt: skip


def master_addresses(director: DirectorSpec) -> tuple[tuple[str, str], ...]:
    """What the demo master holds: its own address and every VIP, on eth0."""
    vips = {spec.key.address: None for spec in director.services if spec.key.address}
    for spec in director.services:
        for _, address, _ in spec.marked:
            vips.setdefault(address, None)
    return (("10.10.10.2", "eth0"),) + tuple((address, "eth0") for address in vips)


class DemoCluster:
    """A ClusterSource of simulated directors for `--demo --nodes 'lvs-[1-2]'`: the first node is the
    master holding every VIP, the others its backups, each with a Poller of its own in-process."""

    name = "demo"  # the dashboard's audit log and header treat it as the demo

    def __init__(
        self,
        names: Sequence[str],
        seed: int = 1,
        interval: float = 1.0,
        tick: float | None = None,
        clock: Callable[[], float] = time.time,
        missing_per_mille: int = MISSING_PER_MILLE,
    ):
        if len(names) < 2:
            raise ValueError("a demo cluster needs two nodes or more, e.g. --nodes 'lvs-[1-2]'")
        if len(set(names)) != len(names):
            raise ValueError("a node is named twice in the nodeset")
        self.names = tuple(names)
        self.clock = clock
        self.interval = interval
        self.seed = seed
        director = demo_director(seed)
        self.master = DemoBackend(seed=seed, tick=tick, director=director)
        rng = random.Random(f"cluster-{seed}")
        self.backends: dict[str, Backend] = {self.names[0]: self.master}
        self.addresses: dict[str, tuple[tuple[str, str], ...]] = {self.names[0]: master_addresses(director)}
        for number, name in enumerate(self.names[1:], start=3):
            self.backends[name] = BackupBackend(self.master, backup_director(director, rng), name, missing_per_mille)
            self.addresses[name] = ((f"10.10.10.{number}", "eth0"),)
        started = clock()
        self._nodes: dict[str, NodeState] = {
            name: NodeState(name, reachable=True, since=started, agent_version=__version__, kernel=DEMO_KERNEL,
                            addresses=self.addresses[name])  # fmt: skip
            for name in self.names
        }
        self._lock = threading.Lock()
        self._replies: dict[int, tuple[str, Command, Callable[[CommandReply], None]]] = {}
        self._on_update: Callable[[ClusterSnapshot], None] = lambda cluster: None
        self._probes_sent: dict[tuple[int, int], float] = {}  # (series, seq) -> when the master sent it
        self._probe_watches: dict[tuple[int, int], list] = {}  # asked before the send: answered at it
        self._sync_tests = 0  # each sync test is a connection of its own, so each may miss a backup

        # Made now, started by start(): poll_all() runs them in the caller's thread (tests, screenshots).
        self._pollers: dict[str, Poller] = {
            name: Poller(
                self.backends[name],
                lambda snapshot, name=name: self._on_snapshot(name, snapshot),
                lambda result, name=name: self._on_result(name, result),
                interval=interval,
                clock=clock,
            )
            for name in self.names
        }
        for name, poller in self._pollers.items():
            poller.name = f"ipvsman-demo-{name}"
        self._opened: set[str] = set()  # backends poll_all() opened (a Poller thread opens its own)

    # -- ClusterSource ----------------------------------------------------------------------------
    def start(self, on_update: Callable[[ClusterSnapshot], None]) -> None:
        self._on_update = on_update
        for poller in self._pollers.values():
            poller.start()

    def poll_all(self) -> ClusterSnapshot:
        """Poll every node once in this thread, master first (no threads started): the cluster after it."""
        for name in self.names:
            if name not in self._opened:
                self.backends[name].open()
                self._opened.add(name)
            self._on_snapshot(name, self._pollers[name].poll_once())
        return self.latest()

    def latest(self) -> ClusterSnapshot:
        with self._lock:
            return ClusterSnapshot(tuple(self._nodes[n] for n in self.names), self.clock())

    def stop(self) -> None:
        for poller in self._pollers.values():
            if poller.is_alive():
                poller.stop()

    def command(self, node: str, command: Command, on_reply: Callable[[CommandReply], None]) -> None:
        poller = self._pollers.get(node)
        if poller is None:
            on_reply(CommandReply(node, command, False, f"{command.kind}: no node {node} in the cluster"))
            return
        if command.kind in ("sync-probe", "probe-watch"):
            self._probe(node, command, on_reply)
            return
        try:
            function = self._function(node, command)
        except (KeyError, TypeError, ValueError) as exc:
            on_reply(CommandReply(node, command, False, f"{command.kind}: refused: bad arguments: {exc}"))
            return
        call = CallInPoller(function, label=f"{command.kind} on {node}")
        with self._lock:
            self._replies[id(call)] = (node, command, on_reply)
        poller.submit(call)

    # -- the nodes' pollers -------------------------------------------------------------------------
    def _function(self, node: str, command: Command) -> Callable[[Backend], str]:
        args = command.args
        kind = command.kind
        if kind == "set-weight":
            dest, weight = _dest_key(args), int(args["weight"])
            return lambda backend: (backend.set_weight(dest, weight), f"weight of {dest} set to {weight}")[1]
        if kind == "add-dest":
            service = _service_key(args["service"])
            address, port, forward, weight = str(args["address"]), int(args["port"]), str(args["forward"]), int(args["weight"])
            return lambda backend: (backend.add_dest(service, address, port, forward, weight),
                                    f"added {address}:{port} to {service}")[1]  # fmt: skip
        if kind == "remove-dest":
            dest = _dest_key(args)
            return lambda backend: (backend.remove_dest(dest), f"removed {dest}")[1]
        if kind == "resync":
            if node != self.names[0]:
                raise ValueError(f"{node} runs no master sync daemon: resync runs on {self.names[0]}")
            return lambda backend: self._resync()
        if kind == "sync-test":
            if node != self.names[0]:
                raise ValueError(f"{node} runs no master sync daemon: the sync test runs from {self.names[0]}")
            return lambda backend: self._sync_test(_service_key(args["service"]))
        if kind == "read-table":
            return lambda backend: "connection table read"
        raise ValueError(f"unknown command {kind!r}")

    # -- the sync probe: sent at once, received after demo_probe_delay ---------------------------------
    def _probe(self, node: str, command: Command, on_reply: Callable[[CommandReply], None]) -> None:
        key = (command.args.get("series"), command.args.get("seq"))
        if command.kind == "sync-probe":
            if node != self.names[0]:
                on_reply(CommandReply(node, command, False, f"sync-probe: {node} runs no master sync daemon"))
                return
            sent_at = self.clock()
            with self._lock:
                self._probes_sent[key] = sent_at
                waiting = self._probe_watches.pop(key, [])
                for old in [old for old, at in self._probes_sent.items() if at < sent_at - 300]:
                    del self._probes_sent[old]
            on_reply(CommandReply(node, command, True, f"sync-probe {key[1]}: sent", {"sent_at": sent_at}))
            for watcher in waiting:
                self._answer_watch(*watcher, sent_at)
            return
        with self._lock:
            sent_at = self._probes_sent.get(key)
            if sent_at is None:
                self._probe_watches.setdefault(key, []).append((node, command, on_reply))
                return
        self._answer_watch(node, command, on_reply, sent_at)

    def _answer_watch(self, node: str, command: Command, on_reply: Callable[[CommandReply], None],
                      sent_at: float) -> None:  # fmt: skip
        seq, wait = command.args.get("seq"), float(command.args.get("wait", 3.0))
        delay = demo_probe_delay(self.seed, node, seq)
        if delay is None or delay > wait:
            on_reply(CommandReply(node, command, True, f"probe {seq}: not in the table after {wait:g} s",
                                  {"found": False}))  # fmt: skip
        else:
            on_reply(CommandReply(node, command, True, f"probe {seq}: in the table",
                                  {"found": True, "found_at": sent_at + delay}))  # fmt: skip

    def _sync_test(self, service: ServiceKey) -> str:
        """The marked test connection, "sent" from the master: each backup has it or not as it has
        any other entry (a seeded few never arrive), so the demo's answers are the simulation's."""
        spec = next((s for s in self.master.director.services if s.key == service), None)
        if spec is None or not spec.dests:
            raise ValueError(f"{service}: no such service with a real server on {self.names[0]}")
        self._sync_tests += 1
        dest = spec.dests[0]
        test = ((service.protocol or "tcp").upper(), f"192.0.2.{100 + self._sync_tests % 100}",
                40000 + self._sync_tests, service.address, service.port, dest.address, dest.port)  # fmt: skip
        outcomes = [f"{name}: Success" if backend.received(test) else f"{name}: not received after {SYNC_TEST_WAIT:g} s"
                    for name, backend in self.backends.items() if isinstance(backend, BackupBackend)]  # fmt: skip
        return "sync test: " + ", ".join(outcomes)

    def _resync(self) -> str:
        sent = [(name, backend.resync()) for name, backend in self.backends.items() if isinstance(backend, BackupBackend)]
        return "resync: " + ", ".join(f"{name}: {missing} missing entries filled" for name, missing in sent)

    def _on_result(self, node: str, result: CommandResult) -> None:
        with self._lock:
            waiting = self._replies.pop(id(result.command), None)
        if waiting is not None:
            name, command, on_reply = waiting
            on_reply(CommandReply(name, command, result.ok, result.message))

    def _on_snapshot(self, name: str, snapshot: Snapshot) -> None:
        read = snapshot.table.read
        table = None
        if snapshot.state.connections is not None:
            complete = read.complete if read is not None else True
            fraction = 1.0 if complete or not read or not read.expected else read.entries / read.expected
            table = table_keys(snapshot.connections, complete, fraction, snapshot.taken_at)
        with self._lock:
            node = self._nodes[name]
            node = replace(node, snapshot=snapshot, received_at=self.clock(), table=table or node.table,
                           error=snapshot.error, read_only=not snapshot.writable)  # fmt: skip
            self._nodes[name] = node
            cluster = ClusterSnapshot(tuple(self._nodes[n] for n in self.names), self.clock())
        self._on_update(cluster)


def _service_key(text: object) -> ServiceKey:
    """A ServiceKey from its str(): "tcp 10.0.0.1:80", "tcp [2001:db8::1]:443" or "fwmark 10"."""
    from ipvsman.model import split_host_port

    text = str(text)
    if text.startswith("fwmark "):
        words = text.split()
        return ServiceKey("inet6" if "(IPv6)" in text else "inet", None, "", 0, fwmark=int(words[1]))
    protocol, _, endpoint = text.partition(" ")
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"not a service: {text!r}")
    address, port = split_host_port(endpoint)
    return ServiceKey("inet6" if ":" in address else "inet", protocol, address, port)


def _dest_key(args) -> DestKey:
    return DestKey(_service_key(args["service"]), str(args["address"]), int(args["port"]))
