"""The desired-state plan: what IPVS must be told so it holds the topology's services, given the checks' verdicts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ipvsman.drift import LOCAL_FORWARD  # noqa: F401 (kernel.apply reads it here)
from ipvsman.drift import forward_agrees, persistence_text, service_drift
from ipvsman.model import DestKey, Service, ServiceKey
from ipvsman.topology import ConfiguredDest, ConfiguredService

QUIESCE = "quiesce"
REMOVE = "remove"


def _settings(scheduler: str, persistent: int | None, netmask: str, af: str) -> str:
    """wrr, or wrr persistent 360s /24: a service's settings in words."""
    persistence = persistence_text(persistent, netmask, af)
    return f"{scheduler} persistent {persistence}" if persistence else scheduler


@dataclass(frozen=True, slots=True)
class _ServiceAction:
    key: ServiceKey
    scheduler: str
    persistent: int | None
    netmask: str

    @property
    def settings(self) -> str:
        return _settings(self.scheduler, self.persistent, self.netmask, self.key.af)


@dataclass(frozen=True, slots=True)
class CreateService(_ServiceAction):
    def __str__(self) -> str:
        return f"create {self.key} scheduler {self.settings}"


@dataclass(frozen=True, slots=True)
class EditService(_ServiceAction):
    was: str  # what the kernel had, in words

    def __str__(self) -> str:
        return f"edit {self.key}: scheduler {self.settings} (was {self.was})"


@dataclass(frozen=True, slots=True)
class _DestAction:
    service: ServiceKey
    address: str
    port: int

    @property
    def dest(self) -> DestKey:
        return DestKey(self.service, self.address, self.port)


@dataclass(frozen=True, slots=True)
class AddDest(_DestAction):
    forward: str
    weight: int

    def __str__(self) -> str:
        return f"add {self.dest} {self.forward} weight {self.weight}"


@dataclass(frozen=True, slots=True)
class SetDest(_DestAction):
    forward: str
    weight: int
    was_forward: str
    was_weight: int

    def __str__(self) -> str:
        forward = f" {self.was_forward} -> {self.forward}" if self.forward != self.was_forward else ""
        return f"set {self.dest}{forward} weight {self.was_weight} -> {self.weight}"


@dataclass(frozen=True, slots=True)
class RemoveDest(_DestAction):
    why: str  # "failed its checks" or "not in the topology"

    def __str__(self) -> str:
        return f"remove {self.dest} ({self.why})"


Action = CreateService | EditService | AddDest | SetDest | RemoveDest


def failure_action(dest: ConfiguredDest) -> str:
    return dest.check.on_failure if dest.check is not None else QUIESCE


def desired_weight(dest: ConfiguredDest, in_service: bool) -> int | None:
    """The weight the kernel should have; None: the real server should not be there at all."""
    if dest.weight == 0 or in_service:
        return dest.weight
    return None if failure_action(dest) == REMOVE else 0


def plan(
    configured: Sequence[ConfiguredService],
    kernel: Iterable[Service],
    in_service: Callable[[DestKey], bool],
) -> tuple[Action, ...]:
    """The actions that make `kernel` hold `configured`, services first, in topology order.

    Pure. Only services the topology names are looked at, so IPVS services of keepalived,
    ldirectord or an operator are never touched. Within a named service ipvsmand owns everything:
    a real server the topology does not list is removed.
    """
    actual = {service.key: service for service in kernel}
    actions: list[Action] = []
    for wanted in configured:
        have = actual.get(wanted.key)
        if have is None:
            actions.append(CreateService(wanted.key, wanted.scheduler, wanted.persistent, wanted.netmask))
        elif service_drift(wanted, have):
            was = _settings(have.scheduler, have.persistent, have.netmask, have.key.af)
            actions.append(EditService(wanted.key, wanted.scheduler, wanted.persistent, wanted.netmask, was))
        kernel_dests = {(dest.address, dest.port): dest for dest in have.dests} if have else {}
        for dest in wanted.dests:
            weight = desired_weight(dest, in_service(wanted.dest_key(dest)))
            current = kernel_dests.pop((dest.address, dest.port), None)
            if current is None:
                if weight is not None:
                    actions.append(AddDest(wanted.key, dest.address, dest.port, dest.forward, weight))
            elif weight is None:
                actions.append(RemoveDest(wanted.key, dest.address, dest.port, "failed its checks"))
            elif current.weight != weight or not forward_agrees(dest.forward, current.forward):
                actions.append(
                    SetDest(wanted.key, dest.address, dest.port, dest.forward, weight, current.forward, current.weight)
                )
        for address, port in kernel_dests:
            actions.append(RemoveDest(wanted.key, address, port, "not in the topology"))
    return tuple(actions)
