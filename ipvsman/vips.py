"""VIP owner: which service VIPs this director holds, on which interface, for which vrrp_instance."""

from __future__ import annotations

import functools
import ipaddress
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
        from pyroute2 import IPRoute

        from ipvsman.kernel import netns as namespaces

        # This thread enters the namespace for the call, and the socket is made there. Not
        # IPRoute(netns=...): pyroute2 forks a child process to make each such socket, which
        # every few seconds is most of an idle dashboard's CPU on a slow machine.
        with namespaces.entered(netns), IPRoute() as ipr:
            links = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
            pairs = []
            for message in ipr.get_addr():
                # IFA_LOCAL is the local end on point-to-point links, where IFA_ADDRESS is the peer.
                address = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
                if not address:
                    continue
                interface = links.get(message["index"]) or message.get("IFA_LABEL") or f"if{message['index']}"
                pairs.append((_normal(address), interface))
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


@functools.lru_cache(maxsize=65536)
def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address
