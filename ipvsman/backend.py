"""The interface every source of IPVS state implements: the kernel and the demo director."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from ipvsman.model import DestKey, RawState, ServiceKey


class BackendError(Exception):
    """A backend could not do what was asked; the message is one line fit for the status bar."""


class NotPermitted(BackendError):
    """The kernel refused for lack of CAP_NET_ADMIN (EPERM)."""


class IpvsUnavailable(BackendError):
    """The kernel has no IPVS (the ip_vs module is not loaded or not built)."""


class Backend(abc.ABC):
    """A source of IPVS state and the target of changes.

    Every method is called from the polling thread only: the kernel backend's netlink
    socket belongs to the thread that opened it.
    """

    name = "abstract"

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire resources (sockets); called once, in the polling thread."""

    def close(self) -> None:
        """Release what open() acquired."""

    @property
    def writable(self) -> bool:
        """Whether changes are permitted (root with CAP_NET_ADMIN, or the demo)."""
        return True

    @property
    def read_only_reason(self) -> str | None:
        """Why changes are not permitted, in one line; None when they are."""
        return None

    @abc.abstractmethod
    def poll(self, connections: bool = True) -> RawState:
        """Read the whole state; the connection table only when `connections` is true."""

    def read_table(self, limit: int | None = None, want_pe_data: bool = False) -> tuple[Sequence, bool, int]:
        """The connection table, or its first `limit` entries: (connections, whether that is the
        whole table, lines that did not parse). Unlike the other methods it may be called from a
        thread of its own, while poll() runs (see ipvsman.conntable); raises BackendError.

        This default takes the table of a poll, whole, for backends that only read it there.
        """
        connections = self.poll(connections=True).connections
        if connections is None:
            raise BackendError(f"{self.name} backend has no connection table")
        return connections, True, 0

    @abc.abstractmethod
    def set_weight(self, dest: DestKey, weight: int) -> None:
        """Set a real server's weight, keeping every other field; raises BackendError."""

    def add_dest(self, service: ServiceKey, address: str, port: int, forward: str, weight: int) -> None:
        """Add a real server to a service; raises BackendError."""
        raise BackendError(f"{self.name} backend cannot add real servers")

    def remove_dest(self, dest: DestKey) -> None:
        """Remove a real server from its service; raises BackendError."""
        raise BackendError(f"{self.name} backend cannot remove real servers")
