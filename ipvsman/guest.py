"""Run commands against a real IPVS kernel: here when the host has one, else in a QEMU guest."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GUEST_ENV = "IPVSMAN_GUEST"  # set to 1 inside the guest
KERNEL_ENV = "IPVSMAN_KERNEL_IMAGE"  # overrides the kernel image the guest boots
MODULES = (
    "ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq "
    "ip_vs_lblc ip_vs_lblcr ip_vs_mh ip_vs_fo ip_vs_ovf ip_vs_ftp ip_vs_pe_sip veth"
).split()
INSTALL_HINT = (
    "apt-get install qemu-system-x86 linux-image-amd64 ipvsadm busybox-static && pip install virtme-ng"
)


class GuestUnavailable(RuntimeError):
    """Neither the host nor a guest can give us a real IPVS kernel; the message says why."""


def in_guest() -> bool:
    return os.environ.get(GUEST_ENV) == "1"


def host_has_ipvs() -> bool:
    """True when this process can use IPVS directly: root, and ip_vs loaded or loadable."""
    if os.geteuid() != 0:
        return False
    if Path("/proc/net/ip_vs").exists():
        return True
    if shutil.which("modprobe") is None:
        return False
    subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    return Path("/proc/net/ip_vs").exists()


def load_modules() -> list[str]:
    """modprobe what the tests use; returns the modules that could not be loaded."""
    missing = []
    for module in MODULES:
        if subprocess.run(["modprobe", "-q", module], capture_output=True).returncode != 0:
            missing.append(module)
    return missing


def find_kernel_image() -> Path:
    override = os.environ.get(KERNEL_ENV)
    if override:
        return Path(override)

    def version_key(path: str) -> list[int]:
        return [int(part) for part in re.findall(r"\d+", path)]

    images = sorted(glob.glob("/boot/vmlinuz-*"), key=version_key)
    if not images:
        raise GuestUnavailable(f"no kernel image in /boot to boot a guest with IPVS; install it: {INSTALL_HINT}")
    return Path(images[-1])


def check_guest_tools() -> None:
    missing = [tool for tool in ("vng", "qemu-system-x86_64", "ipvsadm") if shutil.which(tool) is None]
    if missing:
        raise GuestUnavailable(f"missing {', '.join(missing)} for the IPVS guest; install: {INSTALL_HINT}")
    find_kernel_image()


@dataclass
class GuestRun:
    returncode: int
    output: str


def run_in_guest(
    command: str,
    rwdir: Path,
    memory: str = "2G",
    cpus: int = 2,
    timeout: float = 3600,
    log_path: Path | None = None,
    cwd: str | None = None,
) -> GuestRun:
    """Boot the guest once, load the IPVS modules and run `command` (a shell line) as root.

    The guest sees the host's files read-only at the same paths; `rwdir` is the one
    directory it can write back to. The command runs from the current directory with
    this interpreter's directory first on PATH and IPVSMAN_GUEST=1.
    """
    check_guest_tools()
    rwdir.mkdir(parents=True, exist_ok=True)
    python_dir = os.path.dirname(sys.executable)
    env_exports = " ".join(
        f"{name}={shlex.quote(value)}"
        for name, value in (
            (GUEST_ENV, "1"),
            ("PATH", f"{python_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONPATH", os.environ.get("PYTHONPATH", "")),
            ("HOME", str(rwdir)),
            ("TERM", "dumb"),
        )
    )
    script = (
        f"cd {shlex.quote(cwd or os.getcwd())} && "
        f"for m in {' '.join(MODULES)}; do modprobe -q $m; done; "
        f"export {env_exports}; {command}"
    )
    argv = [
        "vng",
        "--run",
        str(find_kernel_image()),
        "--disable-kvm",  # QEMU aborts with KVM on these machines ("failed to set MSR")
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--rwdir",
        str(rwdir),
        "--exec",
        script,
    ]
    log_path = log_path or rwdir / "guest.log"
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
            log.write(f"\nipvsman: the guest did not finish within {timeout:.0f} s\n")
    return GuestRun(returncode, log_path.read_text(errors="replace"))
