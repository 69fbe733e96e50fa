"""Drift between the kernel's table and keepalived.conf or a topology, and the reload warning for + / -."""

from __future__ import annotations

import textwrap

import pytest

from ipvsman.drift import (
    EXTRA,
    FORWARD,
    MISSING,
    PERSISTENCE,
    SCHEDULER,
    WEIGHT,
    dests_to_add,
    find_drift,
    forward_agrees,
    persistence_text,
    reload_restores_weight,
    reload_warning,
)
from ipvsman.keepalived import parse_keepalived
from ipvsman.model import Dest, DestKey, RawState, Service, ServiceKey, Snapshot
from ipvsman.topology import parse_topology

WEB = ServiceKey("inet", "tcp", "192.0.2.10", 80)
TLS = ServiceKey("inet", "tcp", "192.0.2.11", 443)
MAIL = ServiceKey("inet", None, "", 0, 25)
DNS6 = ServiceKey("inet6", "udp", "2001:db8::53", 53)

CONF = textwrap.dedent(
    """\
    virtual_server 192.0.2.10 80 {
        lb_algo wrr
        lb_kind NAT
        protocol TCP
        real_server 10.1.0.11 8080 {
            weight 3
            TCP_CHECK {
                connect_timeout 3
            }
        }
        real_server 10.1.0.12 8080 {
            weight 1
            inhibit_on_failure
            TCP_CHECK {
                connect_timeout 3
            }
        }
    }
    virtual_server 192.0.2.11 443 {
        lb_algo sh
        lb_kind DR
        protocol TCP
        persistence_timeout 600
        persistence_granularity 255.255.255.0
        real_server 10.1.0.21 443 {
            weight 10
        }
    }
    virtual_server fwmark 25 {
        lb_algo rr
        lb_kind TUN
        real_server 10.3.0.1 {
        }
    }
    virtual_server 2001:db8::53 53 {
        protocol UDP
        lb_algo rr
        lb_kind NAT
        real_server 2001:db8:1::1 53 {
        }
    }
    """
)


@pytest.fixture
def configuration():
    result = parse_keepalived(CONF, "keepalived.conf")
    assert result.errors == ()
    return result


def kernel_as_configured() -> tuple[Service, ...]:
    """What keepalived programs from CONF, as a kernel backend reports it."""
    return (
        Service(
            WEB,
            "wrr",
            dests=(Dest("10.1.0.11", 8080, "masq", 3, active_conns=5), Dest("10.1.0.12", 8080, "masq", 1)),
        ),
        Service(TLS, "sh", persistent=600, netmask="255.255.255.0", dests=(Dest("10.1.0.21", 443, "route", 10),)),
        Service(MAIL, "rr", dests=(Dest("10.3.0.1", 0, "tunnel", 1),)),
        Service(DNS6, "rr", netmask="128", dests=(Dest("2001:db8:1::1", 53, "masq", 1, af="inet6"),)),
    )


def change(services, key, **fields):
    return tuple(Service(**{**service_fields(s), **fields}) if s.key == key else s for s in services)


def service_fields(service: Service) -> dict:
    return {name: getattr(service, name) for name in Service.__dataclass_fields__}


def test_the_kernel_as_keepalived_programmed_it_has_no_drift(configuration):
    report = find_drift(kernel_as_configured(), configuration)
    assert report.drifts == ()
    assert not report
    assert report.affected_services == frozenset()
    assert report.missing_services == ()


def test_a_snapshot_can_be_compared_directly(configuration):
    snapshot = Snapshot(
        seq=1,
        taken_at=0.0,
        poll_seconds=0.0,
        backend="kernel",
        writable=True,
        state=RawState(services=kernel_as_configured()),
    )
    assert find_drift(snapshot, configuration).drifts == ()


def test_a_changed_weight_is_exactly_one_weight_drift(configuration):
    services = change(
        kernel_as_configured(),
        WEB,
        dests=(Dest("10.1.0.11", 8080, "masq", 7), Dest("10.1.0.12", 8080, "masq", 1)),
    )
    report = find_drift(services, configuration)
    (drift,) = report.drifts
    key = DestKey(WEB, "10.1.0.11", 8080)
    assert (drift.kind, drift.service, drift.dest, drift.configured, drift.actual) == (WEIGHT, WEB, key, 3, 7)
    assert drift.origin == "keepalived.conf:5"
    assert report.for_dest(key) == (drift,)
    assert report.kinds(key) == {WEIGHT}
    assert report.for_service(WEB) == ()  # the service itself did not drift...
    assert report.service_drifts(WEB)  # ...but a drift filter keeps it for its real server
    assert not report.service_drifts(TLS)
    assert str(drift) == "tcp 192.0.2.10:80 -> 10.1.0.11:8080: weight 7, configured 3 (keepalived.conf:5)"


