"""Drift: where the kernel's IPVS table and the configuration (keepalived.conf or topology) disagree."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ipvsman.model import DestKey, Service, ServiceKey, Snapshot, join_host_port
from ipvsman.topology import Configuration, ConfiguredDest, ConfiguredService

# Kinds of drift, in the order a drift list shows them.
MISSING = "missing"  # configured, not in the kernel
EXTRA = "extra"  # in the kernel, not configured
WEIGHT = "weight"
SCHEDULER = "scheduler"
FORWARD = "forward"
PERSISTENCE = "persistence"
KINDS = (MISSING, EXTRA, SCHEDULER, PERSISTENCE, FORWARD, WEIGHT)

# The kernel turns any forwarding method into "local" when the real server's address is one of
# the director's own, so "local" agrees with whatever was configured.
LOCAL_FORWARD = "local"


@dataclass(frozen=True, slots=True)
class Drift:
    """One disagreement, about a service (dest is None) or one of its real servers."""

    kind: str  # one of KINDS
    service: ServiceKey
    dest: DestKey | None = None
    configured: object = None  # the configured value (None for EXTRA)
    actual: object = None  # the kernel's value (None for MISSING)
    origin: str = ""  # "file:line" of the configuration that says otherwise
    note: str = ""  # why the kernel may legitimately differ

    @property
    def subject(self) -> str:
        return str(self.dest) if self.dest else str(self.service)

    def __str__(self) -> str:
        if self.kind == MISSING:
            text = f"{self.subject}: configured, not in the kernel"
        elif self.kind == EXTRA:
            text = f"{self.subject}: in the kernel, not configured"
        else:
            text = f"{self.subject}: {self.kind} {_show(self.actual)}, configured {_show(self.configured)}"
        if self.origin:
            text += f" ({self.origin})"
        if self.note:
            text += f"; {self.note}"
        return text


def _show(value: object) -> str:
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class DriftReport:
    """All drift of one snapshot against one configuration, indexed for the views."""

    drifts: tuple[Drift, ...] = ()
    by_service: Mapping[ServiceKey, tuple[Drift, ...]] = field(default_factory=lambda: MappingProxyType({}))
    by_dest: Mapping[DestKey, tuple[Drift, ...]] = field(default_factory=lambda: MappingProxyType({}))
    missing_services: tuple[ConfiguredService, ...] = ()  # configured services absent from the kernel
    missing_dests: Mapping[ServiceKey, tuple[ConfiguredDest, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __bool__(self) -> bool:
        return bool(self.drifts)

    def __len__(self) -> int:
        return len(self.drifts)

    def for_service(self, key: ServiceKey) -> tuple[Drift, ...]:
        """Drift of the service itself (missing, extra, scheduler, persistence)."""
        return self.by_service.get(key, ())

    def for_dest(self, key: DestKey) -> tuple[Drift, ...]:
        return self.by_dest.get(key, ())

    def service_drifts(self, key: ServiceKey) -> bool:
        """Whether the service or any of its real servers drifted: what a drift filter keeps."""
        return key in self.affected_services

    @property
    def affected_services(self) -> frozenset[ServiceKey]:
        return frozenset(drift.service for drift in self.drifts)

    def kinds(self, key: ServiceKey | DestKey) -> frozenset[str]:
        """The kinds of drift on a service (itself only) or a real server, for a mark in a view."""
        found = self.by_dest.get(key, ()) if isinstance(key, DestKey) else self.by_service.get(key, ())
        return frozenset(drift.kind for drift in found)


def find_drift(
    kernel: Snapshot | Iterable[Service], configuration: Configuration | Iterable[ConfiguredService]
) -> DriftReport:
    """Compare the kernel's services with the configured ones."""
    services = kernel.services if isinstance(kernel, Snapshot) else tuple(kernel)
    configured = configuration.services if isinstance(configuration, Configuration) else tuple(configuration)
    drifts: list[Drift] = []
    missing_services: list[ConfiguredService] = []
    missing_dests: dict[ServiceKey, tuple[ConfiguredDest, ...]] = {}
    actual_by_key = {service.key: service for service in services}
    configured_keys = set()
    for wanted in configured:
        configured_keys.add(wanted.key)
        actual = actual_by_key.get(wanted.key)
        if actual is None:
            drifts.append(Drift(MISSING, wanted.key, configured=wanted.key, origin=wanted.origin))
            missing_services.append(wanted)
            continue
        drifts.extend(service_drift(wanted, actual))
        absent = []
        for dest in wanted.dests:
            key = wanted.dest_key(dest)
            kernel_dest = actual.find_dest(dest.address, dest.port)
            if kernel_dest is None:
                note = "keepalived removes it while its health check fails" if dest.health_checked else ""
                drifts.append(Drift(MISSING, wanted.key, key, configured=dest.weight, origin=dest.origin, note=note))
                absent.append(dest)
                continue
            if not forward_agrees(dest.forward, kernel_dest.forward):
                drifts.append(Drift(FORWARD, wanted.key, key, dest.forward, kernel_dest.forward, dest.origin))
            if kernel_dest.weight != dest.weight:
                note = ""
                if kernel_dest.weight == 0 and dest.health_checked and dest.inhibit_on_failure:
                    note = "keepalived sets weight 0 while its health check fails (inhibit_on_failure)"
                drifts.append(Drift(WEIGHT, wanted.key, key, dest.weight, kernel_dest.weight, dest.origin, note))
        if absent:
            missing_dests[wanted.key] = tuple(absent)
        sorry = {(dest.address, dest.port) for dest in wanted.sorry_servers}
        for kernel_dest in actual.dests:
            if wanted.find_dest(kernel_dest.address, kernel_dest.port) is None:
                key = actual.dest_key(kernel_dest)
                note = ""
                if (kernel_dest.address, kernel_dest.port) in sorry:
                    note = "keepalived's sorry_server, added while the quorum is lost"
                drifts.append(
                    Drift(EXTRA, wanted.key, key, actual=kernel_dest.weight, origin=wanted.origin, note=note)
                )
    for service in services:
        if service.key not in configured_keys:
            drifts.append(Drift(EXTRA, service.key, actual=service.key))
    drifts.sort(key=_drift_order)
    by_service: dict[ServiceKey, list[Drift]] = {}
    by_dest: dict[DestKey, list[Drift]] = {}
    for drift in drifts:
        if drift.dest is None:
            by_service.setdefault(drift.service, []).append(drift)
        else:
            by_dest.setdefault(drift.dest, []).append(drift)
    return DriftReport(
        drifts=tuple(drifts),
        by_service=MappingProxyType({key: tuple(value) for key, value in by_service.items()}),
        by_dest=MappingProxyType({key: tuple(value) for key, value in by_dest.items()}),
        missing_services=tuple(missing_services),
        missing_dests=MappingProxyType(missing_dests),
    )


