"""The polling thread: reads a backend at an interval, builds snapshots and runs commands."""

from __future__ import annotations

import collections
import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ipvsman.backend import Backend, BackendError
from ipvsman.model import (
    TEMPLATE_STATES,
    Arrangement,
    Connection,
    ConnectionTable,
    DestHistory,
    DestKey,
    DestPositions,
    DestStates,
    RawState,
    Service,
    ServiceKey,
    Snapshot,
    StateCounts,
    layout_signature,
)

log = logging.getLogger(__name__)

HISTORY_LENGTH = 60  # samples of cps kept per service and real server (a minute at 1 s)


@dataclass(frozen=True)
class Command:
    """Something to do in the polling thread; `describe()` is what the status bar says."""

    def run(self, backend: Backend) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class SetWeight(Command):
    dest: DestKey
    old_weight: int
    new_weight: int

    def run(self, backend: Backend) -> str:
        backend.set_weight(self.dest, self.new_weight)
        return f"weight of {self.dest} {self.old_weight} -> {self.new_weight}"

    def describe(self) -> str:
        return f"set weight of {self.dest} to {self.new_weight}"


@dataclass(frozen=True)
class AddDest(Command):
    service: ServiceKey
    address: str
    port: int
    forward: str
    weight: int

    def run(self, backend: Backend) -> str:
        backend.add_dest(self.service, self.address, self.port, self.forward, self.weight)
        return f"added {self.address}:{self.port} to {self.service}"

    def describe(self) -> str:
        return f"add {self.address}:{self.port} to {self.service}"


@dataclass(frozen=True)
class RemoveDest(Command):
    dest: DestKey

    def run(self, backend: Backend) -> str:
        backend.remove_dest(self.dest)
        return f"removed {self.dest}"

    def describe(self) -> str:
        return f"remove {self.dest}"


@dataclass(frozen=True)
class CallInPoller(Command):
    """Run any function with the backend in the polling thread (resync, sync test)."""

    function: Callable[[Backend], str] = field(compare=False)
    label: str = "task"

    def run(self, backend: Backend) -> str:
        return self.function(backend)

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class CommandResult:
    command: Command
    ok: bool
    message: str  # one line: what was done, or why it was refused


SnapshotCallback = Callable[[Snapshot], None]
ResultCallback = Callable[[CommandResult], None]


_ROUTING_FIELDS = operator.itemgetter(*(Connection._fields.index(name) for name in (
    "protocol", "virtual", "virtual_port", "dest", "dest_port", "state")))  # fmt: skip


def aggregate_connections(
    services: Iterable[Service], connections: Iterable[Connection]
) -> tuple[dict[ServiceKey, StateCounts], DestStates]:
    """Count connections by state per service and per real server.

    A connection names its virtual address and port; fwmark services have none, so their
    connections are matched by real server instead (by address alone for a port-0 real server,
    whose connections carry the virtual port). Persistence templates are not counted.
    """
    by_virtual: dict[tuple[str, str, int], ServiceKey] = {}  # as /proc spells it: ("TCP", VIP, port)
    by_dest: dict[tuple[str, int], list[DestKey]] = collections.defaultdict(list)
    for service in services:
        key = service.key
        if key.fwmark:
            for dest in service.dests:
                by_dest[(dest.address, dest.port)].append(service.dest_key(dest))
        else:
            by_virtual[((key.protocol or "").upper(), key.address, key.port)] = key

    # Connections first counted by what decides where they go (in C: Counter over a map, or over
    # a ConnectionTable's codes), then each distinct (virtual, real server, state) is placed once:
    # a table of 200,000 entries has a few thousand of them, one of 10,000 entries over 10,000
    # real servers as many as entries. Placed by tuples of strings and ints (hashed in C):
    # service keys and DestKeys hash in Python.
    if isinstance(connections, ConnectionTable):
        tally = connections.routing_counts()
    else:
        tally = collections.Counter(map(_ROUTING_FIELDS, connections))
    counted: dict[object, tuple[ServiceKey, dict[str, int], dict[tuple[str, int], dict[str, int]]]] = {}
    for (protocol, virtual, virtual_port, dest, dest_port, state), count in tally.items():
        if protocol == "IP" or state in TEMPLATE_STATES:  # Connection.is_template
            continue
        routed = (protocol, virtual, virtual_port)
        slot = counted.get(routed)
        if slot is None:
            skey = by_virtual.get(routed)
            if skey is None:  # a fwmark service, found by its real server and counted under its key
                dkeys = by_dest.get((dest, dest_port)) or by_dest.get((dest, 0))
                if not dkeys:
                    continue
                skey = routed = dkeys[0].service
                dest, dest_port = dkeys[0].address, dkeys[0].port
            slot = counted.get(routed) or counted.setdefault(routed, (skey, {}, {}))
        where = (dest, dest_port)
        _, states, dests = slot
        states[state] = states.get(state, 0) + count
        found = dests.get(where)
        if found is None:
            dests[where] = {state: count}
        else:
            found[state] = found.get(state, 0) + count
    # One slot a service: a routed tuple names one service, and a fwmark service is its own key.
    service_states = {skey: StateCounts(states) for skey, states, _ in counted.values()}
    return service_states, DestStates({skey: dests for skey, _, dests in counted.values()})


