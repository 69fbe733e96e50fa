"""`ipvsman vips`: the real server's VIP plan from crafted keepalived.conf files, its steps, and the command."""

from __future__ import annotations

import io
import json
import os
import textwrap
from dataclasses import replace

import pytest

from ipvsman import cli
from ipvsman.kernel import dummyvips
from ipvsman.kernel.dummyvips import ApplyResult, DummyVipError, DummyVipHost
from ipvsman.keepalived import parse_keepalived, read_keepalived
from ipvsman.realserver import (
    AddAddress,
    BringUp,
    CreateInterface,
    InterfaceAddress,
    InterfaceState,
    PlanInputError,
    RemoveAddress,
    SetSysctl,
    build_plan,
    host_real_ips,
    plan_to_dict,
    served_vips,
)
from ipvsman.realserver_cli import fingerprint, main, watch, watched_paths

ME = "192.168.5.11"
OTHER = "192.168.5.12"


def conf(text: str):
    config = parse_keepalived(textwrap.dedent(text), config_id="director1")
    assert not config.errors, config.errors
    return config


def service(address: str, port: int, *reals: str, kind: str = "DR", protocol: str = "TCP") -> str:
    servers = "".join(f"    real_server {real} {port} {{\n    }}\n" for real in reals)
    return f"virtual_server {address} {port} {{\n    lb_kind {kind}\n    protocol {protocol}\n{servers}}}\n"


def missing(name: str = "dummy0") -> InterfaceState:
    return InterfaceState(name, exists=False, sysctls={("all", "arp_ignore"): 0, ("all", "arp_announce"): 0})


def ready(*addresses: str, name: str = "dummy0") -> InterfaceState:
    """A dummy interface already set up right, holding `addresses` (address/prefixlen)."""
    held = tuple(InterfaceAddress(text.split("/")[0], int(text.split("/")[1])) for text in addresses)
    sysctls = {(scope, key): value for scope in ("all", name) for key, value in (("arp_ignore", 1), ("arp_announce", 2))}
    return InterfaceState(name, exists=True, kind="dummy", up=True, addresses=held, sysctls=sysctls)


def added(plan) -> list[str]:
    return [str(vip.address) for vip in plan.added]


# -- the plan -------------------------------------------------------------------------------------


def test_a_new_interface_gets_the_vips_this_host_serves_by_dr_and_tun_only():
    config = conf(
        service("10.0.0.1", 80, ME, OTHER)
        + service("10.0.0.2", 53, ME, kind="TUN", protocol="UDP")
        + service("10.0.0.3", 80, ME, kind="NAT")
        + service("10.0.0.4", 80, OTHER)
    )
    plan = build_plan(config, missing(), [ME])
    assert added(plan) == ["10.0.0.1/32", "10.0.0.2/32"]
    assert plan.create and plan.bring_up and not plan.removed and not plan.kept
    assert any("10.0.0.3:80" in note and "NAT" in note for note in plan.notes)
    assert [step.__class__ for step in plan.steps] == [
        CreateInterface, SetSysctl, SetSysctl, SetSysctl, SetSysctl, AddAddress, AddAddress, BringUp
    ]


def test_groups_expand_to_one_vip_per_member():
    config = conf(
        """\
        virtual_server_group WEB {
            10.0.1.1-3 80
            10.0.2.8/31 443
        }
        virtual_server group WEB {
            lb_kind DR
            protocol TCP
            real_server 192.168.5.11 80 {
            }
        }
        """
    )
    plan = build_plan(config, missing(), [ME])
    assert added(plan) == ["10.0.1.1/32", "10.0.1.2/32", "10.0.1.3/32", "10.0.2.8/32", "10.0.2.9/32"]
    assert plan.added[3].services == ("tcp 10.0.2.8:443",)


def test_includes_are_followed(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "web.conf").write_text(service("10.0.0.1", 80, ME))
    (tmp_path / "conf.d" / "mail.conf").write_text(service("10.0.0.2", 25, ME))
    main_file = tmp_path / "keepalived.conf"
    main_file.write_text("include conf.d/*.conf\n" + service("2001:db8::1", 443, "2001:db8:5::11"))
    config = read_keepalived(str(main_file))
    assert not config.errors
    plan = build_plan(config, missing(), host_real_ips(config, [(ME, "eth0"), ("2001:db8:5::11", "eth0")], "dummy0"))
    assert added(plan) == ["10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"]
    assert plan.real_ips == (ME, "2001:db8:5::11")