def _drift_order(drift: Drift) -> tuple:
    """Services in address order, each followed by its real servers; ServiceKey itself cannot
    be sorted when a firewall-mark service (protocol None) meets an address service."""
    service = drift.service
    dest = (_address_order(drift.dest.address), drift.dest.port) if drift.dest else ()
    return (
        service.af,
        service.fwmark,
        service.protocol or "",
        _address_order(service.address),
        service.port,
        dest,
        KINDS.index(drift.kind),
    )


def _address_order(address: str) -> int:
    try:
        return int(ipaddress.ip_address(address))
    except ValueError:
        return -1


def service_drift(wanted: ConfiguredService, actual: Service) -> list[Drift]:
    """Where a service itself (its scheduler, its persistence) differs from its configuration."""
    drifts = []
    if actual.scheduler != wanted.scheduler:
        drifts.append(Drift(SCHEDULER, wanted.key, None, wanted.scheduler, actual.scheduler, wanted.origin))
    configured_persistence = persistence_text(wanted.persistent, wanted.netmask, wanted.key.af)
    actual_persistence = persistence_text(actual.persistent, actual.netmask, actual.key.af)
    if configured_persistence != actual_persistence:
        drifts.append(
            Drift(PERSISTENCE, wanted.key, None, configured_persistence, actual_persistence, wanted.origin)
        )
    return drifts


def persistence_text(timeout: int | None, netmask: str, af: str) -> str | None:
    """A service's persistence as '360s' or '360s /24' (the granularity when not one address); None when it has none."""
    if not timeout:
        return None
    bits = _prefix_length(netmask, af)
    full = 128 if af == "inet6" else 32
    return f"{timeout}s" if bits in (None, full) else f"{timeout}s /{bits}"


def forward_agrees(configured: str, actual: str) -> bool:
    """Whether the kernel's forwarding method is the configured one, or "local" (which any method becomes)."""
    return actual == configured or actual == LOCAL_FORWARD


def _prefix_length(netmask: str, af: str) -> int | None:
    """255.255.255.0 -> 24, '64' -> 64, '' -> None (the default: one address)."""
    if not netmask:
        return None
    if netmask.isdigit():
        return int(netmask)
    if netmask.startswith("/") and netmask[1:].isdigit():
        return int(netmask[1:])
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError:
        return None


def dests_to_add(
    configuration: Configuration, service: ServiceKey, kernel: Service | None
) -> tuple[ConfiguredDest, ...]:
    """The configured real servers of a service that the kernel does not have: what `a` can add."""
    wanted = configuration.find_service(service)
    if wanted is None:
        return ()
    if kernel is None:
        return wanted.dests
    return tuple(dest for dest in wanted.dests if kernel.find_dest(dest.address, dest.port) is None)


def reload_restores_weight(configuration: Configuration | None, dest: DestKey, new_weight: int) -> int | None:
    """The weight keepalived's next reload puts back, when it differs from `new_weight`.

    None when keepalived would keep `new_weight`: the configuration is not keepalived's, does not
    list this real server, or configures this very weight.
    """
    if configuration is None or configuration.source != "keepalived":
        return None
    configured = configuration.find_dest(dest)
    if configured is None or configured.weight == new_weight:
        return None
    return configured.weight


def reload_warning(configuration: Configuration | None, dest: DestKey, new_weight: int) -> str | None:
    """One line for the status bar when a weight set with + or - will not survive keepalived's reload."""
    restored = reload_restores_weight(configuration, dest, new_weight)
    if restored is None:
        return None
    assert configuration is not None
    configured = configuration.find_dest(dest)
    where = f" ({configured.origin})" if configured and configured.origin else ""
    endpoint = join_host_port(dest.address, dest.port)
    return f"keepalived's next reload sets {endpoint} back to weight {restored}{where}"
