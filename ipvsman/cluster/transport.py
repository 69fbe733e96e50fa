"""AgentCluster: every director's `ipvsman agent` as one long-lived session through ClusterShell (ssh or --via)."""

from __future__ import annotations

import itertools
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from ipvsman import __version__
from ipvsman.cluster import wire
from ipvsman.cluster.state import AGENT_PROTOCOL, ClusterSnapshot, Command, CommandReply, NodeState, TableKeys
from ipvsman.threadnames import name_this_thread

log = logging.getLogger(__name__)

DEFAULT_AGENT = "ipvsman agent"
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds before a lost node is tried again, doubling up to the max
HELLO_TIMEOUT = 60.0  # seconds from starting a session to the agent's version header (a slow ssh, a slow start)
REPLY_TIMEOUT = 30.0  # seconds a command waits for its reply; resync and sync test get longer
SLOW_COMMANDS = {"resync": 600.0, "sync-test": 60.0, "read-table": 90.0, "probe-watch": 90.0}
TICK = 0.25  # seconds between the session thread's checks (stalls, retries, command deadlines)
STOP_WAIT = 3.0


class ClusterError(ValueError):
    """The nodes or options cannot be used; the message is one line."""


def expand_nodes(nodes: str | Iterable[str]) -> list[str]:
    """The node names of a ClusterShell nodeset ("lvs-[1-2]", "@lvs", "a,b") in its order; ClusterError when bad."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    text = nodes if isinstance(nodes, str) else ",".join(nodes)
    try:
        names = list(NodeSet(text))
    except NodeSetException as exc:
        raise ClusterError(f"bad nodeset {text!r}: {wire.one_line(str(exc), 120)}") from None
    if not names:
        raise ClusterError(f"nodeset {text!r} names no node")
    return names


def check_via(via: str | None) -> str | None:
    if via is not None and "%h" not in via:
        raise ClusterError(f"--via must name the node with %h, e.g. 'ip netns exec %h', got {via!r}")
    return via


@dataclass
class _Session:
    """One node's session as the ClusterShell thread keeps it (that thread alone touches it)."""

    name: str
    state: NodeState
    worker: object = None  # the running ClusterShell worker; None between sessions
    started: float = 0.0  # time.monotonic() when the worker was started
    last_line: float = 0.0  # time.monotonic() of the newest line
    hello: wire.Hello | None = None
    stderr: str | None = None  # the newest line on stderr: ssh's and the shell's complaints
    retry_wait: float = RETRY_FIRST
    retry_at: float = 0.0
    snapshots: int = 0  # received in this session
    pending: dict = field(default_factory=dict)  # request id -> (Command, on_reply, deadline)


