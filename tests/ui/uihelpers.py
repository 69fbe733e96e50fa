"""Helpers of the dashboard tests: hand-built snapshots, names and configuration files, a fake poller,
golden text files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import urwid.testing

from ipvsman.model import (
    Connection,
    Daemon,
    Dest,
    DestKey,
    IpvsInfo,
    RawState,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    TableRead,
    TableStatus,
    Timeouts,
)
from ipvsman.keepalived import parse_keepalived
from ipvsman.names import NameResolver, Names, PortNames
from ipvsman.poller import aggregate_connections
from ipvsman.topology import parse_topology
from ipvsman.ui.app import Dashboard
from ipvsman.ui.config import Configurations
from ipvsman.ui.health import DirectorSample, Health, InterfaceRates

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("IPVSMAN_UPDATE_GOLDEN") == "1"
TAKEN_AT = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC

WEB = ServiceKey("inet", "tcp", "192.0.2.10", 80)
WEB_TLS = ServiceKey("inet", "tcp", "192.0.2.10", 443)
DNS = ServiceKey("inet", "udp", "192.0.2.53", 53)
MAIL = ServiceKey("inet", None, "", 0, fwmark=7)
WEB1 = DestKey(WEB, "10.1.0.11", 80)
WEB2 = DestKey(WEB, "10.1.0.12", 80)
WEB3 = DestKey(WEB, "10.1.0.13", 80)


# A services database and a hosts file of our own: the machine's must not change a golden screen.
PORT_NAMES = {(80, "tcp"): "http", (443, "tcp"): "https", (53, "udp"): "domain", (25, "tcp"): "smtp"}
HOSTS = {"192.0.2.10": "www", "192.0.2.53": "ns", "10.1.0.53": "dns1"}

# The test director as a topology: a name for each service and real server, and a spare web server
# (web4) the kernel does not have, for `a`.
TOPOLOGY = """\
# name:proto:VIP:port ["names:addresses[:port] [options]", ...] (options)
Web:t:192.0.2.10:80 ["web1:10.1.0.11 -w100", "web2:10.1.0.12 -w50", "web3:10.1.0.13 -g -w0", "web4:10.1.0.14"] (-m -swlc)
WebTLS:t:192.0.2.10:443 ["web1:10.1.0.11 -m", "web2:10.1.0.12:8443 -i"] (-swrr -w10 -p300)
DNS:u:192.0.2.53:53 ["dns1:10.1.0.53"] (-m -srr)
Mail:f:7 ["mx1:10.1.0.25:25"] (-ssh)
"""

# The test director as keepalived sees it, with differences: web2's weight (100, not 50), the TLS
# service's scheduler (rr, not wrr) and its second server's method (NAT, not tunnel), a server and
# a service the kernel lacks (10.1.0.14, ssh on 192.0.2.20), and nothing for the kernel's fwmark 7.
KEEPALIVED = """\
! keepalived.conf of the test director
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.10/24 dev eth0
        192.0.2.20/24 dev eth0
    }
}
virtual_server 192.0.2.10 80 {
    lb_algo wlc
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 80 {
        weight 100
    }
    real_server 10.1.0.12 80 {
        weight 100
    }
    real_server 10.1.0.13 80 {
        weight 0
        lb_kind DR
    }
    real_server 10.1.0.14 80 {
        weight 10
    }
}
virtual_server 192.0.2.10 443 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    persistence_timeout 300
    real_server 10.1.0.11 443 {
        weight 10
    }
    real_server 10.1.0.12 8443 {
        weight 10
    }
}
virtual_server 192.0.2.53 53 {
    lb_algo rr
    lb_kind NAT
    protocol UDP
    real_server 10.1.0.53 53 {
        weight 1
    }
}
virtual_server 192.0.2.20 22 {
    lb_algo wlc
    lb_kind DR
    protocol TCP
    real_server 10.1.0.22 22 {
        weight 1
    }
}
"""


def port_lookup(port: int, protocol: str) -> str:
    try:
        return PORT_NAMES[(port, protocol)]
    except KeyError:
        raise OSError("port/proto not found") from None


def fixed_names(show: bool = True, configs: Configurations | None = None) -> Names:
    """Names from PORT_NAMES, HOSTS and the configurations only: no DNS, no /etc files."""
    names = Names(NameResolver(lookup=None, hosts_path=None, hosts=HOSTS), ports=PortNames(port_lookup), show=show)
    for config in configs.loaded() if configs is not None else ():
        names.add_configuration(config)
    return names


def make_configs(topology: str | None = TOPOLOGY, keepalived: str | None = None) -> Configurations:
    """Configurations parsed from text, as if read from topology.txt and keepalived.conf."""
    return Configurations(
        topology=parse_topology(topology, "topology.txt") if topology is not None else None,
        keepalived=parse_keepalived(keepalived, "keepalived.conf", config_id="lb1") if keepalived else None,
    )


def make_dashboard(poller, clock, tmp_path=None, configs=None, names=True, **options) -> Dashboard:
    """A dashboard like the fixture's, with configurations and names (shown unless names=False)."""
    configs = configs if configs is not None else Configurations()
    audit = str(tmp_path / "audit" / "changes.log") if tmp_path is not None else None
    board = Dashboard(
        make_options(audit_log=audit, **options),
        poller=poller,
        backend=FakeBackend(),
        hostname="lvs-test",
        clock=clock,
        names=fixed_names(show=names, configs=configs),
        configs=configs,
    )
    board.apply_snapshot(make_snapshot())
    board.apply_director(HEALTH)
    return board


