#!/usr/bin/env bash
# System packages the test suite needs that pip cannot install: Prometheus and promtool
# (Debian's `prometheus` package), for tests/test_prometheus.py.
# Idempotent: does nothing when both commands are already on PATH. Needs root (or sudo)
# only when something is missing.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-system-deps: prometheus/promtool missing and not root (no passwordless sudo);" \
        "run as root: apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start a service where an init system runs; the tests start their own.
command -v prometheus >/dev/null && command -v promtool >/dev/null
