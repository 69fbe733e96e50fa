"""The demo cluster: a master and backups with a seeded drift and missing entries, commands per node."""

from __future__ import annotations

import threading

import pytest

from ipvsman.cluster.compare import WEIGHT, compare_cluster
from ipvsman.cluster.demo import DemoCluster, expand_nodes
from ipvsman.cluster.state import ClusterSnapshot, Command, CommandReply
from ipvsman.model import DestKey


class Watch:
    """Collects a cluster's updates and waits for one that satisfies a condition."""

    def __init__(self):
        self.condition = threading.Condition()
        self.latest: ClusterSnapshot | None = None

    def __call__(self, cluster: ClusterSnapshot) -> None:
        with self.condition:
            self.latest = cluster
            self.condition.notify_all()

    def until(self, test, timeout: float = 20.0) -> ClusterSnapshot:
        with self.condition:
            assert self.condition.wait_for(lambda: self.latest is not None and test(self.latest), timeout), self.latest
            return self.latest


def everyone_polled(cluster: ClusterSnapshot, after: float = 0.0) -> bool:
    return all(node.snapshot is not None and node.snapshot.taken_at > after for node in cluster.nodes)


def reply_of(cluster: DemoCluster, node: str, command: Command) -> CommandReply:
    replies: list[CommandReply] = []
    done = threading.Event()
    cluster.command(node, command, lambda reply: (replies.append(reply), done.set()))
    assert done.wait(10)
    return replies[0]


@pytest.fixture
def demo():
    cluster = DemoCluster(["lvs-1", "lvs-2", "lvs-3"], seed=1, interval=0.2)
    watch = Watch()
    cluster.start(watch)
    yield cluster, watch
    cluster.stop()


def test_expand_nodes_reads_clustershell_nodesets():
    assert expand_nodes("lvs-[1-3]") == ["lvs-1", "lvs-2", "lvs-3"]
    with pytest.raises(ValueError, match="bad nodeset"):
        expand_nodes("lvs-[1-")


def test_a_demo_cluster_needs_two_distinct_nodes():
    with pytest.raises(ValueError, match="two nodes or more"):
        DemoCluster(["lvs-1"])
    with pytest.raises(ValueError, match="named twice"):
        DemoCluster(["lvs-1", "lvs-1"])


def test_the_master_holds_the_vips_and_each_backup_drifts_and_misses_entries(demo):
    cluster, watch = demo
    snapshot = watch.until(everyone_polled)
    report = compare_cluster(snapshot)
    assert [node.role for node in report.nodes] == ["master", "backup", "backup"]
    assert all(vip.holder == "lvs-1" and vip.warning is None for vip in report.vips)
    weight_rows = [row for row in report.drift if row.kind == WEIGHT]
    assert {row.nodes for row in weight_rows} == {("lvs-2",), ("lvs-3",)}  # one seeded drift per backup
    assert report.sync_problems == ()
    assert {diff.backup for diff in report.tables} == {"lvs-2", "lvs-3"}
    assert all(diff.exact for diff in report.tables)
    assert report.missing_total > 0  # a few entries never reached the backups


def test_a_resync_on_the_master_fills_what_the_backups_miss():
    # Simulated time stands still (tick 0): no new connection can go missing after the resync.
    cluster = DemoCluster(["lvs-1", "lvs-2", "lvs-3"], seed=2, interval=0.2, tick=0.0)
    watch = Watch()
    cluster.start(watch)
    try:
        before = compare_cluster(watch.until(everyone_polled))
        assert before.missing_total > 0
        reply = reply_of(cluster, "lvs-1", Command("resync"))
        assert reply.ok and "lvs-2:" in reply.message and "lvs-3:" in reply.message
        after = watch.until(lambda c: everyone_polled(c, after=c.taken_at - 0.1)
                            and compare_cluster(c).missing_total == 0)  # fmt: skip
        assert all(diff.exact and diff.missing == 0 for diff in compare_cluster(after).tables)
    finally:
        cluster.stop()