def conn(client, cport, virtual, vport, dest, dport, state="ESTABLISHED", expires=890, protocol="TCP", origin=None):
    return Connection(protocol, client, cport, virtual, vport, dest, dport, state, expires, origin)


def make_services(web_weights=(100, 50, 0)) -> tuple[Service, ...]:
    web = Service(
        WEB,
        "wlc",
        rates=Rates(cps=12, inpps=340, outpps=410, inbps=52_000, outbps=1_250_000),
        dests=(
            Dest("10.1.0.11", 80, "masq", web_weights[0], active_conns=3, inactive_conns=1, rates=Rates(cps=8)),
            Dest("10.1.0.12", 80, "masq", web_weights[1], active_conns=1, inactive_conns=1, rates=Rates(cps=4)),
            Dest("10.1.0.13", 80, "route", web_weights[2], inactive_conns=1),
        ),
    )
    tls = Service(
        WEB_TLS,
        "wrr",
        persistent=300,
        netmask="255.255.255.255",
        rates=Rates(cps=3, inpps=90, outpps=120, inbps=9_000, outbps=310_000),
        dests=(Dest("10.1.0.11", 443, "masq", 10, active_conns=2), Dest("10.1.0.12", 8443, "tunnel", 10)),
    )
    dns = Service(DNS, "rr", rates=Rates(cps=40, inpps=40, outpps=40, inbps=2_900, outbps=7_100),
                  dests=(Dest("10.1.0.53", 53, "masq", 1, inactive_conns=2),))  # fmt: skip
    mail = Service(MAIL, "sh", dests=(Dest("10.1.0.25", 25, "local", 1, active_conns=1),))
    return (web, tls, dns, mail)