def test_a_fwmark_service_is_named_in_the_notes_and_its_vips_come_from_the_operator():
    config = conf(
        """\
        virtual_server fwmark 7 {
            lb_kind DR
            real_server 192.168.5.11 0 {
            }
        }
        """
    )
    plan = build_plan(config, missing(), [ME])
    assert plan.added == ()
    assert any(note.startswith("fwmark 7:") and "--vip" in note for note in plan.notes)
    given = build_plan(config, missing(), [ME], extra_vips=["10.0.0.7", "2001:db8::7"])
    assert added(given) == ["10.0.0.7/32", "2001:db8::7/128"]


def test_ipv6_vips_are_slash_128_and_added_without_dad():
    config = conf(service("2001:db8:0::0010", 80, "2001:db8:5::11"))
    plan = build_plan(config, missing(), ["2001:db8:5::11"])
    assert added(plan) == ["2001:db8::10/128"]
    assert str([step for step in plan.steps if isinstance(step, AddAddress)][0]) == "add 2001:db8::10/128 to dummy0 nodad"


def test_a_host_in_no_service_removes_every_vip_but_the_link_local_one():
    config = conf(service("10.0.0.1", 80, OTHER))
    state = ready("10.0.0.1/32", "10.0.0.9/32", "fe80::1c2d:3eff:fe4f:5a6b/64")
    assert host_real_ips(config, [(ME, "eth0")], "dummy0") == ()
    plan = build_plan(config, state, [])
    assert [str(address) for address in plan.removed] == ["10.0.0.1/32", "10.0.0.9/32"]
    assert plan.added == () and plan.kept == ()
    assert plan.notes[0].startswith("none of this host's addresses is a real_server")


def test_a_vip_with_the_wrong_prefix_is_replaced():
    config = conf(service("10.0.0.1", 80, ME))
    plan = build_plan(config, ready("10.0.0.1/24"), [ME])
    assert [str(address) for address in plan.removed] == ["10.0.0.1/24"]
    assert added(plan) == ["10.0.0.1/32"]
    steps = plan.steps
    assert isinstance(steps[0], RemoveAddress) and isinstance(steps[1], AddAddress)


def test_a_set_up_interface_needs_nothing_and_stricter_arp_settings_are_kept():
    config = conf(service("10.0.0.1", 80, ME))
    state = ready("10.0.0.1/32")
    assert not build_plan(config, state, [ME]).changes
    stricter = replace(state, sysctls={**state.sysctls, ("all", "arp_ignore"): 2})
    assert not build_plan(config, stricter, [ME]).changes
    # 3 still answers ARP for global addresses such as the VIPs: it is changed.
    loose = replace(state, sysctls={**state.sysctls, ("all", "arp_ignore"): 3})
    plan = build_plan(config, loose, [ME])
    assert [str(step) for step in plan.steps] == ["set net.ipv4.conf.all.arp_ignore 3 -> 1"]


def test_the_port_level_trap_is_warned_about_only_when_it_is_there():
    split = conf(service("10.0.0.1", 80, ME, OTHER) + service("10.0.0.1", 443, OTHER))
    (warning,) = build_plan(split, missing(), [ME]).warnings
    assert "tcp 10.0.0.1:80" in warning and "tcp 10.0.0.1:443" in warning and "10.0.0.1:443 will stay" in warning
    both = conf(service("10.0.0.1", 80, ME, OTHER) + service("10.0.0.1", 443, ME))
    assert build_plan(both, missing(), [ME]).warnings == ()


def test_a_sorry_server_needs_the_vip_too():
    config = conf(
        """\
        virtual_server 10.0.0.1 80 {
            lb_kind DR
            protocol TCP
            sorry_server 192.168.5.11 80
            real_server 192.168.5.12 80 {
            }
        }
        """
    )
    vips, _ = served_vips(config, [ME])
    assert vips == {"10.0.0.1": ["tcp 10.0.0.1:80 (sorry server)"]}
    assert build_plan(config, missing(), [ME]).warnings == ()


