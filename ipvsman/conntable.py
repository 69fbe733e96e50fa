"""The connection table read on a CPU budget, and its counts by state scaled to the kernel's exact totals.

Reading /proc/net/ip_vs_conn costs the director more than linearly: every read() returns one page
and the kernel walks its hash table from the first bucket to get there (ipvs-facts.md), 98 s of
kernel time for 200,000 entries in the test guest. Nothing that is shown on every poll needs the
table: the real-server dump carries the kernel's exact active, inactive and persistent counts.
The table is needed for the connection list and for counts by TCP state, and for those it is
read at most as often as a share of one CPU allows (`--conn-budget`, 5% by default), measured
from each read's own cost: a read that took 3 CPU seconds waits 60 s before the next.

When the whole table cannot be read at least once every FULL_READ_PERIOD within the budget, the
reader takes a prefix of it instead, as large as the budget allows every SAMPLE_PERIOD. The
kernel lists the table in hash order, which has nothing to do with services, so a prefix is a
fair sample; its counts by state are scaled to each service's and real server's exact totals and
marked as estimates.
"""

from __future__ import annotations

import collections
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from ipvsman.backend import Backend, BackendError
from ipvsman.model import (
    TEMPLATE_STATES,
    Connection,
    ConnectionTable,
    DestKey,
    DestStates,
    Service,
    ServiceKey,
    StateCounts,
    TableRead,
    TableStatus,
    connection_total,
)
from ipvsman.threadnames import name_this_thread

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 5.0  # percent of one CPU
FULL_READ_PERIOD = 60.0  # the whole table is read when the budget allows that at least this often
SAMPLE_PERIOD = 15.0  # else a prefix the budget allows this often
FIRST_FULL = 20_000  # a table the kernel counts at most this large is read whole the first time
FIRST_SAMPLE = 10_000  # else the first read takes this many entries and learns the cost from them
MIN_SAMPLE = 1_000
GROWTH = 4.0  # a prefix grows or shrinks by at most this factor from one read to the next


def expected_entries(services: Iterable[Service]) -> int:
    """The table's size by the kernel's own counters: every entry is bound to a real server."""
    return sum(d.active_conns + d.inactive_conns + d.persist_conns for s in services for d in s.dests)


class TableBudget:
    """Decides when the table may be read and how much of it: pure arithmetic on measured costs.

    `percent` None reads the whole table every time it is asked (no budget); 0 never, unless a
    read is forced. Times are monotonic seconds.
    """

    def __init__(self, percent: float | None = DEFAULT_BUDGET):
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"connection budget must be 0-100 percent, got {percent!r}")
        self.percent = percent
        self.share = None if percent is None else percent / 100
        self.next_at: float | None = 0.0  # None: never (budget 0)
        self._last: tuple[int, float] | None = None  # (entries, CPU seconds) of the newest read
        if self.share == 0:
            self.next_at = None

    def due(self, now: float) -> bool:
        return self.share is None or (self.next_at is not None and now >= self.next_at)

    def estimate(self, entries: int) -> float | None:
        """CPU seconds a read of `entries` entries would cost, from the newest read: growing with
        the square above what was read (the kernel's walk), linearly below it; None before any."""
        if self._last is None:
            return None
        read, cost = self._last
        ratio = entries / max(read, 1)
        return cost * max(ratio, ratio * ratio)

    def limit(self, expected: int | None) -> int | None:
        """How many entries the next read may take; None for the whole table."""
        if self.share is None:
            return None
        if self._last is None:
            return None if expected is not None and expected <= FIRST_FULL else FIRST_SAMPLE
        if expected is not None:
            full = self.estimate(expected)
            if full is not None and full <= self.share * FULL_READ_PERIOD:
                return None
        read, cost = self._last
        read = max(read, MIN_SAMPLE)
        target = self.share * SAMPLE_PERIOD
        ratio = target / cost if cost > target else math.sqrt(target / cost) if cost > 0 else GROWTH
        size = int(read * min(GROWTH, max(1 / GROWTH, ratio)))
        size = max(MIN_SAMPLE, size)
        if expected is not None and size >= expected:
            return None
        return size

    def record(self, entries: int, cpu_seconds: float, started: float) -> None:
        """A read of `entries` began at `started` and cost `cpu_seconds`: the next waits for its share."""
        if entries > 0 or self._last is None:
            self._last = (entries, cpu_seconds)
        if self.share:
            self.next_at = started + cpu_seconds / self.share

    def wait_for(self, cpu_seconds: float) -> float | None:
        """Seconds a read of that cost waits before the next; None without a budget or with 0."""
        return cpu_seconds / self.share if self.share else None