def test_missing_extra_scheduler_forward_and_persistence(configuration):
    services = (
        Service(
            WEB,
            "wlc",  # scheduler changed
            dests=(
                Dest("10.1.0.11", 8080, "route", 3),  # forwarding changed
                Dest("10.1.0.99", 8080, "masq", 1),  # extra real server; 10.1.0.12 missing
            ),
        ),
        Service(TLS, "sh", persistent=300, netmask="255.255.255.0", dests=(Dest("10.1.0.21", 443, "route", 10),)),
        # MAIL missing altogether
        Service(DNS6, "rr", dests=(Dest("2001:db8:1::1", 53, "masq", 1, af="inet6"),)),
        Service(ServiceKey("inet", "udp", "192.0.2.99", 514), "rr"),  # an extra service
    )
    report = find_drift(services, configuration)
    found = {(d.kind, d.service, d.dest) for d in report.drifts}
    assert found == {
        (SCHEDULER, WEB, None),
        (FORWARD, WEB, DestKey(WEB, "10.1.0.11", 8080)),
        (MISSING, WEB, DestKey(WEB, "10.1.0.12", 8080)),
        (EXTRA, WEB, DestKey(WEB, "10.1.0.99", 8080)),
        (PERSISTENCE, TLS, None),
        (MISSING, MAIL, None),
        (EXTRA, ServiceKey("inet", "udp", "192.0.2.99", 514), None),
    }
    assert len(report) == 7
    by_kind = {(d.kind, d.dest): d for d in report.drifts}
    assert (by_kind[(SCHEDULER, None)].configured, by_kind[(SCHEDULER, None)].actual) == ("wrr", "wlc")
    forward = by_kind[(FORWARD, DestKey(WEB, "10.1.0.11", 8080))]
    assert (forward.configured, forward.actual) == ("masq", "route")
    persistence = by_kind[(PERSISTENCE, None)]
    assert (persistence.configured, persistence.actual) == ("600s /24", "300s /24")
    missing_dest = by_kind[(MISSING, DestKey(WEB, "10.1.0.12", 8080))]
    assert "health check" in missing_dest.note  # keepalived itself may have removed it
    assert report.missing_services[0].key == MAIL
    assert [d.address for d in report.missing_dests[WEB]] == ["10.1.0.12"]
    assert report.kinds(WEB) == {SCHEDULER}
    assert report.affected_services == {WEB, TLS, MAIL, ServiceKey("inet", "udp", "192.0.2.99", 514)}
    # A service's own drift first, then its real servers' in address order; firewall marks and
    # address services sort together without a TypeError (ServiceKey.protocol may be None).
    assert [d.kind for d in report.drifts if d.service == WEB] == [SCHEDULER, FORWARD, MISSING, EXTRA]
    assert report.drifts[0].service == WEB


def test_persistence_granularity_alone_is_drift(configuration):
    services = change(kernel_as_configured(), TLS, netmask="255.255.255.255")
    (drift,) = find_drift(services, configuration).drifts
    assert (drift.kind, drift.configured, drift.actual) == (PERSISTENCE, "600s /24", "600s")


@pytest.mark.parametrize(
    "timeout, netmask, af, text",
    [(0, "", "inet", None), (360, "", "inet", "360s"), (360, "255.255.255.255", "inet", "360s"),
     (360, "255.255.255.0", "inet", "360s /24"), (60, "64", "inet6", "60s /64"), (60, "128", "inet6", "60s")],
)  # fmt: skip
def test_persistence_text_names_the_granularity_only_when_wider_than_one_address(timeout, netmask, af, text):
    assert persistence_text(timeout, netmask, af) == text  # ipvsmand's plan words it the same way


def test_forwarding_agrees_when_the_kernel_says_local():
    assert forward_agrees("masq", "masq") and forward_agrees("route", "local") and not forward_agrees("masq", "route")


