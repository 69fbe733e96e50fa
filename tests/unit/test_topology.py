"""The 2007 ipvsman topology syntax: ranges, options, errors that name the line, names for the views."""

from __future__ import annotations

import pytest

from ipvsman.model import DestKey, ServiceKey
from ipvsman.topology import ConfigError, parse_service_line, parse_topology, read_topology

EXAMPLE = 'MyService:t:193.123.45.12:80 ["Intel_web1-10:10.3.0.10+:8080","AMD_spare5+:10.4.6.24-28:80"] (-m -swrr)'


def test_the_documented_example_line():
    service = parse_service_line(EXAMPLE)
    assert service.name == "MyService"
    assert service.key == ServiceKey("inet", "tcp", "193.123.45.12", 80)
    assert service.scheduler == "wrr"
    assert service.persistent is None
    names = [dest.name for dest in service.dests]
    assert names == [f"Intel_web{n}" for n in range(1, 11)] + [f"AMD_spare{n}" for n in range(5, 10)]
    addresses = [dest.address for dest in service.dests]
    assert addresses == [f"10.3.0.{n}" for n in range(10, 20)] + [f"10.4.6.{n}" for n in range(24, 29)]
    assert [dest.port for dest in service.dests] == [8080] * 10 + [80] * 5
    assert {dest.forward for dest in service.dests} == {"masq"}
    assert {dest.weight for dest in service.dests} == {1}


def test_defaults_are_ipvsadm_defaults():
    service = parse_service_line('dns:u:10.0.0.53:53 ["ns1:10.0.1.1"]')
    assert service.key == ServiceKey("inet", "udp", "10.0.0.53", 53)
    assert service.scheduler == "wlc"
    (dest,) = service.dests
    assert (dest.name, dest.address, dest.port, dest.forward, dest.weight) == ("ns1", "10.0.1.1", 53, "route", 1)


@pytest.mark.parametrize(
    "options, expected",
    [
        ("(-g -s rr -w 5)", ("route", "rr", 5, None)),
        ("(-i --scheduler=sh --weight=0)", ("tunnel", "sh", 0, None)),
        ("(-m -p)", ("masq", "wlc", 1, 300)),
        ("(-m -p 900 -w2)", ("masq", "wlc", 2, 900)),
        ("(--masquerading, -p600, -swlc)", ("masq", "wlc", 1, 600)),
        ("", ("route", "wlc", 1, None)),
    ],
)
def test_service_options(options, expected):
    service = parse_service_line(f'web:t:10.0.0.1:80 ["w1-2:10.0.1.1+"] {options}')
    forward, scheduler, weight, persistent = expected
    assert {dest.forward for dest in service.dests} == {forward}
    assert service.scheduler == scheduler
    assert {dest.weight for dest in service.dests} == {weight}
    assert service.persistent == persistent


def test_persistence_netmask():
    service = parse_service_line('web:t:10.0.0.1:443 ["w1:10.0.1.1"] (-p 60 -M 255.255.255.0)')
    assert (service.persistent, service.netmask) == (60, "255.255.255.0")


def test_a_real_server_can_override_the_service_options():
    service = parse_service_line('web:t:10.0.0.1:80 ["w1-2:10.0.1.1+", "backup:10.0.2.1:8080 -w 0 -m"] (-g -w 10)')
    by_name = {dest.name: dest for dest in service.dests}
    assert (by_name["w1"].forward, by_name["w1"].weight, by_name["w1"].port) == ("route", 10, 80)
    assert (by_name["backup"].forward, by_name["backup"].weight, by_name["backup"].port) == ("masq", 0, 8080)


def test_zero_padding_and_ranges_across_an_octet():
    service = parse_service_line('web:t:10.0.0.1:80 ["web08-12:10.0.0.254-10.0.1.2:80"]')
    assert [dest.name for dest in service.dests] == ["web08", "web09", "web10", "web11", "web12"]
    assert [dest.address for dest in service.dests] == [
        "10.0.0.254",
        "10.0.0.255",
        "10.0.1.0",
        "10.0.1.1",
        "10.0.1.2",
    ]


def test_unnamed_real_servers_take_the_count_from_the_addresses():
    service = parse_service_line('web:t:10.0.0.1:80 [":10.0.1.1-3"]')
    assert [(dest.name, dest.address) for dest in service.dests] == [
        (None, "10.0.1.1"),
        (None, "10.0.1.2"),
        (None, "10.0.1.3"),
    ]


def test_firewall_mark_services():
    service = parse_service_line('Mail:f:12 ["mx1-2:10.0.5.1+:25"] (-p 600)')
    assert service.key == ServiceKey("inet", None, "", 0, 12)
    assert [dest.port for dest in service.dests] == [25, 25]
    assert service.persistent == 600
    # The family of a mark comes from -6, or from real servers that are all IPv6.
    assert parse_service_line('M:f:3:0 ["a:10.0.0.1"] (-6)').key.af == "inet6"
    assert parse_service_line('M:f:3 ["a1+:[2001:db8::5-6]"]').key == ServiceKey("inet6", None, "", 0, 3)


def test_ipv6_vips_and_real_servers():
    service = parse_service_line('dns6:u:[2001:db8::1]:53 ["ns01-03:[2001:db8::a]+", "far:[2001:db8:1::f]:5353"]')
    assert service.key == ServiceKey("inet6", "udp", "2001:db8::1", 53)
    assert [(dest.name, dest.address, dest.port) for dest in service.dests] == [
        ("ns01", "2001:db8::a", 53),
        ("ns02", "2001:db8::b", 53),
        ("ns03", "2001:db8::c", 53),
        ("far", "2001:db8:1::f", 5353),
    ]