def test_the_hosts_addresses_on_the_managed_interface_are_not_its_identity():
    # The VIP 10.0.0.1 is also listed as a real server elsewhere: holding it does not make this host that server.
    config = conf(service("10.0.0.1", 80, ME) + service("10.0.0.5", 80, "10.0.0.1"))
    assert host_real_ips(config, [(ME, "eth0"), ("10.0.0.1", "dummy0")], "dummy0") == (ME,)


def test_a_vip_also_held_elsewhere_is_warned_about_and_left_there():
    config = conf(service("10.0.0.1", 80, ME))
    plan = build_plan(config, missing(), [ME], host_addresses=[(ME, "eth0"), ("10.0.0.1", "lo")])
    assert plan.warnings == ("10.0.0.1 is also on lo: left there (ipvsman vips changes only dummy0)",)
    assert not any(isinstance(step, RemoveAddress) for step in plan.steps)


def test_a_non_dummy_interface_and_bad_names_are_refused():
    config = conf(service("10.0.0.1", 80, ME))
    veth = InterfaceState("eth1", exists=True, kind="veth", up=True)
    with pytest.raises(PlanInputError, match=r"^eth1 is not a dummy interface \(veth\)"):
        build_plan(config, veth, [ME])
    for name in ("all", "a/b", "x" * 16, ""):
        with pytest.raises(PlanInputError):
            build_plan(config, missing(name), [ME])


def test_the_plan_as_json_names_every_part():
    config = conf(service("10.0.0.1", 80, ME))
    document = json.loads(json.dumps(plan_to_dict(build_plan(config, ready("10.0.0.9/32"), [ME]))))
    assert document["added"] == [{"address": "10.0.0.1/32", "services": ["tcp 10.0.0.1:80"]}]
    assert document["removed"] == ["10.0.0.9/32"]
    assert [setting["change"] for setting in document["sysctls"]] == [False] * 4
    assert document["steps"] == ["remove 10.0.0.9/32 from dummy0", "add 10.0.0.1/32 to dummy0"]


# -- the command, with a simulated host ---------------------------------------------------------------


class FakeHost:
    """A host whose interface changes as the steps say; `fail_on` makes the first step of that type fail."""

    def __init__(self, state: InterfaceState, host_addresses=((ME, "eth0"),), fail_on: type | None = None):
        self.state = state
        self.addresses = list(host_addresses)
        self.fail_on = fail_on
        self.applied: list = []

    def host_addresses(self):
        return self.addresses

    def read_interface(self, name):
        assert name == self.state.name
        return self.state

    def apply(self, interface, steps):
        done = []
        for step in steps:
            if self.fail_on is not None and isinstance(step, self.fail_on):
                return ApplyResult(tuple(done), step, "Operation not permitted", isinstance(step, SetSysctl))
            self.state = self._after(step)
            done.append(step)
            self.applied.append(step)
        return ApplyResult(tuple(done))

    def _after(self, step) -> InterfaceState:
        state = self.state
        if isinstance(step, CreateInterface):
            return replace(state, exists=True, kind="dummy")
        if isinstance(step, SetSysctl):
            return replace(state, sysctls={**state.sysctls, (step.setting.scope, step.setting.key): step.setting.wanted})
        if isinstance(step, AddAddress):
            return replace(state, addresses=(*state.addresses, step.address))
        if isinstance(step, RemoveAddress):
            return replace(state, addresses=tuple(a for a in state.addresses if a != step.address))
        return replace(state, up=True)


def run(host, tmp_path, *args, text=None):
    path = tmp_path / "keepalived.conf"
    if text is not None:
        path.write_text(textwrap.dedent(text))
    out, err = io.StringIO(), io.StringIO()
    status = main(["--keepalived", str(path), *args], stdout=out, stderr=err, make_host=lambda netns: host)
    return status, out.getvalue(), err.getvalue()


def test_a_second_run_changes_nothing_and_says_so(tmp_path):
    host = FakeHost(missing())
    status, out, err = run(host, tmp_path, text=service("10.0.0.1", 80, ME) + service("10.0.0.2", 80, OTHER))
    assert status == 0, err
    assert "done: 7 changes" in out
    assert {str(address) for address in host.state.addresses} == {"10.0.0.1/32"}
    applied = len(host.applied)
    status, out, err = run(host, tmp_path)
    assert status == 0 and err == ""
    assert "nothing to change: dummy0 already holds exactly the VIPs this host serves" in out
    assert len(host.applied) == applied