class RateHistory:
    """A bounded history of cps per service and real server; forgets what disappeared.

    Each poll makes new tuples for the services (the snapshots handed out never change); real
    servers get one column a poll, put together per real server only when asked (DestHistory).
    """

    def __init__(self, length: int = HISTORY_LENGTH):
        self.length = length
        self._services: dict[ServiceKey, tuple[int, ...]] = {}
        self._dest_columns: collections.deque = collections.deque(maxlen=length)
        self._positions: tuple[int | None, DestPositions | None] = (None, None)  # (layout, its positions)

    def add(self, services: Sequence[Service], layout: int | None = None) -> tuple[dict, DestHistory]:
        """This poll's rates; `layout` numbers the set of services and real servers (the same
        number promises the same dests in the same order), None when unknown."""
        keep = 1 - self.length  # the newest length-1 samples, then this poll's
        old_services = self._services
        new_services = {s.key: old_services.get(s.key, ())[keep:] + (s.rates.cps,) for s in services}
        self._services = new_services
        known_layout, positions = self._positions
        if layout is None or layout != known_layout:  # positions is None only before a layout is known
            positions = DestPositions(services)
            self._positions = (layout, positions)
        self._dest_columns.append((positions, [dest.rates.cps for service in services for dest in service.dests]))
        return new_services, DestHistory(self._dest_columns)


