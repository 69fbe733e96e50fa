"""Resync, sync test and sync monitor against real IPVS sync daemons in two namespaces.

Namespace a is a NAT director (VIPs on va), b is the backup director and also the client
(its sockets reach a's VIPs over the veth; b has no virtual service, so its IPVS leaves its
own traffic alone), and a third namespace r is the real server behind a.
"""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ipvsman.model import Connection
from ipvsman.sync import cli
from ipvsman.sync.monitor import SyncMonitor
from ipvsman.sync.resync import SyncSettings, build_plan
from ipvsman.sync.sender import read_conn_table
from waiting import wait_until

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
VIP4, VIP6 = "10.99.0.1", "fd99::1"  # a's addresses on va; b (10.99.0.2, fd99::2) is the client
RS4, RS6 = "10.98.2.2", "fd98:2::2"
WAIT = 90.0  # seconds; everything in the guest is ~30x slower

SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, 8080)); s.listen(512); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, "listen")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
sel.register(u, selectors.EVENT_READ, "udp")
open(sys.argv[1], "w").write("ready")
while True:
    for key, _ in sel.select():
        if key.data == "listen":
            conn, _ = key.fileobj.accept(); conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, "conn")
        elif key.data == "udp":
            data, peer = u.recvfrom(2048); u.sendto(data, peer)
        else:
            try:
                data = key.fileobj.recv(2048)
            except OSError:
                data = b""
            if data:
                key.fileobj.sendall(data)
            else:
                sel.unregister(key.fileobj); key.fileobj.close()
"""

CLIENT = r"""
import json, os, socket, sys, time
out, plan = sys.argv[1], json.loads(sys.argv[2])
held, ports = [], []
for host, port, count, kind in plan:
    for _ in range(count):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if kind == "udp":
            s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(20); s.connect((host, port))
            for n in range(3):
                s.send(b"ping%d" % n); s.recv(100)
        else:
            s = socket.create_connection((host, port), timeout=20)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for n in range(3):  # the master daemon syncs a connection at its 3rd incoming packet
                s.sendall(b"hello%d\n" % n); s.recv(100); time.sleep(0.01)
        held.append(s); ports.append([kind, host, port, s.getsockname()[1]])
with open(out + ".part", "w") as part:  # renamed when complete: the test polls for `out`
    part.write(json.dumps(ports))
os.replace(out + ".part", out)
while True:
    time.sleep(3600)
