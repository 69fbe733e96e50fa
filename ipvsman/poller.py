"""The polling thread: reads a backend at an interval, builds snapshots and runs commands."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from ipvsman import collector, conntable
from ipvsman.backend import Backend, BackendError
from ipvsman.model import (
    SKIP_MALFORMED,
    Arrangement,
    Connection,
    DestHistory,
    DestKey,
    DestPositions,
    DestStates,
    RawState,
    Service,
    ServiceKey,
    Snapshot,
    StateCounts,
    TableStatus,
    layout_signature,
)
from ipvsman.threadnames import name_this_thread

log = logging.getLogger(__name__)

HISTORY_LENGTH = 60  # samples of cps kept per service and real server (a minute at 1 s)
OPEN_RETRY_FIRST, OPEN_RETRY_MAX = 2.0, 30.0  # seconds between tries to open a backend that failed to


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


def aggregate_connections(
    services: Iterable[Service], connections: Iterable[Connection]
) -> tuple[dict[ServiceKey, StateCounts], DestStates]:
    """Count connections by state per service and per real server, placed as conntable.place()
    places them (connections it cannot place for sure are left out). Persistence templates are
    not counted."""
    placement = conntable.place(services, conntable.routing_counts(connections))
    service_states = {key: StateCounts(states) for key, states in placement.service_states.items()}
    return service_states, DestStates(placement.dest_states)


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

    All backend calls happen on this thread, but for the connection table: with a
    `conn_budget` (percent of one CPU) it is read by a conntable.TableReader, in a thread of its
    own while this one runs, inline in poll_once() otherwise. Without one (None) each poll reads
    it whole, as tests and screenshots want. Results leave the thread only through the two
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
        conn_budget: float | None = None,
        views: bool = True,
    ):
        super().__init__(name="ipvsman-poller", daemon=True)
        self.views = views  # False (one-shot output): no arrangement or rate history for the views
        self.backend = backend
        self.on_snapshot = on_snapshot
        self.on_result = on_result or (lambda result: None)
        self.interval = interval
        self.read_connections = connections
        self.clock = clock
        self.conn_budget = conn_budget
        # --no-connections with a budget: never read unless asked with a key.
        budget = conntable.TableBudget(None if conn_budget is None else conn_budget if connections else 0.0)
        self.table = conntable.TableReader(backend, budget, clock=clock)
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
        self._last_aggregates: tuple = ({}, {}, {})
        self._placed_for: tuple | None = None  # (table read, layout) the placement was made for
        self._placement: conntable.Placement | None = None
        self._effective_interval = interval
        self.open_error: str | None = None

    # -- called from any thread ------------------------------------------------------------
    def submit(self, command: Command) -> None:
        """Queue a command; it runs before the next poll, which then shows its effect."""
        self._commands.put(command)

    def poll_now(self) -> None:
        """Wake the thread for an immediate poll."""
        self._commands.put(None)

    def read_table_now(self) -> None:
        """Read the whole connection table as soon as possible, whatever the budget says."""
        self.table.request()
        if not self.table.running:
            self.poll_now()

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
        self.table.stop(timeout)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    # -- the thread ------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self.backend.open()
            self.open_error = None
        except BackendError as exc:
            self.open_error = str(exc)
        except Exception as exc:  # never let the thread die silently
            log.exception("backend open failed")
            self.open_error = f"cannot open {self.backend.name} backend: {exc}"
        if self.conn_budget is not None and self.open_error is None and not self.table.running:
            self.table.start()

    def run(self) -> None:
        name_this_thread()
        self._open()
        retry_wait, retry_at = OPEN_RETRY_FIRST, time.monotonic() + OPEN_RETRY_FIRST
        try:
            while not self._stop_event.is_set():
                started = time.monotonic()
                if self.open_error is not None and started >= retry_at:
                    # ip_vs loaded later, the named namespace made later: try again, less and less often.
                    self._open()
                    retry_wait = min(OPEN_RETRY_MAX, retry_wait * 2)
                    retry_at = started + retry_wait
                if not self._paused.is_set():
                    # Collected before and frozen after (with the dashboard's Schedule running): a
                    # full collection then never walks the snapshots (ipvsman.collector).
                    with collector.building_snapshot():
                        snapshot = self.poll_once()
                    self.on_snapshot(snapshot)
                else:
                    self.on_snapshot(self._paused_snapshot())
                self._wait_and_run_commands(started)
        finally:
            self.table.stop()
            try:
                self.backend.close()
            except Exception:
                log.exception("backend close failed")

    def period(self, poll_seconds: float) -> float:
        """Seconds from one poll's start to the next: the interval, stretched when a poll takes
        more than half of it, so that polls never run back to back (at most half the time)."""
        return max(self.interval, 2 * poll_seconds)

    def _wait_and_run_commands(self, started: float) -> None:
        """Until the next poll is due (`started`: when this one began), running queued commands."""
        deadline = started + self.period(time.monotonic() - started)
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
        budgeted = self.conn_budget is not None
        if error is None:
            try:
                state = self.backend.poll(connections=self.read_connections and not budgeted)
            except BackendError as exc:
                error = str(exc)
            except Exception as exc:
                log.exception("poll failed")
                error = f"poll failed: {type(exc).__name__}: {exc}"
        if state is not None:
            signature = layout_signature(state.services)
            if signature != self._layout_signature:
                self._layout_signature = signature
                self._layout += 1
                # Here, not in the UI thread: at 100,000 real servers it takes a good part of a second.
                self._arrangement = Arrangement(state.services) if self.views else None
            if self.views:
                self._last_histories = self._history.add(state.services, self._layout)
            if budgeted:
                # No services and a warning: netlink was refused (not root), the size is unknown.
                self.table.hint(None if not state.services and state.warnings else state.services)
                if not self.table.running and self.open_error is None:
                    self.table.read_if_due()
        seconds = time.monotonic() - started
        taken_at = self.clock()  # once a poll: stepped clocks (screenshots) count the calls
        if state is not None and not budgeted:
            self._table_of_poll(state, taken_at, seconds)
        table = self.table.status(self.interval, taken_at)
        if state is not None:
            self._last_good = self._with_table(state, table)
        self._effective_interval = self.period(seconds)
        return self._snapshot(self._last_good or RawState(), seconds, error, taken_at=taken_at, table=table)

    def _table_of_poll(self, state: RawState, taken_at: float, seconds: float) -> None:
        """Without a budget the poll read the table itself: it is the newest read."""
        self.table.adopt(state.connections, taken_at - seconds, seconds, conntable.expected_entries(state.services))

    def _with_table(self, state: RawState, status: TableStatus) -> RawState:
        """The poll's state with the newest table read, and its counts placed under this poll's
        services (again only when the read or the set of services changed)."""
        published = self.table.published
        if published is None:
            self._last_aggregates = ({}, {}, {})
            self._placement, self._placed_for = None, None
            return state if state.connections is None else replace(state, connections=None)
        read, connections, routing = published
        if self._placed_for != (read.seq, self._layout):
            self._placement = conntable.place(state.services, routing)
            self._placed_for = (read.seq, self._layout)
        factor = (status.expected or read.entries) / read.entries if read.entries and not read.complete else 1.0
        self._last_aggregates = conntable.counts_for_snapshot(self._placement, state.services, status.current, factor)
        skipped = state.skipped
        if read.malformed:
            skipped = {**skipped, SKIP_MALFORMED: skipped.get(SKIP_MALFORMED, 0) + read.malformed}
        return replace(state, connections=connections, skipped=skipped)

    def _paused_snapshot(self) -> Snapshot:
        return self._snapshot(self._last_good or RawState(), 0.0, None, paused=True)

    def _snapshot(
        self,
        state: RawState,
        seconds: float,
        error: str | None,
        paused: bool = False,
        taken_at: float | None = None,
        table: TableStatus | None = None,
    ) -> Snapshot:
        self._seq += 1
        if taken_at is None:
            taken_at = self.clock()
        if table is None:
            table = self.table.status(self.interval, taken_at)
        return Snapshot(
            seq=self._seq,
            taken_at=taken_at,
            poll_seconds=seconds,
            backend=self.backend.name,
            writable=self.backend.writable and self.open_error is None,
            state=state,
            service_states=self._last_aggregates[0],
            dest_states=self._last_aggregates[1],
            ambiguous_states=self._last_aggregates[2],
            service_history=self._last_histories[0],
            dest_history=self._last_histories[1],
            error=error,
            paused=paused,
            layout=self._layout if self._layout_signature is not None else None,
            arrangement=self._arrangement,
            table=table,
            interval=self._effective_interval,
        )


def snapshot_once(backend: Backend, connections: bool = True, conn_budget: float | None = None) -> Snapshot:
    """Open the backend, poll it once in this thread and close it: for --once.

    With `conn_budget`, the connection table is read as the dashboard's first read would be:
    whole when the kernel counts it small, else a prefix (counts by state then estimated).
    """
    poller = Poller(backend, on_snapshot=lambda s: None, connections=connections, conn_budget=conn_budget, views=False)
    try:
        backend.open()
    except BackendError as exc:
        poller.open_error = str(exc)
    try:
        return poller.poll_once()
    finally:
        backend.close()