class TableReader:
    """Reads a backend's connection table when its budget allows, and counts it by routing.

    Either in a thread of its own (start(); the polling thread calls hint() after each poll),
    so that a slow read never holds up polls, or inline (read_if_due(), for one-shot output and
    stepped tests). A read can be forced (request()) whatever the budget says; its cost is still
    charged, so the reads that follow wait for it.
    """

    def __init__(
        self,
        backend: Backend,
        budget: TableBudget,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ):
        self.backend = backend
        self.budget = budget
        self.clock, self.monotonic, self.cpu_clock = clock, monotonic, cpu_clock
        # The newest read that succeeded, its connections and their routing counts, published as
        # one tuple: a reader in another thread never sees one read's counts with another's seq.
        self.published: tuple[TableRead, Sequence[Connection], collections.Counter] | None = None
        self.last_error: str | None = None
        self._seq = 0
        self._expected: int | None = None  # table size by the kernel's counters, as of the newest read
        self._services: Sequence[Service] | None = None  # of the newest poll; None: unknown
        # A poll came since the last read: the thread reads at most once a poll (a table read
        # more often than the counts it is shown with would be spent for nothing).
        self._hinted = False
        self._forced = False
        self._reading_since: float | None = None
        self._reading_forced = False
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- any thread -----------------------------------------------------------------------------
    def hint(self, services: Sequence[Service] | None) -> None:
        """What the newest poll says of the table (its size, whether PE data is needed; None: the
        poll could not read the services, so the size is unknown); wakes the thread."""
        with self._wake:
            self._hinted = True
            # Only kept: what they say is worked out by the read (in its thread, on its budget),
            # not by every poll (a walk over every real server).
            self._services = services
            self._wake.notify()

    def request(self) -> None:
        """Read the whole table as soon as possible, whatever the budget says."""
        with self._wake:
            self._forced = True
            self._wake.notify()

    def status(self, interval: float, now: float) -> TableStatus:
        """What a snapshot taken at `now` (time.time()) says about the table."""
        latest = self.latest
        now_mono = self.monotonic()
        next_at = self.budget.next_at
        if self.budget.share is None:
            next_read = now
        elif next_at is None:
            next_read = None
        else:
            next_read = now + max(0.0, next_at - now_mono)
        current = latest is not None and latest.complete and now - latest.started_at <= interval + latest.wall_seconds + 1
        return TableStatus(
            read=latest,
            current=current,
            budget_percent=self.budget.percent,
            next_read_at=next_read,
            reading_since=self._reading_since,
            reading_forced=self._reading_forced,
            expected=self._expected,
            last_error=self.last_error,
            full_estimate=self.budget.estimate(self._expected) if self._expected is not None else None,
        )

    @property
    def latest(self) -> TableRead | None:
        """The newest read that succeeded."""
        published = self.published
        return published[0] if published is not None else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipvsman-table", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the reading thread, or inline ------------------------------------------------------------
    def read_if_due(self) -> TableRead | None:
        """Read now if forced or the budget allows; returns the read made, None when none was."""
        with self._wake:
            forced, self._forced = self._forced, False
        if not forced and not self.budget.due(self.monotonic()):
            return None
        return self._read(forced)

    def _run(self) -> None:
        name_this_thread()
        while True:
            with self._wake:
                while not self._stopped and not self._forced and not self._due_with_hint():
                    self._wake.wait(self._seconds_to_due())
                if self._stopped:
                    return
            try:
                self.read_if_due()
            except Exception:  # never let the thread die silently: the dashboard says why
                log.exception("reading the connection table failed")
                self.last_error = "reading the connection table failed unexpectedly (see the log)"
                with self._wake:
                    self._wake.wait(FULL_READ_PERIOD)

    def _due_with_hint(self) -> bool:
        # A read waits for a poll's hint: the table's size by its counters decides how much to read.
        return self._hinted and self.budget.due(self.monotonic())

    def _seconds_to_due(self) -> float | None:
        next_at = self.budget.next_at
        if next_at is None or not self._hinted:
            return None  # until woken
        return max(0.01, next_at - self.monotonic())

    def adopt(self, connections: Sequence[Connection] | None, started_at: float, seconds: float, expected: int) -> None:
        """A whole table read by a poll (no budget): it becomes the newest read."""
        if connections is None:
            self.published = None
            return
        self._seq += 1
        self._expected = expected
        read = TableRead(
            seq=self._seq, complete=True, entries=len(connections), started_at=started_at,
            cpu_seconds=seconds, wall_seconds=seconds, expected=expected,
        )  # fmt: skip
        self.published = (read, connections, routing_counts(connections))

    def _read(self, forced: bool) -> TableRead | None:
        started, started_mono, cpu = self.clock(), self.monotonic(), self.cpu_clock()
        self._hinted = False
        services = self._services  # what the newest poll saw; counted here, charged to the read
        expected = self._expected = None if services is None else expected_entries(services)
        want_pe_data = services is not None and any(service.pe_name for service in services)
        limit = None if forced else self.budget.limit(expected)
        self._reading_since, self._reading_forced = started, forced
        try:
            connections, complete, malformed = self.backend.read_table(limit, want_pe_data)
            routing = routing_counts(connections)
        except BackendError as exc:
            self.last_error = str(exc)
            connections = None
        finally:
            self._reading_since, self._reading_forced = None, False
        cost = max(0.0, self.cpu_clock() - cpu)
        wall = max(0.0, self.monotonic() - started_mono)
        self._seq += 1
        entries = len(connections) if connections is not None else 0
        self.budget.record(entries, cost, started_mono)
        if connections is None:
            return None
        read = TableRead(
            seq=self._seq,
            complete=complete,
            entries=entries,
            started_at=started,
            cpu_seconds=cost,
            wall_seconds=wall,
            forced=forced,
            malformed=malformed,
            expected=expected,
        )
        self.published = (read, connections, routing)
        self.last_error = None
        return read


