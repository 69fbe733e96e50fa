"""The kernel backend: the live IPVS of this host (or of a named network namespace)."""

from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import os
import socket
import struct
import threading

from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkError

from ipvsman import collector, model
from ipvsman.backend import Backend, BackendError, IpvsUnavailable, NotPermitted
from ipvsman.kernel import netlink, netns, procfs
from ipvsman.kernel.fastdecode import FastDecoder

CAP_NET_ADMIN = 12

NOT_LOADED = "the ip_vs module is not loaded: run 'modprobe ip_vs' as root"
NOT_PERMITTED = "needs CAP_NET_ADMIN: run as root"
READ_ONLY_OPTION = "started with --read-only"
SKIP_LISTED_TWICE = "listed twice"  # RawState.skipped: extra copies of a service in one dump

# What a kernel reply that pyroute2 or the decoder cannot make sense of raises.
GARBLED_REPLY = (NetlinkDecodeError, ValueError, struct.error)


def _errno_of(exc: BaseException) -> int | None:
    return getattr(exc, "code", None) if isinstance(exc, NetlinkError) else getattr(exc, "errno", None)


def _describe(exc: BaseException) -> str:
    code = _errno_of(exc)
    return os.strerror(code) if code else str(exc) or type(exc).__name__


def has_cap_net_admin() -> bool:
    """Whether the calling thread holds CAP_NET_ADMIN (capabilities are per thread)."""
    for path in ("/proc/thread-self/status", "/proc/self/status"):
        try:
            with open(path, encoding="ascii") as status:
                for line in status:
                    if line.startswith("CapEff:"):
                        return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
        except (OSError, ValueError, IndexError):
            continue
    return os.geteuid() == 0


def enter_netns(name: str) -> int:
    """netns.enter() with the backend's errors; returns the descriptor for leave_netns()."""
    try:
        return netns.enter(name)
    except netns.NetnsError as exc:
        raise (NotPermitted if exc.denied else BackendError)(str(exc)) from None


leave_netns = netns.leave