def test_a_local_real_server_is_not_a_forwarding_drift(configuration):
    # The kernel reports "local" for a real server that is one of the director's own addresses,
    # whatever method was asked for.
    services = change(kernel_as_configured(), TLS, dests=(Dest("10.1.0.21", 443, "local", 10),))
    assert find_drift(services, configuration).drifts == ()


def test_inhibit_on_failure_explains_a_zero_weight(configuration):
    services = change(
        kernel_as_configured(),
        WEB,
        dests=(Dest("10.1.0.11", 8080, "masq", 3), Dest("10.1.0.12", 8080, "masq", 0)),
    )
    (drift,) = find_drift(services, configuration).drifts
    assert drift.kind == WEIGHT and "inhibit_on_failure" in drift.note
    assert str(drift).endswith("(inhibit_on_failure)")


def test_a_sorry_server_in_the_kernel_is_extra_with_a_reason():
    configuration = parse_keepalived(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_kind DR\n sorry_server 10.0.9.9 8080\n"
        " sorry_server_lvs_method NAT\n real_server 10.0.1.1 80 {\n }\n}\n",
        "k.conf",
    )
    key = ServiceKey("inet", "tcp", "10.0.0.1", 80)
    (service,) = configuration.services
    assert [(d.address, d.port, d.forward) for d in service.sorry_servers] == [("10.0.9.9", 8080, "masq")]
    # Quorum lost: keepalived took the real server out and put the sorry server in.
    report = find_drift([Service(key, "wlc", dests=(Dest("10.0.9.9", 8080, "masq", 1),))], configuration)
    extra = [d for d in report.drifts if d.kind == EXTRA]
    assert [(d.dest, d.note) for d in extra] == [
        (DestKey(key, "10.0.9.9", 8080), "keepalived's sorry_server, added while the quorum is lost")
    ]
    assert [d.kind for d in report.drifts] == [MISSING, EXTRA]


def test_drift_against_a_topology_file():
    topology = parse_topology('web:t:192.0.2.10:80 ["web1-2:10.1.0.11+:8080"] (-m -s wrr -w 3)', "topo")
    services = (Service(WEB, "wrr", dests=(Dest("10.1.0.11", 8080, "masq", 3),)),)
    report = find_drift(services, topology)
    (drift,) = report.drifts
    assert (drift.kind, drift.dest) == (MISSING, DestKey(WEB, "10.1.0.12", 8080))
    assert drift.note == ""  # a topology has no health checks
    to_add = dests_to_add(topology, WEB, services[0])
    assert [(d.name, d.address, d.port, d.forward, d.weight) for d in to_add] == [
        ("web2", "10.1.0.12", 8080, "masq", 3)
    ]
    assert len(dests_to_add(topology, WEB, None)) == 2
    assert dests_to_add(topology, TLS, None) == ()


def test_reload_undoes_a_weight_that_differs_from_keepalived_conf(configuration):
    key = DestKey(WEB, "10.1.0.11", 8080)
    assert reload_restores_weight(configuration, key, 4) == 3
    assert reload_restores_weight(configuration, key, 3) is None  # back to the configured weight
    assert reload_warning(configuration, key, 3) is None
    assert reload_warning(configuration, key, 0) == (
        "keepalived's next reload sets 10.1.0.11:8080 back to weight 3 (keepalived.conf:5)"
    )
    v6 = DestKey(DNS6, "2001:db8:1::1", 53)
    assert "[2001:db8:1::1]:53 back to weight 1" in reload_warning(configuration, v6, 2)
    # A real server keepalived does not manage, no keepalived.conf, or a topology: nothing to undo it.
    assert reload_restores_weight(configuration, DestKey(WEB, "10.1.0.99", 8080), 4) is None
    assert reload_restores_weight(None, key, 4) is None
    topology = parse_topology('web:t:192.0.2.10:80 ["web1:10.1.0.11:8080"] (-m -w 3)')
    assert reload_restores_weight(topology, key, 4) is None


def test_reports_are_immutable(configuration):
    report = find_drift(kernel_as_configured()[:1], configuration)
    with pytest.raises(TypeError):
        report.by_service[WEB] = ()  # type: ignore[index]
    with pytest.raises(AttributeError):
        report.drifts = ()  # type: ignore[misc]
    assert isinstance(report.drifts, tuple)