_ROUTING_FIELDS = operator.itemgetter(*(Connection._fields.index(name) for name in (
    "protocol", "virtual", "virtual_port", "dest", "dest_port", "state")))  # fmt: skip


def routing_counts(connections: Iterable[Connection]) -> collections.Counter:
    """Entries counted by (protocol, virtual, virtual_port, dest, dest_port, state): what decides
    where each is counted, tallied once a read (in C for a ConnectionTable)."""
    if isinstance(connections, ConnectionTable):
        return connections.routing_counts()
    return collections.Counter(map(_ROUTING_FIELDS, connections))


class Placement:
    """Counts by state of one read, placed under services and real servers (see place())."""

    __slots__ = ("service_states", "dest_states", "ambiguous")

    def __init__(self, service_states, dest_states, ambiguous):
        self.service_states: dict[ServiceKey, dict[str, int]] = service_states
        self.dest_states: dict[ServiceKey, dict[tuple[str, int], dict[str, int]]] = dest_states
        self.ambiguous: dict[tuple[ServiceKey, ...], dict[str, int]] = ambiguous


def place(services: Iterable[Service], routing: Mapping[tuple, int]) -> Placement:
    """Put each counted (virtual, real server, state) under the service the kernel would have used.

    As ip_vs_service_find does: the exact virtual address and port, else the port-0 (catch-all,
    persistent) service of that address. /proc names no firewall mark, so a connection of a
    fwmark service is found by its real server; when that real server serves more than one fwmark
    service, the connection cannot be placed for sure and is counted as ambiguous between them.
    Persistence templates are not counted (they are the kernel's persistent counts).
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
    service_states: dict[ServiceKey, dict[str, int]] = {}
    dest_states: dict[ServiceKey, dict[tuple[str, int], dict[str, int]]] = {}
    ambiguous: dict[tuple[ServiceKey, ...], dict[str, int]] = {}
    # Placed once per distinct routed tuple: a table of 200,000 entries has a few thousand.
    routes: dict[tuple[str, str, int], ServiceKey | None] = {}
    for (protocol, virtual, virtual_port, dest, dest_port, state), count in routing.items():
        if protocol == "IP" or state in TEMPLATE_STATES:  # Connection.is_template
            continue
        routed = (protocol, virtual, virtual_port)
        skey = routes.get(routed, routes)
        if skey is routes:
            skey = routes[routed] = by_virtual.get(routed) or by_virtual.get((protocol, virtual, 0))
        where = (dest, dest_port)
        if skey is None:  # a firewall-mark service: found by its real server
            dkeys = by_dest.get(where) or by_dest.get((dest, 0))
            if not dkeys:
                continue
            if len({dkey.service for dkey in dkeys}) > 1:
                group = tuple(sorted({dkey.service for dkey in dkeys}, key=lambda k: k.fwmark))
                states = ambiguous.setdefault(group, {})
                states[state] = states.get(state, 0) + count
                continue
            skey = dkeys[0].service
            where = (dkeys[0].address, dkeys[0].port)
        states = service_states.get(skey)
        if states is None:
            states = service_states[skey] = {}
        states[state] = states.get(state, 0) + count
        dests = dest_states.get(skey)
        if dests is None:
            dests = dest_states[skey] = {}
        found = dests.get(where)
        if found is None:
            dests[where] = {state: count}
        else:
            found[state] = found.get(state, 0) + count
    return Placement(service_states, dest_states, ambiguous)


def scale(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """`counts` scaled to sum to `total`, by largest remainder (so the parts add up exactly)."""
    seen = sum(counts.values())
    if seen <= 0 or total <= 0:
        return {}
    shares = {state: count * total / seen for state, count in counts.items()}
    result = {state: int(share) for state, share in shares.items()}
    left = total - sum(result.values())
    for state in sorted(shares, key=lambda s: shares[s] - result[s], reverse=True)[:left]:
        result[state] += 1
    return {state: count for state, count in result.items() if count}


class _ServiceIndex:
    """Services by key, the dict made only when first asked (the views ask for the rows on screen)."""

    def __init__(self, services: Sequence[Service]):
        self._services = services
        self._index: dict[ServiceKey, Service] | None = None

    def get(self, key: ServiceKey) -> Service | None:
        if self._index is None:
            self._index = {service.key: service for service in self._services}
        return self._index.get(key)


class ScaledServiceStates(Mapping[ServiceKey, StateCounts]):
    """Counts by state per service from a sample or an older read, scaled to each service's exact
    total now (the sum of its real servers' active and inactive counts); made when asked for."""

    def __init__(self, counted: Mapping[ServiceKey, Mapping[str, int]], services: _ServiceIndex):
        self._counted = counted
        self._services = services

    def __getitem__(self, key: ServiceKey) -> StateCounts:
        counted = self._counted[key]  # KeyError: none sampled
        service = self._services.get(key)
        if service is None:
            raise KeyError(key)
        return StateCounts(scale(counted, connection_total(service.dests)), estimated=True)

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter(self._counted)

    def __len__(self) -> int:
        return len(self._counted)


class ScaledDestStates(Mapping[DestKey, StateCounts]):
    """Like ScaledServiceStates, per real server (scaled to its own active + inactive)."""

    def __init__(self, counted: DestStates, services: _ServiceIndex):
        self._counted = counted
        self._services = services

    def __getitem__(self, key: DestKey) -> StateCounts:
        counted = self._counted[key]
        service = self._services.get(key.service)
        dest = service.find_dest(key.address, key.port) if service is not None else None
        if dest is None:
            raise KeyError(key)
        return StateCounts(scale(counted, connection_total((dest,))), estimated=True)

    def __iter__(self) -> Iterator[DestKey]:
        return iter(self._counted)

    def __len__(self) -> int:
        return len(self._counted)


def counts_for_snapshot(placement: Placement, services: Sequence[Service], exact: bool, factor: float = 1.0):
    """(service_states, dest_states, ambiguous_states) as a snapshot holds them: as counted when
    the table is whole and current, else scaled to the kernel's totals and marked estimated.
    Ambiguous counts have no exact total of their own: a sample's are multiplied by `factor`
    (the table's size over the entries read)."""
    dests = DestStates(placement.dest_states)
    ambiguous = {
        group: StateCounts({s: round(n * factor) for s, n in states.items()}, estimated=not exact)
        for group, states in placement.ambiguous.items()
    }
    if exact:
        return {key: StateCounts(states) for key, states in placement.service_states.items()}, dests, ambiguous
    index = _ServiceIndex(services)  # one for both: built once, when a row first asks
    return ScaledServiceStates(placement.service_states, index), ScaledDestStates(dests, index), ambiguous
