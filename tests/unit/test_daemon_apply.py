"""The netlink requests ipvsmand adds: a service's full configuration, encoded and decoded back."""

from __future__ import annotations

import collections
import socket
import sys

import pytest

from ipvsman.kernel import netlink
from ipvsman.model import ServiceKey


def round_trip(key, scheduler, persistent, netmask):
    message = netlink.request_message(netlink.CMD_NEW_SERVICE, [netlink.service_config_attrs(key, scheduler, persistent, netmask)])
    message.encode()
    decoded = netlink.ipvs_message(message.data)
    decoded.decode()
    return decoded, netlink.NlaDecoder.service(decoded, collections.Counter())


@pytest.mark.parametrize(
    "key, persistent, netmask, raw_mask, shown",
    [
        (ServiceKey("inet", "tcp", "10.0.0.1", 80), None, "", socket.inet_aton("255.255.255.255"), "255.255.255.255"),
        (ServiceKey("inet", "tcp", "10.0.0.1", 80), 300, "255.255.255.0", socket.inet_aton("255.255.255.0"), "255.255.255.0"),
        (ServiceKey("inet6", "udp", "fd00::1", 53), 60, "64", (64).to_bytes(4, sys.byteorder), "64"),
        (ServiceKey("inet", None, "", 0, 12), None, "", socket.inet_aton("255.255.255.255"), "255.255.255.255"),
    ],
)
def test_a_new_service_carries_everything_the_kernel_demands(key, persistent, netmask, raw_mask, shown):
    decoded, service = round_trip(key, "wrr", persistent, netmask)
    attrs = dict(decoded.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == raw_mask
    assert attrs["IPVS_SVC_ATTR_TIMEOUT"] == (persistent or 0)
    assert attrs["IPVS_SVC_ATTR_FLAGS"]["mask"] == 0xFFFFFFFF
    assert service.key == key and service.scheduler == "wrr" and service.persistent == persistent
    assert service.netmask == shown