def test_dry_run_applies_nothing(tmp_path):
    host = FakeHost(missing())
    status, out, _ = run(host, tmp_path, "--dry-run", text=service("10.0.0.1", 80, ME))
    assert status == 0 and host.applied == []
    assert "dry run: nothing changed; 7 changes planned:" in out and "  would add 10.0.0.1/32 to dummy0" in out


def test_a_failed_change_reports_what_was_done_and_exits_1(tmp_path):
    host = FakeHost(missing(), fail_on=AddAddress)
    status, out, err = run(host, tmp_path, "--json", text=service("10.0.0.1", 80, ME))
    assert status == 1
    document = json.loads(out)
    assert document["done"][0] == "create dummy0 (dummy, down)" and len(document["done"]) == 5
    assert document["failed"] == "add 10.0.0.1/32 to dummy0: Operation not permitted"
    assert err == "ipvsman vips: add 10.0.0.1/32 to dummy0: Operation not permitted\n"


def test_a_sysctl_failure_says_the_interface_was_brought_down(tmp_path):
    host = FakeHost(missing(), fail_on=SetSysctl)
    status, out, err = run(host, tmp_path, text=service("10.0.0.1", 80, ME))
    assert status == 1
    assert err.count("\n") == 1 and "brought down" in err and "net.ipv4.conf.all.arp_ignore" in err
    assert "  done    create dummy0 (dummy, down)" in out


def test_the_real_ip_option_replaces_the_hosts_own_addresses(tmp_path):
    host = FakeHost(missing(), host_addresses=[("10.9.9.9", "eth0")])
    status, out, _ = run(host, tmp_path, "--dry-run", "--json", "--real-ip", OTHER, text=service("10.0.0.1", 80, ME, OTHER))
    assert status == 0
    assert json.loads(out)["real_ips"] == [OTHER]