def test_commands_change_only_the_node_they_name_and_bad_ones_are_refused(demo):
    cluster, watch = demo
    first = watch.until(everyone_polled)
    service = first.node("lvs-2").snapshot.services[0]
    dest = service.dests[0]
    args = {"service": str(service.key), "address": dest.address, "port": dest.port, "weight": 7}
    reply = reply_of(cluster, "lvs-2", Command("set-weight", args))
    assert reply.ok, reply.message
    key = DestKey(service.key, dest.address, dest.port)
    after = watch.until(lambda c: everyone_polled(c, after=first.taken_at + 0.3)
                        and c.node("lvs-2").snapshot.find_dest(key).weight == 7)  # fmt: skip
    assert after.node("lvs-1").snapshot.find_dest(key).weight == dest.weight
    assert after.node("lvs-3").snapshot.find_dest(key).weight == dest.weight
    assert not reply_of(cluster, "lvs-9", Command("read-table")).ok
    refused = reply_of(cluster, "lvs-2", Command("set-weight", {**args, "weight": 70000}))
    assert not refused.ok and "weight must be a whole number" in refused.message
    assert "unknown command" in reply_of(cluster, "lvs-2", Command("reboot")).message
    assert "runs no master sync daemon" in reply_of(cluster, "lvs-2", Command("resync")).message


def test_node_backend_writes_to_its_node_and_raises_its_refusals(demo):
    from ipvsman.backend import BackendError
    from ipvsman.cluster.nodebackend import NodeBackend

    cluster, watch = demo
    first = watch.until(everyone_polled)
    service = first.node("lvs-3").snapshot.services[1]
    dest = service.dests[0]
    key = DestKey(service.key, dest.address, dest.port)
    backend = NodeBackend(cluster, "lvs-3")
    backend.set_weight(key, 3)
    backend.add_dest(service.key, "10.99.0.1", dest.port, "masq", 5)
    watch.until(lambda c: c.node("lvs-3").snapshot.find_dest(key).weight == 3
                and c.node("lvs-3").snapshot.find_service(service.key).find_dest("10.99.0.1", dest.port) is not None)
    backend.remove_dest(DestKey(service.key, "10.99.0.1", dest.port))
    with pytest.raises(BackendError, match=r"^lvs-3: .*no real server"):
        backend.remove_dest(DestKey(service.key, "10.99.0.1", dest.port))
    with pytest.raises(BackendError, match="is polled by its agent"):
        backend.poll()


def test_node_backend_says_when_a_node_does_not_answer():
    from ipvsman.backend import BackendError
    from ipvsman.cluster.nodebackend import NodeBackend

    class Silent:
        def command(self, node, command, on_reply):
            pass  # never answers

    with pytest.raises(BackendError, match="^lvs-2: no answer in 0.2 s$"):
        NodeBackend(Silent(), "lvs-2", timeout=0.2).set_weight(DestKey(None, "10.0.0.1", 80), 1)



@pytest.mark.parametrize(("missing_per_mille", "outcome"), [(0, "Success"), (1000, "not received after 3 s")])
def test_the_demo_sync_test_answers_as_the_simulated_backups_have_the_connection(missing_per_mille, outcome):
    cluster = DemoCluster(["lvs-1", "lvs-2", "lvs-3"], seed=1, interval=0.2, missing_per_mille=missing_per_mille)
    service = str(cluster.master.director.services[0].key)
    cluster.start(Watch())
    try:
        reply = reply_of(cluster, "lvs-1", Command("sync-test", {"service": service}))
    finally:
        cluster.stop()
    assert reply.ok and reply.message == f"sync test: lvs-2: {outcome}, lvs-3: {outcome}"


def test_demo_sync_tests_miss_a_backup_about_as_often_as_its_entries_do():
    cluster = DemoCluster(["lvs-1", "lvs-2"], seed=1, interval=0.2)  # 3% of entries never reach lvs-2
    service = str(cluster.master.director.services[0].key)
    cluster.start(Watch())
    try:
        outcomes = [reply_of(cluster, "lvs-1", Command("sync-test", {"service": service})).message
                    for _ in range(300)]  # fmt: skip
    finally:
        cluster.stop()
    missed = sum("not received" in outcome for outcome in outcomes)
    assert 0 < missed < 30, missed
