"""AgentCluster over ClusterShell's exec worker (--via): demo agents as local nodes, lost nodes, retries, commands."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipvsman.cluster.state import AGENT_PROTOCOL, ClusterSnapshot, Command
from ipvsman.cluster.transport import AgentCluster, ClusterError, expand_nodes

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30  # seconds before a test calls the cluster stuck; never a measured figure
AGENT = f"{shlex.quote(sys.executable)} -m ipvsman agent --demo --interval 0.2"


@pytest.fixture(autouse=True)
def _agents_import_ipvsman(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.fixture
def clusters():
    made = []

    def make(nodes: str, **options) -> AgentCluster:
        options.setdefault("via", "env IPVSMAN_NODE=%h")
        options.setdefault("agent_command", AGENT)
        cluster = AgentCluster(nodes, **options)
        made.append(cluster)
        cluster.start(lambda snapshot: None)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def wait_until(cluster: AgentCluster, test, what: str) -> ClusterSnapshot:
    deadline = time.monotonic() + WAIT
    while True:
        snapshot = cluster.latest()
        if test(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            states = [(n.name, n.reachable, n.snapshot is not None, n.error) for n in snapshot.nodes]
            raise AssertionError(f"{what} not seen in {WAIT} s: {states}")
        time.sleep(0.05)


def ask(cluster: AgentCluster, node: str, command: Command):
    done = threading.Event()
    replies = []
    cluster.command(node, command, lambda reply: (replies.append(reply), done.set()))
    assert done.wait(WAIT), f"no reply to {command.kind} from {node}"
    return replies[0]


def agent_pids(node: str) -> list[int]:
    """Agents started for `node` (their environment names it), found through /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"IPVSMAN_NODE={node}".encode() in environ and b"agent" in cmdline:
            pids.append(int(entry))
    return pids


def test_nodesets_expand_and_bad_ones_are_one_line():
    assert expand_nodes("lvs-[1-3]") == ["lvs-1", "lvs-2", "lvs-3"]
    with pytest.raises(ClusterError, match="bad nodeset") as caught:
        expand_nodes("lvs-[1-")
    assert "\n" not in str(caught.value)
    with pytest.raises(ClusterError, match="must name the node with %h"):
        AgentCluster("a", via="ip netns exec")
    with pytest.raises(ClusterError, match="3 nodes, more than the fanout 2"):
        AgentCluster("n[1-3]", fanout=2)
    with pytest.raises(ClusterError, match="65 nodes, more than the fanout 64"):  # ClusterShell's default
        AgentCluster("n[1-65]")


def test_every_node_streams_its_snapshots_and_a_command_goes_to_one_node(clusters):
    cluster = clusters("lvs-[1-2]")
    snapshot = wait_until(cluster, lambda s: all(n.snapshot and n.table for n in s.nodes), "both nodes' snapshots")
    assert [node.name for node in snapshot.nodes] == ["lvs-1", "lvs-2"]
    for node in snapshot.nodes:
        assert node.reachable and node.error is None and node.agent_version and node.kernel
        assert ("10.10.10.80", "demo0") in node.addresses
    service = next(s for s in snapshot.nodes[0].snapshot.services if s.dests)
    dest = service.dests[0]
    reply = ask(cluster, "lvs-2", Command("set-weight", {"service": str(service.key), "address": dest.address,
                                                         "port": dest.port, "weight": dest.weight + 11}))  # fmt: skip
    assert reply.ok and reply.node == "lvs-2", reply.message

    def weight(state, node):
        return state.node(node).snapshot.find_service(service.key).find_dest(dest.address, dest.port).weight

    changed = wait_until(cluster, lambda s: weight(s, "lvs-2") == dest.weight + 11, "the new weight on lvs-2")
    assert weight(changed, "lvs-1") == dest.weight


def test_refusals_come_back_as_replies(clusters):
    cluster = clusters("lvs-1", agent_args=["--read-only"])
    wait_until(cluster, lambda s: s.nodes[0].snapshot is not None, "a snapshot")
    reply = ask(cluster, "lvs-1", Command("resync"))
    assert not reply.ok and reply.message == "resync: refused: the agent runs with --read-only"
    assert cluster.latest().nodes[0].read_only
    assert ask(cluster, "nowhere", Command("resync")).message == "resync: no node nowhere in the nodeset"


def test_a_node_whose_agent_fails_is_marked_retried_with_backoff_and_the_others_go_on(clusters, tmp_path):
    starts = tmp_path / "starts"
    failing = f"sh -c 'if [ $IPVSMAN_NODE = bad ]; then date +%s.%N >> {starts}; echo no agent here >&2; exit 3; fi; exec {AGENT}'"
    cluster = clusters("bad,good", agent_command=failing, retry_first=0.3, retry_max=1.2)
    snapshot = wait_until(cluster, lambda s: s.node("good").snapshot and len(starts.read_text().split()) >= 4
                          if starts.exists() else False, "four tries of the failing node")  # fmt: skip
    bad = snapshot.node("bad")
    assert not bad.reachable and bad.error.startswith("no agent here; retry in") and bad.since is not None
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[-1] > gaps[0], f"the waits between tries should grow: {gaps}"
    assert snapshot.node("good").reachable
    reply = ask(cluster, "bad", Command("read-table"))
    assert not reply.ok and "bad is unreachable: no agent here" in reply.message