"""


def key(conn: Connection) -> tuple:
    return (conn.protocol, conn.client, conn.client_port, conn.virtual, conn.virtual_port, conn.dest, conn.dest_port)


def table(ns, origin: str) -> dict[tuple, Connection]:
    return {key(c): c for c in read_conn_table(ns.name, origin=True) if c.origin == origin}


def resync(netns: str, *args: str) -> tuple[int, str, str]:
    """`ipvsman resync --netns NAME ...` in a thread of this process (it enters the namespace alone)."""
    out, err, result = io.StringIO(), io.StringIO(), {}
    worker = threading.Thread(
        target=lambda: result.update(code=cli.main(["--netns", netns, *args], stdout=out, stderr=err))
    )
    worker.start()
    worker.join(WAIT * 2)
    assert not worker.is_alive(), "ipvsman resync did not finish"
    return result["code"], out.getvalue(), err.getvalue()


@pytest.fixture
def director(netns_pair, netns, tmp_path):
    """a: NAT director with VIPs on va, b: backup daemon (syncid 10) and client, r: real server."""
    a, b = netns_pair
    r = netns
    subprocess.run(["ip", "link", "add", "ar", "netns", a.name, "type", "veth", "peer", "name", "ra", "netns", r.name],
                   check=True)
    a.run("ip addr add 10.98.2.1/24 dev ar && ip -6 addr add fd98:2::1/64 dev ar nodad && ip link set ar up")
    a.run("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
    r.run(
        "ip addr add 10.98.2.2/24 dev ra && ip -6 addr add fd98:2::2/64 dev ra nodad && ip link set ra up && "
        "ip route add default via 10.98.2.1 && ip -6 route add default via fd98:2::1"
    )
    a.run(
        f"ipvsadm -A -t {VIP4}:80 -s rr && ipvsadm -a -t {VIP4}:80 -r {RS4}:8080 -m && "
        f"ipvsadm -A -t {VIP4}:81 -s rr -p 300 && ipvsadm -a -t {VIP4}:81 -r {RS4}:8080 -m && "
        f"ipvsadm -A -u {VIP4}:53 -s rr && ipvsadm -a -u {VIP4}:53 -r {RS4}:5353 -m && "
        f"ipvsadm -A -t [{VIP6}]:80 -s rr && ipvsadm -a -t [{VIP6}]:80 -r [{RS6}]:8080 -m"
    )
    b.run("ipvsadm --start-daemon backup --mcast-interface vb --syncid 10")
    ready = tmp_path / "server-ready"
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    r.popen(f"{sys.executable} {tmp_path / 'server.py'} {ready}")
    wait_until(ready.exists, "the real server to listen")

    def connect(plan: list, name: str) -> list:
        done = tmp_path / f"{name}.json"
        b.popen(f"{sys.executable} {tmp_path / 'client.py'} {done} '{json.dumps(plan)}'")
        wait_until(done.exists, f"client {name} to connect")
        return json.loads(done.read_text())

    return a, b, connect


def test_resync_installs_every_connection_on_the_backup(director):
    a, b, connect = director
    connect([[VIP4, 80, 4, "tcp"], [VIP4, 81, 3, "tcp"], [VIP4, 53, 2, "udp"], [VIP6, 80, 3, "tcp"]], "first")
    local = wait_until(lambda: (t := table(a, "LOCAL")) and len(t) >= 13 and t, "a's 12 connections and 1 template")
    web4 = {k: c for k, c in local.items() if c.virtual == VIP4 and c.virtual_port == 80}
    ipv4 = {k: c for k, c in local.items() if ":" not in c.client}
    ipv6 = {k: c for k, c in local.items() if ":" in c.client}
    templates = [c for c in local.values() if c.client_port == 0]  # NONE, or ASSURED once used
    assert (len(web4), len(ipv4), len(ipv6), len(templates)) == (4, 10, 3, 1), local
    assert all(c.state in ("ESTABLISHED", "UDP", "NONE", "ASSURED") for c in local.values()), local

    # a backup with another syncid installs nothing, and the tool says which syncid it used
    code, out, err = resync(a.name, "--interface", "va", "--syncid", "11", "--yes")
    assert code == 0, err
    assert f"sent {len(local)} connections in 1 messages to 224.0.0.81:8848 on va (syncid 11, sync protocol v1" in out
    assert table(b, "SYNC") == {}  # and below: b's table then holds exactly what syncid 10 brought

    # version 1, one service, through the real command line
    run = subprocess.run(
        [sys.executable, "-m", "ipvsman", "resync", "--netns", a.name, "--interface", "va", "--syncid", "10",
         "--service", f"{VIP4}:80", "--yes"],
        capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 2,
    )
    assert run.returncode == 0, run.stderr
    assert "sent 4 connections in 1 messages to 224.0.0.81:8848 on va (syncid 10, sync protocol v1" in run.stdout
    synced = wait_until(lambda: (t := table(b, "SYNC")) and len(t) >= 4 and t, "b to install a's 4 connections")
    assert {k: c.state for k, c in synced.items()} == {k: c.state for k, c in web4.items()}

    # version 0 (the sysctl): all of IPv4, templates included; IPv6 is left out and said so
    a.run("sysctl -qw net.ipv4.vs.sync_version=0")
    code, out, err = resync(a.name, "--interface", "va", "--syncid", "10", "--yes")
    assert code == 0, err
    assert "sync protocol v0" in out
    assert "3 left out: sync protocol version 0 carries IPv4 connections only (3)" in err
    synced = wait_until(lambda: (t := table(b, "SYNC")) and len(t) >= len(ipv4) and t, "b to install IPv4")
    assert {k: c.state for k, c in synced.items()} == {k: c.state for k, c in ipv4.items()}

    # version 1 again, the IPv6 service
    a.run("sysctl -qw net.ipv4.vs.sync_version=1")
    code, out, err = resync(a.name, "--interface", "va", "--syncid", "10", "--service", f"[{VIP6}]:80", "--yes")
    assert code == 0, err
    assert "sent 3 connections in 1 messages" in out and "sync protocol v1" in out
    synced = wait_until(lambda: (t := table(b, "SYNC")) and len(t) >= len(local) and t, "b to install IPv6")
    assert {k: c.state for k, c in synced.items()} == {k: c.state for k, c in local.items()}
    print(f"\nresync: b installed all {len(local)} of a's entries (IPv4, IPv6, UDP, a template) with origin SYNC")


def test_master_daemon_traffic_is_decoded_and_settings_come_from_it(director):
    a, b, connect = director
    a.run("ipvsadm --start-daemon master --mcast-interface va --syncid 10")
    with SyncMonitor("vb", netns=b.name, keep=1000) as monitor:
        ports = connect([[VIP4, 80, 3, "tcp"], [VIP6, 80, 2, "tcp"], [VIP4, 53, 1, "udp"]], "second")
        clients = {port for _, _, _, port in ports}

        def decoded():
            seen = {key_of(r.conn): r.conn for r in monitor.stats().latest if r.conn.client_port in clients}
            return seen if len(seen) >= len(clients) else None

        seen = wait_until(decoded, "the master daemon's messages for the 6 new connections")
        local = table(a, "LOCAL")
        for k, conn in seen.items():
            assert k in local, f"decoded {conn.describe()} is not in a's table"
            assert local[k].state == conn.state_name
        stats = monitor.stats()
        (ten,) = [s for s in stats.by_syncid if s.syncid == 10]
        assert ten.version == 1 and ten.senders == (VIP4,)  # the master binds to va's address
        assert stats.malformed == 0
        print(f"\nmonitor: decoded {stats.connections} entries in {stats.messages} messages from a's master daemon")

        # with a master daemon running, resync takes interface, syncid, group and port from it
        before = monitor.stats().connections
        code, out, err = resync(a.name, "--yes")
        assert code == 0, err
        assert f"sent {len(local)} connections in 1 messages to 224.0.0.81:8848 on va (syncid 10, sync protocol v1, " \
               "from the master daemon)" in out
        wait_until(lambda: monitor.stats().connections >= before + len(local), "the monitor to decode the resync")

    # the sync test: b's backup installs the marked connection; with another syncid it does not
    code, out, err = resync(a.name, "--test", "--backup-netns", b.name)
    assert code == 0, out + err
    assert "sync test: " in out and ("192.0.2." in out or "2001:db8:" in out) and "timeout 10s" in out
    assert f"received by the backup in namespace {b.name}" in out
    code, out, err = resync(a.name, "--test", "--syncid", "11", "--backup-netns", b.name, "--wait", "3")
    assert code == 1
    assert "(syncid 11, sync protocol v1)" in out and f"NOT received by the backup in namespace {b.name}" in out


def key_of(conn) -> tuple:
    return (conn.protocol_name, conn.client, conn.client_port, conn.virtual, conn.virtual_port, conn.dest,
            conn.dest_port)


def test_rate_limit_holds_over_a_large_resync(netns_pair):
    a, b = netns_pair
    b.run("ipvsadm --start-daemon backup --mcast-interface vb --syncid 10")
    count, rate = 5000, 1000.0
    synthetic = [
        Connection("TCP", str(ipaddress.IPv4Address("198.51.100.0") + i % 250 + 1), 20000 + i, VIP4, 80, RS4, 8080,
                   "ESTABLISHED", 600)
        for i in range(count)
    ]
    plan = build_plan(synthetic, (), SyncSettings("va", syncid=10, rate=rate), netns=a.name)
    report = plan.run()
    achieved = report.achieved_rate
    print(f"\nrate limit: {report.connections} connections in {report.messages} messages, "
          f"{report.seconds:.2f} s, {achieved:.1f} connections/s for a limit of {rate:.0f}")
    assert report.complete and report.connections == count
    assert abs(achieved - rate) <= rate * 0.10, f"{achieved:.1f} connections/s is not within 10% of {rate:.0f}"
    installed = wait_until(
        lambda: (n := sum(1 for c in read_conn_table(b.name) if c.origin == "SYNC")) >= count and n,
        f"b to install {count} connections",
    )
    assert installed == count
