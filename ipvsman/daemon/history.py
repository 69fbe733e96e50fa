"""The chronology of applied topologies, and `ipvsman history` (list, show, diff, restore).

ipvsmand records every topology it applies (when its text differs from the last one kept) as one
JSON file: when, from which file, the text, its diff against the version before, and the actions
it caused. The directory is root-only (0700, files 0600) and bounded in count and bytes: the
oldest versions go first, the newest always stays.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

DEFAULT_DIRECTORY = "/var/lib/ipvsman/history"
DEFAULT_MAX_COUNT = 200
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
SUFFIX = ".json"


class HistoryError(ValueError):
    """A history request that cannot be served; the message is one line."""


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    applied_at: float
    topology: str  # the file it was read from
    text: str
    diff: str  # unified diff against the version before ("" for the first)
    actions: tuple[str, ...]

    @property
    def label(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.applied_at))


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name)
    )


class History:
    def __init__(self, directory: str, max_count: int = DEFAULT_MAX_COUNT, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, f"{number:06d}{SUFFIX}")

    def numbers(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise HistoryError(f"{self.directory}: cannot list: {os.strerror(exc.errno or 0)}") from None
        return sorted(int(name[: -len(SUFFIX)]) for name in names if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit())

    def get(self, number: int) -> Version:
        path = self._path(number)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            return Version(
                number=int(data["number"]),
                applied_at=float(data["applied_at"]),
                topology=str(data["topology"]),
                text=str(data["text"]),
                diff=str(data["diff"]),
                actions=tuple(str(action) for action in data["actions"]),
            )
        except FileNotFoundError:
            raise HistoryError(f"no version {number} in {self.directory}") from None
        except OSError as exc:
            raise HistoryError(f"{path}: cannot read: {os.strerror(exc.errno or 0)}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise HistoryError(f"{path}: not a history version ({type(exc).__name__})") from None

    def versions(self) -> list[Version]:
        return [self.get(number) for number in self.numbers()]

    def latest(self) -> Version | None:
        numbers = self.numbers()
        return self.get(numbers[-1]) if numbers else None

    def record(self, topology: str, text: str, actions: list[str], now: float | None = None) -> Version | None:
        """Keep `text` as the newest version; None when it is the same text as the newest already."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        latest = self.latest()
        if latest is not None and latest.text == text:
            return None
        number = latest.number + 1 if latest else 1
        previous = latest.text if latest else ""
        diff = unified_diff(previous, text, f"version {number - 1}", f"version {number}") if latest else ""
        version = Version(number, time.time() if now is None else now, topology, text, diff, tuple(actions))
        payload = json.dumps(
            {
                "number": version.number,
                "applied_at": version.applied_at,
                "topology": version.topology,
                "text": version.text,
                "diff": version.diff,
                "actions": list(version.actions),
            }
        )
        handle, temporary = tempfile.mkstemp(prefix=".version-", dir=self.directory)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(payload)
            os.fchmod(out.fileno(), 0o600)
        os.replace(temporary, self._path(number))
        self._bound()
        return version

    def _bound(self) -> None:
        """Drop the oldest versions beyond the count or the bytes; the newest always stays."""
        numbers = self.numbers()
        sizes = {number: os.path.getsize(self._path(number)) for number in numbers}
        total = sum(sizes.values())
        while len(numbers) > 1 and (len(numbers) > self.max_count or total > self.max_bytes):
            oldest = numbers.pop(0)
            total -= sizes[oldest]
            os.unlink(self._path(oldest))

    def diff(self, a: int, b: int) -> str:
        old, new = self.get(a), self.get(b)
        return unified_diff(old.text, new.text, f"version {a} ({old.label})", f"version {b} ({new.label})")


# -- ipvsman history ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipvsman history", description="The topologies ipvsmand applied: list, show, diff, restore."
    )
    parser.add_argument("--dir", default=DEFAULT_DIRECTORY, help=f"the history directory (default {DEFAULT_DIRECTORY})")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", help="every version kept (the default)")
    show = commands.add_parser("show", help="a version's text, diff and actions")
    show.add_argument("version", type=int)
    diff = commands.add_parser("diff", help="what changed from version A to version B")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    restore = commands.add_parser("restore", help="write version A back to its topology file and reload ipvsmand")
    restore.add_argument("version", type=int)
    restore.add_argument("--topology", help="write it here instead of the file it came from")
    restore.add_argument(
        "--state-file", default="/run/ipvsman/ipvsmand.json", help="where to find ipvsmand's pid (default %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    history = History(options.dir)
    try:
        if options.command in (None, "list"):
            return _list(history)
        if options.command == "show":
            version = history.get(options.version)
            print(f"version {version.number}, applied {version.label} from {version.topology}")
            print(version.text, end="" if version.text.endswith("\n") else "\n")
            for action in version.actions:
                print(f"action: {action}")
            return 0
        if options.command == "diff":
            sys.stdout.write(history.diff(options.a, options.b) or "no difference\n")
            return 0
        return restore(history, options.version, options.topology, options.state_file)
    except HistoryError as exc:
        print(f"ipvsman history: {exc}", file=sys.stderr)
        return 1


def _list(history: History) -> int:
    versions = history.versions()
    if not versions:
        print(f"no versions in {history.directory}")
        return 0
    for version in versions:
        added = sum(1 for line in version.diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in version.diff.splitlines() if line.startswith("-") and not line.startswith("---"))
        change = f"+{added} -{removed} lines" if version.diff else "first version"
        print(f"{version.number:6d}  {version.label}  {version.topology}  {change}, {len(version.actions)} actions")
    return 0


def restore(history: History, number: int, topology: str | None, state_file: str) -> int:
    version = history.get(number)
    target = topology or version.topology
    _write_atomically(target, version.text)
    print(f"version {number} written to {target}")
    pid = _running_daemon(state_file, target)
    if pid is None:
        print(f"no running ipvsmand reads {target} (per {state_file}): it applies the file when it starts")
        return 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise HistoryError(f"cannot signal ipvsmand (pid {pid}): {os.strerror(exc.errno or 0)}") from None
    print(f"ipvsmand (pid {pid}) told to reload (SIGHUP)")
    return 0


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        handle, temporary = tempfile.mkstemp(prefix=".topology-", dir=directory)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise HistoryError(f"cannot write {path}: {os.strerror(exc.errno or 0)}") from None


def _running_daemon(state_file: str, topology: str) -> int | None:
    """The pid of the ipvsmand that runs from `topology`, if its state file says so and it lives."""
    from ipvsman.daemon.statefile import StateFileError, read_state

    try:
        state = read_state(state_file)
    except StateFileError:
        return None
    if os.path.abspath(state.topology) != os.path.abspath(topology):
        return None
    try:
        with open(f"/proc/{state.pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return None
    # A pid from a file outlives its process: only signal a process that is ipvsmand.
    return state.pid if b"ipvsmand" in command or b"ipvsman.daemon" in command else None
