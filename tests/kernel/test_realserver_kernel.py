"""`ipvsman vips` on a real kernel: the dummy interface, its VIPs and ARP sysctls in a network namespace.

Namespace b is the real server (10.99.0.2, fd99::2 on vb); namespace a stands for the director's
LAN (10.99.0.1, fd99::1 on va) and asks ARP and ND for the VIPs.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ipvsman.realserver_cli import main as vips_main
from waiting import wait_until

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]

CONF = textwrap.dedent(
    """\
    virtual_server 10.99.1.1 80 {
        lb_kind DR
        protocol TCP
        real_server 10.99.0.2 80 {
        }
        real_server 10.99.0.3 80 {
        }
    }
    virtual_server 10.99.1.1 443 {
        lb_kind DR
        protocol TCP
        real_server 10.99.0.3 443 {
        }
    }
    include services.d/*.conf
    virtual_server fd99:1::1 80 {
        lb_kind DR
        protocol TCP
        real_server fd99::2 80 {
        }
    }
    virtual_server 10.99.1.9 80 {
        lb_kind NAT
        protocol TCP
        real_server 10.99.0.2 8080 {
        }
    }
    virtual_server 10.99.1.8 80 {
        lb_kind DR
        protocol TCP
        real_server 10.99.0.3 80 {
        }
    }
    """
)
DNS = textwrap.dedent(
    """\
    virtual_server 10.99.1.2 53 {
        lb_kind TUN
        protocol UDP
        real_server 10.99.0.2 53 {
        }
    }
    """
)
SERVED = {"10.99.1.1/32", "10.99.1.2/32", "fd99:1::1/128"}


@pytest.fixture
def conf(tmp_path):
    (tmp_path / "services.d").mkdir()
    (tmp_path / "services.d" / "dns.conf").write_text(DNS)
    path = tmp_path / "keepalived.conf"
    path.write_text(CONF)
    return path


def vips(ns, conf, *args: str) -> tuple[int, str, str]:
    """Run `ipvsman vips` in this process (pyroute2 already imported: guest time is slow)."""
    out, err = io.StringIO(), io.StringIO()
    status = vips_main(["--keepalived", str(conf), "--netns", ns.name, *args], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def addresses(ns, device: str = "dummy0") -> set[str]:
    """Every address on `device` but the kernel's own link-local one."""
    links = json.loads(ns.run(f"ip -j addr show dev {device}").stdout)
    return {
        f"{info['local']}/{info['prefixlen']}"
        for link in links
        for info in link["addr_info"]
        if not info["local"].startswith("fe80:")
    }


def sysctl(ns, scope: str, key: str) -> int:
    return int(ns.run(f"cat /proc/sys/net/ipv4/conf/{scope}/{key}").stdout)


def link(ns, device: str = "dummy0") -> dict:
    return json.loads(ns.run(f"ip -j -d link show dev {device}").stdout)[0]


def state(ns) -> str:
    """Everything `ipvsman vips` could change in the namespace, as text to compare, once settled."""
    # A new veth gets its carrier, and its IPv6 addresses leave duplicate address detection
    # ("tentative"), a moment after it is up: compared before that, the text would change under
    # the test by itself.
    deadline = time.monotonic() + 20
    while True:
        text = ns.run(
            "ip -d link show; ip addr show; for f in /proc/sys/net/ipv4/conf/*/arp_ignore "
            "/proc/sys/net/ipv4/conf/*/arp_announce; do echo $f $(cat $f); done"
        ).stdout
        if ("NO-CARRIER" not in text and "tentative" not in text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_first_run_holds_exactly_the_served_vips_and_a_second_changes_nothing(netns_pair, conf):
    _, real = netns_pair
    status, out, err = vips(real, conf, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["real_ips"] == ["10.99.0.2", "fd99::2"]
    assert report["create"] and report["failed"] is None
    assert addresses(real) == SERVED
    dummy = link(real)
    assert dummy["linkinfo"]["info_kind"] == "dummy" and "UP" in dummy["flags"]
    v6 = [info for info in json.loads(real.run("ip -j -6 addr show dev dummy0").stdout)[0]["addr_info"]
          if info["local"] == "fd99:1::1"]
    assert v6 and v6[0].get("nodad") is True, v6
    for scope in ("all", "dummy0"):
        assert (sysctl(real, scope, "arp_ignore"), sysctl(real, scope, "arp_announce")) == (1, 2)
    assert any("10.99.1.1" in warning and "tcp 10.99.1.1:443" in warning for warning in report["warnings"])
    assert any("NAT" in note and "10.99.1.9" in note for note in report["notes"])
    assert addresses(real, "vb") == {"10.99.0.2/24", "fd99::2/64"}

    before = state(real)
    status, out, err = vips(real, conf)
    assert status == 0, err
    assert "nothing to change" in out
    assert state(real) == before


def test_a_changed_file_removes_a_vip_and_strays_only_from_the_dummy(netns_pair, conf):
    _, real = netns_pair
    assert vips(real, conf)[0] == 0
    # The same address elsewhere, and an address nobody serves on the dummy: only the latter goes.
    real.run("ip addr add 10.99.1.2/32 dev vb && ip addr add 10.99.7.7/32 dev dummy0")
    (conf.parent / "services.d" / "dns.conf").unlink()
    status, out, err = vips(real, conf, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert sorted(report["removed"]) == ["10.99.1.2/32", "10.99.7.7/32"]
    assert addresses(real) == SERVED - {"10.99.1.2/32"}
    assert "10.99.1.2/32" in addresses(real, "vb")


def test_dry_run_leaves_the_namespace_untouched(netns_pair, conf):
    _, real = netns_pair
    before = state(real)
    status, out, err = vips(real, conf, "--dry-run")
    assert status == 0, err
    assert "dry run: nothing changed" in out and "would add 10.99.1.1/32 to dummy0" in out
    assert state(real) == before
    assert real.run("ip link show dummy0", check=False).returncode != 0


def test_a_non_dummy_interface_is_refused_in_one_line(netns_pair, conf):
    _, real = netns_pair
    before = state(real)
    status, out, err = vips(real, conf, "--interface", "vb")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "vb is not a dummy interface (veth)" in err
    assert state(real) == before


def ping(ns, address: str) -> bool:
    return ns.run(f"busybox ping -c 1 -W 2 {address}", check=False).returncode == 0


def test_the_lan_gets_no_arp_or_nd_answer_for_the_vips(netns_pair, conf):
    lan, real = netns_pair
    lan.run("ip route add 10.99.1.1/32 dev va && ip -6 route add fd99:1::1/128 dev va")
    assert vips(real, conf)[0] == 0
    assert not ping(lan, "10.99.1.1")
    assert not ping(lan, "fd99:1::1")
    # Unanswered, not dropped later: the LAN never learnt a link-layer address for either VIP.
    assert "lladdr" not in lan.run("ip neigh show to 10.99.1.1 dev va; ip -6 neigh show to fd99:1::1 dev va").stdout
    assert ping(lan, "fd99::2")  # ND itself works on this link

    # Control: without arp_ignore the real server answers ARP for the VIP on its dummy interface.
    real.run("echo 0 > /proc/sys/net/ipv4/conf/all/arp_ignore && echo 0 > /proc/sys/net/ipv4/conf/dummy0/arp_ignore")
    lan.run("ip neigh flush dev va")
    assert ping(lan, "10.99.1.1")


def python_command(*args: str) -> str:
    return f"cd {shlex.quote(str(ROOT))} && " + " ".join(shlex.quote(a) for a in (sys.executable, "-m", "ipvsman", *args))


def test_sysctls_that_cannot_be_set_take_the_interface_down(netns_pair, conf):
    _, real = netns_pair
    target = "/proc/sys/net/ipv4/conf/all/arp_ignore"
    # A read-only bind mount, in a mount namespace of its own, makes the write fail with EROFS.
    proc = real.run(
        f"unshare -m sh -c 'mount --bind {target} {target} && mount -o remount,bind,ro {target} && "
        + python_command("vips", "--keepalived", str(conf)).replace("'", "'\\''")
        + "'",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "net.ipv4.conf.all.arp_ignore" in proc.stderr and "brought down" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "done    create dummy0" in proc.stdout
    assert "UP" not in link(real)["flags"]
    assert addresses(real) == set()


def test_watch_applies_again_when_the_file_changes(netns_pair, conf):
    _, real = netns_pair
    log = conf.parent / "watch.log"
    real.popen(python_command("vips", "--keepalived", str(conf), "--watch", "--interval", "0.2") + f" > {log} 2>&1")
    wait_until(lambda: addresses_or_none(real) == SERVED, "the first apply", timeout=240)
    replacement = conf.parent / "keepalived.conf.new"
    replacement.write_text(CONF.replace("include services.d/*.conf\n", ""))
    os.rename(replacement, conf)  # as rsync replaces a file
    wait_until(lambda: addresses_or_none(real) == SERVED - {"10.99.1.2/32"}, "the apply after the change", timeout=120)
    time.sleep(1)
    assert "changed: applying again" in log.read_text()


def addresses_or_none(ns) -> set[str] | None:
    try:
        return addresses(ns)
    except AssertionError:  # no dummy0 yet
        return None


def test_local_addresses_match_ip_addr_with_labels_peers_and_link_local(netns_pair):
    # What the dashboard and `ipvsman vips` take as this host's addresses (ipvsman.vips, through
    # getifaddrs), against `ip -j addr` in the same namespace: an IPv4 label is its device's, a
    # point-to-point address is the local end, an IPv6 link-local address comes without its zone.
    from ipvsman.vips import local_addresses

    _, real = netns_pair
    real.run("ip addr add 10.99.6.1/32 dev vb label vb:7 && ip addr add 10.99.7.1 peer 10.99.7.2 dev vb")
    wait_until(lambda: "tentative" not in real.run("ip addr show").stdout, "IPv6 addresses settled")
    expected = {
        (info["local"], link["ifname"])
        for link in json.loads(real.run("ip -j addr show").stdout)
        for info in link["addr_info"]
    }  # fmt: skip
    found = set(local_addresses(real.name))
    assert found == expected
    assert ("10.99.6.1", "vb") in found and ("10.99.7.1", "vb") in found
    assert any(address.startswith("fe80::") and interface == "vb" for address, interface in found)
