"""The real server's side of direct routing: which VIPs this host must hold on its dummy interface, and why.

vip_manager's job, as pure functions over a keepalived.conf (a Configuration) and what the host
has now (an InterfaceState): no I/O here. ipvsman.kernel.dummyvips reads the host and carries
out the steps; ipvsman.realserver_cli prints the plan.

Only direct routing and tunnelling need the VIP on the real server: with NAT the director
rewrites the destination to the real server's own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ipvsman.topology import Configuration

NEEDS_VIP = frozenset({"route", "tunnel"})  # forwarding methods that deliver packets still addressed to the VIP

# The sysctls that keep a DR real server from answering ARP for its VIPs, with the value set and
# the values accepted as they are (stricter settings the operator chose are left alone).
# arp_ignore 1: answer only for addresses on the interface the request came in on (2 and 8 are
# stricter; 3 would still answer for the VIPs). arp_announce 2: always use the best local address
# of the outgoing interface as ARP source, never a VIP. The kernel uses the larger of `all` and
# the interface's own value, so `all` is what protects the real server's other interfaces.
ARP_SYSCTLS = (("arp_ignore", 1, frozenset({1, 2, 8})), ("arp_announce", 2, frozenset({2})))
SYSCTL_SCOPE_ALL = "all"
RESERVED_INTERFACE_NAMES = frozenset({"all", "default", ".", ".."})  # taken by /proc/sys/net/ipv4/conf
MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1


class PlanInputError(ValueError):
    """Bad input to the plan (an address, an interface name); the message is one line."""


@dataclass(frozen=True, slots=True, order=True)
class InterfaceAddress:
    """An address with its prefix length on the managed interface."""

    address: str
    prefixlen: int

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def family(self) -> str:
        return "inet6" if ":" in self.address else "inet"


@dataclass(frozen=True, slots=True)
class InterfaceState:
    """What the managed interface looks like now; `exists` false means every other field is empty."""

    name: str
    exists: bool
    kind: str | None = None  # IFLA_INFO_KIND: "dummy", "veth", ...; None for a plain device
    up: bool = False
    addresses: tuple[InterfaceAddress, ...] = ()
    sysctls: Mapping[tuple[str, str], int | None] = field(default_factory=dict)  # (scope, key) -> value


@dataclass(frozen=True, slots=True)
class SysctlSetting:
    """One net.ipv4.conf.<scope>.<key> value: what it is and what it must be."""

    scope: str  # "all" or the interface name
    key: str
    current: int | None  # None: not readable (or the interface does not exist yet)
    wanted: int
    accepted: frozenset[int]

    @property
    def name(self) -> str:
        return f"net.ipv4.conf.{self.scope}.{self.key}"

    @property
    def needs_change(self) -> bool:
        return self.current not in self.accepted


@dataclass(frozen=True, slots=True)
class ServedVip:
    """A VIP this host must hold, and the services it is a real server of there."""

    address: InterfaceAddress
    services: tuple[str, ...]  # "tcp 10.0.0.1:80", "tcp 10.0.0.1:443 (sorry server)"


# -- the steps that carry a plan out, in order ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateInterface:
    name: str

    def __str__(self) -> str:
        return f"create {self.name} (dummy, down)"


@dataclass(frozen=True, slots=True)
class SetSysctl:
    setting: SysctlSetting

    def __str__(self) -> str:
        was = "unset" if self.setting.current is None else self.setting.current
        return f"set {self.setting.name} {was} -> {self.setting.wanted}"


@dataclass(frozen=True, slots=True)
class RemoveAddress:
    interface: str
    address: InterfaceAddress

    def __str__(self) -> str:
        return f"remove {self.address} from {self.interface}"


@dataclass(frozen=True, slots=True)
class AddAddress:
    interface: str
    address: InterfaceAddress

    def __str__(self) -> str:
        how = " nodad" if self.address.family == "inet6" else ""
        return f"add {self.address} to {self.interface}{how}"


@dataclass(frozen=True, slots=True)
class BringUp:
    interface: str

    def __str__(self) -> str:
        return f"bring {self.interface} up"


Step = CreateInterface | SetSysctl | RemoveAddress | AddAddress | BringUp


@dataclass(frozen=True, slots=True)
class VipPlan:
    """What `ipvsman vips` will do (or found already done) on one interface."""

    interface: str
    real_ips: tuple[str, ...]  # this host's addresses that keepalived.conf names as a real server
    create: bool
    added: tuple[ServedVip, ...]
    removed: tuple[InterfaceAddress, ...]
    kept: tuple[ServedVip, ...]
    sysctls: tuple[SysctlSetting, ...]
    bring_up: bool
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def steps(self) -> tuple[Step, ...]:
        """The changes in a safe order: the ARP sysctls before any VIP can be up, removals before additions."""
        steps: list[Step] = []
        if self.create:
            steps.append(CreateInterface(self.interface))
        steps.extend(SetSysctl(setting) for setting in self.sysctls if setting.needs_change)
        steps.extend(RemoveAddress(self.interface, address) for address in self.removed)
        steps.extend(AddAddress(self.interface, vip.address) for vip in self.added)
        if self.bring_up:
            steps.append(BringUp(self.interface))
        return tuple(steps)

    @property
    def changes(self) -> bool:
        return bool(self.steps)


# -- the plan ---------------------------------------------------------------------------------


def check_interface_name(name: str) -> str:
    """The name, or PlanInputError saying why the kernel (or /proc/sys) would not take it."""
    if not name or len(name) > MAX_INTERFACE_NAME:
        raise PlanInputError(f"interface name must be 1-{MAX_INTERFACE_NAME} characters, got {name!r}")
    if name in RESERVED_INTERFACE_NAMES or any(char in name for char in "/: \t\n\0"):
        raise PlanInputError(f"not a usable interface name: {name!r}")
    return name


def normal_address(text: str) -> str:
    """An address in its compressed form, or PlanInputError."""
    try:
        return str(ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]")))
    except ValueError:
        raise PlanInputError(f"expected an IPv4 or IPv6 address, got {text!r}") from None


def host_real_ips(
    config: Configuration, host_addresses: Iterable[tuple[str, str]], managed_interface: str
) -> tuple[str, ...]:
    """This host's own addresses that some real_server (or sorry_server) entry names.

    Addresses on the managed interface are VIPs, never the host's identity as a real server.
    """
    own = {normal_address(address) for address, interface in host_addresses if interface != managed_interface}
    named = {dest.address for service in config.services for dest in (*service.dests, *service.sorry_servers)}
    return tuple(sorted(own & named, key=_address_order))


def served_vips(
    config: Configuration, real_ips: Iterable[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """VIP -> the services this host serves there by DR or tunnel, and notes on what was left out.

    The notes name firewall-mark services (keepalived.conf has no VIP for them) and NAT services
    (which need none) that list this host.
    """
    mine = {normal_address(address) for address in real_ips}
    vips: dict[str, list[str]] = {}
    notes: list[str] = []
    for service in config.services:
        for dests, role in ((service.dests, ""), (service.sorry_servers, " (sorry server)")):
            ours = [dest for dest in dests if dest.address in mine]
            if not ours:
                continue
            if not any(dest.forward in NEEDS_VIP for dest in ours):
                notes.append(f"{service.key}{role}: this host is a NAT real server; NAT needs no VIP here")
                continue
            if service.key.fwmark:
                notes.append(
                    f"{service.key}{role}: keepalived.conf names no VIP for a firewall-mark service; "
                    "give its VIPs with --vip ADDR"
                )
                continue
            vips.setdefault(service.key.address, []).append(f"{service.key}{role}")
    return vips, notes


def port_level_warnings(config: Configuration, vips: Mapping[str, Iterable[str]], real_ips: Iterable[str]) -> list[str]:
    """vip_manager's trap: a VIP held for some of its services makes this host's own connections to
    the others (other ports or protocols, which other real servers serve) stay local and fail."""
    mine = {normal_address(address) for address in real_ips}
    warnings = []
    for vip, serving in vips.items():
        missed = [
            service.key
            for service in config.services
            if not service.key.fwmark
            and service.key.address == vip
            and not any(
                dest.address in mine and dest.forward in NEEDS_VIP
                for dest in (*service.dests, *service.sorry_servers)
            )
        ]
        if missed:
            warnings.append(
                f"{vip} is held for {', '.join(serving)} but this host does not serve "
                f"{', '.join(str(key) for key in missed)}: its own connections to "
                f"{', '.join(key.endpoint for key in missed)} will stay on this host and fail"
            )
    return warnings


def vip_prefix(address: str) -> InterfaceAddress:
    return InterfaceAddress(address, 128 if ":" in address else 32)


def build_plan(
    config: Configuration,
    interface: InterfaceState,
    real_ips: Iterable[str],
    extra_vips: Iterable[str] = (),
    host_addresses: Iterable[tuple[str, str]] = (),
) -> VipPlan:
    """The plan for `interface` from keepalived.conf and this host's real-server addresses.

    `extra_vips` are VIPs the operator gives (for firewall-mark services); `host_addresses`
    (address, interface) are only used to say where a VIP is held elsewhere too, never to remove it.
    Raises PlanInputError for an interface that exists but is not a dummy.
    """
    check_interface_name(interface.name)
    if interface.exists and interface.kind != "dummy":
        kind = interface.kind or "a plain device"
        raise PlanInputError(
            f"{interface.name} is not a dummy interface ({kind}): ipvsman vips manages only dummy interfaces"
        )
    real_ips = tuple(normal_address(address) for address in real_ips)
    vips, notes = served_vips(config, real_ips)
    for extra in extra_vips:
        vips.setdefault(normal_address(extra), []).append("given with --vip")
    if not real_ips:
        notes.insert(0, f"none of this host's addresses is a real_server in {config.path}")
    elif not vips:
        notes.insert(0, f"{', '.join(real_ips)} serves no VIP by DR or TUN in {config.path}")

    wanted = {vip_prefix(address): tuple(services) for address, services in vips.items()}
    present = {address for address in interface.addresses if not _is_link_local(address.address)}
    in_order = [ServedVip(address, services) for address, services in sorted(wanted.items(), key=_vip_order)]
    added = tuple(vip for vip in in_order if vip.address not in present)
    kept = tuple(vip for vip in in_order if vip.address in present)
    removed = tuple(sorted((address for address in present if address not in wanted), key=_interface_address_order))

    sysctls = tuple(
        SysctlSetting(scope, key, interface.sysctls.get((scope, key)), value, accepted)
        for scope in (SYSCTL_SCOPE_ALL, interface.name)
        for key, value, accepted in ARP_SYSCTLS
    )
    elsewhere = {}
    for address, where in host_addresses:
        if where != interface.name:
            elsewhere.setdefault(normal_address(address), where)
    warnings = port_level_warnings(config, vips, real_ips)
    warnings.extend(
        f"{address} is also on {elsewhere[address]}: left there (ipvsman vips changes only {interface.name})"
        for address in sorted(vips, key=_address_order)
        if address in elsewhere
    )
    return VipPlan(
        interface=interface.name,
        real_ips=real_ips,
        create=not interface.exists,
        added=added,
        removed=removed,
        kept=kept,
        sysctls=sysctls,
        bring_up=not interface.up,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


def plan_to_dict(plan: VipPlan) -> dict:
    """The plan as JSON-ready values."""
    return {
        "interface": plan.interface,
        "real_ips": list(plan.real_ips),
        "create": plan.create,
        "added": [_served_dict(vip) for vip in plan.added],
        "removed": [str(address) for address in plan.removed],
        "kept": [_served_dict(vip) for vip in plan.kept],
        "sysctls": [
            {"name": setting.name, "current": setting.current, "wanted": setting.wanted, "change": setting.needs_change}
            for setting in plan.sysctls
        ],
        "bring_up": plan.bring_up,
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "steps": [str(step) for step in plan.steps],
    }


def plan_to_lines(plan: VipPlan) -> list[str]:
    """The plan as the text `ipvsman vips` prints: one line per address and sysctl."""
    lines = [f"this host as a real server: {', '.join(plan.real_ips) or 'none'}"]
    if plan.create:
        lines.append(f"  create  {plan.interface} (dummy)")
    for verb, vips in (("add", plan.added), ("keep", plan.kept)):
        for vip in vips:
            lines.append(f"  {verb:<7} {str(vip.address):<22} {', '.join(vip.services)}")
    for address in plan.removed:
        lines.append(f"  {'remove':<7} {address!s:<22} served by this host in no virtual_server")
    for setting in plan.sysctls:
        was = "unset" if setting.current is None else str(setting.current)
        change = f"{was} -> {setting.wanted}" if setting.needs_change else f"{was} (kept)"
        lines.append(f"  sysctl  {setting.name} {change}")
    if plan.bring_up:
        lines.append(f"  up      {plan.interface}")
    lines.extend(f"warning: {warning}" for warning in plan.warnings)
    lines.extend(f"note: {note}" for note in plan.notes)
    return lines


def _served_dict(vip: ServedVip) -> dict:
    return {"address": str(vip.address), "services": list(vip.services)}


def _is_link_local(address: str) -> bool:
    # The kernel gives an up dummy interface an fe80:: address of its own: not a VIP, never removed.
    return ipaddress.ip_address(address).is_link_local and ":" in address


def _address_order(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)


def _interface_address_order(address: InterfaceAddress) -> tuple[int, int, int]:
    return (*_address_order(address.address), address.prefixlen)


def _vip_order(item: tuple[InterfaceAddress, tuple[str, ...]]) -> tuple[int, int, int]:
    return _interface_address_order(item[0])

