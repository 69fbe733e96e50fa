"""The director's own health from psutil: CPU with its softirq share, memory, VIP interface traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from ipvsman.threadnames import name_this_thread
from ipvsman.ui.widgets import Markup, fmt_si


@dataclass(frozen=True)
class InterfaceRates:
    name: str
    rx_bytes_per_s: float | None  # None until two samples were taken
    tx_bytes_per_s: float | None
    drops_per_s: float | None  # dropped in + out
    drops_total: int


@dataclass(frozen=True)
class Health:
    cpu_percent: float | None  # None on the first sample: psutil needs an interval
    softirq_percent: float | None  # CPU time spent in softirq, where IPVS forwarding runs
    memory_percent: float
    interfaces: tuple[InterfaceRates, ...] = ()
    vip_interfaces: bool = True  # False: no VIP is held here, the figures are of all interfaces


class HealthSampler:
    """Takes a psutil sample each call; rates are per second since the previous call."""

    def __init__(self, source=psutil, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.clock = clock
        self._last_counters: dict[str, object] = {}
        self._last_at: float | None = None
        source.cpu_times_percent(interval=None)  # primes psutil's own previous sample

    def sample(self, interfaces: Iterable[str] = ()) -> Health:
        now = self.clock()
        cpu = self.source.cpu_times_percent(interval=None)
        busy = 100.0 - getattr(cpu, "idle", 100.0) - getattr(cpu, "iowait", 0.0)
        softirq = getattr(cpu, "softirq", None)
        memory = self.source.virtual_memory().percent
        counters = self.source.net_io_counters(pernic=True)
        wanted = sorted(set(interfaces) & counters.keys())
        vip_interfaces = bool(wanted)
        if not wanted:
            wanted = sorted(name for name in counters if name != "lo" and not name.startswith("lo"))
        elapsed = None if self._last_at is None else now - self._last_at
        rates = []
        for name in wanted:
            current = counters[name]
            previous = self._last_counters.get(name)
            drops = current.dropin + current.dropout
            if previous is None or not elapsed or elapsed <= 0:
                rates.append(InterfaceRates(name, None, None, None, drops))
                continue
            rates.append(
                InterfaceRates(
                    name,
                    max(0, current.bytes_recv - previous.bytes_recv) / elapsed,
                    max(0, current.bytes_sent - previous.bytes_sent) / elapsed,
                    max(0, drops - previous.dropin - previous.dropout) / elapsed,
                    drops,
                )
            )
        self._last_counters = dict(counters)
        self._last_at = now
        return Health(
            cpu_percent=None if elapsed is None else max(0.0, busy),
            softirq_percent=None if elapsed is None or softirq is None else softirq,
            memory_percent=memory,
            interfaces=tuple(rates),
            vip_interfaces=vip_interfaces,
        )


def describe(health: Health | None, max_interfaces: int = 2) -> Markup:
    """One header line: CPU (softirq), memory, and traffic of the first interfaces."""
    if health is None:
        return [" health: sampling…"]
    cpu = "…" if health.cpu_percent is None else f"{health.cpu_percent:.0f}%"
    softirq = "…" if health.softirq_percent is None else f"{health.softirq_percent:.1f}%"
    markup: Markup = [f" CPU {cpu} (softirq {softirq})   mem {health.memory_percent:.0f}%"]
    shown = health.interfaces[:max_interfaces]
    label = "VIP net" if health.vip_interfaces else "net"
    if shown:
        markup.append(f"   {label}:")
    for rates in shown:
        if rates.rx_bytes_per_s is None:
            markup.append(f" {rates.name} …")
            continue
        drops = f"{rates.drops_per_s:.0f}/s" if rates.drops_per_s else "0"
        markup.append(
            f" {rates.name} rx {fmt_si(rates.rx_bytes_per_s)}B/s tx {fmt_si(rates.tx_bytes_per_s)}B/s drop {drops}"
        )
    if len(health.interfaces) > max_interfaces:
        markup.append(f" +{len(health.interfaces) - max_interfaces}")
    return markup


@dataclass(frozen=True)
class DirectorSample:
    """What the watcher thread hands to the loop: health, local addresses, and what went wrong."""

    health: Health | None
    held: dict[str, str] | None  # local address -> interface; None when unknown
    errors: tuple[str, ...] = ()


class DirectorWatcher(threading.Thread):
    """Samples the director's health every second and its local addresses every few seconds,
    in its own thread (netlink and /proc reads never run in the UI thread)."""

    def __init__(
        self,
        on_sample: Callable[[DirectorSample], None],
        local_addresses: Callable[[], Iterable[tuple[str, str]]] | None,
        sampler: HealthSampler | None = None,
        interval: float = 1.0,
        address_interval: float = 5.0,
    ):
        super().__init__(name="ipvsman-health", daemon=True)
        self.on_sample = on_sample
        self.local_addresses = local_addresses
        self.sampler = sampler
        self.interval = interval
        self.address_interval = address_interval
        self.interfaces: tuple[str, ...] = ()  # set by the UI: interfaces that carry VIPs
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        name_this_thread()
        held: dict[str, str] | None = None
        addresses_at: float | None = None
        while not self._stop_event.is_set():
            errors = []
            now = time.monotonic()
            if self.local_addresses is not None and (addresses_at is None or now - addresses_at >= self.address_interval):
                addresses_at = now
                try:
                    held = {address: interface for address, interface in self.local_addresses()}
                except Exception as exc:  # reported once by the UI; the dashboard goes on without it
                    held = None
                    self.local_addresses = None
                    errors.append(f"local addresses: {exc}")
            health = None
            if self.sampler is not None:
                try:
                    health = self.sampler.sample(self.interfaces)
                except Exception as exc:
                    self.sampler = None
                    errors.append(f"health: {exc}")
            self.on_sample(DirectorSample(health, held, tuple(errors)))
            self._stop_event.wait(self.interval)
