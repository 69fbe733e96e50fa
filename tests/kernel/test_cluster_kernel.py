"""Several directors for real: three namespaces with real sync daemons watched through --via (and the sync probe), and one over ssh.

Namespaces lvs-1 (master daemon, holds the VIP), lvs-2 and lvs-3 (backup daemons) share a bridge in
a hub namespace with a client; a real server namespace sits behind lvs-1 (NAT). AgentCluster runs
`ipvsman agent` in each through ClusterShell's exec worker, `ip netns exec %h`, as the dashboard does.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ipvsman.cluster.compare import compare_cluster
from ipvsman.cluster.state import Command
from ipvsman.cluster.synctest import SyncProbe
from ipvsman.cluster.syncprobe import format_delay
from ipvsman.cluster.transport import AgentCluster
from ipvsman.ui.cluster import ClusterControl
import waiting

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
VIP, RS = "10.97.0.100", "10.98.3.2"
SYNCID = 7
WAIT = 240.0  # seconds; the guest is ~30x slower and three agents start on two CPUs
AGENT = f"{shlex.quote(sys.executable)} -m ipvsman agent --interval 1"
SERVICE = f"tcp {VIP}:80"
TABLE_KEY = f"TCP {VIP}:80"

SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(64)
open(sys.argv[1], "w").write("ready")
def echo(c):
    while (data := c.recv(1024)):
        c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""

CLIENT = r"""
import json, os, socket, sys, time
out, count = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(count):
    s = socket.create_connection((sys.argv[3], 80), timeout=30)
    for n in range(4):  # the master daemon syncs a connection at its 3rd incoming packet
        s.sendall(b"hello%d" % n); s.recv(100); time.sleep(0.01)
    held.append(s)
open(out + ".part", "w").write(json.dumps([s.getsockname()[1] for s in held])); os.replace(out + ".part", out)
time.sleep(3600)
"""


# three agents start on two emulated CPUs: longer bounds than the other kernel tests
wait_until = functools.partial(waiting.wait_until, timeout=WAIT, interval=0.5)


def ask(cluster: AgentCluster, node: str, command: Command, timeout: float = WAIT):
    done, replies = threading.Event(), []
    cluster.command(node, command, lambda reply: (replies.append(reply), done.set()))
    assert done.wait(timeout), f"no reply to {command.kind} from {node}"
    return replies[0]


@pytest.fixture
def site(tmp_path, monkeypatch, netns):
    """hub (bridge), lvs-1..3 on it (10.97.0.1-3), client c (10.97.0.50), real server r behind lvs-1."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the agents import this checkout
    subprocess.run(["modprobe", "-q", "bridge"], check=False)
    make = type(netns)  # conftest's NetNs: namespaces named as the nodeset names them
    prefix = f"k{os.getpid() % 10000}-"
    hub = netns
    client, real = make(f"{prefix}client"), make(f"{prefix}real")
    directors = [make(f"{prefix}lvs-{n}") for n in (1, 2, 3)]
    spaces = [client, real, *directors]
    try:
        hub.run("ip link add br0 type bridge && ip link set br0 up")
        for number, ns in [(1, directors[0]), (2, directors[1]), (3, directors[2]), (50, client)]:
            subprocess.run(["ip", "link", "add", "eth0", "netns", ns.name, "type", "veth", "peer", "name", f"p{number}",
                            "netns", hub.name], check=True)  # fmt: skip
            hub.run(f"ip link set p{number} master br0 && ip link set p{number} up")
            ns.run(f"ip addr add 10.97.0.{number}/24 dev eth0 && ip link set eth0 up")
        first = directors[0]
        subprocess.run(["ip", "link", "add", "to-r", "netns", first.name, "type", "veth", "peer", "name", "eth0",
                        "netns", real.name], check=True)  # fmt: skip
        first.run(f"ip addr add 10.98.3.1/24 dev to-r && ip link set to-r up && ip addr add {VIP}/32 dev eth0 && "
                  "sysctl -qw net.ipv4.ip_forward=1")  # fmt: skip
        real.run(f"ip addr add {RS}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.98.3.1")
        for number, ns in enumerate(directors, 1):
            weight = 0 if number == 2 else 50  # the drift: lvs-2 would send nothing to the real server after a failover
            ns.run(f"ipvsadm -A -t {VIP}:80 -s rr && ipvsadm -a -t {VIP}:80 -r {RS}:8080 -m -w {weight}")
            role = "master" if number == 1 else "backup"
            ns.run(f"ipvsadm --start-daemon {role} --mcast-interface eth0 --syncid {SYNCID}")
        ready = tmp_path / "ready"
        (tmp_path / "server.py").write_text(SERVER)
        (tmp_path / "client.py").write_text(CLIENT)
        real.popen(f"{shlex.quote(sys.executable)} {tmp_path / 'server.py'} {ready}")
        wait_until(ready.exists, "the real server")
        yield prefix, directors, client, tmp_path
    finally:
        for ns in spaces:
            ns.close()


