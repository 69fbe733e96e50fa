"""keepalived.conf as operators write it: NAT, DR, TUN, fwmark, groups, includes, comments, mistakes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from ipvsman.keepalived import parse_keepalived, read_keepalived
from ipvsman.model import DestKey, ServiceKey
from ipvsman.topology import VirtualAddress

KEEPALIVED = shutil.which("keepalived") or ("/usr/sbin/keepalived" if os.path.exists("/usr/sbin/keepalived") else None)

MAIN = """\
! Configuration File for keepalived on lb1
# Two VRRP instances, a NAT web farm, a DR TLS farm, a TUN DNS group and a mail fwmark.

global_defs {
   notification_email {
     ops@example.net
   }
   notification_email_from lb1@example.net
   smtp_server 127.0.0.1
   smtp_connect_timeout 30
   router_id LB1
   enable_script_security
}

vrrp_script chk_web {
    script "/bin/true"
    interval 2
    weight -20
}

vrrp_instance VI_WEB {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass webpass
    }
    virtual_ipaddress {
        192.0.2.10/24 dev eth0 label eth0:web
        192.0.2.11/24 dev eth0
    }
    virtual_ipaddress_excluded {
        192.0.2.12
        2001:db8:10::10/64 dev eth0
    }
}

vrrp_instance VI_MAIL
{
    state BACKUP
    interface eth0
    virtual_router_id 52
    priority 100
    virtual_ipaddress {
        198.51.100.25
    }
}

virtual_server 192.0.2.10 80 {          # the NAT web farm
    delay_loop 6
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    persistence_timeout 50
    real_server 10.1.0.11 8080 {
        weight 3
        HTTP_GET {
            url {
              path /health
              status_code 200
            }
            connect_timeout 3
            retry 3
            delay_before_retry 3
        }
    }
    real_server 10.1.0.12 8080 {
        weight 1
        inhibit_on_failure
        TCP_CHECK {
            connect_port 8080
            connect_timeout 3
        }
    }
}

virtual_server 192.0.2.11 443
{
    lvs_sched sh
    lvs_method DR
    protocol TCP
    persistence_timeout
    persistence_granularity 255.255.255.0
    real_server 10.1.0.21 443 { weight 10 }
    real_server 10.1.0.22 {
        weight 10
    }
}

