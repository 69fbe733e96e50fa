"""`ipvsman agent`: one director's snapshots as lines on stdout, commands taken as lines on stdin."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from ipvsman import __version__
from ipvsman.backend import Backend
from ipvsman.cluster import syncprobe, wire
from ipvsman.cluster.state import Command, connection_key
from ipvsman.model import DestKey, Snapshot
from ipvsman.poller import AddDest, CommandResult, Poller, RemoveDest, SetWeight
from ipvsman.threadnames import name_this_thread
from ipvsman.ui.audit import ATTEMPT, AuditLog, AuditLogError

READ_TABLE_WAIT = 60.0  # seconds a read-table request waits for a read before it is answered with a refusal
PROBE_SLACK_LINES = 1024  # lines past the probe series' newest entry after which its bucket is behind a look-up
PROBE_MIN_GAP = 0.02  # seconds between two look-ups for probes at least
PROBE_BUDGET = 5.0  # percent of one CPU the look-ups may take when --conn-budget is 0


def build_parser() -> argparse.ArgumentParser:
    from ipvsman.cli import number_type

    parser = argparse.ArgumentParser(
        prog="ipvsman agent",
        description="Stream this director's snapshots as JSON lines and take commands on stdin "
        "(run by `ipvsman --nodes` over ssh or --via; not meant to be run by hand).",
    )
    parser.add_argument("--demo", action="store_true", help="serve a simulated director (no kernel needed)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the demo director (default 1)")
    parser.add_argument("--netns", metavar="NAME", help="serve the IPVS of a named network namespace")
    parser.add_argument("--interval", type=number_type("interval", 0, above=True), default=1.0, metavar="SECONDS",
                        help="poll interval (default 1)")  # fmt: skip
    parser.add_argument("--conn-budget", type=number_type("connection budget", 0, 100), default=5.0,
                        metavar="PERCENT", help="share of one CPU that reads of the connection table may take (default 5)")  # fmt: skip
    parser.add_argument("--no-connections", dest="connections", action="store_false",
                        help="do not read the connection table unless a command asks")  # fmt: skip
    parser.add_argument("--read-only", action="store_true", help="refuse every command that changes or sends anything")
    parser.add_argument("--audit-log", metavar="PATH", default=None,
                        help="where this node logs the changes asked of it, '-' for stderr (default: as ipvsman's)")  # fmt: skip
    return parser


class Agent:
    """Runs a Poller on `backend` and speaks the wire protocol on `output`; feed() takes one command line.

    Every line is written whole under a lock: the poller's thread, job threads and the command
    reader all write. A refusal is always one reply line; nothing on stdin ends the agent but EOF.
    """

    def __init__(
        self,
        backend: Backend,
        output: IO[str],
        *,
        read_only: bool = False,
        interval: float = 1.0,
        conn_budget: float | None = 5.0,
        connections: bool = True,
        netns: str | None = None,
        addresses: Callable[[], Iterable[tuple[str, str]]] | None = None,
        audit: AuditLog | None = None,
        probe_scan: Callable[[int, set[int]], set[int]] | None = None,
    ):
        self.backend = backend
        self.output = output
        self.read_only = read_only
        self.netns = netns
        self.audit = audit  # every change asked of this node, logged here too (the dashboard logs its own)
        self._probe_scan = probe_scan  # None: this node's /proc/net/ip_vs_conn
        budget = conn_budget if conn_budget else PROBE_BUDGET
        self.probes = ProbeWatcher(probe_scan or proc_probe_scan(netns), self._answer_watch, budget / 100)
        self._addresses = addresses or self._local_addresses
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.poller = Poller(backend, self._on_snapshot, self._on_result, interval=interval,
                             connections=connections, conn_budget=conn_budget, views=False)  # fmt: skip
        self.snapshot: Snapshot | None = None
        self.table = None  # the newest TableKeys sent
        self._table_seq: int | None = None  # TableRead.seq of the newest table sent
        self._sent_addresses: object = ()  # what the newest addresses line said
        # id(poller command) -> (request id, the command: held, so that its id is not another's until answered)
        self._pending: dict[int, tuple[int, Any]] = {}
        self._table_requests: list[tuple[int, list[int], float]] = []  # (request id, keys, asked at)
        self._job: threading.Thread | None = None
        self.closed = threading.Event()  # the dashboard stopped reading
        self._polled = threading.Event()  # the first snapshot was made

    # -- output ------------------------------------------------------------------------------
    def write(self, line: str) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            try:
                self.output.write(line)
                self.output.flush()
            except (BrokenPipeError, OSError, ValueError):  # the dashboard is gone
                self.closed.set()

    def start(self) -> None:
        self.write(wire.encode_hello(__version__, os.uname().release, socket.gethostname(), self.read_only))
        self.poller.start()

    def stop(self) -> None:
        # Poller.stop joins the table reader, which the poller's thread starts when it opens the
        # backend: stopping before that (EOF at once) would join a thread not yet started.
        self._polled.wait(5)
        self.probes.stop()
        self.poller.stop()

    # -- the poller's thread ---------------------------------------------------------------------------
    def _on_snapshot(self, snapshot: Snapshot) -> None:
        with self._state_lock:
            self.snapshot = snapshot
        self._polled.set()
        self.write(wire.encode_snapshot(snapshot))
        self._send_addresses(snapshot)
        self._send_table(snapshot)

    def _local_addresses(self) -> list[tuple[str, str]]:
        if self.backend.name == "demo":
            # The demo director holds its own VIPs on a made-up interface: it has no real one.
            return sorted({(s.key.address, "demo0") for s in (self.snapshot.services if self.snapshot else ())
                           if s.key.address})  # fmt: skip
        from ipvsman.vips import local_addresses

        return local_addresses(self.netns)

    def _send_addresses(self, snapshot: Snapshot) -> None:
        from ipvsman.vips import VipLookupError

        try:
            addresses, error = tuple(sorted(self._addresses())), None
        except VipLookupError as exc:
            addresses, error = None, str(exc)
        if (addresses, error) != self._sent_addresses:  # only changes: a poll's line stays small
            self._sent_addresses = (addresses, error)
            self.write(wire.encode_addresses(addresses, error))

    def _send_table(self, snapshot: Snapshot) -> None:
        read = snapshot.table.read
        if read is None or read.seq == self._table_seq or snapshot.state.connections is None:
            self._answer_table_requests(snapshot, timed_out_only=True)
            return
        self._table_seq = read.seq
        expected = snapshot.table.expected or read.entries
        fraction = 1.0 if read.complete else (read.entries / expected if expected else 0.0)
        self.table = wire.table_keys(snapshot.state.connections, read.complete, min(fraction, 1.0), read.started_at)
        self.write(wire.encode_table(self.table))
        self._answer_table_requests(snapshot)

    def _answer_table_requests(self, snapshot: Snapshot, timed_out_only: bool = False) -> None:
        now = time.monotonic()
        waiting = []
        for request_id, keys, asked_at in self._table_requests:
            if not timed_out_only:
                found = [key for key in keys if key in self.table.keys]
                entries = len(snapshot.state.connections or ())
                whole = "whole" if self.table.complete else "part of the"
                self.write(wire.encode_reply(request_id, True, f"read {whole} connection table: {entries} entries",
                                             {"complete": self.table.complete, "entries": entries, "found": found}))  # fmt: skip
            elif now - asked_at > READ_TABLE_WAIT:
                self.write(wire.encode_reply(request_id, False, f"read-table: no read within {READ_TABLE_WAIT:.0f} s"))
            else:
                waiting.append((request_id, keys, asked_at))
        self._table_requests = waiting

    def _on_result(self, result: CommandResult) -> None:
        request_id, _ = self._pending.pop(id(result.command), (None, None))
        message = result.message
        try:
            self._audit(result.command, "ok" if result.ok else f"refused: {result.message}")
        except AuditLogError as exc:  # made (or refused) already: the dashboard hears it went unlogged here
            message = f"{message} (not logged on this node: {exc})"
        self.write(wire.encode_reply(request_id, result.ok, message))

    def _audit(self, command, result: str) -> None:
        """One line of this node's audit log for a change; AuditLogError when it cannot be written."""
        if self.audit is None:
            return
        if isinstance(command, SetWeight):
            self.audit.record(command.dest, command.old_weight, command.new_weight, result)
        elif isinstance(command, AddDest):
            self.audit.record_add(command.service, command.address, command.port, command.forward, command.weight,
                                  result)  # fmt: skip
        elif isinstance(command, RemoveDest):
            self.audit.record_remove(command.dest, result)

    # -- commands ------------------------------------------------------------------------------------
    def feed(self, line: str | bytes) -> None:
        """One line from the dashboard: decoded, checked and acted on, or refused in one line."""
        if isinstance(line, bytes):
            try:
                line = line.decode()
            except UnicodeDecodeError:
                self.write(wire.encode_refused("command is not UTF-8 text"))
                return
        if not line.strip():
            return
        try:
            request_id, command = wire.decode_command(line)
        except wire.WireError as exc:
            request_id = getattr(exc, "request_id", None)
            if request_id is None:
                self.write(wire.encode_refused(str(exc)))
            else:
                self.write(wire.encode_reply(request_id, False, str(exc)))
            return
        refusal = self.refusal(command)
        if refusal:
            self.write(wire.encode_reply(request_id, False, f"{command.kind}: refused: {refusal}"))
            return
        getattr(self, "_" + command.kind.replace("-", "_"))(request_id, command.args)

    def refusal(self, command: Command) -> str | None:
        """Why the command cannot run on this node now (one line), None when it can."""
        reads = ("read-table", "probe-watch")
        if self.read_only and command.kind not in reads:
            return "the agent runs with --read-only"
        if command.kind in ("resync", "sync-test", "sync-probe") and self.backend.name == "demo":
            return "not in the demo (it would send to the real network)"
        if command.kind == "probe-watch" and self.backend.name == "demo" and self._probe_scan is None:
            return "not in the demo (it has no kernel table to look in)"
        if command.kind in ("resync", "sync-test") and self._job is not None and self._job.is_alive():
            return f"{self._job.name.removeprefix('ipvsman-')} still running"
        if self.snapshot is None and command.kind not in reads:
            return "no poll yet"
        return None

    def _find(self, args: dict[str, Any]) -> tuple[DestKey, int | None, bool]:
        """The real server the args name, its weight (None when absent) and whether its service exists."""
        service = wire.parse_service(args["service"])
        key = DestKey(service, args["address"], args["port"])
        found_service = self.snapshot.find_service(service)
        dest = found_service.find_dest(key.address, key.port) if found_service else None
        return key, None if dest is None else dest.weight, found_service is not None

    def _submit(self, request_id: int, command) -> None:
        # Logged here before it is made, as the dashboard does: a change this node cannot log is not made.
        try:
            self._audit(command, ATTEMPT)
        except AuditLogError as exc:
            self.write(wire.encode_reply(request_id, False, f"{command.describe()}: refused: {exc}"))
            return
        self._pending[id(command)] = (request_id, command)
        self.poller.submit(command)

    def _set_weight(self, request_id: int, args: dict[str, Any]) -> None:
        key, weight, _ = self._find(args)
        if weight is None:
            self.write(wire.encode_reply(request_id, False, f"set-weight: refused: {key} is not in the kernel"))
            return
        self._submit(request_id, SetWeight(key, weight, args["weight"]))

    def _add_dest(self, request_id: int, args: dict[str, Any]) -> None:
        key, weight, service_found = self._find(args)
        if not service_found:
            self.write(wire.encode_reply(request_id, False, f"add-dest: refused: no service {key.service} here"))
        elif weight is not None:
            self.write(wire.encode_reply(request_id, False, f"add-dest: refused: {key} is already there"))
        else:
            self._submit(request_id, AddDest(key.service, key.address, key.port, args["forward"], args["weight"]))

    def _remove_dest(self, request_id: int, args: dict[str, Any]) -> None:
        key, weight, _ = self._find(args)
        if weight is None:
            self.write(wire.encode_reply(request_id, False, f"remove-dest: refused: {key} is not in the kernel"))
            return
        self._submit(request_id, RemoveDest(key))

    def _read_table(self, request_id: int, args: dict[str, Any]) -> None:
        self._table_requests.append((request_id, list(args.get("keys", ())), time.monotonic()))
        self.poller.read_table_now()

    def _resync(self, request_id: int, args: dict[str, Any]) -> None:
        self._run_job(request_id, "resync", lambda: self._resync_work(args.get("service")))

    def _sync_test(self, request_id: int, args: dict[str, Any]) -> None:
        self._run_job(request_id, "sync-test", lambda: self._sync_test_work(args.get("service")))

    def _sync_probe(self, request_id: int, args: dict[str, Any]) -> None:
        """Send probe `seq` as the sync test sends its connection; the reply says when it left."""
        from ipvsman.sync import resync
        from ipvsman.sync.protocol import from_connection
        from ipvsman.sync.sender import SyncConfigError

        seq, timeout = args["seq"], args["timeout"]
        try:
            settings = resync.sync_test_settings(self.snapshot.state)
            conn = from_connection(syncprobe.probe_connection(args["series"], seq, timeout), timeout=timeout)
            sent_at = time.time()
            # No backup is looked at here (no daemons given): the backups' agents do that.
            result = resync.run_sync_test(settings, (), daemons=(), netns=self.netns, conn=conn)
            error = result.error
        except SyncConfigError as exc:
            error = str(exc)
        except Exception as exc:  # the dashboard must always get its answer
            error = f"{type(exc).__name__}: {exc}"
        if error:
            self.write(wire.encode_reply(request_id, False, f"sync-probe {seq}: not sent: {error}"))
        else:
            self.write(wire.encode_reply(request_id, True, f"sync-probe {seq}: sent to {settings.destination}",
                                         {"sent_at": sent_at}))  # fmt: skip

    def _probe_watch(self, request_id: int, args: dict[str, Any]) -> None:
        self.probes.watch(request_id, args["series"], args["seq"], args["wait"])

    def _answer_watch(self, request_id: int, ok: bool, message: str, data: dict) -> None:
        self.write(wire.encode_reply(request_id, ok, message, data))

    def _run_job(self, request_id: int, label: str, work: Callable[[], tuple[bool, str, dict]]) -> None:
        def run() -> None:
            from ipvsman.sync.sender import SyncConfigError

            try:
                ok, message, data = work()
            except SyncConfigError as exc:
                ok, message, data = False, f"{label}: {exc}", {}
            except Exception as exc:  # the dashboard must always get its answer
                ok, message, data = False, f"{label} failed: {type(exc).__name__}: {exc}", {}
            self.write(wire.encode_reply(request_id, ok, message, data))

        self._job = threading.Thread(target=run, name=f"ipvsman-{label}", daemon=True)
        self._job.start()

    def _resync_work(self, service: str | None) -> tuple[bool, str, dict]:
        from ipvsman.sync import resync
        from ipvsman.sync.sender import read_conn_table

        state = self.snapshot.state
        settings = resync.resolve_settings(state.daemons, state.sync_version)
        # The whole table, read now: the poller's may be a budgeted prefix.
        connections = read_conn_table(self.netns, origin=False)
        key = None if service is None else wire.parse_service(service)
        plan = resync.build_plan(connections, state.services, settings, service=key, netns=self.netns)
        if plan.connections == 0:
            return True, f"resync: nothing to send: no connections ({plan.selection})", {"connections": 0}
        report = plan.run()
        return report.complete, plan.summary(report), {"connections": plan.connections}

    def _sync_test_work(self, service: str | None) -> tuple[bool, str, dict]:
        from ipvsman.sync import resync

        state = self.snapshot.state
        services = state.services
        if service is not None:
            services = tuple(s for s in services if str(s.key) == service)
            if not services:
                return False, f"sync-test: refused: no service {service} here", {}
        settings = resync.sync_test_settings(state)
        conn = resync.make_test_connection(services)
        sent_at = time.time()
        result = resync.run_sync_test(settings, services, daemons=state.daemons, netns=self.netns, conn=conn)
        key = connection_key(conn.protocol_name, conn.client, conn.client_port, conn.virtual, conn.virtual_port,
                             conn.dest, conn.dest_port)  # fmt: skip
        return result.ok, result.summary(), {"key": key, "connection": conn.describe(), "sent_at": sent_at}