def connect(client, tmp_path: Path, count: int, name: str) -> list[int]:
    done = tmp_path / f"{name}.json"
    client.popen(f"{shlex.quote(sys.executable)} {tmp_path / 'client.py'} {done} {count} {VIP}")
    return wait_until(lambda: done.exists() and json.loads(done.read_text()), f"client {name}")


def found(cluster: AgentCluster, node: str, keys: set[int]) -> set[int]:
    """Which of `keys` the node's whole connection table holds now (read-table reads it whole)."""
    reply = ask(cluster, node, Command("read-table", {"keys": sorted(keys)}))
    assert reply.ok and reply.data["complete"], reply.message
    return set(reply.data["found"])


def test_three_directors_drift_sync_resync_sync_test_and_a_lost_node(site):
    prefix, directors, client, tmp_path = site
    names = [f"{prefix}lvs-{n}" for n in (1, 2, 3)]
    master, backup, lagging = names
    cluster = AgentCluster(f"{prefix}lvs-[1-3]", via="ip netns exec %h", agent_command=AGENT,
                           hello_timeout=WAIT, stall_after=90.0, retry_first=2.0, retry_max=8.0)  # fmt: skip
    cluster.start(lambda snapshot: None)
    try:
        state = wait_until(lambda: (s := cluster.latest()) and all(n.snapshot and n.addresses for n in s.nodes) and s,
                           "every director's first snapshot")  # fmt: skip
        assert [n.name for n in state.nodes] == names and all(n.reachable and n.kernel for n in state.nodes)

        def weight(node_state):
            service = next(s for s in node_state.snapshot.services if str(s.key) == SERVICE)
            return service.dests[0].weight

        assert [weight(state.node(n)) for n in names] == [50, 0, 50]  # lvs-2's drift, as each agent read it
        assert (VIP, "eth0") in state.node(master).addresses
        assert all(VIP not in dict(state.node(n).addresses) for n in (backup, lagging))
        daemons = {n: [(d.state, d.syncid) for d in state.node(n).snapshot.daemons] for n in names}
        assert daemons == {master: [("master", SYNCID)], backup: [("backup", SYNCID)], lagging: [("backup", SYNCID)]}

        # connections made on lvs-1 reach both backups through the real sync daemons
        connect(client, tmp_path, 3, "first")
        master_keys = wait_until(lambda: (k := found_keys(cluster, master)) and len(k) >= 3 and k, "lvs-1's 3 entries")
        for node in (backup, lagging):
            wait_until(lambda: found(cluster, node, master_keys) == master_keys, f"{node} to hold lvs-1's entries")

        # a backup whose daemon is stopped misses what follows; the others get it
        directors[2].run("ipvsadm --stop-daemon backup")
        connect(client, tmp_path, 2, "second")
        newer = wait_until(lambda: (k := found_keys(cluster, master)) and len(k) >= 5 and k, "lvs-1's 5 entries")
        wait_until(lambda: found(cluster, backup, newer) == newer, "lvs-2 to hold all 5")
        missing = newer - found(cluster, lagging, newer)
        assert len(missing) == 2, f"lvs-3 should miss exactly the 2 newest entries, misses {len(missing)}"

        # resync from lvs-1 (what R does) fills them in once lvs-3's daemon runs again
        directors[2].run(f"ipvsadm --start-daemon backup --mcast-interface eth0 --syncid {SYNCID}")
        reply = ask(cluster, master, Command("resync", {"service": SERVICE}))
        assert reply.ok and reply.data["connections"] >= 5, reply.message
        wait_until(lambda: found(cluster, lagging, newer) == newer, "lvs-3 to hold all 5 after the resync")

        # the sync test (T): lvs-1 sends the marked connection, every other node is checked for it
        reply = ask(cluster, master, Command("sync-test", {"service": SERVICE}))
        assert reply.ok and "192.0.2." in reply.data["connection"], reply.message
        for node in (backup, lagging):
            wait_until(lambda: found(cluster, node, {reply.data["key"]}) == {reply.data["key"]},
                       f"{node} to receive the test connection")  # fmt: skip

        # the sync probe (--sync-probe 2): lvs-1 sends, both backups' agents report each probe's arrival
        probe_sync(cluster, names, directors)

        # lvs-3's namespace goes away while watched: it shows as unreachable, the others go on
        directors[2].close()
        lost = wait_until(lambda: (s := cluster.latest()) and not s.node(lagging).reachable and s, "lvs-3 lost")
        assert lost.node(lagging).error and lost.node(lagging).since is not None
        seq = lost.node(master).snapshot.seq
        wait_until(lambda: cluster.latest().node(master).snapshot.seq > seq + 2, "lvs-1 to go on")
        retried = wait_until(lambda: (e := cluster.latest().node(lagging).error) and "namespace" in e and e,
                             "the retry's own reason")  # fmt: skip
        assert "retry in" in retried and cluster.latest().node(backup).reachable
        print(f"\ncluster: lvs-3 lost and retried: {retried}")
    finally:
        cluster.stop()