def test_sctp_is_s():
    assert parse_service_line('sig:s:10.0.0.1:2905 ["a:10.0.1.1"]').key.protocol == "sctp"


def test_comments_blank_lines_and_line_numbers_of_errors(tmp_path):
    path = tmp_path / "topology"
    path.write_text(
        "# ipvsman topology of lb1\n"
        "\n"
        f"{EXAMPLE}   # the web farm\n"
        "ldap:t:10.10.10.100:389 [\"ldap1-4:10.10.10.201+\"] (-m -s rr)\n"
        "Broken:x:10.0.0.1:80 [\"a:10.0.0.2\"]\n"
        "NoPort:t:10.0.0.9 [\"a:10.0.0.2\"]\n"
        "Counts:t:10.0.0.1:81 [\"a1-3:10.0.1.1-2\"]\n"
        "BadOpt:t:10.0.0.1:82 [\"a:10.0.1.1\"] (-q)\n"
        "BadSched:t:10.0.0.1:83 [\"a:10.0.1.1\"] (-s fastest)\n"
        "Unquoted:t:10.0.0.1:84 [a:10.0.1.1]\n"
        "ldap:t:10.10.10.100:389 [\"other:10.10.10.9\"]\n"
        "dns:u:10.0.0.53:53 [\"ns1-2:10.0.1.1+\"]\n"
    )
    configuration = read_topology(str(path))
    assert [service.name for service in configuration.services] == ["MyService", "ldap", "dns"]
    assert [(error.line, error.path) for error in configuration.errors] == [(n, str(path)) for n in range(5, 12)]
    messages = [error.message for error in configuration.errors]
    assert "expected protocol t, u, s or f" in messages[0]
    assert "VIP port" in messages[1]
    assert "3 names for 2 addresses" in messages[2]
    assert "unknown option '-q'" in messages[3]
    assert "expected a scheduler" in messages[4] and "'fastest'" in messages[4]
    assert "expected a quoted real server" in messages[5]
    assert "already defined on line 4" in messages[6]
    assert str(configuration.errors[0]).startswith(f"{path}:5: ")


@pytest.mark.parametrize(
    "line, expected",
    [
        ('a:t:10.0.0.1:80 ["w1+:10.0.1.1+"]', "both say"),
        ('a:t:10.0.0.1:80 ["w5-1:10.0.1.1-5"]', "runs backwards"),
        ('a:t:10.0.0.1:80 ["w:10.0.1.9-3"]', "runs backwards"),
        ('a:t:10.0.0.1:80 ["w:10.0.1.1-300"]', "last octet"),
        ('a:t:10.0.0.1:80 ["w:10.0.1.1:99999"]', "real server port"),
        ('a:t:10.0.0.1:80 ["w:10.0.1.1", "v:10.0.1.1"]', "listed twice"),
        ('a:t:10.0.0.1:80 ["w:2001:db8::1"]', "IPv6 address in brackets"),
        ('a:t:10.0.0.1:80 ["w:[2001:db8::1]x"]', "expected ':PORT'"),
        ('a:t:10.0.0.1:80 ["w:[2001:db8::1]"]', "address family"),
        ('a:f:0 ["w:10.0.0.1"]', "firewall mark"),
        ('a:t:10.0.0.1:80 ["w1-3:255.255.255.254+"] ', "past the end"),
        ('a:t:10.0.0.1:80 ["w:10.0.0.1"] (-w)', "expected a value after -w"),
        ('a:t:10.0.0.1:80 ["w:10.0.0.1"] (-w 70000)', "expected a weight"),
        ('a:t:10.0.0.1:80 ["w:10.0.0.1"] (-M 255.0.255.1)', "netmask"),
        ('a:t:10.0.0.1:80 ["w:10.0.0.1', "expected NAME:PROTO:VIP:PORT"),
        ("a:t:nowhere:80", "expected an IP address for the VIP"),
    ],
)
def test_errors_say_what_was_expected(line, expected):
    configuration = parse_topology(line, "topo")
    assert configuration.services == ()
    (error,) = configuration.errors
    assert isinstance(error, ConfigError)
    assert expected in error.message
    assert error.line == 1


def test_a_missing_file_is_one_error_not_an_exception(tmp_path):
    configuration = read_topology(str(tmp_path / "nope"))
    assert configuration.services == ()
    (error,) = configuration.errors
    assert "cannot read" in error.message and error.path.endswith("nope")


def test_names_for_the_views():
    ldap_line = 'ldap:t:10.10.10.100:389 ["ldap4:10.10.10.201", "Intel_web1:10.3.0.10:389"]'
    configuration = parse_topology(f"{EXAMPLE}\n{ldap_line}")
    key = ServiceKey("inet", "tcp", "193.123.45.12", 80)
    ldap = ServiceKey("inet", "tcp", "10.10.10.100", 389)
    assert configuration.service_names() == {key: "MyService", ldap: "ldap"}
    dest_names = configuration.dest_names()
    assert dest_names[DestKey(key, "10.3.0.12", 8080)] == "Intel_web3"
    assert dest_names[DestKey(ldap, "10.10.10.201", 389)] == "ldap4"
    hosts = configuration.host_names()
    assert hosts["10.4.6.28"] == "AMD_spare9"
    assert hosts["10.10.10.201"] == "ldap4"
    assert configuration.find_dest(DestKey(ldap, "10.10.10.201", 389)).name == "ldap4"
    assert configuration.find_dest(DestKey(ldap, "10.10.10.201", 80)) is None
    assert configuration.source == "topology"


def test_configuration_values_are_immutable():
    service = parse_service_line(EXAMPLE)
    with pytest.raises(AttributeError):
        service.scheduler = "rr"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        service.dests[0].weight = 3  # type: ignore[misc]
    assert isinstance(service.dests, tuple)
