"""The desired-state plan: what IPVS must be told so it holds the topology's services, given the checks' verdicts.

Pure: the topology, the kernel's services and which real servers are in service in, a tuple of
actions out. Only services the topology names are looked at, so IPVS services of keepalived,
ldirectord or an operator are never touched. Within a named service ipvsmand owns everything:
a real server the topology does not list is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ipvsman.drift import _persistence_text as persistence_text
from ipvsman.model import DestKey, Service, ServiceKey, join_host_port
from ipvsman.topology import ConfiguredDest, ConfiguredService

QUIESCE = "quiesce"
REMOVE = "remove"
LOCAL_FORWARD = "local"  # the kernel's word for any method to one of the director's own addresses


@dataclass(frozen=True, slots=True)
class CreateService:
    key: ServiceKey
    scheduler: str
    persistent: int | None
    netmask: str

    def __str__(self) -> str:
        return f"create {self.key} scheduler {self.scheduler}{_persistence_words(self)}"


@dataclass(frozen=True, slots=True)
class EditService:
    key: ServiceKey
    scheduler: str
    persistent: int | None
    netmask: str
    was: str  # what the kernel had, in words

    def __str__(self) -> str:
        return f"edit {self.key}: scheduler {self.scheduler}{_persistence_words(self)} (was {self.was})"


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    address: str
    port: int
    forward: str
    weight: int

    def __str__(self) -> str:
        return f"add {self.service} -> {join_host_port(self.address, self.port)} {self.forward} weight {self.weight}"


@dataclass(frozen=True, slots=True)
class SetDest:
    service: ServiceKey
    address: str
    port: int
    forward: str
    weight: int
    was_forward: str
    was_weight: int

    def __str__(self) -> str:
        forward = f" {self.was_forward} -> {self.forward}" if self.forward != self.was_forward else ""
        return (
            f"set {self.service} -> {join_host_port(self.address, self.port)}{forward}"
            f" weight {self.was_weight} -> {self.weight}"
        )


@dataclass(frozen=True, slots=True)
class RemoveDest:
    service: ServiceKey
    address: str
    port: int
    why: str  # "failed its checks" or "not in the topology"

    def __str__(self) -> str:
        return f"remove {self.service} -> {join_host_port(self.address, self.port)} ({self.why})"


Action = CreateService | EditService | AddDest | SetDest | RemoveDest


def _persistence_words(action: CreateService | EditService) -> str:
    text = persistence_text(action.persistent, action.netmask, action.key.af)
    return f" persistent {text}" if text else ""


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
    """The actions that make `kernel` hold `configured`, services first, in topology order."""
    actual = {service.key: service for service in kernel}
    actions: list[Action] = []
    for wanted in configured:
        have = actual.get(wanted.key)
        if have is None:
            actions.append(CreateService(wanted.key, wanted.scheduler, wanted.persistent, wanted.netmask))
        elif _service_differs(wanted, have):
            was = f"{have.scheduler}" + (
                f" persistent {persistence_text(have.persistent, have.netmask, have.key.af)}" if have.persistent else ""
            )
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
            elif current.weight != weight or not _forward_agrees(dest.forward, current.forward):
                actions.append(
                    SetDest(wanted.key, dest.address, dest.port, dest.forward, weight, current.forward, current.weight)
                )
        for address, port in kernel_dests:
            actions.append(RemoveDest(wanted.key, address, port, "not in the topology"))
    return tuple(actions)


def _service_differs(wanted: ConfiguredService, have: Service) -> bool:
    if have.scheduler != wanted.scheduler:
        return True
    return persistence_text(wanted.persistent, wanted.netmask, wanted.key.af) != persistence_text(
        have.persistent, have.netmask, have.key.af
    )


def _forward_agrees(configured: str, actual: str) -> bool:
    return actual == configured or actual == LOCAL_FORWARD