def probe_sync(cluster: AgentCluster, names: list[str], directors) -> None:
    """The dashboard's probe over the real agents: arrivals with a delay on both backups; then lvs-3's
    daemon stops and it is reported as no longer receiving while lvs-2 goes on."""
    master, backup, lagging = names
    control = ClusterControl(cluster, names)  # the dashboard's choice of the sync master, from the comparison

    def roles():
        control.report = compare_cluster(cluster.latest())
        return control.probe_roles()

    probe = SyncProbe(cluster, 2.0, roles)
    probe.start()
    try:
        def figures():
            return {backup_figures.node: backup_figures for backup_figures in probe.summary().backups}

        arrived = wait_until(lambda: (f := figures()) and all(n in f and f[n].arrived >= 3 for n in (backup, lagging))
                             and f, "3 probes to arrive at each backup")  # fmt: skip
        assert probe.summary().master == master
        for node in (backup, lagging):
            # A figure, but no bound on it: the guest runs ~30x slower than a director (see the facts file).
            assert arrived[node].median is not None and 0 <= arrived[node].median <= arrived[node].worst
        shown = {node: (format_delay(f.median), format_delay(f.worst), f.lost, f.checked) for node, f in arrived.items()}
        print(f"\nsync probe: {shown}")
        directors[2].run("ipvsadm --stop-daemon backup")
        wait_until(lambda: probe.summary().stopped == (lagging,), f"{lagging} reported as no longer receiving")
        assert figures()[backup].arrived >= 1 and not figures()[backup].stopped  # lvs-2 goes on receiving
    finally:
        probe.stop()


def found_keys(cluster: AgentCluster, node: str) -> set[int]:
    table = cluster.latest().node(node).table
    return set(table.by_service.get(TABLE_KEY, ())) if table is not None and table.complete else set()


