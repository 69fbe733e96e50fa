"""Health check options in topology lines: per line, per real server, and every 2007 line unchanged."""

from __future__ import annotations

import pytest

from ipvsman.topology import CheckSpec, parse_service_line, parse_topology

LINES_2007 = [
    'MyService:t:193.123.45.12:80 ["Intel_web1-10:10.3.0.10+:8080","AMD_spare5+:10.4.6.24-28:80"] (-m -swrr)',
    'Mail:f:12 ["mx1-2:10.0.0.1+"]',
    'V6:t:[2001:db8::1]:443 ["w1-6:[2001:db8::a-f]"] (-s sh -p 600 -M 64)',
    'Ldap:t:10.0.0.5:389 ["ldap4:10.0.0.9 -w 3 -i"] (--masquerading, -p600, -swlc)',
]


@pytest.mark.parametrize("line", LINES_2007)
def test_a_2007_line_names_no_check(line):
    service = parse_service_line(line)
    assert service.check is None and all(dest.check is None for dest in service.dests)


def test_line_options_apply_to_every_real_server_and_a_real_server_overrides_them():
    service = parse_service_line(
        'Web:t:10.0.0.1:80 ["web1-2:10.0.1.1+:8080", "odd:10.0.1.9 --fall 5 --path=/other", "raw:10.0.1.8 --check tcp"] '
        "(-m -s wrr --check http --path /health --expect 200-299 --interval 0.5 --timeout 2 --rise 4 --fall 2 "
        "--on-failure remove)"
    )
    line_check = CheckSpec("http", 0.5, 2.0, 4, 2, "remove", (("expect", "200-299"), ("path", "/health")))
    assert service.check == line_check
    assert service.scheduler == "wrr" and service.dests[0].forward == "masq"  # the 2007 options still count
    assert [dest.check for dest in service.dests[:2]] == [line_check, line_check]
    odd = service.dests[2].check
    assert odd.fall == 5 and odd.rise == 4 and odd.param("path") == "/other" and odd.param("expect") == "200-299"
    raw = service.dests[3].check
    assert raw.check == "tcp" and raw.params == () and raw.on_failure == "remove"  # another check: no http params


def test_a_real_server_alone_may_name_a_check():
    service = parse_service_line('Dns:u:10.0.0.2:53 ["ns1:10.0.2.1", "ns2:10.0.2.2 --check dns --query a.example"]')
    assert service.check is None and service.dests[0].check is None
    assert service.dests[1].check == CheckSpec("dns", params=(("query", "a.example"),))


@pytest.mark.parametrize(
    "options, message",
    [
        ("--interval 0", "expected seconds (more than 0) after --interval, got '0'"),
        ("--timeout soon", "expected seconds (more than 0) after --timeout, got 'soon'"),
        ("--rise 0", "expected a count (1-1000) after --rise, got '0'"),
        ("--on-failure explode", "expected quiesce or remove after --on-failure, got 'explode'"),
        ("--check HTTP!", "expected a check name"),
        ("--path", "expected a value after --path in service options"),
        ("-q", "unknown option '-q' in service options"),
    ],
)
def test_bad_check_options_are_reported_with_file_and_line(options, message):
    config = parse_topology(f'# first\nWeb:t:10.0.0.1:80 ["w:10.0.1.1"] ({options})\n', "topo")
    assert config.services == () and len(config.errors) == 1
    assert str(config.errors[0]).startswith(f"topo:2: {message}"), str(config.errors[0])
