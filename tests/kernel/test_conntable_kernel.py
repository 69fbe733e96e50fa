"""Counts and table reads against real IPVS: a backup director fed through its sync daemon.

Namespace a sends sync messages over the veth; b runs a backup daemon and the services the
connections belong to, so the kernel binds each synced connection to its real server and counts it
(ActiveConns / InActConns) as it would a local one.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import pytest

from ipvsman import conntable, guest
from ipvsman.kernel import procfs
from ipvsman.kernel.backend import KernelBackend
from ipvsman.model import Connection
from ipvsman.poller import Poller
from ipvsman.sync import protocol
from ipvsman.sync.resync import ResyncPlan, SyncSettings

pytestmark = pytest.mark.kernel

VIP = "10.99.0.1"
RS, SHARED = "10.98.2.2", "10.98.2.3"


def client(i: int) -> str:
    return str(ipaddress.IPv4Address("198.51.100.0") + i % 250 + 1)


SEND_RATE = 5_000.0  # connections a second: what the emulated guest's backup keeps up with


def send(a, entries, syncid=10) -> None:
    plan = ResyncPlan(SyncSettings("va", syncid=syncid, rate=SEND_RATE), protocol.pack(entries, syncid), netns=a.name)
    report = plan.run()
    assert report.complete, report


def installed(b) -> int:
    """Synced connections bound to real servers, by the kernel's counters: cheap, unlike reading
    /proc/net/ip_vs_conn (whose cost grows with the square of the table) while it fills."""
    out = subprocess.run(["ip", "netns", "exec", b.name, "cat", "/proc/net/ip_vs"], capture_output=True,
                         text=True).stdout  # fmt: skip
    return procfs.counted_connections(out)


def wait_installed(b, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while installed(b) < count:
        assert time.monotonic() < deadline, f"b installed {installed(b)} of {count} synced connections"
        time.sleep(0.5)


def poll(backend_netns: str, **poller_options):
    """One Poller snapshot of the namespace, made in this thread like --once."""
    backend = KernelBackend(netns=backend_netns)
    poller = Poller(backend, lambda s: None, **poller_options)
    backend.open()
    try:
        return poller.poll_once(), backend
    finally:
        backend.close()


def test_port_0_persistent_and_shared_fwmark_services_are_counted_as_the_kernel_counts(netns_pair):
    a, b = netns_pair
    b.run(
        f"ipvsadm -A -t {VIP}:0 -s rr -p 300 && ipvsadm -a -t {VIP}:0 -r {RS}:0 -g"
        f" && ipvsadm -A -f 1 -s rr && ipvsadm -a -f 1 -r {SHARED}:80 -g"
        f" && ipvsadm -A -f 2 -s rr && ipvsadm -a -f 2 -r {SHARED}:80 -g"
        " && ipvsadm --start-daemon backup --mcast-interface vb --syncid 10"
    )
    time.sleep(1)  # the backup daemon joins the group
    entries = []
    for i in range(6):  # the catch-all service's connections carry the port the client used
        port, state = (80, "ESTABLISHED") if i < 4 else (443, "TIME_WAIT")
        conn = Connection("TCP", client(i), 30000 + i, VIP, port, RS, port, state, 600)
        entries.append(protocol.from_connection(conn, forward="route"))
    for i, mark in enumerate((1, 1, 1, 2)):  # sync v1 names the mark; /proc will not
        conn = Connection("TCP", client(50 + i), 31000 + i, "10.99.0.5", 80, SHARED, 80, "ESTABLISHED", 600)
        entries.append(protocol.from_connection(conn, forward="route", fwmark=mark))
    send(a, entries)
    wait_installed(b, len(entries))

    snapshot, _ = poll(b.name)
    by_key = {service.key: service for service in snapshot.services}
    (catch_all,) = [s for s in snapshot.services if s.key.port == 0 and not s.key.fwmark]
    assert dict(snapshot.service_states[catch_all.key]) == {"ESTABLISHED": 4, "TIME_WAIT": 2}
    kernel = catch_all.dests[0]
    assert (kernel.active_conns, kernel.inactive_conns) == (4, 2)  # the kernel agrees, exactly
    fwm = sorted((k for k in by_key if k.fwmark), key=lambda k: k.fwmark)
    assert [sum(d.active_conns for d in by_key[k].dests) for k in fwm] == [3, 1]  # by the kernel's counters
    assert fwm[0] not in snapshot.service_states and fwm[1] not in snapshot.service_states  # never guessed
    assert dict(snapshot.ambiguous_states[tuple(fwm)]) == {"ESTABLISHED": 4}
    print(f"\ncounts: port-0 service {dict(snapshot.service_states[catch_all.key])}, "
          f"fwmark 1/2 ambiguous {dict(snapshot.ambiguous_states[tuple(fwm)])}")


def test_a_large_table_is_sampled_by_prefix_and_scaled_to_the_kernels_totals(netns_pair):
    a, b = netns_pair
    if guest.in_guest():  # a backup whose socket overflows drops messages: let it hold a burst (our guest only)
        with open("/proc/sys/net/core/rmem_max", "w") as limit:
            limit.write(str(32 << 20))
    b.run(
        f"sysctl -qw net.ipv4.vs.sync_sock_size={16 << 20}"
        f" && ipvsadm -A -t {VIP}:80 -s rr && ipvsadm -a -t {VIP}:80 -r {RS}:80 -g && ipvsadm -a -t {VIP}:80 -r {SHARED}:80 -g"
        " && ipvsadm --start-daemon backup --mcast-interface vb --syncid 10"
    )
    time.sleep(1)
    total = conntable.FIRST_FULL + 5_000
    entries = [
        protocol.from_connection(Connection(
            "TCP", client(i), 10000 + i // 250, VIP, 80, RS if i % 2 else SHARED, 80,
            "ESTABLISHED" if i % 4 else "FIN_WAIT", 900), forward="route")
        for i in range(total)
    ]  # fmt: skip
    send(a, entries)
    wait_installed(b, total, timeout=240)

    # the whole table and its first 1,000 entries, read as the table thread reads them
    backend = KernelBackend(netns=b.name)
    backend.open()
    try:
        whole, complete, _ = backend.read_table(None)
        first, first_complete, _ = backend.read_table(1_000)
    finally:
        backend.close()
    assert complete and len(whole) == total
    assert not first_complete and len(first) == 1_000
    # The kernel's order: a prefix of the same table, not another one (expiry ticks on between reads).
    assert [conn[:8] for conn in first] == [conn[:8] for conn in list(whole)[:1_000]]

    # with a budget the first read is a prefix; counts by state are estimates summing to the kernel's
    snapshot, _ = poll(b.name, conn_budget=5.0)
    read = snapshot.table.read
    assert read is not None and not read.complete and read.entries == conntable.FIRST_SAMPLE
    assert snapshot.table.expected == total
    (web,) = snapshot.services
    counts = snapshot.service_states[web.key]
    kernel_total = sum(d.active_conns + d.inactive_conns for d in web.dests)
    assert kernel_total == total and counts.estimated and counts.total == total
    share = counts["ESTABLISHED"] / total
    assert 0.70 <= share <= 0.80, share  # three in four, seen in a prefix of the hash order
    print(f"\nsample: {read.entries} of {total} entries in {read.cpu_seconds:.2f} CPU s; "
          f"estimated {dict(counts)} (exact: ESTABLISHED {total * 3 // 4})")
