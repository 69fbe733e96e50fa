"""VIP owner: which service VIPs this director holds, on which interface, for which vrrp_instance."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ipvsman.model import Service, ServiceKey
from ipvsman.topology import VrrpInstance


class VipLookupError(Exception):
    """The local addresses could not be read; the message is one line fit for the status bar."""


@dataclass(frozen=True, slots=True)
class VipOwner:
    """Where a service's VIP lives as far as this director knows."""

    address: str
    interface: str | None  # the interface holding it here; None when this director does not hold it
    vrrp_instance: str | None  # the keepalived vrrp_instance listing it, when keepalived.conf is known

    @property
    def held(self) -> bool:
        return self.interface is not None

    def __str__(self) -> str:
        where = f"held on {self.interface}" if self.interface else "not held here"
        return f"{self.address} {where}" + (f" ({self.vrrp_instance})" if self.vrrp_instance else "")


def local_addresses(netns: str | None = None) -> list[tuple[str, str]]:
    """(address, interface) of every address configured in this (or the named) network namespace.

    Netlink I/O: call it from the polling thread or another worker, not the UI. Raises
    VipLookupError with a one-line reason when the addresses cannot be read.
    """
    try:
        import psutil

        from ipvsman.kernel import netns as namespaces

        # This thread enters the namespace for the call, and getifaddrs(3) (through psutil)
        # makes its netlink socket there. Not pyroute2's IPRoute: decoding its link and address
        # dumps in Python took 1.9 ms on an idle host against 0.03 ms, and the dashboard asks
        # every few seconds (about 1% of a CPU in the emulated guest, for nothing).
        with namespaces.entered(netns):
            by_interface = psutil.net_if_addrs()
        pairs = []
        for name, addresses in by_interface.items():
            # An IPv4 address with a label ("eth0:1") is on the interface before the colon: no
            # interface name may hold one (dev_valid_name), so the part before it is the device.
            interface = name.partition(":")[0]
            for entry in addresses:
                # getifaddrs gives IFA_LOCAL on point-to-point links, where IFA_ADDRESS is the peer.
                if entry.family in _INET_FAMILIES and entry.address:
                    pairs.append((_normal(entry.address.partition("%")[0]), interface))
        return pairs
    except Exception as exc:  # netlink, namespace or permission trouble: the view says so, nothing crashes
        where = f" in netns {netns}" if netns else ""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise VipLookupError(f"cannot list local addresses{where}: {reason}") from None


def vip_owners(
    services: Iterable[Service | ServiceKey],
    addresses: Iterable[tuple[str, str]],
    vrrp_instances: Iterable[VrrpInstance] = (),
) -> dict[ServiceKey, VipOwner]:
    """Map each address-based service to its VIP's owner; firewall-mark services have no VIP."""
    held: dict[str, str] = {}
    for address, interface in addresses:
        held.setdefault(_normal(address), interface)
    instance_of: dict[str, str] = {}
    for instance in vrrp_instances:
        for virtual in instance.addresses:
            instance_of.setdefault(_normal(virtual.address), instance.name)
    owners: dict[ServiceKey, VipOwner] = {}
    for item in services:
        key = item.key if isinstance(item, Service) else item
        if key.fwmark or not key.address:
            continue
        vip = _normal(key.address)
        owners[key] = VipOwner(vip, held.get(vip), instance_of.get(vip))
    return owners


def read_vip_owners(
    services: Iterable[Service | ServiceKey],
    vrrp_instances: Iterable[VrrpInstance] = (),
    netns: str | None = None,
) -> tuple[dict[ServiceKey, VipOwner], str | None]:
    """local_addresses + vip_owners that never raises: (owners, None), or ({}, the one-line reason)."""
    try:
        addresses = local_addresses(netns)
    except VipLookupError as exc:
        # Without the address list nothing is known to be held or not: show nothing rather than "not held".
        return {}, str(exc)
    return vip_owners(services, addresses, vrrp_instances), None


_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@functools.lru_cache(maxsize=65536)
def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address
