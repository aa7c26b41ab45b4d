#!/usr/bin/env bash
# Install etcdctl (and etcd) 3.4.23 from Debian's etcd-client / etcd-server packages so the gRPC
# compatibility tests can drive raftkv with the real client. Idempotent: does nothing when
# etcdctl is already on PATH. Works as root (CI containers) or through sudo when available.
set -euo pipefail

if command -v etcdctl >/dev/null 2>&1; then
    echo "etcdctl already installed: $(command -v etcdctl)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install_etcd.sh: need root or sudo to run apt-get" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Prefer the 3.4.23 packages; fall back to whatever version the archive carries.
if ! $SUDO apt-get install -y -q --no-install-recommends \
        etcd-client=3.4.23* etcd-server=3.4.23*; then
    $SUDO apt-get install -y -q --no-install-recommends etcd-client etcd-server
fi
# The server package may start a daemon through the init system; the tests never need it.
etcdctl version