# -- over real ssh ------------------------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path, netns):
    """sshd (Debian's openssh-server) in a namespace reached over a veth at 10.96.0.2, with a key made for the test."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("no /usr/sbin/sshd: tests/run.sh installs openssh-server")
    subprocess.run(["ip", "link", "add", "to-ssh", "type", "veth", "peer", "name", "eth0", "netns", netns.name],
                   check=True)  # fmt: skip
    subprocess.run("ip addr add 10.96.0.1/24 dev to-ssh && ip link set to-ssh up", shell=True, check=True)
    netns.run("ip addr add 10.96.0.2/24 dev eth0 && ip link set eth0 up")
    netns.run("ipvsadm -A -t 10.96.5.5:443 -s wlc && ipvsadm -a -t 10.96.5.5:443 -r 10.96.6.6:443 -m -w 7")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "user")], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 10.96.0.2\nHostKey {tmp_path / 'host'}\nAuthorizedKeysFile {tmp_path / 'authorized_keys'}\n"
        f"PidFile {tmp_path / 'sshd.pid'}\nStrictModes no\n"
        # PAM: without it sshd refuses an account whose password is locked (root on Debian), keys or not.
        f"UsePAM yes\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nSetEnv PYTHONPATH={ROOT}\n"
    )
    # Its privilege separation directory, which it wants root's and not group- or world-writable.
    os.makedirs("/run/sshd", exist_ok=True)
    os.chmod("/run/sshd", 0o755)
    for key in ("host", "user"):
        os.chmod(tmp_path / key, 0o600)
    log = tmp_path / "sshd.log"
    netns.popen(f"/usr/sbin/sshd -D -e -f {config} 2> {log}")
    options = (f"-i {tmp_path / 'user'} -oStrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null "
               "-oLogLevel=ERROR -oHostName=10.96.0.2")  # fmt: skip
    tries = []

    def accepted() -> bool:
        proc = subprocess.run(f"ssh {options} -oConnectTimeout=5 lvs-ssh true", shell=True, capture_output=True,
                              text=True)  # fmt: skip
        tries.append(proc.stderr.strip())
        return proc.returncode == 0

    try:
        wait_until(accepted, "sshd to accept the key", timeout=120)
    except AssertionError as exc:
        sshd_log = log.read_text()[-1500:] if log.exists() else "(no log)"
        raise AssertionError(f"{exc}; ssh said {tries[-1:]}; sshd said: {sshd_log}") from None
    try:
        yield options
    finally:
        subprocess.run(["ip", "link", "del", "to-ssh"], check=False)


def test_a_director_over_real_ssh_through_clustershell(sshd, tmp_path):
    node_log = tmp_path / "node-audit.log"  # the node's own audit log, where its agent logs the change
    agent = f"cd {shlex.quote(str(ROOT))} && {AGENT} --audit-log {shlex.quote(str(node_log))}"
    cluster = AgentCluster("lvs-ssh", agent_command=agent, ssh_options=sshd, connect_timeout=20, hello_timeout=WAIT)
    cluster.start(lambda snapshot: None)
    try:
        state = wait_until(lambda: (s := cluster.latest()) and s.nodes[0].snapshot and s, "the ssh node's snapshot")
        node = state.nodes[0]
        assert node.reachable and node.agent_version and node.error is None
        (service,) = node.snapshot.services
        assert str(service.key) == "tcp 10.96.5.5:443" and service.dests[0].weight == 7
        reply = ask(cluster, "lvs-ssh", Command("set-weight", {"service": "tcp 10.96.5.5:443", "address": "10.96.6.6",
                                                               "port": 443, "weight": 9}))  # fmt: skip
        assert reply.ok, reply.message
        wait_until(lambda: cluster.latest().nodes[0].snapshot.services[0].dests[0].weight == 9, "the new weight over ssh")
        logged = node_log.read_text().splitlines()
        assert len(logged) == 2 and all(" agent node=" in line and " from=10.96.0.1 " in line for line in logged)
        assert all("server=10.96.6.6:443 old=7 new=9" in line for line in logged), logged
        assert logged[0].endswith('result="attempt"') and logged[1].endswith('result="ok"')
    finally:
        cluster.stop()
