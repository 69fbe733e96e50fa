"""Move the calling thread into a named network namespace (`ip netns add NAME`) and back."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIRS = ("/run/netns", "/var/run/netns")  # where `ip netns add` names namespaces


class NetnsError(Exception):
    """A namespace could not be opened or entered; `denied` tells a permission problem apart."""

    def __init__(self, message: str, denied: bool = False):
        super().__init__(message)
        self.denied = denied


def check_name(name: str) -> str:
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise NetnsError(f"not a network namespace name: {name!r}")
    return name


NamespaceId = tuple[int, int]  # (st_dev, st_ino) of the nsfs inode: equal ids, same namespace


def current() -> NamespaceId:
    """The id of the network namespace the calling thread is in."""
    status = os.stat("/proc/thread-self/ns/net")
    return status.st_dev, status.st_ino


def lookup(name: str) -> NamespaceId | None:
    """The id of the namespace now named `name`, or None when there is none.

    `ip netns add` creates an empty file before it binds the namespace onto it, and `ip netns
    del` unmounts before it removes the file: a file that is not on nsfs names no namespace yet.
    """
    check_name(name)
    nsfs = os.stat("/proc/thread-self/ns/net").st_dev
    for directory in NETNS_DIRS:
        try:
            status = os.stat(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise NetnsError(f"cannot look up network namespace {name!r}: {exc.strerror}",
                             denied=isinstance(exc, PermissionError)) from None
        return (status.st_dev, status.st_ino) if status.st_dev == nsfs else None
    return None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _open(name: str) -> int:
    check_name(name)
    for directory in NETNS_DIRS:
        try:
            return os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise NetnsError(f"cannot open network namespace {name!r}: permission denied", denied=True) from None
        except OSError as exc:
            raise NetnsError(f"cannot open network namespace {name!r}: {exc.strerror}") from None
    raise NetnsError(f"no network namespace named {name!r} (see 'ip netns list')")


def enter(name: str) -> int:
    """Move the calling thread (only) into the named namespace.

    Returns a descriptor of the namespace the thread was in, for leave(). Other threads stay
    where they are; /proc/thread-self/net shows the thread's new namespace, and sockets opened
    afterwards belong to it.
    """
    target = _open(name)
    home = None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _setns(target)
        return home
    except OSError as exc:
        if home is not None:
            os.close(home)
        if exc.errno == errno.EPERM:
            raise NetnsError(f"entering network namespace {name!r} needs root (CAP_SYS_ADMIN)", denied=True) from None
        raise NetnsError(f"cannot enter network namespace {name!r}: {exc.strerror}") from None
    finally:
        os.close(target)


def leave(home: int) -> None:
    """Return the calling thread to the namespace enter() came from."""
    try:
        _setns(home)
    finally:
        os.close(home)


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with this thread in the named namespace (or where it is, for None)."""
    if not name:
        yield
        return
    home = enter(name)
    try:
        yield
    finally:
        leave(home)
