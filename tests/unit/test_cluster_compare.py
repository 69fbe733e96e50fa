"""The comparison of a cluster's directors on crafted snapshots: drift, VIP holders, sync daemons, table diffs."""

from __future__ import annotations

import json
import random
from dataclasses import replace

from ipvsman.cluster.compare import (
    REAL_SERVER,
    SERVICE,
    TIMEOUTS,
    WEIGHT,
    cluster_to_dict,
    compare_cluster,
    fold_nodes,
    service_table_label,
    table_diff,
)
from ipvsman.cluster.state import ClusterSnapshot, NodeState, TableKeys, connection_key
from ipvsman.cluster.wire import table_keys
from ipvsman.keepalived import parse_keepalived
from ipvsman.model import Connection, Daemon, Dest, RawState, Service, ServiceKey, Snapshot, Timeouts

NOW = 1_700_000_000.0
WEB = ServiceKey("inet", "tcp", "10.10.10.80", 80)
DNS = ServiceKey("inet", "udp", "10.10.10.53", 53)
MAIL = ServiceKey("inet", None, "", 0, fwmark=10)
MASTER = Daemon("master", "eth0", 1)
BACKUP = Daemon("backup", "eth0", 1)


def web(weight13: int = 50, scheduler: str = "wrr", active: int = 0) -> Service:
    return Service(WEB, scheduler, dests=(
        Dest("10.10.20.11", 80, "route", 100, active_conns=active),
        Dest("10.10.20.12", 80, "route", 100),
        Dest("10.10.20.13", 80, "route", weight13),
    ))  # fmt: skip


def dns() -> Service:
    return Service(DNS, "rr", dests=(Dest("10.10.30.1", 53, "masq", 1),))


def snapshot(*services: Service, daemons=(MASTER,), timeouts=Timeouts(900, 120, 300), taken_at=NOW) -> Snapshot:
    state = RawState(services=services, daemons=daemons, timeouts=timeouts)
    return Snapshot(seq=1, taken_at=taken_at, poll_seconds=0.01, backend="demo", writable=True, state=state)


def node(name: str, snap: Snapshot | None, addresses=(), table: TableKeys | None = None, reachable=True,
         error: str | None = None) -> NodeState:  # fmt: skip
    return NodeState(name, snap, reachable=reachable, since=NOW - 60, error=error, received_at=NOW,
                     agent_version="0.9", kernel="6.1.0", table=table, addresses=addresses)  # fmt: skip


def cluster(*nodes: NodeState) -> ClusterSnapshot:
    return ClusterSnapshot(tuple(nodes), NOW)


def conns(count: int, start: int = 0, virtual=("10.10.10.80", 80)) -> list[Connection]:
    return [Connection("TCP", f"192.0.2.{(start + i) % 250 + 1}", 1024 + start + i, virtual[0], virtual[1],
                       "10.10.20.11", 80, "ESTABLISHED", 900) for i in range(count)]  # fmt: skip


def test_fold_nodes_writes_a_nodeset():
    assert fold_nodes(["lvs-1", "lvs-3"]) == "lvs-[1,3]"
    assert fold_nodes(["lvs-2"]) == "lvs-2"


def test_a_weight_differing_on_the_backup_is_one_drift_row_naming_both_values():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web(), dns()), addresses=(("10.10.10.80", "eth0"), ("10.10.10.53", "eth0"))),
        node("lvs-2", snapshot(web(weight13=0), dns(), daemons=(BACKUP,))),
    ))  # fmt: skip
    assert [row.kind for row in report.drift] == [WEIGHT]
    row = report.drift[0]
    assert row.text == "lvs-2: tcp 10.10.10.80:80 -> 10.10.20.13:80 weight 0, lvs-1: 50"
    assert row.nodes == ("lvs-2",)
    assert row.reference == "lvs-1"  # the VIP holder is the reference


def test_the_vip_holder_is_the_reference_whichever_node_comes_first():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web(weight13=0), daemons=(BACKUP,))),
        node("lvs-2", snapshot(web()), addresses=(("10.10.10.80", "eth1"),)),
    ))  # fmt: skip
    assert report.drift[0].text == "lvs-1: tcp 10.10.10.80:80 -> 10.10.20.13:80 weight 0, lvs-2: 50"


def test_three_nodes_fold_those_that_agree():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web(scheduler="wlc")), addresses=(("10.10.10.80", "eth0"),)),
        node("lvs-2", snapshot(web(), daemons=(BACKUP,))),
        node("lvs-3", snapshot(web(), daemons=(BACKUP,))),
    ))  # fmt: skip
    assert [row.text for row in report.drift] == ["lvs-[2-3]: tcp 10.10.10.80:80 scheduler wrr, lvs-1: wlc"]


