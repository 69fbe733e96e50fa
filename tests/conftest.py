"""Runs tests marked `kernel` against real IPVS: here when the host has it, else in one QEMU guest.

On a host without IPVS, every selected kernel test is replaced by an item that reports the
outcome of the same test run inside a guest booted once for the whole session (see
ipvsman/guest.py). The guest writes one JSON line per test phase into a shared directory.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

from ipvsman import guest

REPORT_ENV = "IPVSMAN_GUEST_REPORT"
KERNEL_DIR = Path(__file__).parent / "kernel"
GUEST_TIMEOUT = 50 * 60
_results_key = pytest.StashKey[dict]()


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs a real IPVS kernel (runs in a QEMU guest when the host has none)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if KERNEL_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.kernel)


def _needs_guest() -> bool:
    return not (guest.in_guest() or guest.host_has_ipvs())


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Swap selected kernel tests for guest-result items once deselection is done."""
    if not _needs_guest():
        return
    items = session.items
    for index, item in enumerate(items):
        if item.get_closest_marker("kernel") is not None and not isinstance(item, GuestResultItem):
            proxy = GuestResultItem.from_parent(item.parent, name=item.name)
            proxy.add_marker(pytest.mark.kernel)
            items[index] = proxy


class GuestResultItem(pytest.Item):
    """Stands for a kernel test that ran in the guest; passes, fails or skips as it did there."""

    def runtest(self):
        results = guest_results(self.session)
        result = results.get(self.nodeid)
        if result is None:
            raise GuestFailure(f"the guest did not report this test\n{results.get('__log__', '')}")
        if result["outcome"] == "skipped":
            pytest.skip(result["message"])
        if result["outcome"] == "failed":
            raise GuestFailure(result["message"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, GuestFailure):
            return f"[in the IPVS guest] {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.name} (in the IPVS guest)"


class GuestFailure(Exception):
    pass


def guest_results(session) -> dict:
    """Boot the guest once, run every kernel test of this session there, and collect outcomes."""
    stash = session.config.stash
    if _results_key in stash:
        return stash[_results_key]
    node_ids = [item.nodeid for item in session.items if isinstance(item, GuestResultItem)]
    rwdir = Path(tempfile.mkdtemp(prefix="ipvsman-guest-"))
    report = rwdir / "results.jsonl"
    args_file = rwdir / "node-ids.txt"
    args_file.write_text("\n".join(node_ids) + "\n")
    command = (
        f"{REPORT_ENV}={shlex.quote(str(report))} "
        f"{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -o addopts= -q "
        f"--rootdir={shlex.quote(str(session.config.rootpath))} @{shlex.quote(str(args_file))}"
    )
    try:
        run = guest.run_in_guest(
            command, rwdir, timeout=GUEST_TIMEOUT, cwd=str(session.config.rootpath)
        )
    except guest.GuestUnavailable as exc:
        results = {node_id: {"outcome": "failed", "message": str(exc)} for node_id in node_ids}
        stash[_results_key] = results
        return results
    results = _read_report(report)
    tail = "\n".join(run.output.splitlines()[-60:])
    results["__log__"] = f"guest exit status {run.returncode}; log {rwdir / 'guest.log'}; last lines:\n{tail}"
    _report_guest_run(session, run, rwdir, len(node_ids), results)
    stash[_results_key] = results
    return results


def _report_guest_run(session, run, rwdir: Path, count: int, results: dict) -> None:
    """Print the guest's summary and the figures its passing tests printed, past the capture."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(
            f"ipvsman: ran {count} kernel tests in the IPVS guest (exit {run.returncode}); "
            f"log: {rwdir / 'guest.log'}"
        )
        for node_id, result in results.items():
            if isinstance(result, dict) and result.get("outcome") == "passed" and result["message"].strip():
                reporter.write_line(f"  {node_id} printed:")
                for line in result["message"].strip().splitlines():
                    reporter.write_line(f"    {line}")


def _read_report(path: Path) -> dict:
    outcomes: dict[str, dict] = {}
    if not path.exists():
        return outcomes
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        current = outcomes.setdefault(entry["nodeid"], {"outcome": "passed", "message": ""})
        if entry["outcome"] == "passed":
            current["message"] = entry["message"]
        elif entry["outcome"] == "failed" and current["outcome"] != "failed":
            current.update(outcome="failed", message=f"{entry['when']}: {entry['message']}")
        if entry["outcome"] == "skipped" and current["outcome"] == "passed":
            current.update(outcome="skipped", message=entry["message"])
    return outcomes


def pytest_runtest_logreport(report):
    """Inside the guest: record each phase's outcome for the host to replay."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    if report.when != "call" and report.outcome == "passed":
        return
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        message = report.longrepr[2]
    elif report.outcome == "passed":
        message = report.capstdout[-3000:]  # figures a test prints, shown by the host
    else:
        message = str(report.longrepr or "")[-6000:]
    with open(path, "a") as out:
        out.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                              "message": message}) + "\n")
