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
from ipvsman.cluster import wire
from ipvsman.cluster.state import Command, connection_key
from ipvsman.model import DestKey, Snapshot
from ipvsman.poller import AddDest, CommandResult, Poller, RemoveDest, SetWeight

READ_TABLE_WAIT = 60.0  # seconds a read-table request waits for a read before it is answered with a refusal


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
    ):
        self.backend = backend
        self.output = output
        self.read_only = read_only
        self.netns = netns
        self._addresses = addresses or self._local_addresses
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.poller = Poller(backend, self._on_snapshot, self._on_result, interval=interval,
                             connections=connections, conn_budget=conn_budget, views=False)  # fmt: skip
        self.snapshot: Snapshot | None = None
        self.table = None  # the newest TableKeys sent
        self._table_seq: int | None = None  # TableRead.seq of the newest table sent
        self._sent_addresses: object = ()  # what the newest addresses line said
        self._pending: dict[int, int] = {}  # id(poller command) -> request id
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
        request_id = self._pending.pop(id(result.command), None)
        self.write(wire.encode_reply(request_id, result.ok, result.message))

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
        if self.read_only and command.kind != "read-table":
            return "the agent runs with --read-only"
        if command.kind in ("resync", "sync-test"):
            if self.backend.name == "demo":
                return "not in the demo (it would send to the real network)"
            if self._job is not None and self._job.is_alive():
                return f"{self._job.name.removeprefix('ipvsman-')} still running"
        if self.snapshot is None and command.kind != "read-table":
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
        self._pending[id(command)] = request_id
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


def _exit_when_closed(agent: Agent) -> None:
    agent.closed.wait()
    agent.stop()
    os._exit(0)


def main(argv: list[str] | None = None, stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.demo and options.netns:
        build_parser().error("--demo serves a simulated director, --netns a real one: pick one")
    agent = Agent(make_backend(options), stdout or sys.stdout, read_only=options.read_only, interval=options.interval,
                  conn_budget=options.conn_budget, connections=options.connections, netns=options.netns)  # fmt: skip
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