class AgentCluster:
    """A ClusterSource over ClusterShell: `ipvsman agent` on each node through the ssh worker, or
    through the exec worker as `VIA agent-command` (`via` holds %h, the node's name).

    A node that cannot be reached, whose agent exits or stops writing, or that speaks another
    protocol is marked unreachable (since when, why) and tried again with a doubling wait;
    the others go on. Everything ClusterShell does runs in one thread of ours, which owns a Task;
    other threads reach it through a task port.
    """

    def __init__(
        self,
        nodes: str | Iterable[str],
        *,
        agent_command: str = DEFAULT_AGENT,
        agent_args: Iterable[str] = (),
        via: str | None = None,
        fanout: int | None = None,
        connect_timeout: float | None = None,
        ssh_options: str | None = None,
        stall_after: float = 15.0,
        hello_timeout: float = HELLO_TIMEOUT,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        clock: Callable[[], float] = time.time,
    ):
        self.names = expand_nodes(nodes)
        self.via = check_via(via)
        self.command_line = " ".join([agent_command, *map(shlex.quote, agent_args)])
        self.fanout = fanout
        self.connect_timeout = connect_timeout
        self.ssh_options = ssh_options
        self.stall_after = stall_after
        self.hello_timeout = hello_timeout
        self.retry_first, self.retry_max = retry_first, retry_max
        self.clock = clock
        from ClusterShell.Defaults import DEFAULTS

        effective = fanout if fanout is not None else DEFAULTS.fanout
        if len(self.names) > effective:
            # A session per node lives as long as the dashboard: nodes past the fanout would never start.
            raise ClusterError(f"{len(self.names)} nodes, more than the fanout {effective}: raise --fanout")
        self._sessions = {name: _Session(name, NodeState(name), retry_wait=retry_first) for name in self.names}
        self._on_update: Callable[[ClusterSnapshot], None] = lambda snapshot: None
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._task = None
        self._port = None
        self._timer = None
        self._latest = ClusterSnapshot(tuple(s.state for s in self._sessions.values()), clock())
        self._latest_lock = threading.Lock()
        self.start_error: str | None = None

    # -- the ClusterSource protocol -------------------------------------------------------------------
    def start(self, on_update: Callable[[ClusterSnapshot], None]) -> None:
        self._on_update = on_update
        self._thread = threading.Thread(target=self._run, name="ipvsman-cluster", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        if self._port is not None:
            self._port.msg_send(("stop",))
        self._thread.join(STOP_WAIT)

    def command(self, node: str, command: Command, on_reply: Callable[[CommandReply], None]) -> None:
        if node not in self._sessions:
            on_reply(CommandReply(node, command, False, f"{command.kind}: no node {node} in the nodeset"))
            return
        if self._port is None or self._thread is None or not self._thread.is_alive():
            on_reply(CommandReply(node, command, False, f"{command.kind}: {node}: the cluster is not being watched"))
            return
        if not self._port.msg_send(("command", node, command, on_reply)):
            on_reply(CommandReply(node, command, False, f"{command.kind}: {node}: the cluster is stopping"))

    # -- for --once and tests --------------------------------------------------------------------------
    def latest(self) -> ClusterSnapshot:
        with self._latest_lock:
            return self._latest

    def settled(self) -> bool:
        """Every node has sent a snapshot or failed at least once: enough for a one-shot report."""
        return all(node.snapshot is not None or node.error is not None for node in self.latest().nodes)

    # -- the session thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        from ClusterShell.Task import task_self

        name_this_thread()
        try:
            task = task_self()
            # The task keeps every line of every node by default: a stream that runs for days must not.
            task.set_default("stdout_msgtree", False)
            task.set_default("stderr_msgtree", False)
            if self.fanout is not None:
                task.set_info("fanout", self.fanout)
            if self.connect_timeout is not None:
                task.set_info("connect_timeout", self.connect_timeout)
            if self.ssh_options:
                task.set_info("ssh_options", self.ssh_options)
            self._task = task
            self._port = task.port(handler=_PortHandler(self), autoclose=False)
            self._timer = task.timer(TICK, _TimerHandler(self), interval=TICK, autoclose=False)
            for session in self._sessions.values():
                self._launch(session)
        except Exception as exc:
            log.exception("cluster start failed")
            self.start_error = f"cannot start ClusterShell: {type(exc).__name__}: {exc}"
            self._ready.set()
            return
        self._ready.set()
        try:
            task.resume()
        except Exception:
            log.exception("cluster task failed")
        finally:
            for session in self._sessions.values():
                self._fail_pending(session, "the cluster view stopped")

    def _launch(self, session: _Session) -> None:
        handler = _NodeHandler(self, session)
        now = time.monotonic()
        session.started = session.last_line = now
        session.hello, session.stderr, session.snapshots = None, None, 0
        if self.via:
            # The exec worker replaces %h (and %n) in the whole line: the agent's own % are kept.
            line = f"{self.via} {self.command_line.replace('%', '%%')}"
            session.worker = self._task.shell(line, nodes=session.name, handler=handler, stderr=True, remote=False)
        else:
            session.worker = self._task.shell(self.command_line, nodes=session.name, handler=handler, stderr=True)

    def _publish(self) -> None:
        snapshot = ClusterSnapshot(tuple(s.state for s in self._sessions.values()), self.clock())
        with self._latest_lock:
            self._latest = snapshot
        try:
            self._on_update(snapshot)
        except Exception:  # the dashboard's problem must not end every node's session
            log.exception("cluster update callback failed")

    def _set(self, session: _Session, **changes) -> None:
        reachable = changes.get("reachable", session.state.reachable)
        if reachable != session.state.reachable or session.state.since is None:
            changes.setdefault("since", self.clock())
        session.state = replace(session.state, **changes)

    def _lose(self, session: _Session, reason: str, worker=None) -> None:
        """The session ended or is given up: mark the node, fail its commands, plan the next try."""
        if worker is not None and worker is not session.worker:
            return  # an old session's late event
        ending, session.worker = session.worker, None
        if ending is not None:
            try:
                ending.abort()
            except Exception:
                log.debug("abort of %s failed", session.name, exc_info=True)
        if self._stopping:
            return
        # A session that worked for a while starts the waits over; one that keeps failing waits longer.
        if session.snapshots >= 3:
            session.retry_wait = self.retry_first
        session.retry_at = time.monotonic() + session.retry_wait
        reason = wire.one_line(f"{reason}; retry in {session.retry_wait:.0f} s")
        session.retry_wait = min(self.retry_max, session.retry_wait * 2)
        self._set(session, reachable=False, error=reason)
        self._fail_pending(session, f"{session.name} lost: {reason}")
        self._publish()

    def _fail_pending(self, session: _Session, reason: str) -> None:
        pending, session.pending = session.pending, {}
        for command, on_reply, _ in pending.values():
            _reply(on_reply, CommandReply(session.name, command, False, f"{command.kind}: {reason}"))

    # events, in the session thread
    def on_line(self, session: _Session, worker, line: bytes) -> None:
        if worker is not session.worker:
            return
        session.last_line = time.monotonic()
        try:
            message = wire.decode_agent_line(line)
        except wire.WireError as exc:
            text = line.decode(errors="replace")
            if session.hello is None:
                # A login banner, or something that is not the agent at all: kept as the likely reason.
                session.stderr = wire.one_line(text, 160)
                return
            self._set(session, error=f"bad line from agent: {exc}")
            self._publish()
            return
        if isinstance(message, wire.Hello):
            self._hello(session, message)
        elif session.hello is None:
            self._lose(session, "the agent sent no version header: is it ipvsman's agent?", worker)
        elif isinstance(message, tuple):
            session.snapshots += 1
            self._set(session, snapshot=message[1], reachable=True, received_at=self.clock(),
                      error=None if session.state.error and not session.state.reachable else session.state.error)  # fmt: skip
            self._publish()
        elif isinstance(message, wire.Addresses):
            self._set(session, addresses=message.addresses)
            if message.error:
                self._set(session, error=message.error)
            self._publish()
        elif isinstance(message, TableKeys):
            self._set(session, table=message)
            self._publish()
        elif isinstance(message, wire.Reply):
            found = session.pending.pop(message.id, None)
            if found is not None:
                command, on_reply, _ = found
                _reply(on_reply, CommandReply(session.name, command, message.ok, message.message, message.data))
        elif isinstance(message, wire.Refused):
            self._set(session, error=f"agent refused a line: {message.message}")
            self._publish()

    def _hello(self, session: _Session, hello: wire.Hello) -> None:
        if hello.protocol != AGENT_PROTOCOL:
            self._lose(session, f"agent speaks protocol {hello.protocol} (ipvsman {hello.version}), this dashboard "
                                f"{AGENT_PROTOCOL} (ipvsman {__version__}): install the same version on both",
                       session.worker)  # fmt: skip
            return
        session.hello = hello
        self._set(session, agent_version=hello.version, kernel=hello.kernel, read_only=hello.read_only)
        self._publish()

    def on_stderr(self, session: _Session, worker, line: bytes) -> None:
        if worker is session.worker and line.strip():
            session.stderr = wire.one_line(line.decode(errors="replace"), 200)

    def on_hup(self, session: _Session, worker, rc) -> None:
        if worker is not session.worker:
            return
        why = session.stderr or f"the agent exited with status {rc}"
        if rc == 255 and not self.via and not session.stderr:
            why = "ssh failed (status 255)"
        self._lose(session, why, worker)

    def on_tick(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for session in self._sessions.values():
            if session.worker is None:
                if now >= session.retry_at:
                    self._launch(session)
                continue
            if session.hello is None and now - session.started > self.hello_timeout:
                why = session.stderr or f"no answer from the agent within {self.hello_timeout:.0f} s"
                self._lose(session, why, session.worker)
            elif session.hello is not None and now - session.last_line > self.stall_after:
                self._lose(session, f"no line from the agent for {now - session.last_line:.0f} s", session.worker)
            for request_id, (command, on_reply, deadline) in list(session.pending.items()):
                if now > deadline:
                    del session.pending[request_id]
                    _reply(on_reply, CommandReply(session.name, command, False,
                                                  f"{command.kind}: {session.name} did not answer in time"))  # fmt: skip

    def on_message(self, message: tuple) -> None:
        if message[0] == "stop":
            self._stop_in_thread()
            return
        _, node, command, on_reply = message
        session = self._sessions[node]
        if session.worker is None or session.hello is None:
            why = session.state.error or "not connected yet"
            _reply(on_reply, CommandReply(node, command, False, f"{command.kind}: {node} is unreachable: {why}"))
            return
        request_id = next(self._ids)
        deadline = time.monotonic() + SLOW_COMMANDS.get(command.kind, REPLY_TIMEOUT)
        session.pending[request_id] = (command, on_reply, deadline)
        session.worker.write(wire.encode_command(request_id, command).encode())

    def _stop_in_thread(self) -> None:
        self._stopping = True
        for session in self._sessions.values():
            self._fail_pending(session, "the cluster view stopped")
            worker, session.worker = session.worker, None
            if worker is not None:
                try:
                    worker.set_write_eof()  # the agent ends on EOF, remote ones too
                    worker.abort()
                except Exception:
                    log.debug("closing %s failed", session.name, exc_info=True)
        if self._timer is not None:
            self._timer.invalidate()
        self._task.abort()


def _reply(on_reply: Callable[[CommandReply], None], reply: CommandReply) -> None:
    try:
        on_reply(reply)
    except Exception:
        log.exception("command reply callback failed")


def _handler_base():
    from ClusterShell.Event import EventHandler

    return EventHandler


class _NodeHandler(_handler_base()):
    def __init__(self, cluster: AgentCluster, session: _Session):
        super().__init__()
        self.cluster, self.session = cluster, session

    def ev_read(self, worker, node, sname, msg):
        if sname == worker.SNAME_STDERR:
            self.cluster.on_stderr(self.session, worker, msg)
        else:
            self.cluster.on_line(self.session, worker, msg)

    def ev_hup(self, worker, node, rc):
        self.cluster.on_hup(self.session, worker, rc)

    def ev_close(self, worker, timedout):
        # Closed without a hangup (killed, timed out): the session is over all the same.
        self.cluster.on_hup(self.session, worker, None)


class _PortHandler(_handler_base()):
    def __init__(self, cluster: AgentCluster):
        super().__init__()
        self.cluster = cluster

    def ev_msg(self, port, msg):
        self.cluster.on_message(msg)


class _TimerHandler(_handler_base()):
    def __init__(self, cluster: AgentCluster):
        super().__init__()
        self.cluster = cluster

    def ev_timer(self, timer):
        self.cluster.on_tick()


# -- `ipvsman --nodes ... --once --json` ---------------------------------------------------------------

ONCE_WAIT = 90.0  # seconds --once waits for every node's first snapshot or failure


def node_to_dict(node) -> dict:
    """One node for --once --json: reachability, versions, addresses, table keys' extent and its snapshot."""
    from ipvsman.output import snapshot_to_dict

    table = node.table
    return {
        "reachable": node.reachable,
        "since": node.since,
        "error": node.error,
        "agent_version": node.agent_version,
        "kernel": node.kernel,
        "read_only": node.read_only,
        "received_at": node.received_at,
        "addresses": None if node.addresses is None else [list(pair) for pair in node.addresses],
        "table": None if table is None else {"complete": table.complete, "fraction": table.fraction,
                                             "entries": len(table.keys), "read_at": table.read_at},  # fmt: skip
        "snapshot": None if node.snapshot is None else snapshot_to_dict(node.snapshot, connections=False),
    }


def print_cluster_once(source, stream=None, wait: float = ONCE_WAIT) -> int:
    """Watch `source` (a ClusterSource) until every node has answered or failed once, then print
    {"nodes": {name: node_to_dict}, "cluster": the comparison} as JSON. Returns EXIT_OK, or
    EXIT_NO_IPVS when a node could not be read (the JSON says which, and why)."""
    import json
    import sys

    from ipvsman.output import EXIT_NO_IPVS, EXIT_OK

    stream = stream if stream is not None else sys.stdout
    latest: list[ClusterSnapshot] = []
    settled = threading.Event()

    def on_update(snapshot: ClusterSnapshot) -> None:
        latest[:] = [snapshot]
        if all(node.snapshot is not None or node.error is not None for node in snapshot.nodes):
            settled.set()

    source.start(on_update)
    try:
        settled.wait(wait)
    finally:
        source.stop()
    if not latest:
        names = getattr(source, "names", ())
        latest.append(ClusterSnapshot(tuple(NodeState(name, error="no answer") for name in names), time.time()))
    snapshot = latest[0]
    document = {"nodes": {node.name: node_to_dict(node) for node in snapshot.nodes}, "cluster": _comparison(snapshot)}
    stream.write(json.dumps(document, indent=2 if _is_terminal(stream) else None) + "\n")
    stream.flush()
    unread = any(node.snapshot is None or not node.reachable or node.snapshot.error for node in snapshot.nodes)
    return EXIT_NO_IPVS if unread else EXIT_OK


def _comparison(snapshot: ClusterSnapshot) -> dict | None:
    try:
        from ipvsman.cluster.compare import cluster_to_dict, compare_cluster
    except ImportError:  # the comparison is another module's: without it the nodes are still printed
        return None
    return cluster_to_dict(compare_cluster(snapshot))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