def test_services_real_servers_and_timeouts_present_on_some_nodes_only():
    short = Service(WEB, "wrr", dests=web().dests[:2])
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web(), dns()), addresses=(("10.10.10.80", "eth0"), ("10.10.10.53", "eth0"))),
        node("lvs-2", snapshot(short, daemons=(BACKUP,), timeouts=Timeouts(60, 120, 300))),
    ))  # fmt: skip
    texts = {row.kind: row.text for row in report.drift}
    assert texts[TIMEOUTS] == "lvs-2: timeouts tcp 60s tcp-fin 120s udp 300s, lvs-1: tcp 900s tcp-fin 120s udp 300s"
    assert texts[SERVICE] == "lvs-2: udp 10.10.10.53:53 absent, lvs-1: present"
    assert texts[REAL_SERVER] == "lvs-2: tcp 10.10.10.80:80 -> 10.10.20.13:80 absent, lvs-1: present"


def test_identical_nodes_have_no_drift_and_an_unreachable_node_is_not_compared():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web()), addresses=(("10.10.10.80", "eth0"),)),
        node("lvs-2", snapshot(web(), daemons=(BACKUP,))),
        node("lvs-3", snapshot(web(weight13=7)), reachable=False, error="ssh: connect timed out"),
    ))  # fmt: skip
    assert report.drift == ()
    assert "lvs-3: unreachable: ssh: connect timed out" in report.warnings
    assert report.node("lvs-3").header_role == "unreachable"
    assert report.node("lvs-1").header_role == "master, holds 1 VIP"


def test_a_vip_held_by_two_nodes_or_by_none_is_a_warning():
    both = compare_cluster(cluster(
        node("lvs-1", snapshot(web()), addresses=(("10.10.10.80", "eth0"),)),
        node("lvs-2", snapshot(web(), daemons=(BACKUP,)), addresses=(("10.10.10.80", "eth1"),)),
    ))  # fmt: skip
    assert both.vips[0].holders == (("lvs-1", "eth0"), ("lvs-2", "eth1"))
    assert both.vips[0].warning == "10.10.10.80 is held by 2 nodes: lvs-1 (eth0), lvs-2 (eth1)"
    none = compare_cluster(cluster(node("lvs-1", snapshot(web())), node("lvs-2", snapshot(web(), daemons=(BACKUP,)))))
    assert none.vips[0].warning == "10.10.10.80 is held by no node"
    assert none.vips[0].warning in none.warnings


def test_unknown_addresses_are_not_called_held_by_none():
    report = compare_cluster(cluster(node("lvs-1", snapshot(web()), addresses=None)))
    assert report.vips[0].warning is None and report.vips[0].unknown == ("lvs-1",)


def test_a_firewall_mark_service_has_no_vip_and_the_vrrp_instance_comes_from_keepalived():
    conf = parse_keepalived("vrrp_instance VI_WEB {\n interface eth0\n virtual_router_id 5\n"
                            " virtual_ipaddress {\n  10.10.10.80/24 dev eth0\n }\n}\n", "k.conf")  # fmt: skip
    mail = Service(MAIL, "wlc", dests=(Dest("10.10.40.1", 25, "masq", 100),))
    report = compare_cluster(cluster(node("lvs-1", snapshot(web(), mail), addresses=(("10.10.10.80", "eth0"),))),
                             configuration=conf)  # fmt: skip
    assert [vip.address for vip in report.vips] == ["10.10.10.80"]
    assert report.vips[0].vrrp_instance == "VI_WEB"


def test_syncid_mismatch_between_master_and_backup():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web()), addresses=(("10.10.10.80", "eth0"),)),
        node("lvs-2", snapshot(web(), daemons=(Daemon("backup", "eth0", 2),))),
        node("lvs-3", snapshot(web(), daemons=(Daemon("backup", "eth0", 0),))),  # 0 takes any syncid
        node("lvs-4", snapshot(web(), daemons=())),
    ))  # fmt: skip
    assert report.sync_problems == (
        "syncid mismatch: lvs-1 master syncid 1, lvs-2 backup syncid 2: lvs-2 drops lvs-1's messages",
        "lvs-4 runs no backup sync daemon: it receives nothing from lvs-1",
    )
    assert report.node("lvs-4").role == "no sync daemon"


def test_backups_without_any_master_and_a_group_mismatch():
    no_master = compare_cluster(cluster(node("lvs-1", snapshot(web(), daemons=(BACKUP,))),
                                        node("lvs-2", snapshot(web(), daemons=(BACKUP,)))))  # fmt: skip
    assert no_master.sync_problems == ("no node runs a master sync daemon: the backups receive nothing",)
    other_port = compare_cluster(cluster(node("lvs-1", snapshot(web())),
                                         node("lvs-2", snapshot(web(), daemons=(replace(BACKUP, port=8849),)))))
    assert other_port.sync_problems == ("lvs-2 backup listens on 224.0.0.81:8849, lvs-1 master sends to 224.0.0.81:8848",)