class Poller(threading.Thread):
    """Polls `backend` every `interval` seconds and runs queued commands between polls.

    All backend calls happen on this thread. Results leave it only through the two
    callbacks, which must hand them to the UI thread themselves (MainLoop.call_from_thread).
    """

    def __init__(
        self,
        backend: Backend,
        on_snapshot: SnapshotCallback,
        on_result: ResultCallback | None = None,
        interval: float = 1.0,
        connections: bool = True,
        history: int = HISTORY_LENGTH,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(name="ipvsman-poller", daemon=True)
        self.backend = backend
        self.on_snapshot = on_snapshot
        self.on_result = on_result or (lambda result: None)
        self.interval = interval
        self.read_connections = connections
        self.clock = clock
        self._history = RateHistory(history)
        self._commands: queue.Queue[Command | None] = queue.Queue()
        self._stop_event = threading.Event()
        self._paused = threading.Event()
        self._seq = 0
        self._last_good: RawState | None = None
        self._layout = 0  # Snapshot.layout: counts changes of layout_signature
        self._layout_signature: tuple | None = None
        self._arrangement: Arrangement | None = None  # of the current layout
        self._last_histories: tuple[dict, DestHistory] = ({}, DestHistory())
        self._last_aggregates: tuple[dict, dict] = ({}, {})
        self.open_error: str | None = None

    # -- called from any thread ------------------------------------------------------------
    def submit(self, command: Command) -> None:
        """Queue a command; it runs before the next poll, which then shows its effect."""
        self._commands.put(command)

    def poll_now(self) -> None:
        """Wake the thread for an immediate poll."""
        self._commands.put(None)

    def pause(self) -> None:
        self._paused.set()
        self.poll_now()

    def resume(self) -> None:
        self._paused.clear()
        self.poll_now()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self, timeout: float | None = 2.0) -> None:
        self._stop_event.set()
        self._commands.put(None)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.backend.open()
        except BackendError as exc:
            self.open_error = str(exc)
        except Exception as exc:  # never let the thread die silently
            log.exception("backend open failed")
            self.open_error = f"cannot open {self.backend.name} backend: {exc}"
        try:
            while not self._stop_event.is_set():
                if not self._paused.is_set():
                    self.on_snapshot(self.poll_once())
                else:
                    self.on_snapshot(self._paused_snapshot())
                self._wait_and_run_commands()
        finally:
            try:
                self.backend.close()
            except Exception:
                log.exception("backend close failed")

    def _wait_and_run_commands(self) -> None:
        deadline = time.monotonic() + self.interval
        while not self._stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                command = self._commands.get(timeout=remaining)
            except queue.Empty:
                return
            if command is None:
                return
            self.run_command(command)
            # A change shows at once: poll right after it, not at the next tick.
            return

    def run_command(self, command: Command) -> CommandResult:
        if self.open_error:
            result = CommandResult(command, False, f"{command.describe()}: refused: {self.open_error}")
        else:
            try:
                result = CommandResult(command, True, command.run(self.backend))
            except BackendError as exc:
                result = CommandResult(command, False, f"{command.describe()}: refused: {exc}")
            except Exception as exc:
                log.exception("command failed")
                result = CommandResult(command, False, f"{command.describe()}: failed: {exc}")
        self.on_result(result)
        return result

    def poll_once(self) -> Snapshot:
        """Poll the backend once and build a snapshot; a failure keeps the last good state."""
        started = time.monotonic()
        error = self.open_error
        state = None
        if error is None:
            try:
                state = self.backend.poll(connections=self.read_connections)
            except BackendError as exc:
                error = str(exc)
            except Exception as exc:
                log.exception("poll failed")
                error = f"poll failed: {type(exc).__name__}: {exc}"
        if state is not None:
            self._last_good = state
            signature = layout_signature(state.services)
            if signature != self._layout_signature:
                self._layout_signature = signature
                self._layout += 1
                # Here, not in the UI thread: at 100,000 real servers it takes a good part of a second.
                self._arrangement = Arrangement(state.services)
            self._last_histories = self._history.add(state.services, self._layout)
            if state.connections is not None:
                self._last_aggregates = aggregate_connections(state.services, state.connections)
            else:
                self._last_aggregates = ({}, {})
        return self._snapshot(self._last_good or RawState(), time.monotonic() - started, error)

    def _paused_snapshot(self) -> Snapshot:
        return self._snapshot(self._last_good or RawState(), 0.0, None, paused=True)

    def _snapshot(self, state: RawState, seconds: float, error: str | None, paused: bool = False) -> Snapshot:
        self._seq += 1
        return Snapshot(
            seq=self._seq,
            taken_at=self.clock(),
            poll_seconds=seconds,
            backend=self.backend.name,
            writable=self.backend.writable and self.open_error is None,
            state=state,
            service_states=self._last_aggregates[0],
            dest_states=self._last_aggregates[1],
            service_history=self._last_histories[0],
            dest_history=self._last_histories[1],
            error=error,
            paused=paused,
            layout=self._layout if self._layout_signature is not None else None,
            arrangement=self._arrangement,
        )


def snapshot_once(backend: Backend, connections: bool = True) -> Snapshot:
    """Open the backend, poll it once in this thread and close it: for --once."""
    poller = Poller(backend, on_snapshot=lambda s: None, connections=connections)
    try:
        backend.open()
    except BackendError as exc:
        poller.open_error = str(exc)
    try:
        return poller.poll_once()
    finally:
        backend.close()