@pytest.mark.parametrize(
    "args, text, expected",
    [
        (("--real-ip", "10.0.0.300"), "", "argument --real-ip: expected an IPv4 or IPv6 address, got '10.0.0.300'"),
        (("--interface", "all"), "", "argument --interface: not a usable interface name: 'all'"),
        (("--interval", "1"), "", "--interval goes with --watch"),
        ((), "virtual_server 10.0.0.1 80 {\n    lb_kind XX\n}\n", "keepalived.conf:2: expected lb_kind NAT, DR or TUN"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, text, expected):
    host = FakeHost(missing())
    status, out, err = run(host, tmp_path, *args, text=text)
    assert status == 2 and out == "" and host.applied == []
    assert expected in err
    assert all(line.startswith("ipvsman vips: ") for line in err.splitlines())
    if "keepalived.conf:" not in expected:
        assert err.count("\n") == 1


def test_a_missing_or_unreadable_file_is_one_line_and_exit_2(tmp_path):
    for path in (tmp_path / "nothing.conf", tmp_path):  # a directory cannot be read as a file, even by root
        out, err = io.StringIO(), io.StringIO()
        status = main(["--keepalived", str(path)], stdout=out, stderr=err, make_host=lambda netns: FakeHost(missing()))
        assert status == 2 and err.getvalue().count("\n") == 1
        assert err.getvalue().startswith(f"ipvsman vips: cannot read {path}: ")


def test_a_non_dummy_interface_is_refused_by_the_command(tmp_path):
    host = FakeHost(InterfaceState("eth0", exists=True, kind=None, up=True))
    status, out, err = run(host, tmp_path, "--interface", "eth0", text=service("10.0.0.1", 80, ME))
    assert status == 2 and host.applied == []
    assert err == "ipvsman vips: eth0 is not a dummy interface (a plain device): ipvsman vips manages only dummy interfaces\n"


def test_a_missing_netns_is_bad_input_and_other_read_failures_are_not(tmp_path):
    class Unreadable(FakeHost):
        def read_interface(self, name):
            raise DummyVipError(self.message, bad_input=self.bad)

    for message, bad, expected in (("no network namespace named 'x'", True, 2), ("cannot read interface", False, 1)):
        host = Unreadable(missing())
        host.message, host.bad = message, bad
        status, _, err = run(host, tmp_path, text=service("10.0.0.1", 80, ME))
        assert status == expected and err == f"ipvsman vips: {message}\n"


def test_the_main_command_line_dispatches_vips(tmp_path, capsys):
    assert "vips" in cli.SUBCOMMANDS
    assert cli.main(["vips", "--keepalived", str(tmp_path / "none.conf")]) == 2
    assert "ipvsman vips: " in capsys.readouterr().err


# -- --watch ------------------------------------------------------------------------------------------


def test_watch_applies_again_after_the_file_is_replaced(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text(service("10.0.0.2", 80, ME))
    path = tmp_path / "keepalived.conf"
    path.write_text(service("10.0.0.1", 80, ME) + "include conf.d/*.conf\n")
    host = FakeHost(missing())
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:  # a new file matching the include glob, as a configuration manager drops it
            (tmp_path / "conf.d" / "c.conf").write_text(service("10.0.0.3", 80, ME))

    out, err = io.StringIO(), io.StringIO()
    options = _options(["--keepalived", str(path), "--watch", "--interval", "0.5"])
    assert watch(options, host, out, err, sleep, runs=2) == 0
    assert sleeps[0] == 0.5 and len(sleeps) == 3  # nothing changed for one poll, then the new file was seen
    assert {str(address) for address in host.state.addresses} == {"10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"}
    assert "changed: applying again" in out.getvalue()


def test_watch_keeps_the_vips_while_the_file_is_broken(tmp_path):
    path = tmp_path / "keepalived.conf"
    path.write_text(service("10.0.0.1", 80, ME))
    host = FakeHost(missing())

    def sleep(seconds):
        path.write_text("virtual_server 10.0.0.1 80 {\n")  # half written

    out, err = io.StringIO(), io.StringIO()
    status = watch(_options(["--keepalived", str(path), "--watch"]), host, out, err, sleep, runs=2)
    assert status == 2 and "keepalived.conf" in err.getvalue()
    assert [str(address) for address in host.state.addresses] == ["10.0.0.1/32"]


def test_fingerprint_sees_a_replaced_file_and_a_new_one(tmp_path):
    path = tmp_path / "a.conf"
    path.write_text("x")
    paths = watched_paths(str(path), [str(path)])
    assert paths == (str(path), str(tmp_path))
    before = fingerprint(paths)
    replacement = tmp_path / "a.new"
    replacement.write_text("y")
    os.rename(replacement, path)
    assert fingerprint(paths) != before
    assert fingerprint([str(tmp_path / "gone")]) == ((str(tmp_path / "gone"), None),)


def _options(argv):
    from ipvsman.realserver_cli import build_parser

    return build_parser().parse_args(argv)


# -- the executor, with pyroute2 replaced ------------------------------------------------------------


class RecordingIPRoute:
    def __init__(self):
        self.calls = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def link_lookup(self, ifname):
        return [7]

    def link(self, command, **kwargs):
        self.calls.append(("link", command, kwargs))

    def addr(self, command, **kwargs):
        self.calls.append(("addr", command, kwargs))


def test_an_unsettable_sysctl_stops_the_steps_and_brings_the_interface_down(monkeypatch):
    ipr = RecordingIPRoute()
    monkeypatch.setattr(dummyvips, "_ipr", lambda: ipr)

    def refuse(scope, key, value):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dummyvips, "write_sysctl", refuse)
    plan = build_plan(conf(service("10.0.0.1", 80, ME)), missing(), [ME])
    result = DummyVipHost().apply("dummy0", plan.steps)
    assert result.done == (CreateInterface("dummy0"),)
    assert isinstance(result.failed, SetSysctl) and result.reason == "Permission denied" and result.brought_down
    assert ipr.calls == [
        ("link", "add", {"ifname": "dummy0", "kind": "dummy"}),
        ("link", "set", {"index": 7, "state": "down"}),
    ]


def test_ipv6_addresses_are_added_with_nodad(monkeypatch):
    ipr = RecordingIPRoute()
    monkeypatch.setattr(dummyvips, "_ipr", lambda: ipr)
    steps = [AddAddress("dummy0", InterfaceAddress("2001:db8::1", 128)), AddAddress("dummy0", InterfaceAddress("10.0.0.1", 32))]
    assert DummyVipHost().apply("dummy0", steps) == ApplyResult(tuple(steps))
    assert ipr.calls == [
        ("addr", "add", {"index": 7, "address": "2001:db8::1", "prefixlen": 128, "flags": dummyvips.IFA_F_NODAD}),
        ("addr", "add", {"index": 7, "address": "10.0.0.1", "prefixlen": 32}),
    ]
