"""A simulated IPVS director with a fixed seed: a living dashboard on any machine, and large ones for benchmarks."""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import ipaddress
import itertools
import math
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ipvsman import collector
from ipvsman.backend import Backend, BackendError
from ipvsman.model import (
    FORWARD_LABELS,
    WEIGHT_MAX,
    Connection,
    ConnectionTable,
    Daemon,
    Dest,
    DestKey,
    IpvsInfo,
    RawState,
    Rates,
    Service,
    ServiceKey,
    Stats,
    Timeouts,
)

# The kernel's default protocol timeouts (seconds), as `ipvsadm -L --timeout` and /proc show them.
TCP_TIMEOUTS = {"SYN_RECV": 60, "ESTABLISHED": 900, "FIN_WAIT": 120, "TIME_WAIT": 120, "CLOSE": 10}
UDP_TIMEOUT = 300

# The kernel's rate estimator samples every 2 s and moves its average a quarter of the way.
ESTIMATOR_PERIOD = 2.0
ESTIMATOR_SMOOTHING = 0.25
# The estimators are primed over the last seconds of the warm-up, before the first poll.
ESTIMATOR_WARM_UP_SECONDS = 40.0

# How a TCP connection's life is drawn: mean seconds in SYN_RECV and FIN_WAIT, and the share of
# handshakes never completed (left to time out) and of connections ended by a reset (CLOSE).
SYN_RECV_MEAN = 0.4
FIN_WAIT_MEAN = 1.5
FAILED_HANDSHAKE_SHARE = 0.01
RESET_SHARE = 0.05

TCP_HANDSHAKE_BYTES = 60  # a SYN or SYN-ACK with options
TCP_ACK_BYTES = 52  # a bare ACK, FIN or RST

SWELL_PERIOD = 600.0  # seconds over which a service's traffic swells and ebbs once


@dataclass(frozen=True)
class Traffic:
    """How clients use one virtual service: arrival rate, session length and packet sizes."""

    arrivals_per_second: float
    established_mean: float = 3.0  # seconds a TCP connection stays ESTABLISHED, on average
    inpps: float = 8.0  # packets per second client -> server while ESTABLISHED
    outpps: float = 10.0  # server -> client (seen by the director only with masquerading)
    in_packet_bytes: int = 200
    out_packet_bytes: int = 900
    idle_gap: tuple[float, float] = (0.5, 3.0)  # seconds between packets, which re-arm the timer
    clients: tuple[str, ...] = ()
    swell: float = 0.5  # share by which the arrival rate swells and ebbs (0: steady)

    def mean_lifetime(self, protocol: str) -> float:
        """Seconds a connection stays in the table on average: what sizes a table."""
        if protocol == "udp":
            return float(UDP_TIMEOUT)
        ending = RESET_SHARE * TCP_TIMEOUTS["CLOSE"] + (1 - RESET_SHARE) * (
            FIN_WAIT_MEAN + TCP_TIMEOUTS["TIME_WAIT"]
        )
        return FAILED_HANDSHAKE_SHARE * TCP_TIMEOUTS["SYN_RECV"] + (1 - FAILED_HANDSHAKE_SHARE) * (
            SYN_RECV_MEAN + self.established_mean + ending
        )


@dataclass(frozen=True)
class DestSpec:
    address: str
    port: int
    forward: str
    weight: int
    upper_threshold: int = 0
    lower_threshold: int = 0


@dataclass(frozen=True)
class ServiceSpec:
    """One virtual service of a simulated director and the traffic it gets."""

    key: ServiceKey
    scheduler: str
    traffic: Traffic
    dests: tuple[DestSpec, ...]
    persistent: int | None = None
    flags: tuple[str, ...] = ()
    # Where clients of a fwmark service connect (the firewall marks these): (protocol, address, port).
    marked: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class DirectorSpec:
    services: tuple[ServiceSpec, ...]
    daemons: tuple[Daemon, ...] = ()
    info: IpvsInfo = IpvsInfo("1.2.1", 4096)
    timeouts: Timeouts = Timeouts(TCP_TIMEOUTS["ESTABLISHED"], TCP_TIMEOUTS["FIN_WAIT"], UDP_TIMEOUT)
    sync_version: int = 1


# -- the simulation ----------------------------------------------------------------------------

NO_RATES = Rates()


