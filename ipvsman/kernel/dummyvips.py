"""A real server's dummy VIP interface: read and change its link, addresses and ARP sysctls (pyroute2, /proc/sys)."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ipvsman.kernel import netns as namespaces
from ipvsman.realserver import (
    ARP_SYSCTLS,
    SYSCTL_SCOPE_ALL,
    AddAddress,
    BringUp,
    CreateInterface,
    InterfaceAddress,
    InterfaceState,
    RemoveAddress,
    SetSysctl,
    Step,
)
from ipvsman.vips import VipLookupError, local_addresses

IFF_UP = 0x1
IFA_F_NODAD = 0x02  # linux/if_addr.h: no duplicate address detection for an address nobody else may answer for
SYSCTL_ROOT = "/proc/sys/net/ipv4/conf"


class DummyVipError(Exception):
    """The interface could not be read; the message is one line. `bad_input` marks the operator's mistake
    (a namespace that does not exist) apart from a failure of the host."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What happened to a plan's steps: those done, and the first that failed with why."""

    done: tuple[Step, ...]
    failed: Step | None = None
    reason: str = ""
    brought_down: bool = False  # the interface was taken down because its ARP sysctls could not be set


class DummyVipHost:
    """This host (or a named network namespace) as `ipvsman vips` reads and changes it."""

    def __init__(self, netns: str | None = None):
        self.netns = netns

    def host_addresses(self) -> list[tuple[str, str]]:
        """(address, interface) of every local address; DummyVipError when they cannot be read."""
        try:
            return local_addresses(self.netns)
        except VipLookupError as exc:
            raise DummyVipError(str(exc), bad_input=self._missing_netns()) from None

    def read_interface(self, name: str) -> InterfaceState:
        """The interface as it is now, with the ARP sysctls of `all` and of the interface."""
        try:
            with namespaces.entered(self.netns), _ipr() as ipr:
                indexes = ipr.link_lookup(ifname=name)
                sysctls = {(SYSCTL_SCOPE_ALL, key): read_sysctl(SYSCTL_SCOPE_ALL, key) for key, _, _ in ARP_SYSCTLS}
                if not indexes:
                    return InterfaceState(name, exists=False, sysctls=sysctls)
                link = ipr.get_links(indexes[0])[0]
                addresses = tuple(
                    InterfaceAddress(_normal(message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")), message["prefixlen"])
                    for message in ipr.get_addr(index=indexes[0])
                    if message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
                )
                sysctls.update({(name, key): read_sysctl(name, key) for key, _, _ in ARP_SYSCTLS})
                return InterfaceState(
                    name,
                    exists=True,
                    kind=link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                    up=bool(link["flags"] & IFF_UP),
                    addresses=addresses,
                    sysctls=sysctls,
                )
        except namespaces.NetnsError as exc:
            raise DummyVipError(str(exc), bad_input=not exc.denied) from None
        except Exception as exc:  # netlink or permission trouble: one line, never a traceback
            raise DummyVipError(f"cannot read interface {name}{self._where()}: {_reason(exc)}") from None

    def apply(self, interface: str, steps: Iterable[Step]) -> ApplyResult:
        """Carry the steps out on `interface` in order, stopping at the first that fails.

        When an ARP sysctl cannot be set the interface is brought down, as vip_manager did: VIPs
        on an up interface without those settings would be answered for by ARP, stealing the
        director's traffic.
        """
        steps = tuple(steps)
        done: list[Step] = []
        try:
            with namespaces.entered(self.netns), _ipr() as ipr:
                for step in steps:
                    try:
                        _carry_out(ipr, step)
                    except Exception as exc:
                        reason = _reason(exc)
                        brought_down = isinstance(step, SetSysctl) and _bring_down(ipr, interface)
                        return ApplyResult(tuple(done), step, reason, brought_down)
                    done.append(step)
        except namespaces.NetnsError as exc:
            return ApplyResult(tuple(done), steps[0] if steps else None, str(exc))
        except Exception as exc:  # the netlink socket itself
            return ApplyResult(tuple(done), steps[len(done)] if len(done) < len(steps) else None, _reason(exc))
        return ApplyResult(tuple(done))

    def _where(self) -> str:
        return f" in netns {self.netns}" if self.netns else ""

    def _missing_netns(self) -> bool:
        try:
            return bool(self.netns) and namespaces.lookup(self.netns) is None
        except namespaces.NetnsError:
            return False


def read_sysctl(scope: str, key: str) -> int | None:
    """net.ipv4.conf.<scope>.<key> of the calling thread's namespace, None when it cannot be read."""
    try:
        with open(os.path.join(SYSCTL_ROOT, scope, key)) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def write_sysctl(scope: str, key: str, value: int) -> None:
    # /proc/sys/net follows the opening thread's network namespace, entered by the caller.
    with open(os.path.join(SYSCTL_ROOT, scope, key), "w") as handle:
        handle.write(f"{value}\n")


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def _carry_out(ipr, step: Step) -> None:
    if isinstance(step, CreateInterface):
        ipr.link("add", ifname=step.name, kind="dummy")
    elif isinstance(step, SetSysctl):
        write_sysctl(step.setting.scope, step.setting.key, step.setting.wanted)
    elif isinstance(step, RemoveAddress):
        ipr.addr("del", index=_index(ipr, step.interface), address=step.address.address, prefixlen=step.address.prefixlen)
    elif isinstance(step, AddAddress):
        extra = {"flags": IFA_F_NODAD} if step.address.family == "inet6" else {}
        ipr.addr(
            "add", index=_index(ipr, step.interface), address=step.address.address, prefixlen=step.address.prefixlen, **extra
        )
    elif isinstance(step, BringUp):
        ipr.link("set", index=_index(ipr, step.interface), state="up")
    else:
        raise TypeError(f"unknown step {step!r}")


def _index(ipr, name: str) -> int:
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        raise OSError(errno.ENODEV, f"no interface {name}")
    return indexes[0]


def _bring_down(ipr, name: str) -> bool:
    try:
        ipr.link("set", index=_index(ipr, name), state="down")
        return True
    except Exception:  # already gone or not permitted: the report says it could not be taken down
        return False


def _normal(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    code = getattr(exc, "code", None)  # pyroute2's NetlinkError carries the errno as .code
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__
