"""The weight audit log: one line per weight change (time, user, service, server, old and new weight)."""

from __future__ import annotations

import datetime
import getpass
import os
from collections.abc import Callable

from ipvsman.model import DestKey, join_host_port


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

    def record(self, dest: DestKey, old: int, new: int, result: str) -> str | None:
        """Append one change; returns a one-line error the first time writing fails, else None."""
        if not self.path:
            return None
        line = self.format(dest, old, new, result)
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