class _Estimator:
    """The kernel's rate estimate of one service or real server (ip_vs_est.c), in floats.

    The kernel samples every 2 s. Here a sample is taken when a poll finds 2 s or more have
    passed since this estimator's last one, and the periods in between are folded in at once
    as if the counters had moved evenly; so an idle estimator can be skipped and caught up later.
    """

    __slots__ = ("at", "last", "averages", "rates")

    def __init__(self) -> None:
        self.at = 0.0
        self.last: tuple[float, ...] | None = None
        self.averages = [0.0] * 5
        self.rates = NO_RATES

    def due(self, now: float) -> bool:
        return self.last is None or now - self.at >= ESTIMATOR_PERIOD

    def sample(self, counters: tuple[float, ...], now: float) -> bool:
        """Fold in the counters' change since the last sample; True when the rates shown changed."""
        last, self.last = self.last, counters
        seconds, self.at = now - self.at, now
        if last is None:
            return False
        keep = (1 - ESTIMATOR_SMOOTHING) ** int(seconds // ESTIMATOR_PERIOD)
        averages = self.averages
        for i in range(5):
            rate = (counters[i] - last[i]) / seconds
            average = rate + (averages[i] - rate) * keep
            averages[i] = average if average > 0.001 else 0.0
        rates = Rates(*(int(value + 0.5) for value in averages))
        if rates == self.rates:
            return False
        self.rates = rates
        return True

    def prime(self, counters: tuple[float, ...], seconds: float, now: float) -> None:
        """Start from the average rates of the last `seconds` (which ended with `counters`)."""
        self.at, self.last = now, counters
        self.averages = [value / seconds for value in counters]
        rates = Rates(*(int(value + 0.5) for value in self.averages))
        self.rates = NO_RATES if rates == NO_RATES else rates


class _SimDest:
    """A real server's live counters; traffic of ESTABLISHED connections is integrated lazily."""

    __slots__ = (
        "address",
        "port",
        "forward",
        "weight",
        "upper_threshold",
        "lower_threshold",
        "overloaded",
        "active",
        "inactive",
        "persist",
        "conns",
        "inpkts",
        "outpkts",
        "inbytes",
        "outbytes",
        "flow",
        "integrated_at",
        "estimator",
        "moved",
        "touched",
        "cached",
    )

    def __init__(self, spec: DestSpec, now: float):
        self.address = spec.address
        self.port = spec.port
        self.forward = spec.forward
        self.weight = spec.weight
        self.upper_threshold = spec.upper_threshold
        self.lower_threshold = spec.lower_threshold
        self.overloaded = False
        self.active = self.inactive = self.persist = 0
        self.conns = 0
        self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0.0
        self.flow = [0.0, 0.0, 0.0, 0.0]  # inpps, outpps, in bytes/s, out bytes/s of ESTABLISHED connections
        self.integrated_at = now
        self.estimator = _Estimator()
        # What a poll must redo: `moved`, the counters changed since the last estimator sample;
        # `touched`, something shown changed since the last snapshot (else the last is reused).
        self.moved = True
        self.touched = True
        self.cached: Dest | None = None

    @property
    def sees_replies(self) -> bool:
        # Only with masquerading do the real server's replies pass back through the director.
        return self.forward == "masq"

    def integrate(self, now: float) -> None:
        elapsed = now - self.integrated_at
        if elapsed > 0:
            inpps, outpps, inbps, outbps = self.flow
            if inpps or outpps:
                self.inpkts += inpps * elapsed
                self.outpkts += outpps * elapsed
                self.inbytes += inbps * elapsed
                self.outbytes += outbps * elapsed
                self.moved = self.touched = True
            self.integrated_at = now

    def add_flow(self, now: float, sign: int, flow: tuple[float, float, float, float]) -> None:
        self.integrate(now)
        mine = self.flow
        for i in range(4):
            mine[i] += sign * flow[i]
        if mine[0] < 1e-9:  # no ESTABLISHED connection left: clear rounding residue
            mine[:] = [0.0, 0.0, 0.0, 0.0]

    def count_packets(self, inpkts: int, inbytes: int, outpkts: int = 0, outbytes: int = 0) -> None:
        self.inpkts += inpkts
        self.inbytes += inbytes
        if self.sees_replies:
            self.outpkts += outpkts
            self.outbytes += outbytes
        self.moved = self.touched = True

    def counters(self) -> tuple[float, ...]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def bind(self, template: bool) -> None:
        """A new connection (or template) points here: the kernel's ip_vs_bind_dest."""
        self.touched = True
        if template:
            self.persist += 1
            return
        self.conns += 1
        self.inactive += 1  # new connections start inactive (SYN_RECV, or UDP)
        if self.upper_threshold and self.active + self.inactive >= self.upper_threshold:
            self.overloaded = True

    def activate(self, active: bool) -> None:
        """A connection entered (or left) ESTABLISHED: move it between the two counts."""
        step = 1 if active else -1
        self.active += step
        self.inactive -= step
        self.touched = True

    def unbind(self, active: bool, template: bool) -> None:
        self.touched = True
        if template:
            self.persist -= 1
            return
        if active:
            self.active -= 1
        else:
            self.inactive -= 1
        if self.overloaded:
            lower = self.lower_threshold or self.upper_threshold * 3 // 4
            if self.active + self.inactive < lower:
                self.overloaded = False

    def snapshot(self, af: str) -> Dest:
        if self.touched or self.cached is None:
            self.touched = False
            self.cached = Dest(
                address=self.address,
                port=self.port,
                forward=self.forward,
                weight=self.weight,
                upper_threshold=self.upper_threshold,
                lower_threshold=self.lower_threshold,
                active_conns=self.active,
                inactive_conns=self.inactive,
                persist_conns=self.persist,
                stats=Stats(self.conns, int(self.inpkts), int(self.outpkts), int(self.inbytes), int(self.outbytes)),
                rates=self.estimator.rates,
                af=af,
            )
        return self.cached


class _Entry:
    """One line of the connection table: a connection or a persistence template."""

    __slots__ = (
        "ident",
        "service",
        "dest",
        "head",
        "state",
        "deadline",
        "entered",
        "idle_gap",
        "template",
        "controls",
        "flow",
    )

    def __init__(self, ident: int, service: _SimService, dest: _SimDest, head: tuple, state: str, deadline: float):
        self.ident = ident
        self.service = service
        self.dest = dest
        self.head = head  # protocol, client, client port, virtual, virtual port, dest, dest port
        self.state = state
        self.deadline = deadline
        self.entered = 0.0
        self.idle_gap = 1.0
        self.template: _Entry | None = None  # for a connection: the template that chose its dest
        self.controls = 0  # for a template: connections it controls (it lives on while > 0)
        self.flow: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


class _SimService:
    __slots__ = (
        "spec",
        "key",
        "protocol_label",
        "dests",
        "retired",
        "base",
        "templates",
        "rr_index",
        "wrr_weight",
        "estimator",
        "swell_phase",
        "moved",
        "touched",
        "cached",
    )

    def __init__(self, spec: ServiceSpec, now: float):
        self.spec = spec
        self.key = spec.key
        self.protocol_label = (spec.key.protocol or "tcp").upper()
        self.dests = [_SimDest(dest, now) for dest in spec.dests]
        self.retired: list[_SimDest] = []  # removed real servers whose connections still live
        self.base = [0.0] * 5  # counters of removed real servers that are gone for good
        self.templates: dict[str, _Entry] = {}
        self.rr_index = -1
        self.wrr_weight = 0
        self.estimator = _Estimator()
        self.swell_phase = 0.0
        self.moved = True
        self.touched = True  # real servers were added or removed since the last snapshot
        self.cached: Service | None = None

    def find(self, address: str, port: int) -> _SimDest | None:
        for dest in self.dests:
            if dest.address == address and dest.port == port:
                return dest
        return None

    def counters(self) -> tuple[float, ...]:
        totals = list(self.base)
        for group in (self.dests, self.retired):
            for dest in group:
                for i, value in enumerate(dest.counters()):
                    totals[i] += value
        return tuple(totals)

    def arrival_rate(self, now: float) -> float:
        traffic = self.spec.traffic
        if not traffic.swell:
            return traffic.arrivals_per_second
        wave = math.sin(2 * math.pi * (now / SWELL_PERIOD + self.swell_phase))
        return traffic.arrivals_per_second * (1 + traffic.swell * wave)

    # -- schedulers: the kernel's, simplified where that does not change the outcome -------
    def schedule(self, client: str) -> _SimDest | None:
        candidates = [d for d in self.dests if d.weight > 0 and not d.overloaded]
        if not candidates:
            return None
        scheduler = self.spec.scheduler
        if scheduler == "rr":
            return self._round_robin()
        if scheduler == "wrr":
            return self._weighted_round_robin()
        if scheduler == "sh":
            return candidates[zlib.crc32(client.encode()) % len(candidates)]
        if scheduler == "lc":
            return min(candidates, key=lambda d: d.active * 256 + d.inactive)
        # wlc, and the rest: least (active * 256 + inactive) / weight, the first on a tie.
        best = candidates[0]
        best_load = best.active * 256 + best.inactive
        for dest in candidates[1:]:
            load = dest.active * 256 + dest.inactive
            if load * best.weight < best_load * dest.weight:
                best, best_load = dest, load
        return best

    def _round_robin(self) -> _SimDest | None:
        count = len(self.dests)
        for _ in range(count):
            self.rr_index = (self.rr_index + 1) % count
            dest = self.dests[self.rr_index]
            if dest.weight > 0 and not dest.overloaded:
                return dest
        return None

    def _weighted_round_robin(self) -> _SimDest | None:
        weights = [d.weight for d in self.dests]
        top = max(weights)
        step = 0
        for weight in weights:
            step = math.gcd(step, weight)
        count = len(self.dests)
        self.wrr_weight = min(self.wrr_weight, top)
        for _ in range(count * (top // step + 1) + 1):
            self.rr_index += 1
            if self.rr_index >= count:
                self.rr_index = 0
                self.wrr_weight -= step
                if self.wrr_weight <= 0:
                    self.wrr_weight = top
            dest = self.dests[self.rr_index]
            if dest.weight >= self.wrr_weight and dest.weight > 0 and not dest.overloaded:
                return dest
        return None


class DemoBackend(Backend):
    """A living simulated director: connections arrive, change state and expire.

    With `tick` set, every poll advances simulated time by exactly `tick` seconds, so a seed
    and a number of polls give the same snapshots every time; with `tick` None a poll advances
    by the real time elapsed on `clock` since the previous poll. The first poll shows the state
    right after the warm-up either way, so `ipvsman --demo --once` prints the same every time.
    """

    name = "demo"

    def __init__(
        self,
        seed: int = 1,
        tick: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        director: DirectorSpec | None = None,
    ):
        if tick is not None and not tick >= 0:
            raise ValueError(f"tick must be 0 or more seconds, got {tick!r}")
        self.seed = seed
        self.tick = tick
        self.clock = clock
        self.director = director or demo_director(seed)
        self._random = random.Random(seed)
        self._now = 0.0
        self._events: list[tuple[float, int, Callable, object]] = []
        self._sequence = 0
        self._table: dict[int, _Entry] = {}
        self._table_lock = threading.Lock()
        self._last_clock: float | None = None
        self._first_poll = True
        self._services = [_SimService(spec, 0.0) for spec in self.director.services]
        for service in self._services:
            service.swell_phase = self._random.random()
        self._warm_up(warm_up_seconds(self.director))

    @classmethod
    def scaled(
        cls,
        services: int,
        dests_per_service: int,
        connections: int,
        seed: int = 1,
        tick: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> DemoBackend:
        """A large director for benchmarks; `connections` is about the table size it keeps."""
        return cls(seed, tick, clock, scaled_director(services, dests_per_service, connections, seed))

    @property
    def simulated_time(self) -> float:
        """Seconds simulated so far, the warm-up included."""
        return self._now

    # -- Backend -----------------------------------------------------------------------------
    def open(self) -> None:
        self._last_clock = None

    def poll(self, connections: bool = True) -> RawState:
        with self._table_lock:  # read_table() may run in another thread
            return self._poll(connections)

    def read_table(self, limit: int | None = None, want_pe_data: bool = False):
        with self._table_lock:
            return self._connection_table(limit), limit is None or limit >= len(self._table), 0

    def _poll(self, connections: bool) -> RawState:
        # The first poll shows the state the warm-up left, whatever the clock says.
        first, self._first_poll = self._first_poll, False
        if self.tick is not None:
            if not first:
                self._run_events(self._now + self.tick)
        else:
            now = self.clock()
            if not first and self._last_clock is not None and now > self._last_clock:
                self._run_events(self._now + (now - self._last_clock))
            self._last_clock = now
        return RawState(
            info=self.director.info,
            timeouts=self.director.timeouts,
            services=self._refresh(),
            daemons=self.director.daemons,
            connections=self._connection_table() if connections else None,
            sync_version=self.director.sync_version,
        )

    def set_weight(self, dest: DestKey, weight: int) -> None:
        check_weight(weight)
        service = self._service(dest.service)
        sim = self._dest(service, dest.address, dest.port)
        sim.weight = weight
        sim.touched = True

    def add_dest(self, service: ServiceKey, address: str, port: int, forward: str, weight: int) -> None:
        check_weight(weight)
        sim = self._service(service)
        if forward not in FORWARD_LABELS:
            raise BackendError(f"forwarding method must be one of {', '.join(FORWARD_LABELS)}, got {forward!r}")
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise BackendError(f"not an IP address: {address!r}") from None
        if (parsed.version == 6) != (service.af == "inet6"):
            raise BackendError(f"{address} is not of the address family of {service}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise BackendError(f"port must be 0-65535, got {port!r}")
        address = str(parsed)
        if sim.find(address, port):
            raise BackendError(f"real server {_endpoint(address, port)} already exists in {service}")
        sim.dests.append(_SimDest(DestSpec(address, port, forward, weight), self._now))
        sim.touched = True

    def remove_dest(self, dest: DestKey) -> None:
        service = self._service(dest.service)
        sim = self._dest(service, dest.address, dest.port)
        service.dests.remove(sim)
        # The kernel keeps a removed real server until its last connection expires.
        service.retired.append(sim)
        service.touched = True

    # -- lookups -------------------------------------------------------------------------------
    def _service(self, key: ServiceKey) -> _SimService:
        for service in self._services:
            if service.key == key:
                return service
        raise BackendError(f"no virtual service {key}")

    @staticmethod
    def _dest(service: _SimService, address: str, port: int) -> _SimDest:
        dest = service.find(address, port)
        if dest is None:
            raise BackendError(f"no real server {_endpoint(address, port)} in {service.key}")
        return dest

    # -- what a poll returns ------------------------------------------------------------------
    def _refresh(self) -> tuple[Service, ...]:
        """Bring counters up to now, sample the estimators that are due, snapshot the services."""
        now = self._now
        return tuple(self._service_snapshot(service, now) for service in self._services)

    def _service_snapshot(self, service: _SimService, now: float) -> Service:
        touched = service.touched
        for group in (service.dests, service.retired):
            for dest in group:
                dest.integrate(now)
                if dest.moved:
                    service.moved = True
                    if dest.estimator.due(now):
                        dest.moved = False
                        dest.touched |= dest.estimator.sample(dest.counters(), now)
                elif dest.estimator.rates is not NO_RATES and dest.estimator.due(now):
                    dest.touched |= dest.estimator.sample(dest.counters(), now)
                touched = touched or dest.touched
        estimator = service.estimator
        if (service.moved or estimator.rates is not NO_RATES) and estimator.due(now):
            service.moved = False
            touched |= estimator.sample(service.counters(), now)
            if service.retired:
                self._forget_idle_retired(service)
        if not touched and service.cached is not None:
            return service.cached
        for dest in service.retired:
            dest.touched = False
        service.touched = False
        spec = service.spec
        af = spec.key.af
        service.cached = Service(
            key=spec.key,
            scheduler=spec.scheduler,
            persistent=spec.persistent,
            netmask="128" if af == "inet6" else "255.255.255.255",  # the kernel's default, a host
            flags=spec.flags,
            stats=Stats(*(int(value) for value in service.counters())),
            rates=estimator.rates,
            dests=tuple(dest.snapshot(af) for dest in service.dests),
        )
        return service.cached

    @staticmethod
    def _forget_idle_retired(service: _SimService) -> None:
        for dest in list(service.retired):
            if dest.active == dest.inactive == dest.persist == 0:
                for i, value in enumerate(dest.counters()):
                    service.base[i] += value
                service.retired.remove(dest)

    def _connection_table(self, limit: int | None = None) -> ConnectionTable:
        # The hot loop of a poll, a row per connection: rows are built as plain tuples of the
        # right shape, skipping NamedTuple's slower __new__. They are handed out packed, as the
        # kernel backend's are, so that views and benchmarks see the same kind of table.
        now = self._now
        make = tuple.__new__
        established_timeout = TCP_TIMEOUTS["ESTABLISHED"]
        rows = []
        append = rows.append
        entries = self._table.values()
        if limit is not None and limit < len(self._table):
            # Every k-th entry rather than the first: the table is in order of arrival, the
            # kernel's prefix in hash order, which is as good as a sample spread over it.
            entries = itertools.islice(entries, 0, None, max(1, len(self._table) // max(limit, 1)))
            entries = itertools.islice(entries, limit)
        for entry in entries:
            state = entry.state
            if state == "ESTABLISHED":
                # Every packet re-arms the 900 s timer, and packets come every idle_gap seconds.
                expires = int(established_timeout - (now - entry.entered) % entry.idle_gap)
            else:
                left = entry.deadline - now
                expires = int(left) if left > 0 else 0
            append(make(Connection, entry.head + (state, expires, "LOCAL", "", "")))
        return ConnectionTable.from_connections(rows)

    # -- simulated time -----------------------------------------------------------------------
    def _warm_up(self, seconds: float) -> None:
        """Bring the director to `seconds` of simulated traffic before the first poll."""
        # A large director allocates millions of objects here, none of them garbage; the
        # collector's repeated full passes over them would double the time this takes.
        with collector.paused():
            self._simulate_warm_up(seconds)

    def _simulate_warm_up(self, seconds: float) -> None:
        independent = all(
            spec.persistent is None and spec.scheduler != "sh" and not any(d.upper_threshold for d in spec.dests)
            for spec in self.director.services
        )
        if independent:
            self._backfill(seconds)
            return
        for service in self._services:
            self._schedule_arrival(service)
        self._run_events(seconds - ESTIMATOR_WARM_UP_SECONDS)
        self._refresh()  # the estimators' baseline
        self._run_events(seconds)
        self._refresh()

    def _run_events(self, until: float) -> None:
        """Run every event due up to `until`, in time order."""
        events = self._events
        pop = heapq.heappop
        while events and events[0][0] <= until:
            when, _, handler, subject = pop(events)
            self._now = when
            handler(subject)
        self._now = until

    def _at(self, when: float, handler: Callable, subject: object) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (when, self._sequence, handler, subject))

    # -- the life of a connection -------------------------------------------------------------
    def _schedule_arrival(self, service: _SimService) -> None:
        rate = service.arrival_rate(self._now)
        if rate > 0:
            self._at(self._now + self._random.expovariate(rate), self._arrive, service)

    def _new_ident(self) -> int:
        self._sequence += 1
        return self._sequence

    def _endpoints(self, service: _SimService) -> tuple[str, str, int]:
        """Protocol (as /proc spells it), virtual address and port a new connection is for."""
        spec = service.spec
        if spec.marked:
            protocol, virtual, virtual_port = self._random.choice(spec.marked)
            return protocol.upper(), virtual, virtual_port
        return service.protocol_label, spec.key.address, spec.key.port

    def _handshake_delay(self) -> float | None:
        """Seconds until a new TCP connection is ESTABLISHED; None if it never will be."""
        if self._random.random() < FAILED_HANDSHAKE_SHARE:
            return None
        return min(self._random.expovariate(1 / SYN_RECV_MEAN), TCP_TIMEOUTS["SYN_RECV"] - 1)

    def _fin_wait_delay(self) -> float:
        return min(self._random.expovariate(1 / FIN_WAIT_MEAN), TCP_TIMEOUTS["FIN_WAIT"] - 1)

    @staticmethod
    def _flow(traffic: Traffic, dest: _SimDest) -> tuple[float, float, float, float]:
        outpps = traffic.outpps if dest.sees_replies else 0.0
        return (traffic.inpps, outpps, traffic.inpps * traffic.in_packet_bytes, outpps * traffic.out_packet_bytes)

    def _arrive(self, service: _SimService) -> None:
        self._schedule_arrival(service)
        spec = service.spec
        rng = self._random
        now = self._now
        client = rng.choice(spec.traffic.clients)
        template = service.templates.get(client) if spec.persistent is not None else None
        if template is not None and template.dest not in service.dests:
            # Its real server was removed: the kernel drops the template and schedules anew.
            self._drop_template(template)
            template = None
        # A template keeps sending its client to the same real server, even one drained to
        # weight 0 (the kernel's default, net.ipv4.vs.expire_quiescent_template = 0).
        dest = template.dest if template is not None else service.schedule(client)
        if dest is None:
            return  # no real server available: the kernel refuses the connection
        protocol, virtual, virtual_port = self._endpoints(service)
        dest_port = dest.port or virtual_port
        if spec.persistent is not None:
            if template is None:
                template = self._new_template(service, dest, client, virtual, virtual_port, dest_port)
            template.deadline = now + spec.persistent
        head = (protocol, client, rng.randrange(1024, 65536), virtual, virtual_port, dest.address, dest_port)
        dest.bind(template=False)
        traffic = spec.traffic
        if protocol == "UDP":
            entry = _Entry(self._new_ident(), service, dest, head, "UDP", now + UDP_TIMEOUT)
            dest.count_packets(1, traffic.in_packet_bytes, 1, traffic.out_packet_bytes)  # a query, its answer
            self._at(entry.deadline, self._expire, entry)
        else:
            entry = _Entry(self._new_ident(), service, dest, head, "SYN_RECV", now + TCP_TIMEOUTS["SYN_RECV"])
            dest.count_packets(1, TCP_HANDSHAKE_BYTES, 1, TCP_HANDSHAKE_BYTES)  # SYN, SYN-ACK
            delay = self._handshake_delay()
            if delay is None:
                self._at(entry.deadline, self._expire, entry)
            else:
                self._at(now + delay, self._establish, entry)
        entry.template = template
        if template is not None:
            template.controls += 1
        self._table[entry.ident] = entry

    def _new_template(
        self, service: _SimService, dest: _SimDest, client: str, virtual: str, virtual_port: int, dest_port: int
    ) -> _Entry:
        if service.spec.marked:
            # A fwmark template carries the mark where the virtual address would be, and no port.
            protocol, virtual, virtual_port = "IP", str(ipaddress.ip_address(service.key.fwmark)), 0
        else:
            protocol = service.protocol_label
        head = (protocol, client, 0, virtual, virtual_port, dest.address, dest_port)
        template = _Entry(self._new_ident(), service, dest, head, "NONE", self._now + service.spec.persistent)
        dest.bind(template=True)
        service.templates[client] = template
        self._table[template.ident] = template
        self._at(template.deadline, self._expire_template, template)
        return template

    def _establish(self, entry: _Entry) -> None:
        now = self._now
        traffic = entry.service.spec.traffic
        dest = entry.dest
        dest.activate(True)
        entry.state = "ESTABLISHED"
        entry.entered = now
        entry.idle_gap = self._random.uniform(*traffic.idle_gap)
        entry.flow = self._flow(traffic, dest)
        dest.add_flow(now, 1, entry.flow)
        dest.count_packets(1, TCP_ACK_BYTES)
        self._at(now + self._random.expovariate(1 / traffic.established_mean), self._close, entry)

    def _close(self, entry: _Entry) -> None:
        now = self._now
        dest = entry.dest
        dest.add_flow(now, -1, entry.flow)
        dest.activate(False)
        if self._random.random() < RESET_SHARE:
            entry.state = "CLOSE"
            entry.deadline = now + TCP_TIMEOUTS["CLOSE"]
            dest.count_packets(1, TCP_ACK_BYTES)  # the RST
            self._at(entry.deadline, self._expire, entry)
        else:
            entry.state = "FIN_WAIT"
            entry.deadline = now + TCP_TIMEOUTS["FIN_WAIT"]
            dest.count_packets(1, TCP_ACK_BYTES, 1, TCP_ACK_BYTES)  # a FIN, its ACK
            self._at(now + self._fin_wait_delay(), self._time_wait, entry)

    def _time_wait(self, entry: _Entry) -> None:
        entry.state = "TIME_WAIT"
        entry.deadline = self._now + TCP_TIMEOUTS["TIME_WAIT"]
        entry.dest.count_packets(1, TCP_ACK_BYTES, 1, TCP_ACK_BYTES)  # the other FIN, its ACK
        self._at(entry.deadline, self._expire, entry)

    def _expire(self, entry: _Entry) -> None:
        del self._table[entry.ident]
        entry.dest.unbind(active=entry.state == "ESTABLISHED", template=False)
        if entry.template is not None:
            entry.template.controls -= 1

    def _expire_template(self, template: _Entry) -> None:
        if template.ident not in self._table:
            return  # dropped already
        now = self._now
        if template.deadline > now:
            self._at(template.deadline, self._expire_template, template)  # used again since
        elif template.controls > 0:
            # The kernel keeps a template while connections it chose still live.
            template.deadline = now + template.service.spec.persistent
            self._at(template.deadline, self._expire_template, template)
        else:
            self._drop_template(template)

    def _drop_template(self, template: _Entry) -> None:
        del self._table[template.ident]
        template.dest.unbind(active=False, template=True)
        client = template.head[1]
        if template.service.templates.get(client) is template:
            del template.service.templates[client]

    # -- a quick warm-up for large directors --------------------------------------------------
    def _backfill(self, seconds: float) -> None:
        """Fill the table as `seconds` of traffic would have left it, without running each event.

        Only for directors whose connections do not depend on each other (no persistence, no
        thresholds, no source hashing). Real servers are drawn by weight, the share every
        weighted scheduler converges to, and each connection's life is drawn whole: those that
        ended count only in the stats, the others join the table with their next event.
        """
        rng = self._random
        arrivals: list[tuple[float, int]] = []
        for index, service in enumerate(self._services):
            rate = service.spec.traffic.arrivals_per_second
            if rate <= 0:
                continue
            when = rng.expovariate(rate)
            while when < seconds:
                arrivals.append((when, index))
                when += rng.expovariate(rate)
        arrivals.sort()
        pickers: list[tuple[list[_SimDest], list[int]] | None] = []
        for service in self._services:
            eligible = [dest for dest in service.dests if dest.weight > 0]
            pickers.append((eligible, list(itertools.accumulate(d.weight for d in eligible))) if eligible else None)
            for dest in service.dests:
                dest.integrated_at = seconds
        for when, index in arrivals:
            picker = pickers[index]
            if picker is not None:
                eligible, cumulative = picker
                dest = eligible[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
                self._backfill_connection(self._services[index], dest, when, seconds)
        self._now = seconds
        for service in self._services:
            for dest in service.dests:
                dest.estimator.prime(dest.counters(), seconds, seconds)
            service.estimator.prime(service.counters(), seconds, seconds)
            self._schedule_arrival(service)

    def _backfill_connection(self, service: _SimService, dest: _SimDest, arrived: float, now: float) -> None:
        rng = self._random
        traffic = service.spec.traffic
        protocol, virtual, virtual_port = self._endpoints(service)
        head = (
            protocol,
            rng.choice(traffic.clients),
            rng.randrange(1024, 65536),
            virtual,
            virtual_port,
            dest.address,
            dest.port or virtual_port,
        )
        dest.conns += 1
        if protocol == "UDP":
            dest.count_packets(1, traffic.in_packet_bytes, 1, traffic.out_packet_bytes)
            self._keep(service, dest, head, "UDP", arrived + UDP_TIMEOUT, None, now)
            return
        dest.count_packets(1, TCP_HANDSHAKE_BYTES, 1, TCP_HANDSHAKE_BYTES)
        delay = self._handshake_delay()
        syn_deadline = arrived + TCP_TIMEOUTS["SYN_RECV"]
        if delay is None or arrived + delay > now:
            established = None if delay is None else (arrived + delay, self._establish)
            self._keep(service, dest, head, "SYN_RECV", syn_deadline, established, now)
            return
        established = arrived + delay
        dest.count_packets(1, TCP_ACK_BYTES)
        closed = established + rng.expovariate(1 / traffic.established_mean)
        flow = self._flow(traffic, dest)
        lasted = min(closed, now) - established
        dest.inpkts += flow[0] * lasted
        dest.outpkts += flow[1] * lasted
        dest.inbytes += flow[2] * lasted
        dest.outbytes += flow[3] * lasted
        if closed > now:
            entry = self._keep(service, dest, head, "ESTABLISHED", closed, (closed, self._close), now)
            if entry is not None:
                entry.entered = established
                entry.idle_gap = rng.uniform(*traffic.idle_gap)
                entry.flow = flow
                dest.add_flow(now, 1, flow)
            return
        if rng.random() < RESET_SHARE:
            dest.count_packets(1, TCP_ACK_BYTES)
            self._keep(service, dest, head, "CLOSE", closed + TCP_TIMEOUTS["CLOSE"], None, now)
            return
        dest.count_packets(1, TCP_ACK_BYTES, 1, TCP_ACK_BYTES)
        time_wait = closed + self._fin_wait_delay()
        if time_wait > now:
            fin_deadline = closed + TCP_TIMEOUTS["FIN_WAIT"]
            self._keep(service, dest, head, "FIN_WAIT", fin_deadline, (time_wait, self._time_wait), now)
            return
        dest.count_packets(1, TCP_ACK_BYTES, 1, TCP_ACK_BYTES)
        self._keep(service, dest, head, "TIME_WAIT", time_wait + TCP_TIMEOUTS["TIME_WAIT"], None, now)

    def _keep(
        self,
        service: _SimService,
        dest: _SimDest,
        head: tuple,
        state: str,
        deadline: float,
        next_event: tuple[float, Callable] | None,
        now: float,
    ) -> _Entry | None:
        """Put a backfilled connection into the table if it still lives at `now`."""
        if next_event is None and deadline <= now:
            return None
        entry = _Entry(self._new_ident(), service, dest, head, state, deadline)
        self._table[entry.ident] = entry
        if state == "ESTABLISHED":
            dest.active += 1
        else:
            dest.inactive += 1
        when, handler = next_event or (deadline, self._expire)
        self._at(when, handler, entry)
        return entry


def warm_up_seconds(director: DirectorSpec) -> float:
    """Simulated seconds before the first poll, so that the first look shows a busy director:
    long enough for TIME_WAIT and UDP entries and persistence templates to fill the table."""
    tcp = TCP_TIMEOUTS["TIME_WAIT"] + ESTIMATOR_WARM_UP_SECONDS
    seconds = tcp
    for service in director.services:
        if service.key.protocol == "udp":
            seconds = max(seconds, UDP_TIMEOUT + 20.0)
        if service.persistent:
            seconds = max(seconds, service.persistent + tcp)
    return seconds


def check_weight(weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= WEIGHT_MAX:
        raise BackendError(f"weight must be a whole number from 0 to {WEIGHT_MAX}, got {weight!r}")


def _ipv4(number: int) -> str:
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# -- the directors ---------------------------------------------------------------------------


def _client_pool(rng: random.Random, networks: Sequence[str], count: int) -> tuple[str, ...]:
    """`count` distinct client addresses drawn from documentation and private networks."""
    pool: dict[str, None] = {}
    parsed = [ipaddress.ip_network(network) for network in networks]
    while len(pool) < count:
        network = rng.choice(parsed)
        offset = rng.randrange(1, min(network.num_addresses - 1, 1 << 32))
        pool[str(network.network_address + offset)] = None
    return tuple(pool)


def demo_director(seed: int = 1) -> DirectorSpec:
    """The built-in demo: ldap, a web pool, DNS, an IPv6 service and a fwmark mail service."""
    rng = random.Random(f"clients-{seed}")
    # Enough office clients that many come back after their persistence template expired, so a
    # real server given weight again soon gets new clients.
    office = _client_pool(rng, ["10.20.0.0/16", "10.21.0.0/16"], 500)
    internet = _client_pool(rng, ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"], 400)
    internet6 = _client_pool(rng, ["2001:db8:ff::/64", "2001:db8:fe::/64"], 120)
    resolvers = _client_pool(rng, ["10.20.0.0/16", "10.30.0.0/16"], 150)
    mailers = _client_pool(rng, ["198.51.100.0/24", "203.0.113.0/24"], 60)

    ldap_traffic = Traffic(
        1.2,
        established_mean=25.0,
        inpps=2.0,
        outpps=3.0,
        in_packet_bytes=140,
        out_packet_bytes=420,
        idle_gap=(2.0, 60.0),
        clients=office,
    )

    def ldap_dests(port: int) -> tuple[DestSpec, ...]:
        return (
            DestSpec("10.10.10.201", port, "masq", 100),
            DestSpec("10.10.10.202", port, "masq", 100),
            DestSpec("10.10.10.203", port, "route", 50),
            DestSpec("10.10.10.204", port, "tunnel", 0),  # drained for maintenance
        )

    services = (
        ServiceSpec(
            ServiceKey("inet", "tcp", "10.10.10.100", 389),
            "wlc",
            ldap_traffic,
            ldap_dests(389),
            persistent=300,
            flags=("persistent",),
        ),
        ServiceSpec(
            ServiceKey("inet", "tcp", "10.10.10.100", 636),
            "wlc",
            Traffic(0.6, 30.0, 2.0, 3.0, 180, 480, (2.0, 60.0), office),
            ldap_dests(636),
            persistent=300,
            flags=("persistent",),
        ),
        ServiceSpec(
            ServiceKey("inet", "tcp", "10.10.10.80", 80),
            "wrr",
            Traffic(3.0, 2.0, 8.0, 10.0, 240, 1100, (0.2, 2.0), internet),
            (
                DestSpec("10.10.20.11", 80, "route", 100),
                DestSpec("10.10.20.12", 80, "route", 100),
                DestSpec("10.10.20.13", 80, "route", 50),
            ),
        ),
        ServiceSpec(
            ServiceKey("inet", "tcp", "10.10.10.80", 443),
            "wrr",
            Traffic(3.0, 6.0, 12.0, 16.0, 320, 1300, (0.2, 5.0), internet),
            (
                DestSpec("10.10.20.11", 443, "masq", 100),
                DestSpec("10.10.20.12", 443, "masq", 100, upper_threshold=150, lower_threshold=120),
                DestSpec("10.10.20.13", 443, "masq", 50),
                DestSpec("10.10.10.2", 8443, "local", 10),  # a fallback on the director itself
            ),
        ),
        ServiceSpec(
            ServiceKey("inet", "udp", "10.10.10.53", 53),
            "rr",
            Traffic(1.5, in_packet_bytes=72, out_packet_bytes=180, clients=resolvers),
            (
                DestSpec("10.10.30.1", 53, "masq", 1),
                DestSpec("10.10.30.2", 53, "masq", 1),
            ),
        ),
        ServiceSpec(
            ServiceKey("inet6", "tcp", "2001:db8:10::80", 443),
            "wlc",
            Traffic(0.8, 5.0, 10.0, 14.0, 300, 1200, (0.2, 5.0), internet6),
            (
                DestSpec("2001:db8:20::11", 443, "route", 100),
                DestSpec("2001:db8:20::12", 443, "route", 100),
            ),
        ),
        ServiceSpec(
            ServiceKey("inet", None, "", 0, fwmark=10),
            "wlc",
            Traffic(0.3, 8.0, 6.0, 4.0, 900, 90, (0.5, 10.0), mailers),
            (
                DestSpec("10.10.40.1", 25, "masq", 100),
                DestSpec("10.10.40.2", 25, "masq", 100),
            ),
            persistent=120,
            flags=("persistent",),
            marked=(("tcp", "10.10.10.25", 25), ("tcp", "10.10.10.26", 25)),
        ),
    )
    daemons = (Daemon("master", "eth0", 1, maxlen=1472, group="224.0.0.81", port=8848, ttl=1),)
    return DirectorSpec(services, daemons)


def scaled_director(services: int, dests_per_service: int, connections: int, seed: int = 1) -> DirectorSpec:
    """A director of `services` web services with `dests_per_service` real servers each,
    whose traffic keeps about `connections` entries in the connection table."""
    if services < 1 or dests_per_service < 1 or connections < 0:
        raise ValueError("need at least one service and one real server, and 0 or more connections")
    rng = random.Random(f"scaled-{seed}")
    clients = _client_pool(rng, ["100.64.0.0/10"], min(20000, max(100, connections // 5)))
    # Steady traffic: a swell would leave the quick warm-up's table out of step with its rates.
    web = Traffic(1.0, 2.0, 8.0, 10.0, 240, 1100, (0.2, 2.0), clients, swell=0.0)
    traffic = dataclasses.replace(web, arrivals_per_second=connections / services / web.mean_lifetime("tcp"))
    schedulers = ("wlc", "wrr", "rr", "lc")
    forwards = ("masq", "route", "tunnel")
    virtual_base = int(ipaddress.IPv4Address("10.100.0.1"))
    real_base = int(ipaddress.IPv4Address("172.16.0.1"))
    specs = []
    for i in range(services):
        address = _ipv4(virtual_base + i)
        dests = tuple(
            DestSpec(
                _ipv4(real_base + i * dests_per_service + j),
                80,
                forwards[(i + j) % len(forwards)],
                rng.choice((50, 100, 100, 200)),
            )
            for j in range(dests_per_service)
        )
        key = ServiceKey("inet", "tcp", address, 80)
        specs.append(ServiceSpec(key, schedulers[i % len(schedulers)], traffic, dests))
    daemons = (Daemon("master", "eth0", 1, maxlen=1472),)
    return DirectorSpec(tuple(specs), daemons)