def make_connections() -> tuple[Connection, ...]:
    return (
        conn("198.51.100.7", 40001, "192.0.2.10", 80, "10.1.0.11", 80),
        conn("198.51.100.8", 40002, "192.0.2.10", 80, "10.1.0.11", 80),
        conn("198.51.100.9", 40003, "192.0.2.10", 80, "10.1.0.11", 80, "FIN_WAIT", 100),
        conn("203.0.113.5", 50001, "192.0.2.10", 80, "10.1.0.12", 80, "SYN_RECV", 50),
        conn("203.0.113.6", 50002, "192.0.2.10", 80, "10.1.0.12", 80, origin="SYNC"),
        conn("203.0.113.7", 50003, "192.0.2.10", 80, "10.1.0.13", 80, "TIME_WAIT", 110),
        conn("198.51.100.7", 40010, "192.0.2.10", 443, "10.1.0.11", 443),
        conn("198.51.100.7", 0, "192.0.2.10", 443, "10.1.0.11", 443, "NONE", 290),
        conn("198.51.100.20", 5353, "192.0.2.53", 53, "10.1.0.53", 53, "UDP", 280, "UDP"),
        conn("198.51.100.21", 5354, "192.0.2.53", 53, "10.1.0.53", 53, "UDP", 270, "UDP"),
        conn("203.0.113.99", 33000, "192.0.2.25", 25, "10.1.0.25", 25),
    )


def make_snapshot(
    seq=1, services=None, connections=None, writable=True, error=None, paused=False, daemons=None, extra=None,
    **state,
) -> Snapshot:
    """A kernel snapshot of `services` (the fixture's by default); `extra`: more Snapshot fields."""
    extra = dict(extra or {})
    services = make_services() if services is None else services
    connections = make_connections() if connections is None else connections
    raw = RawState(
        info=IpvsInfo("1.2.1", 4096),
        timeouts=Timeouts(900, 120, 300),
        services=services,
        daemons=(Daemon("master", "eth0", 10, maxlen=1472),) if daemons is None else daemons,
        connections=connections,
        sync_version=1,
        **state,
    )
    service_states, dest_states = aggregate_connections(services, connections or ())
    history = {s.key: tuple(range(0, 2 * s.rates.cps + 1, max(1, s.rates.cps // 4))) for s in services}
    if "table" not in extra:  # the table read whole with this poll, as a poll without a budget does
        read = None if raw.connections is None else TableRead(
            seq=seq, complete=True, entries=len(raw.connections), started_at=TAKEN_AT + seq - 0.012,
            cpu_seconds=0.012, wall_seconds=0.012,
        )  # fmt: skip
        extra["table"] = TableStatus(read=read, current=read is not None, next_read_at=TAKEN_AT + seq)
    return Snapshot(
        **extra,
        seq=seq,
        taken_at=TAKEN_AT + seq,
        poll_seconds=0.012,
        backend="kernel",
        writable=writable,
        state=raw,
        service_states=service_states,
        dest_states=dest_states,
        service_history=history,
        error=error,
        paused=paused,
    )


class FakePoller:
    """Records what the dashboard submits; pause/resume like the real one."""

    def __init__(self):
        self.submitted = []
        self.paused = False

    def submit(self, command):
        self.submitted.append(command)

    def read_table_now(self):
        self.table_reads = getattr(self, "table_reads", 0) + 1

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False


class FakeBackend:
    name = "kernel"
    read_only_reason = "no CAP_NET_ADMIN: run as root to change weights"


def make_options(**overrides) -> argparse.Namespace:
    values = dict(
        read_only=False, weight_step=1, audit_log=None, colors=None, no_resolve=False, topology=None,
        keepalived=None, interval=1.0, connections=True, netns=None,
    )  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


HEALTH = DirectorSample(
    Health(12.0, 3.5, 41.0, (InterfaceRates("eth0", 1.2e6, 3.4e6, 0.0, 0),)), held={"192.0.2.10": "eth0"}
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=TAKEN_AT + 1.5):
        self.now = now

    def __call__(self):
        return self.now


def screen(board: Dashboard, size=(100, 30)) -> list[str]:
    return urwid.testing.render_text(board.top, size, focus=True, strip=True)


def assert_golden(name: str, lines: list[str]) -> None:
    """Compare with tests/ui/golden/<name>.txt; IPVSMAN_UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / f"{name}.txt"
    text = "\n".join(lines) + "\n"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run with IPVSMAN_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"screen differs from {path}:\n{text}"
