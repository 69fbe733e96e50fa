#!/usr/bin/env bash
# Installs everything the tests need (the IPVS guest's system packages, the Python test
# dependencies) and runs every test, kernel tests included. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# qemu, Debian's kernel and virtme-ng boot the guest that has IPVS; ipvsadm is the reference;
# keepalived programs IPVS for the drift tests; tmux drives the end-to-end dashboard test;
# openssh-server is the director reached over real ssh in the cluster test.
PACKAGES="qemu-system-x86 linux-image-amd64 ipvsadm busybox-static iproute2 kmod procps tmux keepalived openssh-server openssh-client"
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "ipvsman: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

PYTHON=python3
# A system Python that is "externally managed" (PEP 668: Debian 12, Ubuntu 24.04) refuses
# pip install: the tests then run in a virtual environment of their own, .venv.
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PYTHON="$PWD/.venv/bin/python"
    export PATH="$PWD/.venv/bin:$PATH"  # vng, installed with the test dependencies
fi

"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'

status=0
"$PYTHON" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ipvsman: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