include conf.d/*.conf
"""

DNS = """\
! DNS on a range of VIPs, tunnelled to the resolvers
virtual_server_group DNS {
    192.0.2.53-54 53
    198.51.100.0/31 53
}

virtual_server group DNS {
    lb_algo rr
    lb_kind TUN
    protocol UDP
    real_server 10.2.0.1 53 {
        weight 2
    }
    real_server 10.2.0.2 53 {
        weight 2
    }
}
"""

MAIL = """\
# Mail: SMTP and submission marked 25 by iptables
virtual_server fwmark 25 {
    lvs_sched wlc
    lvs_method DR
    persistence_timeout 600
    real_server 10.3.0.1 25 {
        weight 5
        SMTP_CHECK {
            connect_timeout 10
        }
    }
    real_server 10.3.0.2 {
        weight 5
    }
}
"""


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def lb1(tmp_path):
    write(tmp_path, {"keepalived.conf": MAIN, "conf.d/dns.conf": DNS, "conf.d/mail.conf": MAIL})
    return tmp_path / "keepalived.conf"


def summary(configuration):
    """Each service as (key, scheduler, persistent, netmask, name, [(address, port, forward, weight)])."""
    return {
        service.key: (
            service.scheduler,
            service.persistent,
            service.netmask,
            service.name,
            [(dest.address, dest.port, dest.forward, dest.weight) for dest in service.dests],
        )
        for service in configuration.services
    }


def tcp(address, port):
    return ServiceKey("inet", "tcp", address, port)


def udp(address, port):
    return ServiceKey("inet", "udp", address, port)


def test_a_realistic_director(lb1):
    configuration = read_keepalived(str(lb1))
    assert configuration.errors == ()
    assert configuration.source == "keepalived"
    assert configuration.files == (str(lb1), str(lb1.parent / "conf.d/dns.conf"), str(lb1.parent / "conf.d/mail.conf"))
    dns_dests = [("10.2.0.1", 53, "tunnel", 2), ("10.2.0.2", 53, "tunnel", 2)]
    assert summary(configuration) == {
        tcp("192.0.2.10", 80): (
            "wrr",
            50,
            "",
            None,
            [("10.1.0.11", 8080, "masq", 3), ("10.1.0.12", 8080, "masq", 1)],
        ),
        # The port of a DR real server is the virtual server's.
        tcp("192.0.2.11", 443): (
            "sh",
            360,
            "255.255.255.0",
            None,
            [("10.1.0.21", 443, "route", 10), ("10.1.0.22", 443, "route", 10)],
        ),
        udp("192.0.2.53", 53): ("rr", None, "", "DNS", dns_dests),
        udp("192.0.2.54", 53): ("rr", None, "", "DNS", dns_dests),
        udp("198.51.100.0", 53): ("rr", None, "", "DNS", dns_dests),
        udp("198.51.100.1", 53): ("rr", None, "", "DNS", dns_dests),
        # A firewall mark with DR: keepalived clears the real servers' ports.
        ServiceKey("inet", None, "", 0, 25): (
            "wlc",
            600,
            "",
            None,
            [("10.3.0.1", 0, "route", 5), ("10.3.0.2", 0, "route", 5)],
        ),
    }
    web = configuration.find_service(tcp("192.0.2.10", 80))
    assert [(d.health_checked, d.inhibit_on_failure) for d in web.dests] == [(True, False), (True, True)]
    assert web.dests[0].origin == f"{lb1}:58"
    assert configuration.find_dest(DestKey(ServiceKey("inet", None, "", 0, 25), "10.3.0.2", 0)).health_checked is False
    assert [(i.name, i.interface, i.state) for i in configuration.vrrp_instances] == [
        ("VI_WEB", "eth0", "MASTER"),
        ("VI_MAIL", "eth0", "BACKUP"),
    ]
    assert configuration.vrrp_instances[0].addresses == (
        VirtualAddress("192.0.2.10", 24, "eth0", "eth0:web"),
        VirtualAddress("192.0.2.11", 24, "eth0", None),
        VirtualAddress("192.0.2.12", None, None, None),
        VirtualAddress("2001:db8:10::10", 64, "eth0", None),
    )
    assert configuration.vrrp_instances[1].addresses == (VirtualAddress("198.51.100.25"),)


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed")
def test_keepalived_itself_reads_the_test_files_without_a_syntax_complaint(lb1):
    # keepalived -t checks a configuration and exits; it also warns about this machine (no eth0,
    # no script user), which is not what is checked here: only complaints about the syntax.
    result = subprocess.run(
        [KEEPALIVED, "-t", "-l", "-f", str(lb1)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    complaints = [
        line
        for line in output.splitlines()
        if re.search(r"Unknown keyword|[Ii]nvalid|Extra '}'|[Mm]issing|No such file|expected", line)
    ]
    assert complaints == []
    # Its warning about the mail real server's port shows it followed the include into conf.d.
    assert "FWM 25, real server [10.3.0.1]" in output


def test_comments_with_bang_and_hash_anywhere_and_quoted_strings():
    configuration = parse_keepalived(
        textwrap.dedent(
            """\
            ! a bang comment
            # a hash comment
            virtual_server 10.0.0.1 80 {   ! trailing bang
                protocol TCP               # trailing hash
                lb_algo rr                 !lb_algo wrr (a comment with no space)
            #   lb_algo lc
                snmp_name "web farm # one"
                real_server 10.0.1.1 80 {
                    snmp_name "web1"
                    weight 4 # not 40
                }
            }
            """
        ),
        "k.conf",
    )
    assert configuration.errors == ()
    (service,) = configuration.services
    assert (service.scheduler, service.name) == ("rr", "web farm # one")
    (dest,) = service.dests
    assert (dest.name, dest.weight) == ("web1", 4)
    assert configuration.host_names() == {"10.0.1.1": "web1"}
    assert configuration.service_names() == {tcp("10.0.0.1", 80): "web farm # one"}


def test_braces_on_the_same_line_the_next_line_and_one_line_blocks():
    configuration = parse_keepalived(
        "virtual_server 10.0.0.1 80\n"
        "{\n"
        "    protocol TCP\n"
        "    real_server 10.0.1.1 80\n"
        "\n"
        "    ! a comment between the statement and its brace\n"
        "    {\n"
        "        weight 2\n"
        "    }\n"
        "    real_server 10.0.1.2 80 { weight 3 }\n"
        "    real_server 10.0.1.3 80 { weight 4\n"
        "        TCP_CHECK { connect_timeout 3 } }\n"
        "}\n"
        "virtual_server 10.0.0.2 80 { protocol TCP\n real_server 10.0.1.9 80 {\n} }\n",
        "k.conf",
    )
    assert configuration.errors == ()
    assert summary(configuration) == {
        tcp("10.0.0.1", 80): (
            "wlc",
            None,
            "",
            None,
            [("10.0.1.1", 80, "masq", 2), ("10.0.1.2", 80, "masq", 3), ("10.0.1.3", 80, "masq", 4)],
        ),
        tcp("10.0.0.2", 80): ("wlc", None, "", None, [("10.0.1.9", 80, "masq", 1)]),
    }
    assert configuration.services[0].dests[2].health_checked is True


def test_unknown_keywords_and_blocks_are_skipped():
    configuration = parse_keepalived(
        textwrap.dedent(
            """\
            some_future_block {
                virtual_server 10.9.9.9 80 {
                    real_server 10.9.9.10 80 {
                    }
                }
            }
            frobnicate 3
            virtual_server 10.0.0.1 80 {
                protocol TCP
                frobnicate yes
                future_option { with { nesting } }
                real_server 10.0.1.1 80 {
                    quux 7
                    weight 2
                }
            }
            """
        ),
        "k.conf",
    )
    assert configuration.errors == ()
    # Only top-level virtual_server blocks are services: the one inside the unknown block is not.
    assert summary(configuration) == {tcp("10.0.0.1", 80): ("wlc", None, "", None, [("10.0.1.1", 80, "masq", 2)])}


def test_a_malformed_file_names_file_line_and_expectation_and_the_rest_still_counts(tmp_path):
    path = tmp_path / "broken.conf"
    path.write_text(
        textwrap.dedent(
            """\
            virtual_server 10.0.0.300 80 {
                protocol TCP
                real_server 10.0.1.1 80 {
                }
            }
            virtual_server 10.0.0.2 80 {
                protocol TCP
                lb_algo fastest
                lb_kind NATT
                real_server 10.0.1.2 80 {
                    weight heavy
                }
                real_server 10.0.1.3 99999 {
                }
                real_server 10.0.1.4 80 {
                    weight 7
                }
            }
            virtual_server group NOPE {
                real_server 10.0.1.5 80 {
                }
            }
            virtual_server_group G {
                10.0.0.1-300 80
                10.0.0.20 80
                fwmark many
            }
            virtual_server group G {
                protocol TCP
                real_server 10.0.1.6 80 {
                }
            }
            virtual_server 10.0.0.3 80 {
                protocol TCP
            }
            virtual_server 10.0.0.4 80 {
                protocol TCP
                persistence_timeout soon
                real_server 10.0.1.7 80 {
                }
            }
            }
            virtual_server 10.0.0.5 80 {
                protocol TCP
                snmp_name "unterminated
                real_server 10.0.1.8 80 {
                }
            """
        )
    )
    configuration = read_keepalived(str(path))
    errors = [(error.path, error.line) for error in configuration.errors]
    assert all(error_path == str(path) for error_path, _ in errors)
    by_line = {error.line: error.message for error in configuration.errors}
    assert "expected an IP address, got '10.0.0.300'" in by_line[1]
    assert "expected a scheduler" in by_line[8] and "'fastest'" in by_line[8]
    assert "expected lb_kind NAT, DR or TUN, got 'NATT'" in by_line[9]
    assert "expected weight" in by_line[11] and "'heavy'" in by_line[11]
    assert "expected a port 0-65535, got '99999'" in by_line[13]
    assert "no virtual_server_group NOPE" in by_line[19]
    assert "10.0.0.1-300" in by_line[24]
    assert "expected fwmark N" in by_line[26]
    assert "has no real servers" in by_line[33]
    assert "expected persistence_timeout [SECONDS]" in by_line[38]
    assert "unexpected '}'" in by_line[42]
    assert "expected a closing quote" in by_line[45]
    assert "expected '}' to close the virtual_server block" in by_line[43]
    assert str(configuration.errors[0]) == f"{path}:1: expected an IP address, got '10.0.0.300'"
    # What could be understood still counts, with defaults where a value was bad.
    assert summary(configuration) == {
        tcp("10.0.0.2", 80): ("wlc", None, "", None, [("10.0.1.2", 80, "masq", 1), ("10.0.1.4", 80, "masq", 7)]),
        tcp("10.0.0.20", 80): ("wlc", None, "", "G", [("10.0.1.6", 80, "masq", 1)]),
        tcp("10.0.0.4", 80): ("wlc", None, "", None, [("10.0.1.7", 80, "masq", 1)]),
        # An unterminated quote runs to the end of its line.
        tcp("10.0.0.5", 80): ("wlc", None, "", "unterminated", [("10.0.1.8", 80, "masq", 1)]),
    }


def test_includes_are_relative_to_the_including_file_and_may_sit_inside_a_block(tmp_path):
    write(
        tmp_path,
        {
            "etc/keepalived.conf": """\
                include conf.d/*.conf
                include "services/{web,mail}.conf"
                includea optional/*.conf
            """,
            "etc/conf.d/10-web.conf": """\
                virtual_server 10.0.0.1 80 {
                    protocol TCP
                    include ../pools/web.pool
                }
            """,
            "etc/conf.d/20-group.conf": "include sub/group.inc\n",
            "etc/conf.d/sub/group.inc": "virtual_server_group G { 10.0.0.7 25 }\n",
            "etc/pools/web.pool": "real_server 10.0.1.1 80 {\n}\nreal_server 10.0.1.2 80 {\n}\n",
            "etc/services/web.conf": "virtual_server 10.0.0.2 80 {\n protocol TCP\n real_server 10.0.1.3 80 {\n }\n}\n",
            "etc/services/mail.conf": "virtual_server group G {\n protocol TCP\n real_server 10.0.1.4 25 {\n }\n}\n",
        },
    )
    configuration = read_keepalived(str(tmp_path / "etc/keepalived.conf"))
    assert configuration.errors == ()
    assert summary(configuration) == {
        tcp("10.0.0.1", 80): ("wlc", None, "", None, [("10.0.1.1", 80, "masq", 1), ("10.0.1.2", 80, "masq", 1)]),
        tcp("10.0.0.2", 80): ("wlc", None, "", None, [("10.0.1.3", 80, "masq", 1)]),
        tcp("10.0.0.7", 25): ("wlc", None, "", "G", [("10.0.1.4", 25, "masq", 1)]),
    }
    assert len(configuration.files) == 7
    # Errors in an included file name that file and its own line.
    origin = configuration.find_service(tcp("10.0.0.1", 80)).dests[1].origin
    assert origin == f"{tmp_path / 'etc/conf.d/../pools/web.pool'}:3"


def test_include_loops_are_reported_not_followed(tmp_path):
    write(
        tmp_path,
        {
            "keepalived.conf": (
                "include a.conf\nvirtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.1.1 80 {\n }\n}\n"
            ),
            "a.conf": "include b.conf\n",
            "b.conf": "include keepalived.conf\ninclude a.conf\ninclude missing.conf\n",
        },
    )
    configuration = read_keepalived(str(tmp_path / "keepalived.conf"))
    assert [service.key for service in configuration.services] == [tcp("10.0.0.1", 80)]
    messages = [(Path(error.path).name, error.line, error.message) for error in configuration.errors]
    assert messages[0][:2] == ("b.conf", 1) and "include loop" in messages[0][2]
    assert messages[1][:2] == ("b.conf", 2) and "include loop" in messages[1][2]
    assert messages[2][:2] == ("b.conf", 3) and "missing.conf does not exist" in messages[2][2]
    assert len(messages) == 3


def test_keepalived_port_and_protocol_rules():
    configuration = parse_keepalived(
        textwrap.dedent(
            """\
            virtual_server 10.0.0.1 80 {
                real_server 10.0.1.1 {
                }
                real_server 10.0.1.2 8080 {
                }
            }
            virtual_server 10.0.0.2 80 {
                protocol TCP
                lb_kind DR
                real_server 10.0.1.3 8080 {
                }
                real_server 10.0.1.4 {
                    lvs_method TUN type gue port 6080
                }
            }
            virtual_server 10.0.0.3 {
                protocol SCTP
                real_server 10.0.1.5 {
                }
            }
            virtual_server fwmark 4 {
                real_server 10.0.1.6 8080 {
                }
                real_server 10.0.1.7 {
                }
                real_server 10.0.1.8 80 {
                    lvs_method DR
                }
            }
            virtual_server fwmark 5 {
                real_server 2001:db8::5 80 {
                }
            }
            virtual_server fwmark 6 {
                ip_family inet6
                lb_kind TUN
                real_server 10.0.1.9 {
                }
            }
            """
        ),
        "k.conf",
    )
    assert configuration.errors == ()
    assert summary(configuration) == {
        # No protocol: keepalived 2 programs UDP. A NAT real server without a port takes the VIP's.
        udp("10.0.0.1", 80): ("wlc", None, "", None, [("10.0.1.1", 80, "masq", 1), ("10.0.1.2", 8080, "masq", 1)]),
        tcp("10.0.0.2", 80): ("wlc", None, "", None, [("10.0.1.3", 80, "route", 1), ("10.0.1.4", 80, "tunnel", 1)]),
        # Port 0 is only valid for a persistent service: keepalived makes it persistent (360 s).
        ServiceKey("inet", "sctp", "10.0.0.3", 0): ("wlc", 360, "", None, [("10.0.1.5", 0, "masq", 1)]),
        ServiceKey("inet", None, "", 0, 4): (
            "wlc",
            None,
            "",
            None,
            [("10.0.1.6", 8080, "masq", 1), ("10.0.1.7", 0, "masq", 1), ("10.0.1.8", 0, "route", 1)],
        ),
        ServiceKey("inet6", None, "", 0, 5): ("wlc", None, "", None, [("2001:db8::5", 80, "masq", 1)]),
        ServiceKey("inet6", None, "", 0, 6): ("wlc", None, "", None, [("10.0.1.9", 0, "tunnel", 1)]),
    }


def test_groups_with_ranges_cidr_ipv6_and_fwmarks():
    configuration = parse_keepalived(
        textwrap.dedent(
            """\
            virtual_server_group MIXED {
                10.0.0.250-10.0.1.1 443
                10.0.2.8/30 443
                fwmark 7
            }
            virtual_server_group V6 {
                2001:db8::a-c 53
                fwmark 8 inet6
            }
            virtual_server group MIXED {
                protocol TCP
                lb_kind DR
                real_server 10.0.9.1 443 {
                    weight 3
                }
            }
            virtual_server group V6 {
                protocol UDP
                lb_kind TUN
                real_server 2001:db8:1::1 53 {
                }
            }
            """
        ),
        "k.conf",
    )
    assert configuration.errors == ()
    keys = [service.key for service in configuration.services]
    assert keys == [
        tcp("10.0.0.250", 443),
        tcp("10.0.0.251", 443),
        tcp("10.0.0.252", 443),
        tcp("10.0.0.253", 443),
        tcp("10.0.0.254", 443),
        tcp("10.0.0.255", 443),
        tcp("10.0.1.0", 443),
        tcp("10.0.1.1", 443),
        tcp("10.0.2.8", 443),
        tcp("10.0.2.9", 443),
        tcp("10.0.2.10", 443),
        tcp("10.0.2.11", 443),
        ServiceKey("inet", None, "", 0, 7),
        ServiceKey("inet6", "udp", "2001:db8::a", 53),
        ServiceKey("inet6", "udp", "2001:db8::b", 53),
        ServiceKey("inet6", "udp", "2001:db8::c", 53),
        ServiceKey("inet6", None, "", 0, 8),
    ]
    fwmark7 = configuration.find_service(ServiceKey("inet", None, "", 0, 7))
    assert [(d.address, d.port, d.forward, d.weight) for d in fwmark7.dests] == [("10.0.9.1", 0, "route", 3)]
    assert {service.name for service in configuration.services} == {"MIXED", "V6"}


def test_duplicates_are_reported_and_the_first_one_kept():
    configuration = parse_keepalived(
        textwrap.dedent(
            """\
            virtual_server 10.0.0.1 80 {
                protocol TCP
                real_server 10.0.1.1 80 {
                    weight 1
                }
                real_server 10.0.1.1 80 {
                    weight 9
                }
            }
            virtual_server 10.0.0.1 80 {
                protocol TCP
                real_server 10.0.1.2 80 {
                }
            }
            """
        ),
        "k.conf",
    )
    assert summary(configuration) == {tcp("10.0.0.1", 80): ("wlc", None, "", None, [("10.0.1.1", 80, "masq", 1)])}
    assert [(error.line, error.message) for error in configuration.errors] == [
        (6, "real server 10.0.1.1 80 is duplicated; ignored"),
        (10, "virtual server tcp 10.0.0.1:80 is already defined at k.conf:1"),
    ]


def test_an_unreadable_file_is_one_error(tmp_path):
    configuration = read_keepalived(str(tmp_path / "keepalived.conf"))
    assert configuration.services == ()
    (error,) = configuration.errors
    assert error.path == str(tmp_path / "keepalived.conf")
    assert "cannot read" in error.message


def test_parameters_and_conditional_lines_for_this_director():
    text = textwrap.dedent(
        """\
        $VIP_NET=10.0.0
        $WEB_VIP=${VIP_NET}.1
        $WEIGHT=4
        virtual_server $WEB_VIP 80 {
            protocol TCP
            @lb1 lb_algo rr
            @^lb1 lb_algo wrr
            real_server ${VIP_NET}.11 80 {
                weight $WEIGHT
            }
            real_server $UNDEFINED 80 {
            }
        }
        """
    )
    on_lb1 = parse_keepalived(text, "k.conf", config_id="lb1")
    on_lb2 = parse_keepalived(text, "k.conf", config_id="lb2")
    assert summary(on_lb1) == {tcp("10.0.0.1", 80): ("rr", None, "", None, [("10.0.0.11", 80, "masq", 4)])}
    assert summary(on_lb2) == {tcp("10.0.0.1", 80): ("wrr", None, "", None, [("10.0.0.11", 80, "masq", 4)])}
    # An undefined parameter stays as written, and is then no address.
    assert [(e.line, e.message) for e in on_lb1.errors] == [(11, "expected an IP address, got '$UNDEFINED'")]


def test_a_weight_beyond_65535_is_reported_with_file_and_line_and_kept(tmp_path):
    """ipvsadm (and ipvsman's + and -) stop at 65535; keepalived 2 and the kernel take more."""
    path = tmp_path / "weights.conf"
    path.write_text(
        "virtual_server 10.0.0.1 80 {\n"
        "    protocol TCP\n"
        "    real_server 10.0.1.1 80 {\n"
        "        weight 70000\n"
        "    }\n"
        "    real_server 10.0.1.2 80 { weight 65535 }\n"
        "    real_server 10.0.1.3 80 { weight 2147483648 }\n"
        "}\n"
    )
    configuration = read_keepalived(str(path))
    assert [(error.path, error.line) for error in configuration.errors] == [(str(path), 4), (str(path), 7)]
    assert configuration.errors[0].message.startswith("weight 70000 is out of range 0-65535")
    assert "expected weight 0-65535, got '2147483648'" in configuration.errors[1].message
    assert f"{path}:4" in str(configuration.errors[0])
    service = configuration.find_service(ServiceKey("inet", "tcp", "10.0.0.1", 80))
    weights = {dest.address: dest.weight for dest in service.dests}
    assert weights == {"10.0.1.1": 70000, "10.0.1.2": 65535, "10.0.1.3": 1}  # what keepalived 2 programs