class _Watch:
    """One probe a backup was asked to look for."""

    def __init__(self, request_id: int, series: int, seq: int, wait: float, now: float):
        self.request_id, self.series, self.seq, self.wait = request_id, series, seq, wait
        self.deadline = now + wait
        self.first_at: float | None = None  # when the first look-up for it began
        self.missed_at: float | None = None  # when the newest look-up that did not find it began
        self.scans = 0


class ProbeWatcher:
    """The backups' half of the sync probe: looks the asked-for probes up in this node's table, in a
    thread of its own, never more than `budget` of one CPU on average, and answers each watch once:
    found (and by when) or not within its wait. One look-up answers every watch of a series."""

    def __init__(self, scan: Callable[[int, set[int]], set[int]], answer: Callable[[int, bool, str, dict], None],
                 budget: float, clock: Callable[[], float] = time.time):  # fmt: skip
        self._scan = scan
        self._answer = answer
        self.budget = budget
        self.clock = clock
        self._watches: list[_Watch] = []
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0  # look-ups made, for tests

    def watch(self, request_id: int, series: int, seq: int, wait: float) -> None:
        with self._changed:
            self._watches.append(_Watch(request_id, series, seq, wait, self.clock()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ipvsman-probes", daemon=True)
                self._thread.start()
            self._changed.notify()

    def stop(self) -> None:
        self._stopped.set()
        with self._changed:
            self._changed.notify()

    def _run(self) -> None:
        name_this_thread()
        while not self._stopped.is_set():
            with self._changed:
                while not self._watches and not self._stopped.is_set():
                    self._changed.wait()
                watches = list(self._watches)
            if self._stopped.is_set():
                return
            cost = self.look(watches)
            # The kernel's time walking the table is charged to this thread: the budget covers it.
            self._stopped.wait(max(PROBE_MIN_GAP, cost / self.budget))

    def look(self, watches: list[_Watch]) -> float:
        """One look-up for `watches`; answers those that are settled; returns the CPU seconds it took."""
        wanted: dict[int, set[int]] = {}
        for watch in watches:
            wanted.setdefault(watch.series, set()).add(syncprobe.probe_port(watch.seq))
        started, cpu = self.clock(), time.thread_time()
        found: dict[int, set[int]] = {}
        error = None
        try:
            for series, ports in wanted.items():
                found[series] = self._scan(series, ports)
        except Exception as exc:  # a missing table, a namespace gone: every watch hears it
            error = wire.one_line(str(exc) or type(exc).__name__)
        ended = self.clock()
        cost = time.thread_time() - cpu
        self.scans += 1
        settled = []
        for watch in watches:
            watch.scans += 1
            watch.first_at = started if watch.first_at is None else watch.first_at
            if error is not None:
                self._answer(watch.request_id, False, f"probe-watch: cannot look: {error}", {})
            elif syncprobe.probe_port(watch.seq) in found[watch.series]:
                self._answer(watch.request_id, True, f"probe {watch.seq}: in the table (look-up {watch.scans})",
                             {"found": True, "found_at": ended, "missed_at": watch.missed_at,
                              "scans": watch.scans})  # fmt: skip
            elif ended >= watch.deadline:
                # When it was looked for: the dashboard counts a loss only if that was after its send.
                self._answer(watch.request_id, True, f"probe {watch.seq}: not in the table after {watch.wait:g} s",
                             {"found": False, "looked": [watch.first_at, started], "scans": watch.scans})  # fmt: skip
            else:
                watch.missed_at = started
                continue
            settled.append(watch)
        with self._changed:
            self._watches = [watch for watch in self._watches if watch not in settled]
        return cost


def scan_probe_entries(stream: IO[bytes], prefix: bytes, wanted: set[int], slack: int = PROBE_SLACK_LINES) -> set[int]:
    """The virtual ports of the lines of /proc/net/ip_vs_conn (`stream`) that begin with `prefix`.

    It stops reading as soon as every port in `wanted` was seen, or `slack` lines after the last
    line of the prefix: all of a probe series sits in one hash bucket, and every read() of this
    file walks the table again from its start, so the rest of the table is never read. Lines are
    matched as bytes, none of them parsed.
    """
    needle = b"\n" + prefix
    width = len(needle)
    found: set[int] = set()
    since_last: int | None = None  # lines read since the last line of the prefix; None before the first
    rest = b""
    while True:
        chunk = stream.read(1 << 16)  # a seq_file gives a page or so whatever is asked
        if not chunk:
            return found
        data = rest + chunk
        end = data.rfind(b"\n") + 1
        block, rest = b"\n" + data[:end], data[end:]  # a newline before the first line: each line starts after one
        position, last = 0, -1
        while (hit := block.find(needle, position)) >= 0:
            try:
                found.add(int(block[hit + width : hit + width + 4], 16))
            except ValueError:
                pass  # not a line of the table's format
            position = last = hit + width
        if last >= 0:
            since_last = block.count(b"\n", last) - 1
        elif since_last is not None:
            since_last += block.count(b"\n") - 1
        if wanted <= found or (since_last is not None and since_last > slack):
            return found


def proc_probe_scan(netns: str | None = None) -> Callable[[int, set[int]], set[int]]:
    """Look-ups in this namespace's (or a named one's) /proc/net/ip_vs_conn, for the ProbeWatcher."""

    def scan(series: int, wanted: set[int]) -> set[int]:
        from ipvsman.kernel import procfs
        from ipvsman.sync.sender import netns_entered

        with netns_entered(netns):  # the file stays the namespace's once open
            try:
                stream = open(os.path.join(procfs.net_dir(), procfs.CONN_FILE), "rb", buffering=0)
            except FileNotFoundError:
                raise OSError(f"no /proc/net/{procfs.CONN_FILE}: is the ip_vs module loaded?") from None
        with stream:
            return scan_probe_entries(stream, syncprobe.proc_prefix(series), wanted)

    return scan


def command_lines(stream: IO[bytes], limit: int = wire.MAX_COMMAND_LINE) -> Iterator[bytes]:
    """The lines of `stream` until EOF; a line longer than `limit` comes as its first limit+1
    bytes (which decode_command refuses), its rest skipped, so that no line costs more memory."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(limit + 1)
        yield line


def make_backend(options: argparse.Namespace) -> Backend:
    if options.demo:
        from ipvsman.demo import DemoBackend

        return DemoBackend(seed=options.seed)
    from ipvsman.kernel.backend import KernelBackend

    return KernelBackend(netns=options.netns, read_only=options.read_only)


def agent_audit_log(path: str | None, backend: Backend, netns: str | None = None,
                    environ: dict[str, str] | None = None) -> AuditLog:  # fmt: skip
    """This node's audit log, where ipvsman's dashboard would write it here; each line names the
    node (its hostname) as the agent's, and the address the ssh session came from."""
    from ipvsman.ui.audit import for_backend

    environ = os.environ if environ is None else environ
    audit = for_backend(path, backend, netns)
    audit.backend += f" agent node={socket.gethostname()}"
    session = (environ.get("SSH_CONNECTION") or "").split()
    if session:
        audit.backend += f" from={session[0]}"
    return audit


def _exit_when_closed(agent: Agent) -> None:
    agent.closed.wait()
    agent.stop()
    os._exit(0)


def main(argv: list[str] | None = None, stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.demo and options.netns:
        build_parser().error("--demo serves a simulated director, --netns a real one: pick one")
    backend = make_backend(options)
    try:
        audit = agent_audit_log(options.audit_log, backend, options.netns)
    except AuditLogError as exc:
        build_parser().error(str(exc))
    agent = Agent(backend, stdout or sys.stdout, read_only=options.read_only, interval=options.interval,
                  conn_budget=options.conn_budget, connections=options.connections, netns=options.netns,
                  audit=audit)  # fmt: skip
    agent.start()
    # Nobody reads what we write (the session died, stdin still open): end the process.
    threading.Thread(target=_exit_when_closed, args=(agent,), name="ipvsman-agent-watch", daemon=True).start()
    try:
        for line in command_lines(stdin or sys.stdin.buffer):
            agent.feed(line)
            if agent.closed.is_set():
                break
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    return 0
