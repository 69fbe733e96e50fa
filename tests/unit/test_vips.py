"""VIP owner: which service VIPs this director holds, where, and for which vrrp_instance."""

from __future__ import annotations

import os
import textwrap
import uuid

from ipvsman.keepalived import parse_keepalived
from ipvsman.model import Service, ServiceKey
from ipvsman.vips import VipLookupError, VipOwner, local_addresses, read_vip_owners, vip_owners

WEB = ServiceKey("inet", "tcp", "192.0.2.10", 80)
WEB_TLS = ServiceKey("inet", "tcp", "192.0.2.10", 443)
MAIL_VIP = ServiceKey("inet", "tcp", "198.51.100.25", 25)
V6 = ServiceKey("inet6", "tcp", "2001:db8:10::10", 80)
STRAY = ServiceKey("inet", "udp", "203.0.113.1", 53)
MARK = ServiceKey("inet", None, "", 0, 7)

VRRP = textwrap.dedent(
    """\
    vrrp_instance VI_WEB {
        interface eth0
        virtual_ipaddress {
            192.0.2.10/24 dev eth0 label eth0:web
            2001:0db8:0010:0000::0010/64 dev eth0
        }
    }
    vrrp_instance VI_MAIL {
        interface eth1
        virtual_ipaddress {
            198.51.100.25
        }
    }
    """
)


def test_owners_of_held_and_not_held_vips():
    instances = parse_keepalived(VRRP).vrrp_instances
    addresses = [("127.0.0.1", "lo"), ("192.0.2.10", "eth0"), ("2001:db8:10::10", "eth0"), ("10.0.0.1", "eth1")]
    owners = vip_owners([WEB, WEB_TLS, Service(MAIL_VIP, "rr"), V6, STRAY, MARK], addresses, instances)
    assert owners == {
        WEB: VipOwner("192.0.2.10", "eth0", "VI_WEB"),
        WEB_TLS: VipOwner("192.0.2.10", "eth0", "VI_WEB"),
        # This director is the VRRP backup for the mail VIP: it does not hold it now.
        MAIL_VIP: VipOwner("198.51.100.25", None, "VI_MAIL"),
        # The IPv6 VIP was written in long form in keepalived.conf and still matches.
        V6: VipOwner("2001:db8:10::10", "eth0", "VI_WEB"),
        STRAY: VipOwner("203.0.113.1", None, None),
    }
    # A firewall-mark service has no VIP to own.
    assert MARK not in owners
    assert owners[WEB].held and not owners[MAIL_VIP].held
    assert str(owners[WEB]) == "192.0.2.10 held on eth0 (VI_WEB)"
    assert str(owners[MAIL_VIP]) == "198.51.100.25 not held here (VI_MAIL)"
    assert str(owners[STRAY]) == "203.0.113.1 not held here"


def test_without_keepalived_only_the_interface_is_known():
    owners = vip_owners([WEB], [("192.0.2.10", "bond0")])
    assert owners == {WEB: VipOwner("192.0.2.10", "bond0", None)}


def test_local_addresses_of_this_namespace_include_loopback():
    # A netlink dump of this process's own namespace: no traffic leaves the machine.
    pairs = local_addresses()
    assert ("127.0.0.1", "lo") in pairs
    assert all(isinstance(address, str) and isinstance(interface, str) for address, interface in pairs)


def test_local_addresses_agree_with_a_pyroute2_dump_of_the_same_namespace():
    # getifaddrs (through psutil) against pyroute2's own address dump, on this machine's addresses.
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        dumped = {(str(ipaddress.ip_address(message.get("IFA_LOCAL") or message.get("IFA_ADDRESS"))),
                   names[message["index"]]) for message in ipr.get_addr()}  # fmt: skip
    assert set(local_addresses()) == dumped


def test_a_missing_namespace_is_a_one_line_error_and_is_not_created():
    name = f"ipvsman-test-absent-{uuid.uuid4().hex[:8]}"
    try:
        local_addresses(netns=name)
    except VipLookupError as exc:
        message = str(exc)
    else:
        raise AssertionError("reading a namespace that does not exist should fail")
    assert name in message and "\n" not in message
    # pyroute2 creates a missing namespace unless told not to; it must not have here.
    assert not os.path.exists(f"/var/run/netns/{name}")
    owners, error = read_vip_owners([WEB], netns=name)
    assert owners == {} and name in error