def test_table_keys_leave_templates_out_and_key_entries_per_service():
    template = Connection("IP", "192.0.2.1", 0, "10.10.10.80", 0, "10.10.20.11", 0, "NONE", 300)
    keys = table_keys(conns(3) + conns(2, virtual=("10.10.10.53", 53)) + [template], True, 1.0, NOW)
    assert len(keys.keys) == 5
    assert len(keys.by_service[service_table_label("tcp", "10.10.10.80", 80)]) == 3
    assert set(keys.by_service) == {"TCP 10.10.10.80:80", "TCP 10.10.10.53:53"}
    first = conns(1)[0]
    assert connection_key(*first[:7]) in keys.keys


def test_exact_table_diff_counts_missing_and_extra_entries():
    master = table_keys(conns(100), True, 1.0, NOW)
    backup = table_keys(conns(90) + conns(4, start=500), True, 1.0, NOW)
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web(active=100)), addresses=(("10.10.10.80", "eth0"),), table=master),
        node("lvs-2", snapshot(web(active=94), daemons=(BACKUP,)), table=backup),
    ))  # fmt: skip
    (diff,) = report.tables
    assert (diff.master, diff.backup, diff.master_count, diff.backup_count) == ("lvs-1", "lvs-2", 100, 94)
    assert (diff.missing, diff.extra, diff.exact) == (10, 4, True)
    assert diff.text == "lvs-2: 10 of lvs-1's 100 missing"


def test_sampled_table_diff_is_an_estimate_and_says_so():
    rng = random.Random(7)
    everything = conns(20000)
    backup_has = [conn for conn in everything if rng.random() >= 0.2]  # about 20% never arrived
    master_sample = table_keys(everything[:5000], False, 0.25, NOW)  # a quarter of the master's table
    # The backup's prefix: half its table, drawn at random as hash order would be.
    backup_sample = table_keys(rng.sample(backup_has, len(backup_has) // 2), False, 0.5, NOW)
    diff = table_diff(WEB, "lvs-1", master_sample, 20000, "lvs-2", backup_sample, len(backup_has))
    assert not diff.exact and diff.extra is None
    actual = 20000 - len(backup_has)
    assert abs(diff.missing - actual) < 0.15 * actual, (diff.missing, actual)
    assert diff.note == "estimate from 25% of lvs-1's table and 50% of lvs-2's"
    assert diff.text.startswith("lvs-2: ~")


def test_a_complete_backup_against_a_sampled_master_estimates_from_the_sample():
    everything = conns(1000)
    master_sample = table_keys(everything[:200], False, 0.2, NOW)
    backup = table_keys(everything[50:], True, 1.0, NOW)  # the first 50 are missing
    diff = table_diff(WEB, "lvs-1", master_sample, 1000, "lvs-2", backup, 950)
    assert diff.missing == 250  # 50 of the sample of 200 missing: a quarter of 1000
    assert not diff.exact


def test_table_diff_says_why_when_it_cannot_tell():
    assert table_diff(WEB, "lvs-1", None, 5, "lvs-2", None, 5).note == "no connection table from lvs-1 yet"
    empty = table_keys([], False, 0.1, NOW)
    diff = table_diff(WEB, "lvs-1", empty, 5, "lvs-2", table_keys(conns(5), True, 1.0, NOW), 5)
    assert diff.missing is None and "no entry of this service" in diff.note


def test_cluster_to_dict_is_json_with_every_part():
    report = compare_cluster(cluster(
        node("lvs-1", snapshot(web()), addresses=(("10.10.10.80", "eth0"),), table=table_keys(conns(3), True, 1, NOW)),
        node("lvs-2", snapshot(web(weight13=0), daemons=(Daemon("backup", "eth0", 9),)),
             table=table_keys(conns(1), True, 1, NOW)),
        node("lvs-3", None, reachable=False, error="no route to host"),
    ))  # fmt: skip
    document = json.loads(json.dumps(cluster_to_dict(report)))
    assert [n["name"] for n in document["nodes"]] == ["lvs-1", "lvs-2", "lvs-3"]
    assert document["nodes"][2]["reachable"] is False
    assert document["vips"][0]["holders"] == [{"node": "lvs-1", "interface": "eth0"}]
    assert document["drift"][0]["values"] == {"lvs-1": "50", "lvs-2": "0"}
    assert document["sync"]["tables"][0]["missing"] == 2
    assert document["sync"]["daemons"]["lvs-3"] is None
    assert any("syncid mismatch" in line for line in document["warnings"])
