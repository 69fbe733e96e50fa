"""ipvsmand's hands on IPVS: read the services and carry out desired-state actions over netlink."""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import threading

from pyroute2.netlink.exceptions import NetlinkError

from ipvsman import model
from ipvsman.daemon import desired
from ipvsman.kernel import netlink
from ipvsman.kernel.backend import GARBLED_REPLY, NOT_LOADED, NOT_PERMITTED
from ipvsman.kernel.fastdecode import FastDecoder

REASONS = {
    errno.EPERM: NOT_PERMITTED,
    errno.EACCES: NOT_PERMITTED,
    errno.ESRCH: "no such virtual service",
    errno.ENOENT: "no such real server (or scheduler module)",
    errno.EEXIST: "it exists already",
    errno.EINVAL: "the kernel rejected the request as invalid",
}


class ApplyError(RuntimeError):
    """A request IPVS refused or could not be asked; the message is one line."""


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None) if isinstance(exc, NetlinkError) else getattr(exc, "errno", None)
    if code in REASONS:
        return REASONS[code]
    return os.strerror(code) if code else str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class IpvsApplier:
    """One netlink socket, made and used in one thread (pyroute2 sockets are per thread)."""

    def __init__(self):
        self._socket: netlink.IpvsSocket | None = None
        self._thread: int | None = None

    def _sock(self) -> netlink.IpvsSocket:
        if self._socket is None:
            self._thread = threading.get_ident()
            try:
                sock = netlink.IpvsSocket(FastDecoder)
            except OSError as exc:
                raise ApplyError(f"cannot open a netlink socket: {_reason(exc)}") from None
            try:
                sock.open_family()
            except (NetlinkError, OSError) as exc:
                sock.close()
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                if code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise ApplyError(NOT_LOADED) from None
                raise ApplyError(f"cannot reach IPVS over netlink: {_reason(exc)}") from None
            self._socket = sock
        if self._thread != threading.get_ident():
            raise ApplyError("the IPVS socket is used from another thread than the one that made it")
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def read_services(self) -> tuple[model.Service, ...]:
        try:
            return self._sock().read_all(collections.Counter()).services
        except (NetlinkError, OSError) as exc:
            raise ApplyError(f"reading IPVS failed: {_reason(exc)}") from None
        except GARBLED_REPLY as exc:
            raise ApplyError(f"reading IPVS failed: unexpected reply ({exc})") from None

    def apply(self, action: desired.Action) -> None:
        """Carry out one action; ApplyError names it and why it was refused."""
        sock = self._sock()
        try:
            if isinstance(action, desired.CreateService):
                sock.new_service(action.key, action.scheduler, action.persistent, action.netmask)
            elif isinstance(action, desired.EditService):
                sock.set_service(action.key, action.scheduler, action.persistent, action.netmask)
            elif isinstance(action, desired.AddDest):
                config = netlink.DestConfig(
                    action.address, action.port, _family(action.address),
                    netlink.FORWARD_NUMBERS[action.forward], action.weight, 0, 0,
                )  # fmt: skip
                sock.new_dest(action.service, config)
            elif isinstance(action, desired.SetDest):
                # SET_DEST replaces every field: thresholds and tunnel settings come from a fresh dump.
                configs = sock.dest_configs(action.service)
                current = next((c for c in configs if (c.address, c.port) == (action.address, action.port)), None)
                if current is None:
                    raise ApplyError(f"{action}: the real server is gone")
                forward = netlink.FORWARD_NUMBERS[action.forward]
                if action.was_forward == desired.LOCAL_FORWARD:
                    forward = current.forward  # the kernel's "local" stands for what was configured
                sock.set_dest(action.service, dataclasses.replace(current, weight=action.weight, forward=forward))
            elif isinstance(action, desired.RemoveDest):
                sock.del_dest(action.service, _family(action.address), action.address, action.port)
            else:
                raise ApplyError(f"unknown action {action!r}")
        except (NetlinkError, OSError) as exc:
            raise ApplyError(f"{action}: {_reason(exc)}") from None
        except GARBLED_REPLY as exc:
            raise ApplyError(f"{action}: unexpected reply ({exc})") from None


def _family(address: str) -> str:
    return "inet6" if ":" in address else "inet"
