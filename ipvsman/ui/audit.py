"""The audit log: one line per change made from the dashboard (time, user, service, server, and the
old and new weight, or the real server added or removed), with its result."""

from __future__ import annotations

import datetime
import getpass
import os
from collections.abc import Callable

from ipvsman.model import DestKey, ServiceKey, join_host_port


def current_user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    sudo_user = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo_user})" if sudo_user and sudo_user != user else user


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AuditLog:
    """Appends to a file, creating its directory; a failure is returned once, never raised."""

    def __init__(
        self,
        path: str | None,
        user: str | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ):
        self.path = path
        self.user = user or current_user()
        self.clock = clock or (lambda: datetime.datetime.now().astimezone())
        self.failed = False

    def format(self, dest: DestKey, old: int, new: int, result: str) -> str:
        stamp = self.clock().isoformat(timespec="seconds")
        server = join_host_port(dest.address, dest.port)
        return (
            f"{stamp} user={_quote(self.user)} service={_quote(str(dest.service))} server={server} "
            f"old={old} new={new} result={_quote(result)}\n"
        )

    def format_add(self, service: ServiceKey, address: str, port: int, forward: str, weight: int, result: str) -> str:
        stamp = self.clock().isoformat(timespec="seconds")
        return (
            f"{stamp} user={_quote(self.user)} action=add service={_quote(str(service))} "
            f"server={join_host_port(address, port)} forward={forward} weight={weight} result={_quote(result)}\n"
        )

    def format_remove(self, dest: DestKey, result: str) -> str:
        stamp = self.clock().isoformat(timespec="seconds")
        return (
            f"{stamp} user={_quote(self.user)} action=remove service={_quote(str(dest.service))} "
            f"server={join_host_port(dest.address, dest.port)} result={_quote(result)}\n"
        )

    def record(self, dest: DestKey, old: int, new: int, result: str) -> str | None:
        """Append one weight change; returns a one-line error the first time writing fails, else None."""
        return self.append(self.format(dest, old, new, result))

    def record_add(self, service: ServiceKey, address: str, port: int, forward: str, weight: int, result: str):
        """Append one real server added (`a`); like record()."""
        return self.append(self.format_add(service, address, port, forward, weight, result))

    def record_remove(self, dest: DestKey, result: str) -> str | None:
        """Append one real server removed (`x`); like record()."""
        return self.append(self.format_remove(dest, result))

    def append(self, line: str) -> str | None:
        if not self.path:
            return None
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(line)
        except OSError as exc:
            if self.failed:
                return None
            self.failed = True
            return f"audit log {self.path} not written: {exc.strerror or exc}"
        return None