class KernelBackend(Backend):
    """IPVS through generic netlink, connections through /proc.

    open() must run in the thread that polls: the netlink socket belongs to that thread, and
    with `netns` the thread (only) enters that network namespace until close().
    Without CAP_NET_ADMIN every IPVS netlink request is refused; poll() then still returns
    the connection table (world-readable in /proc) with a warning. `decoder` turns netlink
    messages into model values: fastdecode.FastDecoder (struct-based, the default),
    netlink.NlaDecoder (pyroute2's own decoding), or any class with the same methods.
    """

    name = "kernel"

    def __init__(self, netns: str | None = None, read_only: bool = False, decoder=FastDecoder):
        self.netns = netns
        self.read_only = read_only
        self._decoder = decoder
        self._socket: netlink.IpvsSocket | None = None
        self._home_netns: int | None = None
        self._netns_id: tuple[int, int] | None = None  # the namespace entered (netns.current())
        self._following = False  # open with a named namespace: notice it deleted or replaced
        self._thread: int | None = None
        self._netlink_permitted = has_cap_net_admin()
        self._net_dir = "/proc/net"  # the polling thread's /proc/net, by a path any thread can read

    # -- Backend properties ---------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return not self.read_only and self._netlink_permitted

    @property
    def read_only_reason(self) -> str | None:
        if not self._netlink_permitted:
            return NOT_PERMITTED
        if self.read_only:
            return READ_ONLY_OPTION
        return None

    # -- life cycle -----------------------------------------------------------------------------
    def open(self) -> None:
        self._thread = threading.get_ident()
        if self.netns is not None:
            self._home_netns = enter_netns(self.netns)
            self._netns_id = netns.current()
        try:
            self._net_dir = procfs.thread_net_dir()
            self._open_socket()
        except BaseException:
            self.close()
            raise
        self._following = self.netns is not None

    def _open_socket(self) -> None:
        try:
            sock = netlink.IpvsSocket(self._decoder)
        except OSError as exc:
            raise BackendError(f"cannot open a netlink socket: {_describe(exc)}") from None
        try:
            sock.open_family()
        except (NetlinkError, OSError) as exc:
            sock.close()
            if _errno_of(exc) in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise IpvsUnavailable(NOT_LOADED) from None
            raise BackendError(f"cannot reach IPVS over netlink: {_describe(exc)}") from None
        self._socket = sock
        try:  # the cheapest request that tells whether we may talk to IPVS at all
            sock.info()
            self._netlink_permitted = True
        except (NetlinkError, OSError) as exc:
            if _errno_of(exc) not in (errno.EPERM, errno.EACCES):
                raise BackendError(f"cannot read IPVS: {_describe(exc)}") from None
            self._netlink_permitted = False
        except GARBLED_REPLY as exc:
            raise BackendError(f"cannot read IPVS: unexpected reply ({exc})") from None

    def close(self) -> None:
        self._following = False
        self._drop_socket()
        if self._home_netns is not None and self._thread == threading.get_ident():
            self._go_home()

    def _drop_socket(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:  # closing must not hide why we close
                pass
            self._socket = None

    def _go_home(self) -> None:
        home, self._home_netns, self._netns_id = self._home_netns, None, None
        leave_netns(home)

    def _follow_netns(self) -> None:
        """Notice that the watched namespace was deleted (`ip netns del`) or replaced, and follow.

        A thread inside a deleted namespace keeps it alive, IPVS included, so polls would go on
        showing a namespace nobody can reach. While the name is gone the thread waits at home;
        once a namespace has the name again, the thread enters it with a new netlink socket.
        """
        try:
            named = netns.lookup(self.netns)
        except netns.NetnsError as exc:
            raise (NotPermitted if exc.denied else BackendError)(str(exc)) from None
        if named is not None and named == self._netns_id and self._socket is not None:
            return
        self._drop_socket()  # it belongs to the namespace being left
        if self._home_netns is not None:
            self._go_home()
        if named is None:
            raise BackendError(f"network namespace {self.netns} is gone; waiting for it to come back")
        self._home_netns = enter_netns(self.netns)
        self._netns_id = netns.current()
        self._open_socket()

    # -- reading --------------------------------------------------------------------------------
    def _opened_socket(self, action: str) -> netlink.IpvsSocket:
        if self._following and self._thread == threading.get_ident():
            try:
                self._follow_netns()
            except BackendError as exc:
                if action == "poll":
                    raise
                raise type(exc)(f"{action}: {exc}") from None
        if self._socket is None:
            raise BackendError(f"{action}: the kernel backend is not open")
        if self._thread != threading.get_ident():
            # pyroute2 would quietly make a new socket for this thread, outside our namespace.
            raise BackendError(f"{action}: the kernel backend is used from another thread than open()")
        return self._socket

    def poll(self, connections: bool = True) -> model.RawState:
        skipped: collections.Counter = collections.Counter()
        warnings: list[str] = []
        dump = None
        sock = self._opened_socket("poll")
        if self._netlink_permitted:
            try:
                with collector.paused():
                    dump = sock.read_all(skipped)
            except (NetlinkError, OSError) as exc:
                if _errno_of(exc) not in (errno.EPERM, errno.EACCES):
                    raise BackendError(f"reading IPVS failed: {_describe(exc)}") from None
                self._netlink_permitted = False
            except GARBLED_REPLY as exc:
                raise BackendError(f"reading IPVS failed: unexpected reply ({exc})") from None
        if dump is None:
            warnings.append(f"{NOT_PERMITTED}: showing only the connection table")
            dump = netlink.IpvsDump.unread()
        services = _unique(dump.services, skipped)
        table = None
        if connections:
            table = self._read_connections(services, skipped, warnings)
        return model.RawState(
            info=dump.info,
            timeouts=dump.timeouts,
            services=services,
            daemons=dump.daemons,
            connections=table,
            sync_version=procfs.read_sync_version(),
            skipped=dict(skipped),
            warnings=tuple(warnings),
        )

    def read_table(self, limit: int | None = None, want_pe_data: bool = False):
        # Any thread: the file is the polling thread's (its namespace), by its task's path.
        if self.netns is not None and self._home_netns is None:
            # The polling thread is at home (the namespace is gone, or closed): its table is not ours.
            raise BackendError(f"cannot read the connection table: network namespace {self.netns} is not entered")
        try:
            table, complete, malformed = procfs.read_connections(self._net_dir, want_pe_data, limit)
        except OSError as exc:
            raise BackendError(f"cannot read the connection table: {_describe(exc)}") from None
        return table, complete, malformed

    def _read_connections(self, services, skipped, warnings) -> model.ConnectionTable | None:
        want_pe_data = any(service.pe_name for service in services)
        try:
            table, _, malformed = self.read_table(None, want_pe_data)
        except BackendError as exc:
            warnings.append(str(exc))
            return None
        if malformed:
            skipped[procfs.SKIP_MALFORMED] += malformed
        return table  # immutable already: a tuple of it would be a Connection per entry again

    # -- changing -------------------------------------------------------------------------------
    def _writable_socket(self, action: str) -> netlink.IpvsSocket:
        if self.read_only:
            raise NotPermitted(f"{action}: {READ_ONLY_OPTION}")
        if not self._netlink_permitted:
            raise NotPermitted(f"{action}: {NOT_PERMITTED}")
        return self._opened_socket(action)

    def _refused(self, action: str, exc: BaseException) -> BackendError:
        code = _errno_of(exc)
        if code in (errno.EPERM, errno.EACCES):
            self._netlink_permitted = False
            return NotPermitted(f"{action}: {NOT_PERMITTED}")
        reasons = {
            errno.ESRCH: "no such virtual service",
            errno.ENOENT: "no such real server",
            errno.EEXIST: "the real server already exists",
            errno.EINVAL: "the kernel rejected the request as invalid",
        }
        return BackendError(f"{action}: {reasons.get(code) or _describe(exc)}")

    def set_weight(self, dest: model.DestKey, weight: int) -> None:
        action = f"set weight of {dest}"
        _check_weight(action, weight)
        _, address = _canonical_address(action, dest.address)
        sock = self._writable_socket(action)
        try:
            # A fresh dump, not the last snapshot: SET_DEST replaces every field, so the
            # forwarding method, thresholds and tunnel settings must be what the kernel has now.
            configs = sock.dest_configs(dest.service)
            current = next((c for c in configs if c.address == address and c.port == dest.port), None)
            if current is None:
                raise BackendError(f"{action}: the real server is gone")
            sock.set_dest(dest.service, dataclasses.replace(current, weight=weight))
        except (NetlinkError, OSError) as exc:
            raise self._refused(action, exc) from None
        except GARBLED_REPLY as exc:
            raise BackendError(f"{action}: unexpected reply ({exc})") from None

    def add_dest(self, service: model.ServiceKey, address: str, port: int, forward: str, weight: int) -> None:
        action = f"add {model.join_host_port(address, port)} to {service}"
        if forward not in netlink.FORWARD_NUMBERS:
            raise BackendError(f"{action}: forwarding method must be one of {', '.join(netlink.FORWARD_NUMBERS)}")
        _check_weight(action, weight)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise BackendError(f"{action}: port must be 0-65535")
        af, address = _canonical_address(action, address)
        config = netlink.DestConfig(address, port, af, netlink.FORWARD_NUMBERS[forward], weight, 0, 0)
        sock = self._writable_socket(action)
        try:
            sock.new_dest(service, config)
        except (NetlinkError, OSError) as exc:
            raise self._refused(action, exc) from None

    def remove_dest(self, dest: model.DestKey) -> None:
        action = f"remove {dest}"
        af, address = _canonical_address(action, dest.address)
        sock = self._writable_socket(action)
        try:
            sock.del_dest(dest.service, af, address, dest.port)
        except (NetlinkError, OSError) as exc:
            raise self._refused(action, exc) from None


def _unique(services: tuple[model.Service, ...], skipped: collections.Counter) -> tuple[model.Service, ...]:
    """One copy of each service; the extra copies are counted in `skipped`.

    The kernel answers a service dump a datagram at a time and resumes each by position in its
    hash table: services replaced in between (keepalived reloading, ipvsadm -C and -R) shift the
    positions, and a service can come twice. The later copy is kept, its real servers read later.
    """
    by_key = {service.key: service for service in services}
    if len(by_key) == len(services):
        return services
    skipped[SKIP_LISTED_TWICE] += len(services) - len(by_key)
    return tuple(by_key.values())


def _check_weight(action: str, weight) -> None:
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= model.WEIGHT_MAX:
        raise BackendError(f"{action}: weight must be 0-{model.WEIGHT_MAX}, got {weight!r}")


def _canonical_address(action: str, address: str) -> tuple[str, str]:
    """The family and the spelling the kernel dump uses (inet_ntop) of an address."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise BackendError(f"{action}: not an IP address: {address!r}") from None
    af = "inet6" if parsed.version == 6 else "inet"
    return af, socket.inet_ntop(netlink.FAMILY_NUMBERS[af], parsed.packed)