def test_a_killed_agent_marks_its_node_unreachable_and_it_comes_back(clusters):
    cluster = clusters("lvs-[1-2]", retry_first=0.5)
    wait_until(cluster, lambda s: all(n.snapshot for n in s.nodes), "both nodes")
    pids = agent_pids("lvs-2")
    assert pids
    for pid in pids:
        os.kill(pid, 9)
    lost = wait_until(cluster, lambda s: not s.node("lvs-2").reachable, "lvs-2 marked unreachable")
    assert lost.node("lvs-1").reachable and "retry in" in lost.node("lvs-2").error
    seq = lost.node("lvs-1").snapshot.seq
    back = wait_until(cluster, lambda s: s.node("lvs-2").reachable, "lvs-2 back")
    assert back.node("lvs-1").snapshot.seq > seq  # lvs-1 kept streaming all along
    assert back.node("lvs-2").error is None


def fake_agent(tmp_path, hello: str, real_for: str = "") -> str:
    """An agent command that writes `hello` and then nothing (but for the node `real_for`: the real agent)."""
    script = tmp_path / "fake-agent"
    script.write_text(f"#!/bin/sh\n[ \"$IPVSMAN_NODE\" = \"{real_for}\" ] && exec {AGENT}\n"
                      f"printf '%s\\n' {shlex.quote(hello)}\nexec sleep 60\n")  # fmt: skip
    script.chmod(0o755)
    return str(script)


def test_a_stalled_agent_is_given_up_after_the_stall_time(clusters, tmp_path):
    hello = '{"type":"hello","protocol":%d,"version":"0.1.0","kernel":"k","node":"n","read_only":false}' % AGENT_PROTOCOL
    cluster = clusters("quiet", agent_command=fake_agent(tmp_path, hello), stall_after=1.0, retry_first=30)
    snapshot = wait_until(cluster, lambda s: s.nodes[0].error is not None, "the stall")
    assert snapshot.nodes[0].error.startswith("no line from the agent for 1 s")
    assert snapshot.nodes[0].agent_version == "0.1.0"


def test_another_protocol_is_one_line_for_that_node(clusters, tmp_path):
    hello = '{"type":"hello","protocol":99,"version":"9.0","kernel":"k","node":"n","read_only":false}'
    cluster = clusters("old,new", agent_command=fake_agent(tmp_path, hello, real_for="new"), retry_first=30)
    snapshot = wait_until(cluster, lambda s: s.node("old").error and s.node("new").snapshot, "the mismatch")
    assert snapshot.node("old").error.startswith(f"agent speaks protocol 99 (ipvsman 9.0), this dashboard {AGENT_PROTOCOL}")
    assert "\n" not in snapshot.node("old").error and snapshot.node("new").reachable


def test_stop_ends_every_agent(clusters):
    cluster = clusters("lvs-[1-2]")
    wait_until(cluster, lambda s: all(n.snapshot for n in s.nodes), "both nodes")
    assert agent_pids("lvs-1") and agent_pids("lvs-2")
    started = time.monotonic()
    cluster.stop()
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + WAIT
    while agent_pids("lvs-1") or agent_pids("lvs-2"):
        assert time.monotonic() < deadline, "agents left running after stop"
        time.sleep(0.1)
    assert not ask(cluster, "lvs-1", Command("resync")).ok


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipvsman", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_once_json_prints_every_node_and_the_comparison_and_names_the_lost_one():
    import json

    failing = f"sh -c 'test $IPVSMAN_NODE = lvs-3 && {{ echo lvs-3 has no route >&2; exit 255; }}; exec {AGENT}'"
    proc = run_cli("--nodes", "lvs-[1-3]", "--via", "env IPVSMAN_NODE=%h", "--agent-command", failing, "--once", "--json")
    assert proc.returncode == 3, proc.stderr  # a node could not be read: monitoring must notice
    document = json.loads(proc.stdout)
    assert list(document["nodes"]) == ["lvs-1", "lvs-2", "lvs-3"]
    assert document["nodes"]["lvs-1"]["snapshot"]["services"] and document["nodes"]["lvs-2"]["reachable"]
    assert document["nodes"]["lvs-3"]["error"].startswith("lvs-3 has no route")
    assert document["nodes"]["lvs-3"]["snapshot"] is None
    assert "cluster" in document


@pytest.mark.parametrize("args, message", [
    (["--via", "ip netns exec %h"], "--via goes with --nodes"),
    (["--nodes", "a,b", "--via", "ip netns exec"], "--via must name the node with %h"),
    (["--nodes", "a,b", "--netns", "x"], "--nodes watches several directors, --netns one namespace"),
    (["--nodes", "a,b", "--once"], "--nodes with --once prints JSON: add --json"),
    (["--nodes", "a[1-", "--once", "--json"], "bad nodeset 'a[1-'"),
    (["--nodes", "a[1-3]", "--fanout", "2", "--once", "--json"], "3 nodes, more than the fanout 2"),
])  # fmt: skip
def test_cluster_options_refused_in_one_line(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1]
