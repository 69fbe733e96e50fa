"""Real keepalived programs IPVS from a test keepalived.conf; ipvsman reading the same file sees no drift
until a real server's weight is changed behind keepalived's back."""

from __future__ import annotations

import os
import shutil

import pytest

from ipvsman.drift import WEIGHT, find_drift, reload_warning
from ipvsman.keepalived import read_keepalived
from ipvsman.kernel.backend import KernelBackend
from ipvsman.model import DestKey, ServiceKey
from ipvsman.vips import read_vip_owners
from waiting import wait_until

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"

MAIN_CONF = """\
! ipvsman drift test: NAT, DR with persistence, a TUN group (included), a fwmark, a health check
global_defs {
    router_id ipvsman_test
}

virtual_server 10.98.0.10 80 {
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 10.98.1.1 8080 {
        weight 3
    }
    real_server 10.98.1.2 8080 {
        weight 1
    }
}

virtual_server 10.98.0.11 443 {       # DR, persistent per /24
    lb_algo sh
    lb_kind DR
    protocol TCP
    persistence_timeout 600
    persistence_granularity 255.255.255.0
    real_server 10.98.1.3 443 {
        weight 5
    }
}

virtual_server fwmark 25 {
    lb_algo rr
    lb_kind DR
    real_server 10.98.1.5 25 {
    }
}

virtual_server 10.98.0.12 8080 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 3
    real_server 10.98.0.2 8080 {
        weight 4
        TCP_CHECK {
            connect_timeout 10
        }
    }
}

include conf.d/*.conf
"""

GROUP_CONF = """\
# DNS on two VIPs, tunnelled
virtual_server_group DNS {
    10.98.0.53-54 53
}
virtual_server group DNS {
    lb_algo rr
    lb_kind TUN
    protocol UDP
    real_server 10.98.1.4 53 {
        weight 2
    }
}
"""

# The real server the TCP_CHECK connects to: it accepts and closes, nothing more (busybox
# starts in a fraction of the time a Python listener takes in the guest).
LISTENER = "exec busybox nc -ll -p 8080 -e /bin/true"

EXPECTED_RULES = 6 + 7  # `ipvsadm -Sn` lines: six services, seven real servers


def poll_services(netns_name: str):
    backend = KernelBackend(netns=netns_name)
    backend.open()
    try:
        return backend.poll(connections=False).services
    finally:
        backend.close()


@pytest.mark.kernel
@pytest.mark.skipif(not os.access(KEEPALIVED, os.X_OK), reason="keepalived is not installed")
def test_keepalived_programs_ipvs_without_drift_until_a_weight_changes(netns, tmp_path):
    conf = tmp_path / "keepalived.conf"
    conf.write_text(MAIN_CONF)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "dns.conf").write_text(GROUP_CONF)
    log = tmp_path / "keepalived.log"

    netns.run("ip addr add 10.98.0.2/32 dev lo && ip addr add 10.98.0.10/32 dev lo")
    netns.popen(LISTENER)
    wait_until(lambda: ":8080" in netns.run("ss -ltn", check=False).stdout, "the health-checked server to listen", timeout=180)
    netns.popen(
        f"exec {KEEPALIVED} -n -l -D -C -f {conf} -p {tmp_path / 'k.pid'} -c {tmp_path / 'c.pid'}"
        f" -r {tmp_path / 'v.pid'} > {log} 2>&1"
    )

    def programmed() -> bool:
        rules = netns.run("ipvsadm -Sn", check=False).stdout.splitlines()
        return len(rules) >= EXPECTED_RULES

    try:
        wait_until(programmed, "keepalived to program IPVS", timeout=180)
    except AssertionError:
        raise AssertionError(
            f"keepalived did not program IPVS:\n{netns.run('ipvsadm -Ln', check=False).stdout}\n"
            f"{log.read_text(errors='replace')[-3000:] if log.exists() else 'no log'}"
        ) from None

    configuration = read_keepalived(str(conf))
    assert configuration.errors == ()
    assert len(configuration.files) == 2

    services = poll_services(netns.name)
    report = find_drift(services, configuration)
    assert [str(drift) for drift in report.drifts] == [], netns.run("ipvsadm -Ln", check=False).stdout
    assert len(services) == 6

    # The VIP held on lo here; the DR VIP is not held; nothing runs VRRP in this test.
    owners, error = read_vip_owners(services, configuration.vrrp_instances, netns=netns.name)
    assert error is None
    web = ServiceKey("inet", "tcp", "10.98.0.10", 80)
    assert owners[web].interface == "lo"
    assert not owners[ServiceKey("inet", "tcp", "10.98.0.11", 443)].held

    netns.run("ipvsadm -e -t 10.98.0.10:80 -r 10.98.1.1:8080 -m -w 7")
    report = find_drift(poll_services(netns.name), configuration)
    changed = DestKey(web, "10.98.1.1", 8080)
    assert [(d.kind, d.service, d.dest, d.configured, d.actual) for d in report.drifts] == [
        (WEIGHT, web, changed, 3, 7)
    ]
    assert report.service_drifts(web)
    warning = reload_warning(configuration, changed, 7)
    assert warning.startswith("keepalived's next reload sets 10.98.1.1:8080 back to weight 3")
