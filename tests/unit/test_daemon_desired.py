"""The desired-state plan: what is created, corrected, quiesced or removed, and what is never touched."""

from __future__ import annotations

from ipvsman.daemon import desired
from ipvsman.model import Dest, DestKey, Service, ServiceKey
from ipvsman.topology import parse_topology

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
FOREIGN = ServiceKey("inet", "tcp", "10.0.0.9", 80)

TOPOLOGY = parse_topology(
    'Web:t:10.0.0.1:80 ["a:10.0.1.1:8080 -w 50", "b:10.0.1.2:8080 -w 20 --on-failure remove", "c:10.0.1.3:8080 -w 0"] '
    "(-m -s wrr -p 60)\n"
)


def everyone_up(key: DestKey) -> bool:
    return True


def test_an_empty_kernel_gets_the_service_and_its_real_servers():
    actions = desired.plan(TOPOLOGY.services, (), everyone_up)
    assert [str(action) for action in actions] == [
        "create tcp 10.0.0.1:80 scheduler wrr persistent 60s",
        "add tcp 10.0.0.1:80 -> 10.0.1.1:8080 masq weight 50",
        "add tcp 10.0.0.1:80 -> 10.0.1.2:8080 masq weight 20",
        "add tcp 10.0.0.1:80 -> 10.0.1.3:8080 masq weight 0",  # suspended by the topology: there, weight 0
    ]


def kernel(scheduler="wrr", persistent=60, dests=None):
    dests = dests if dests is not None else (
        Dest("10.0.1.1", 8080, "masq", 50), Dest("10.0.1.2", 8080, "masq", 20), Dest("10.0.1.3", 8080, "masq", 0),
    )  # fmt: skip
    return (
        Service(WEB, scheduler, persistent, dests=dests),
        Service(FOREIGN, "rr", dests=(Dest("10.0.1.1", 8080, "route", 3), Dest("10.0.1.9", 8080, "route", 1))),
    )


def test_a_kernel_that_agrees_needs_nothing_and_the_foreign_service_is_never_looked_at():
    assert desired.plan(TOPOLOGY.services, kernel(), everyone_up) == ()


def test_failed_servers_are_quiesced_or_removed_as_configured():
    down = {DestKey(WEB, "10.0.1.1", 8080), DestKey(WEB, "10.0.1.2", 8080), DestKey(WEB, "10.0.1.3", 8080)}
    actions = desired.plan(TOPOLOGY.services, kernel(), lambda key: key not in down)
    assert [str(action) for action in actions] == [
        "set tcp 10.0.0.1:80 -> 10.0.1.1:8080 weight 50 -> 0",
        "remove tcp 10.0.0.1:80 -> 10.0.1.2:8080 (failed its checks)",
    ]  # c is suspended: weight 0 either way
    assert all(getattr(action, "service", None) == WEB for action in actions)
    # Back up: the removed one is added again at its configured weight.
    gone = kernel(dests=(Dest("10.0.1.1", 8080, "masq", 0), Dest("10.0.1.3", 8080, "masq", 0)))
    assert [str(a) for a in desired.plan(TOPOLOGY.services, gone, everyone_up)] == [
        "set tcp 10.0.0.1:80 -> 10.0.1.1:8080 weight 0 -> 50",
        "add tcp 10.0.0.1:80 -> 10.0.1.2:8080 masq weight 20",
    ]


def test_scheduler_persistence_forwarding_and_strays_are_corrected():
    wrong = kernel(
        scheduler="rr",
        persistent=None,
        dests=(
            Dest("10.0.1.1", 8080, "route", 50),
            Dest("10.0.1.2", 8080, "local", 20),  # the kernel's word for a local address: agrees
            Dest("10.0.1.3", 8080, "masq", 0),
            Dest("10.0.1.7", 8080, "masq", 1),
        ),
    )
    assert [str(action) for action in desired.plan(TOPOLOGY.services, wrong, everyone_up)] == [
        "edit tcp 10.0.0.1:80: scheduler wrr persistent 60s (was rr)",
        "set tcp 10.0.0.1:80 -> 10.0.1.1:8080 route -> masq weight 50 -> 50",
        "remove tcp 10.0.0.1:80 -> 10.0.1.7:8080 (not in the topology)",
    ]


def test_without_checks_a_real_server_is_quiesced_on_failure():
    plain = parse_topology('Mail:t:10.0.0.2:25 ["m:10.0.2.1"]\n').services[0]
    assert plain.dests[0].check is None
    assert desired.failure_action(plain.dests[0]) == "quiesce"
    assert desired.desired_weight(plain.dests[0], in_service=False) == 0
    assert desired.desired_weight(plain.dests[0], in_service=True) == 1
